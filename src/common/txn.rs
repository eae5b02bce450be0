//! Crash-safe multi-file transactions under one root directory.
//!
//! A refresh replaces a whole set of files (certs and the kubeconfigs that embed them); a crash
//! must leave either the old set or the new one. Every change is first staged in
//! `.mk8s-txn.staging/` (each file fsynced), then the staging directory is renamed to
//! `.mk8s-txn.commit/` (the commit point), then each file is renamed into place. Everything that
//! could make a rename fail is checked before the commit point. [`StateLock::acquire`] (held by
//! a command from before it reads state until after it commits) finishes a committed
//! transaction and discards an uncommitted one, so two commands never interleave and a crashed
//! one is completed by the next.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::fault::crash_point;
use super::fsutil::{IoError, ensure_dir, fsync_dir, io_err, write_new_synced};

const STAGING: &str = ".mk8s-txn.staging";
const COMMIT: &str = ".mk8s-txn.commit";
const MANIFEST: &str = "manifest";

/// What can go wrong applying a transaction.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("cannot write {}: a directory is in the way", .0.display())]
    DirectoryInTheWay(PathBuf),
    #[error("transaction journal {} is corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("invalid path in transaction: {0}")]
    BadPath(String),
}

/// Exclusive hold on a state root: taken before reading state, released after committing.
/// Taking it finishes or discards any interrupted transaction.
pub struct StateLock {
    root: PathBuf,
    _lock: Flock<File>,
}

