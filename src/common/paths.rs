//! The data root of design §2 (`$SNAP_DATA`) and the well-known paths below it.

use std::path::{Path, PathBuf};

/// Default `$SNAP_DATA`, as a MicroK8s snap would have it.
pub const DEFAULT_SNAP_DATA: &str = "/var/snap/mk8s/current";

pub const CERTS_DIR: &str = "certs";
pub const CREDENTIALS_DIR: &str = "credentials";
pub const CERTS_BACKUP_DIR: &str = "certs-backup";

/// The roots every component works under.
#[derive(Debug, Clone)]
pub struct Paths {
    pub snap_data: PathBuf,
}

impl Paths {
    pub fn new(snap_data: impl Into<PathBuf>) -> Self {
        Self {
            snap_data: snap_data.into(),
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
