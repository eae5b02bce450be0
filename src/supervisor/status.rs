//! The supervisor's published state: `$SNAP_COMMON/run/status.json`, rewritten atomically on
//! every change and read by `start`, `status` and `stop`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// What a component is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Spawned, waiting for its readiness check.
    Starting,
    /// Passed its readiness check.
    Running,
    /// Exited; restarting after a back-off delay.
    Backoff,
    /// Could not be spawned at all (bad args file, missing binary…).
    Failed,
    Stopping,
    Stopped,
    /// An addon's component while the addon is off.
    Disabled,
}

impl State {
    /// Running, or an addon's component that is meant to be off.
    pub fn is_up(self) -> bool {
        matches!(self, State::Running | State::Disabled)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentStatus {
    pub name: String,
    pub state: State,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// Why it last exited or failed, for `start` to show.
    pub last_error: Option<String>,
    pub log: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub supervisor_pid: u32,
    pub components: Vec<ComponentStatus>,
}

impl Status {
    pub fn all_running(&self) -> bool {
        self.components.iter().all(|c| c.state.is_up())
    }
}

/// Reads the status file; `None` if absent or unreadable (the supervisor rewrites it soon).
pub fn read(path: &Path) -> Option<Status> {
    let data = std::fs::read(path).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Replaces the status file atomically.
pub fn write(path: &Path, status: &Status) -> std::io::Result<()> {
    let data = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    crate::common::fsutil::write_atomic(path, &data, 0o644)
}
