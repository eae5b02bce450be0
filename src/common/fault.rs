//! Fault injection for crash tests: `MK8S_FAULT_INJECT=<point>` makes a debug build kill
//! itself with SIGKILL when it reaches `<point>`, so tests can prove that a crash at that
//! moment leaves state either old or new, never half-written. Release builds ignore it.

/// Environment variable naming the crash point.
pub const FAULT_ENV: &str = "MK8S_FAULT_INJECT";

/// Dies at once, as `kill -9` would, if `MK8S_FAULT_INJECT` names `point` (debug builds).
pub fn crash_point(point: &str) {
    if cfg!(debug_assertions) && std::env::var(FAULT_ENV).is_ok_and(|p| p == point) {
        // SIGKILL cannot be caught: no destructor, flush or cleanup runs, exactly like a crash.
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
}
