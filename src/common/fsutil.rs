//! Durable file primitives: every state write is temp file + fsync + rename + directory fsync.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// An I/O failure with what was being done and to which file, shared by every module's
/// error enum so the message reads the same everywhere: `cannot <action> <path>: <cause>`.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {cause}", path.display())]
pub struct IoError {
    pub action: &'static str,
    pub path: PathBuf,
    pub cause: io::Error,
}

/// `map_err` adapter: `fs::read(&p).map_err(io_err("read", &p))?`.
pub fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IoError + 'a {
    move |cause| IoError {
        action,
        path: path.to_path_buf(),
        cause,
    }
}

/// Flushes a directory's entries (renames, creations) to disk.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `data` to a new file at `path` with `mode`, and fsyncs it. Fails if it exists.
pub fn write_new_synced(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    // The umask may have narrowed the mode; set it exactly.
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(data)?;
    f.sync_all()
}

/// Creates `dir` (and missing parents) and gives it exactly `mode`.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    match fs::create_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    let current = fs::metadata(dir)?.permissions().mode() & 0o7777;
    if current != mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Reads a file if it exists: `Ok(None)` when it does not.
pub fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces `path` atomically with `data`: a reader sees the old or the new content, never a
/// mix, and after return the new content survives a crash.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    fsync_dir(dir)
}
