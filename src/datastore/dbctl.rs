//! `mk8s dbctl`: backup of a serving datastore and restore into a stopped one.
//!
//! A backup is what etcd's Maintenance.Snapshot streams (and `etcdctl snapshot save` writes):
//! the database file followed by its SHA-256. Restore checks that checksum and that the file is
//! a database, and refuses while a datastore holds the store open.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use redb::{Database, DatabaseError};

use crate::common::fsutil::{IoError, io_err};

use super::Config;

/// Size of the checksum trailer.
const SHA256_LEN: usize = 32;
/// File name of the store inside the storage directory.
pub const DB_FILE: &str = "mk8s.redb";

/// What can go wrong backing up or restoring.
#[derive(Debug, thiserror::Error)]
pub enum DbctlError {
    #[error("cannot reach the datastore at {endpoint}: {cause}")]
    Connect {
        endpoint: String,
        cause: etcd_client::Error,
    },
    #[error("snapshot from {endpoint} failed: {cause}")]
    Snapshot {
        endpoint: String,
        cause: etcd_client::Error,
    },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{} is not a datastore backup: {why}", .path.display())]
    NotABackup { path: PathBuf, why: String },
    #[error("the datastore is running (it holds {}): stop it before restoring", .0.display())]
    Running(PathBuf),
}

/// The admin endpoint a local client should dial.
fn admin_endpoint(config: &Config) -> String {
    config
        .listen_peer
        .first()
        .or(config.listen_client.first())
        .map(|a| super::advertised("https", a))
        .unwrap_or_else(|| format!("https://127.0.0.1:{}", super::DEFAULT_PEER_PORT))
}

/// Streams a consistent snapshot from the running datastore into `dest` (atomically).
pub async fn backup(config: &Config, certs: &Path, dest: &Path) -> Result<u64, DbctlError> {
    let endpoint = admin_endpoint(config);
    let read = |f: &str| {
        let p = certs.join(f);
        std::fs::read(&p).map_err(io_err("read", &p))
    };
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")?))
        .identity(Identity::from_pem(
            read("apiserver-etcd-client.crt")?,
            read("apiserver-etcd-client.key")?,
        ))
        .domain_name("localhost");
    let opts = ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(Duration::from_secs(5));
    let mut client = Client::connect([endpoint.clone()], Some(opts))
        .await
        .map_err(|cause| DbctlError::Connect {
            endpoint: endpoint.clone(),
            cause,
        })?;
    let snap_err = |cause| DbctlError::Snapshot {
        endpoint: endpoint.clone(),
        cause,
    };
    let mut stream = client.snapshot().await.map_err(snap_err)?;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err("create a file in", dir))?;
    let mut total = 0u64;
    while let Some(chunk) = stream.message().await.map_err(snap_err)? {
        tmp.write_all(chunk.blob())
            .map_err(io_err("write", tmp.path()))?;
        total += chunk.blob().len() as u64;
    }
    tmp.as_file().sync_all().map_err(io_err("sync", dest))?;
    tmp.persist(dest)
        .map_err(|e| io_err("write", dest)(e.error))?;
    Ok(total)
}

/// Checks a backup and returns the database bytes without the checksum.
fn verified_db(backup: &Path) -> Result<Vec<u8>, DbctlError> {
    let mut data = std::fs::read(backup).map_err(io_err("read", backup))?;
    let not = |why: &str| DbctlError::NotABackup {
        path: backup.to_path_buf(),
        why: why.to_string(),
    };
    if data.len() < SHA256_LEN || data.len() % 512 != SHA256_LEN {
        return Err(not("no SHA-256 trailer (size is not 512·n + 32)"));
    }
    let body_len = data.len() - SHA256_LEN;
    let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data[..body_len]);
    if sum.as_ref() != &data[body_len..] {
        return Err(not("checksum mismatch"));
    }
    data.truncate(body_len);
    Ok(data)
}

/// Replaces the stopped datastore's store with the backup. The previous store is kept beside
/// it as `mk8s.redb.pre-restore`.
pub fn restore(config: &Config, backup: &Path) -> Result<PathBuf, DbctlError> {
    let db = verified_db(backup)?;
    let dir = &config.storage_dir;
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let live = dir.join(DB_FILE);
    // Holding the live store open both proves no datastore runs and keeps one from starting.
    let _guard = match Database::open(&live) {
        Ok(d) => Some(d),
        Err(DatabaseError::DatabaseAlreadyOpen) => return Err(DbctlError::Running(live)),
        Err(DatabaseError::Storage(redb::StorageError::Io(e)))
            if e.kind() == std::io::ErrorKind::NotFound =>
        {
            None
        }
        Err(cause) => {
            tracing::warn!(path = %live.display(), error = %cause, "replacing an unreadable store");
            None
        }
    };
    let staged = dir.join(format!("{DB_FILE}.restoring"));
    crate::common::fsutil::write_new_synced(&staged, &db, 0o600)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                std::fs::remove_file(&staged)?;
                crate::common::fsutil::write_new_synced(&staged, &db, 0o600)
            } else {
                Err(e)
            }
        })
        .map_err(io_err("write", &staged))?;
    if let Err(cause) = Database::open(&staged) {
        let _ = std::fs::remove_file(&staged);
        return Err(DbctlError::NotABackup {
            path: backup.to_path_buf(),
            why: format!("not a datastore database ({cause})"),
        });
    }
    if live.exists() {
        let previous = dir.join(format!("{DB_FILE}.pre-restore"));
        std::fs::rename(&live, &previous).map_err(io_err("move aside", &live))?;
    }
    std::fs::rename(&staged, &live).map_err(io_err("replace", &live))?;
    crate::common::fsutil::fsync_dir(dir).map_err(io_err("sync", dir))?;
    Ok(live)
}