impl StateLock {
    /// Locks `root` (which must exist) and recovers an interrupted transaction.
    pub fn acquire(root: &Path) -> Result<Self, TxnError> {
        // The directory itself is the lock: no lock file, so a read-only root still locks.
        let dir = File::open(root).map_err(io_err("open", root))?;
        let lock = Flock::lock(dir, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err("lock", root)(e.into()))?;
        let held = Self {
            root: root.to_path_buf(),
            _lock: lock,
        };
        held.recover()?;
        Ok(held)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn recover(&self) -> Result<(), TxnError> {
        let root = &self.root;
        let commit = root.join(COMMIT);
        if commit.exists() {
            tracing::info!(dir = %root.display(), "finishing an interrupted transaction");
            apply(root, &commit)?;
        }
        let staging = root.join(STAGING);
        if staging.exists() {
            tracing::info!(dir = %root.display(), "discarding an uncommitted transaction");
            fs::remove_dir_all(&staging).map_err(io_err("remove", &staging))?;
            fsync_dir(root).map_err(io_err("sync", root))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Dir {
        rel: String,
        mode: u32,
    },
    Write {
        rel: String,
        data: Vec<u8>,
        mode: u32,
    },
    Remove {
        rel: String,
    },
}

/// A set of file changes applied all together or not at all.
#[derive(Debug, Default)]
pub struct Txn {
    ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ensures directory `rel` exists with exactly `mode` (applied before any file).
    pub fn dir(&mut self, rel: impl Into<String>, mode: u32) -> &mut Self {
        self.ops.push(Op::Dir {
            rel: rel.into(),
            mode,
        });
        self
    }

    /// Writes `data` to `rel` with `mode`, replacing what is there.
    pub fn write(
        &mut self,
        rel: impl Into<String>,
        data: impl Into<Vec<u8>>,
        mode: u32,
    ) -> &mut Self {
        self.ops.push(Op::Write {
            rel: rel.into(),
            data: data.into(),
            mode,
        });
        self
    }

    /// Removes `rel` if it exists.
    pub fn remove(&mut self, rel: impl Into<String>) -> &mut Self {
        self.ops.push(Op::Remove { rel: rel.into() });
        self
    }

    /// Relative paths this transaction writes, in order.
    pub fn written_paths(&self) -> impl Iterator<Item = &str> {
        self.ops.iter().filter_map(|op| match op {
            Op::Write { rel, .. } => Some(rel.as_str()),
            _ => None,
        })
    }

    /// Whether applying would change nothing on disk.
    fn is_noop(&self, root: &Path) -> bool {
        self.ops.iter().all(|op| match op {
            Op::Dir { rel, mode } => fs::metadata(root.join(rel))
                .is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o7777 == *mode),
            Op::Remove { rel } => !root.join(rel).exists(),
            Op::Write { .. } => false,
        })
    }

    /// Refuses, before anything is staged, what would make a rename fail after the commit
    /// point (which would leave a half-applied set).
    fn precheck(&self, root: &Path) -> Result<(), TxnError> {
        for op in &self.ops {
            let rel = match op {
                Op::Dir { rel, .. } | Op::Write { rel, .. } | Op::Remove { rel } => rel,
            };
            check_rel(rel)?;
            let target = root.join(rel);
            let is_dir = fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir());
            match op {
                Op::Dir { .. } if target.exists() && !target.is_dir() => {
                    let cause = io::Error::from(io::ErrorKind::AlreadyExists);
                    return Err(io_err("create directory", &target)(cause).into());
                }
                Op::Write { .. } | Op::Remove { .. } if is_dir => {
                    return Err(TxnError::DirectoryInTheWay(target));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Applies every change under the locked root atomically and durably.
    pub fn commit(self, lock: &StateLock) -> Result<(), TxnError> {
        let root = lock.root();
        if self.is_noop(root) {
            return Ok(());
        }
        self.precheck(root)?;

        let staging = root.join(STAGING);
        ensure_dir(&staging, 0o700).map_err(io_err("create", &staging))?;
        let mut manifest = String::new();
        for (i, op) in self.ops.iter().enumerate() {
            match op {
                Op::Dir { rel, mode } => manifest.push_str(&format!("D {mode:o} {rel}\n")),
                Op::Write { rel, data, mode } => {
                    let p = staging.join(i.to_string());
                    write_new_synced(&p, data, *mode).map_err(io_err("write", &p))?;
                    manifest.push_str(&format!("W {mode:o} {i} {rel}\n"));
                }
                Op::Remove { rel } => manifest.push_str(&format!("R {rel}\n")),
            }
        }
        let mp = staging.join(MANIFEST);
        write_new_synced(&mp, manifest.as_bytes(), 0o600).map_err(io_err("write", &mp))?;
        fsync_dir(&staging).map_err(io_err("sync", &staging))?;
        crash_point("txn-staged");

        let commit = root.join(COMMIT);
        fs::rename(&staging, &commit).map_err(io_err("commit", &commit))?;
        fsync_dir(root).map_err(io_err("sync", root))?;
        crash_point("txn-committed");

        apply(root, &commit)
    }
}

fn check_rel(rel: &str) -> Result<(), TxnError> {
    let p = Path::new(rel);
    let ok = !rel.is_empty()
        && !rel.contains('\n')
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(TxnError::BadPath(rel.to_string()))
    }
}

/// Moves every staged file into place. Idempotent: a file already moved is skipped.
fn apply(root: &Path, commit: &Path) -> Result<(), TxnError> {
    let mp = commit.join(MANIFEST);
    let manifest = match fs::read_to_string(&mp) {
        Ok(m) => m,
        // Only removal was left to do when the manifest is already gone.
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err("read", &mp)(e).into()),
    };
    let corrupt = |detail: &str| TxnError::Corrupt {
        path: mp.clone(),
        detail: detail.to_string(),
    };
    let mut touched: Vec<PathBuf> = Vec::new();
    let mut first_write = true;
    for line in manifest.lines() {
        let (kind, rest) = line.split_once(' ').ok_or_else(|| corrupt(line))?;
        match kind {
            "D" => {
                let (mode, rel) = rest.split_once(' ').ok_or_else(|| corrupt(line))?;
                let mode = u32::from_str_radix(mode, 8).map_err(|_| corrupt(line))?;
                check_rel(rel)?;
                let d = root.join(rel);
                ensure_dir(&d, mode).map_err(io_err("create", &d))?;
                touched.push(d.parent().unwrap_or(root).to_path_buf());
            }
            "W" => {
                let mut f = rest.splitn(3, ' ');
                let (idx, rel) = match (f.next(), f.next(), f.next()) {
                    (Some(_mode), Some(i), Some(r)) => (i, r),
                    _ => return Err(corrupt(line)),
                };
                check_rel(rel)?;
                let src = commit.join(idx);
                let dst = root.join(rel);
                if src.exists() {
                    let parent = dst.parent().unwrap_or(root).to_path_buf();
                    if !parent.exists() {
                        fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
                    }
                    fs::rename(&src, &dst).map_err(io_err("replace", &dst))?;
                    touched.push(parent);
                    if first_write {
                        first_write = false;
                        crash_point("txn-applying");
                    }
                }
            }
            "R" => {
                check_rel(rest)?;
                let p = root.join(rest);
                match fs::remove_file(&p) {
                    Ok(()) => touched.push(p.parent().unwrap_or(root).to_path_buf()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove", &p)(e).into()),
                }
            }
            _ => return Err(corrupt(line)),
        }
    }
    touched.sort();
    touched.dedup();
    for d in &touched {
        fsync_dir(d).map_err(io_err("sync", d))?;
    }
    fs::remove_dir_all(commit).map_err(io_err("remove", commit))?;
    Ok(fsync_dir(root).map_err(io_err("sync", root))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_writes_removes_and_leaves_no_journal() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("old"), b"x").unwrap();
        let lock = StateLock::acquire(root).unwrap();
        let mut t = Txn::new();
        t.dir("a", 0o700)
            .write("a/f", b"hello".to_vec(), 0o600)
            .remove("old");
        t.commit(&lock).unwrap();
        assert_eq!(fs::read(root.join("a/f")).unwrap(), b"hello");
        assert!(!root.join("old").exists());
        assert!(!root.join(COMMIT).exists() && !root.join(STAGING).exists());
    }

    #[test]
    fn acquiring_rolls_a_committed_journal_forward_and_drops_a_staged_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let commit = root.join(COMMIT);
        fs::create_dir(&commit).unwrap();
        fs::write(commit.join("0"), b"new").unwrap();
        fs::write(commit.join(MANIFEST), "W 600 0 f\n").unwrap();
        fs::create_dir(root.join(STAGING)).unwrap();
        drop(StateLock::acquire(root).unwrap());
        assert_eq!(fs::read(root.join("f")).unwrap(), b"new");
        assert!(!commit.exists() && !root.join(STAGING).exists());
    }

    #[test]
    fn rejects_paths_that_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let lock = StateLock::acquire(dir.path()).unwrap();
        let mut t = Txn::new();
        t.write("../evil", b"x".to_vec(), 0o600);
        assert!(matches!(t.commit(&lock), Err(TxnError::BadPath(_))));
    }

    #[test]
    fn a_directory_in_the_way_is_refused_before_anything_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("a"), b"old").unwrap();
        fs::create_dir(root.join("b")).unwrap();
        let lock = StateLock::acquire(root).unwrap();
        let mut t = Txn::new();
        t.write("a", b"new".to_vec(), 0o600)
            .write("b", b"new".to_vec(), 0o600);
        assert!(matches!(
            t.commit(&lock),
            Err(TxnError::DirectoryInTheWay(_))
        ));
        assert_eq!(fs::read(root.join("a")).unwrap(), b"old");
        assert!(!root.join(STAGING).exists() && !root.join(COMMIT).exists());
    }
}
