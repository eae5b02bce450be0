//! Handing freed heap back to the OS. glibc keeps freed pages of a large burst (a big list,
//! a compaction) in its arenas; the daemons give them back once the burst is over.

/// Releases the free heap pages glibc is holding.
pub fn trim() {
    // SAFETY: malloc_trim only releases free heap pages; it has no other effect.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
