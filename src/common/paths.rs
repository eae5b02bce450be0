//! The two data roots of design §2 (`$SNAP_DATA`, `$SNAP_COMMON`) and the paths below them.

use std::path::{Path, PathBuf};

/// Default `$SNAP_DATA`, as a MicroK8s snap would have it.
pub const DEFAULT_SNAP_DATA: &str = "/var/snap/mk8s/current";
/// Default `$SNAP_COMMON`.
pub const DEFAULT_SNAP_COMMON: &str = "/var/snap/mk8s/common";

pub const CERTS_DIR: &str = "certs";
pub const CREDENTIALS_DIR: &str = "credentials";
pub const CERTS_BACKUP_DIR: &str = "certs-backup";

/// The roots every component works under.
#[derive(Debug, Clone)]
pub struct Paths {
    pub snap_data: PathBuf,
    pub snap_common: PathBuf,
}

impl Paths {
    pub fn new(snap_data: impl Into<PathBuf>, snap_common: impl Into<PathBuf>) -> Self {
        Self {
            snap_data: snap_data.into(),
            snap_common: snap_common.into(),
        }
    }

    /// `$SNAP_COMMON/run`: pid files, the supervisor's lock and status.
    pub fn run_dir(&self) -> PathBuf {
        self.snap_common.join("run")
    }

    /// `$SNAP_COMMON/var/log`: one log a component.
    pub fn log_dir(&self) -> PathBuf {
        self.snap_common.join("var/log")
    }

    /// Values for `${SNAP_DATA}` and friends in args files.
    pub fn vars(&self) -> crate::common::args::Vars {
        crate::common::args::Vars {
            snap: String::new(),
            snap_data: self.snap_data.display().to_string(),
            snap_common: self.snap_common.display().to_string(),
        }
    }

    /// `$SNAP_DATA/certs-backup`, written by `refresh-certs`, read by `refresh-certs --undo`.
    pub fn certs_backup_dir(&self) -> PathBuf {
        self.snap_data.join(CERTS_BACKUP_DIR)
    }

    /// A file under `$SNAP_DATA` by its path relative to it.
    pub fn data_file(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.snap_data.join(rel)
    }
}
