//! Component logs: `$SNAP_COMMON/var/log/<component>.log`, size-capped with one rotation
//! (`<component>.log.1`), fed from the child's stdout and stderr.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// A log rotates when it passes this size.
pub const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;

/// An append-only log file that rotates itself.
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    size: u64,
}

impl RotatingLog {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
        })
    }

    pub fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size + line.len() as u64 > MAX_LOG_BYTES {
            let old = self.path.with_extension("log.1");
            std::fs::rename(&self.path, &old)?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = 0;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }
}

/// Copies `stream` line by line into the log (or drops it, without one) until it closes.
pub async fn pump(
    stream: impl AsyncRead + Unpin,
    log: Option<std::sync::Arc<parking_lot::Mutex<RotatingLog>>>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let Some(log) = &log else { continue };
                if let Err(e) = log.lock().write_line(&line) {
                    tracing::warn!(error = %e, "cannot write a component log");
                }
            }
        }
    }
}

/// The last `n` lines of a log, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        let mut log = RotatingLog::open(&p).unwrap();
        let line = vec![b'a'; 1024 * 1024];
        for _ in 0..11 {
            log.write_line(&line).unwrap();
        }
        assert!(dir.path().join("x.log.1").exists());
        assert!(std::fs::metadata(&p).unwrap().len() <= MAX_LOG_BYTES);
    }
}
