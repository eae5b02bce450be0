//! Authentication: who a request is from. x509 client certificates signed by the client CA
//! (CN = user, O = groups), bearer tokens from the token file, basic auth from the basic-auth
//! file. Reads those files (again when they change); never writes them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use parking_lot::Mutex;

/// The authenticated user, as `user.Info`.
#[derive(Debug, Clone, PartialEq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    fn new(name: &str, uid: &str, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Self {
            name: name.to_string(),
            uid: uid.to_string(),
            groups,
        }
    }

    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = self.uid.clone().into();
        }
        v
    }
}

/// One credentials file (`secret,user,uid,"group1,group2"`), re-read when its mtime changes.
struct CsvFile {
    path: PathBuf,
    state: Mutex<CsvState>,
}

struct CsvState {
    checked: Option<Instant>,
    mtime: Option<SystemTime>,
    rows: Vec<(String, UserInfo)>,
}

/// How often a credentials file is checked for changes.
const RECHECK: Duration = Duration::from_secs(2);

impl CsvFile {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            state: Mutex::new(CsvState {
                checked: None,
                mtime: None,
                rows: Vec::new(),
            }),
        }
    }

    fn lookup(&self, secret: &str) -> Option<UserInfo> {
        let mut st = self.state.lock();
        if st.checked.is_none_or(|t| t.elapsed() >= RECHECK) {
            st.checked = Some(Instant::now());
            let mtime = std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok();
            if mtime != st.mtime {
                st.mtime = mtime;
                st.rows = match std::fs::read_to_string(&self.path) {
                    Ok(text) => parse_csv(&text),
                    Err(e) => {
                        tracing::warn!("cannot read {}: {e}", self.path.display());
                        Vec::new()
                    }
                };
            }
        }
        // Compare every row in constant time so timing does not reveal a prefix.
        let mut found = None;
        for (s, user) in &st.rows {
            if constant_eq(s.as_bytes(), secret.as_bytes()) {
                found = Some(user.clone());
            }
        }
        found
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Splits one CSV line, honouring double quotes.
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn parse_csv(text: &str) -> Vec<(String, UserInfo)> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f = split_csv(line);
        if f.len() < 3 || f[0].is_empty() || f[1].is_empty() {
            continue;
        }
        let groups = f
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        rows.push((f[0].clone(), UserInfo::new(&f[1], &f[2], groups)));
    }
    rows
}

/// Every way a request can prove who it is.
pub struct Authenticator {
    tokens: Option<CsvFile>,
    passwords: Option<CsvFile>,
}

/// What a request carried.
pub struct Credentials<'a> {
    pub authorization: Option<&'a str>,
    /// The user of the connection's verified client certificate, if any.
    pub client_cert: Option<&'a UserInfo>,
}

impl Authenticator {
    pub fn new(token_file: Option<PathBuf>, basic_file: Option<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            tokens: token_file.map(CsvFile::new),
            passwords: basic_file.map(CsvFile::new),
        })
    }

    /// The user, or `None` when nothing valid was presented (401). A client certificate
    /// wins over an Authorization header, as in upstream's authenticator chain.
    pub fn authenticate(&self, c: &Credentials) -> Option<UserInfo> {
        if let Some(u) = c.client_cert {
            return Some(u.clone());
        }
        if let Some(h) = c.authorization {
            let h = h.trim();
            if let Some(token) = strip_scheme(h, "Bearer") {
                return self.tokens.as_ref()?.lookup(token.trim());
            }
            if let Some(b64) = strip_scheme(h, "Basic") {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .ok()?;
                let raw = String::from_utf8(raw).ok()?;
                let (user, password) = raw.split_once(':')?;
                let found = self.passwords.as_ref()?.lookup(password)?;
                return (found.name == user).then_some(found);
            }
            return None;
        }
        None
    }
}

fn strip_scheme<'a>(h: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = h.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// CN is the user, each O a group (as upstream's x509 authenticator). Read once a
/// connection: the certificate was verified in the handshake.
pub fn user_from_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    if name.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(UserInfo::new(&name, "", groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_with_quoted_groups() {
        let rows = parse_csv("tok,admin,admin,\"system:masters,devs\"\n# c\nt2,bob,bob\nbad\n");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1.name, "admin");
        assert_eq!(
            rows[0].1.groups,
            vec!["system:masters", "devs", "system:authenticated"]
        );
        assert_eq!(rows[1].1.groups, vec!["system:authenticated"]);
    }

    #[test]
    fn tokens_and_basic_auth() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t.csv");
        let b = dir.path().join("b.csv");
        std::fs::write(&t, "sekrit,alice,a1,\"g1\"\n").unwrap();
        std::fs::write(&b, "pw,admin,admin,\"system:masters\"\n").unwrap();
        let a = Authenticator::new(Some(t), Some(b));
        let bearer = |h: &str| {
            a.authenticate(&Credentials {
                authorization: Some(h),
                client_cert: None,
            })
        };
        assert_eq!(bearer("Bearer sekrit").unwrap().name, "alice");
        assert!(bearer("Bearer wrong").is_none());
        let basic = base64::engine::general_purpose::STANDARD.encode("admin:pw");
        assert_eq!(bearer(&format!("Basic {basic}")).unwrap().name, "admin");
        let wrong = base64::engine::general_purpose::STANDARD.encode("bob:pw");
        assert!(bearer(&format!("Basic {wrong}")).is_none());
    }
}
