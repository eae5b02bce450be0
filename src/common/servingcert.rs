//! A serving certificate that follows its files: a rustls [`ResolvesServerCert`] holding the
//! current pair, re-read when the certificate or key file changes (checked at most every
//! [`RECHECK`], on a handshake), so a renewed certificate is served without a restart.
//!
//! Shared by every HTTPS server that serves a pair from disk (API server, kubelet, controller
//! manager, scheduler). Owns no files: it only reads the two it is given.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How stale the served pair may be after its files change.
pub const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ServingCertError {
    #[error("{}: {detail}", file.display())]
    Bad { file: PathBuf, detail: String },
}

/// What identifies one version of a file: a rename (atomic write) changes the inode, an
/// in-place write the mtime or size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    mtime: Option<SystemTime>,
    len: u64,
}

fn stamp(p: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(p).ok()?;
    Some(Stamp {
        ino: m.ino(),
        mtime: m.modified().ok(),
        len: m.len(),
    })
}

/// Reads and checks a certificate chain and its key: both parse, the chain is not empty and
/// the key is the certificate's.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, ServingCertError> {
    let bad = |file: &Path, detail: String| ServingCertError::Bad {
        file: file.to_path_buf(),
        detail,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "no PEM certificate in it".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let ck = CertifiedKey::from_der(chain, key_der, &provider)
        .map_err(|e| bad(cert, format!("with {}: {e}", key.display())))?;
    // `from_der` lets a key it cannot compare through; a server must not serve a pair that
    // no client could verify.
    ck.keys_match()
        .map_err(|e| bad(cert, format!("with {}: {e}", key.display())))?;
    Ok(Arc::new(ck))
}

struct Current {
    served: Arc<CertifiedKey>,
    /// The files' stamps when `served` (or a rejected pair) was last read.
    seen: (Option<Stamp>, Option<Stamp>),
    checked: Instant,
}

/// The serving pair of `cert` and `key`, re-read when either file changes. A new pair that
/// does not load (half-written, garbage, key of another certificate) is logged once and the
/// old one kept.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Current>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReloadingCert({})", self.cert.display())
    }
}

impl ReloadingCert {
    /// Loads the pair now: a server must not start without a valid one.
    pub fn new(cert: &Path, key: &Path) -> Result<Self, ServingCertError> {
        let seen = (stamp(cert), stamp(key));
        let served = load_pair(cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: Mutex::new(Current {
                served,
                seen,
                checked: Instant::now(),
            }),
        })
    }

    /// The pair to serve now, re-read first if the files changed and the last look is older
    /// than [`RECHECK`].
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut cur = self.current.lock();
        if cur.checked.elapsed() < RECHECK {
            return cur.served.clone();
        }
        cur.checked = Instant::now();
        // Stamped before reading: a change during the read is seen at the next look.
        let seen = (stamp(&self.cert), stamp(&self.key));
        if seen == cur.seen {
            return cur.served.clone();
        }
        cur.seen = seen;
        match load_pair(&self.cert, &self.key) {
            Ok(ck) => {
                tracing::info!(
                    cert = %self.cert.display(),
                    "serving certificate changed on disk; serving the new one"
                );
                cur.served = ck;
            }
            Err(e) => tracing::warn!(
                error = %e,
                "serving certificate changed on disk but cannot be used; keeping the old one"
            ),
        }
        cur.served.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, ck.cert.pem()).unwrap();
        std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    fn install(from: &Path, to: &Path) {
        let tmp = to.with_extension("tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }

    fn served_der(r: &ReloadingCert) -> Vec<u8> {
        r.current().cert[0].as_ref().to_vec()
    }

    fn wait_recheck() {
        std::thread::sleep(RECHECK + Duration::from_millis(50));
    }

    #[test]
    fn follows_a_new_pair_and_keeps_the_old_one_when_the_new_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let (a_crt, a_key) = pair(dir.path(), "a");
        let (b_crt, b_key) = pair(dir.path(), "b");
        let (crt, key) = (
            dir.path().join("serving.crt"),
            dir.path().join("serving.key"),
        );
        install(&a_crt, &crt);
        install(&a_key, &key);
        let r = ReloadingCert::new(&crt, &key).unwrap();
        let a = served_der(&r);

        // Garbage: the old pair stays.
        std::fs::write(&crt, "not a certificate").unwrap();
        wait_recheck();
        assert_eq!(served_der(&r), a);

        // A certificate without its key (mismatch): the old pair stays.
        install(&b_crt, &crt);
        wait_recheck();
        assert_eq!(served_der(&r), a);

        // Its key arrives: the new pair is served.
        install(&b_key, &key);
        wait_recheck();
        let b = served_der(&r);
        assert_ne!(b, a);
        assert_eq!(b, CertificateDer::from_pem_file(&b_crt).unwrap().as_ref());

        // Files gone: keep serving.
        std::fs::remove_file(&crt).unwrap();
        wait_recheck();
        assert_eq!(served_der(&r), b);
    }

    #[test]
    fn a_bad_pair_at_start_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (a_crt, _) = pair(dir.path(), "a");
        let (_, b_key) = pair(dir.path(), "b");
        let err = ReloadingCert::new(&a_crt, &b_key).unwrap_err().to_string();
        assert!(err.contains("a.crt"), "{err}");
        let garbage = dir.path().join("g.crt");
        std::fs::write(&garbage, "x").unwrap();
        assert!(ReloadingCert::new(&garbage, &b_key).is_err());
    }
}
