//! Authentication: who a request is from. In upstream's order: front-proxy headers (only
//! on a connection whose certificate the front-proxy CA signed, with an allowed name), x509
//! client certificates signed by the client CA (CN = user, O = groups), bearer tokens from
//! the token file, basic auth from the basic-auth file. Reads those files (again when they
//! change); never writes them. Service-account JWTs are [`super::tokens`]'.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use parking_lot::Mutex;

/// The authenticated user, as `user.Info`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// `extra` (front-proxy `X-Remote-Extra-*` headers), keys lower-case.
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
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
            ..Default::default()
        }
    }

    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = self.uid.clone().into();
        }
        if !self.extra.is_empty() {
            v["extra"] = serde_json::json!(self.extra);
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

/// The `--requestheader-*` settings: which front proxy is trusted and where it puts the user.
#[derive(Debug, Clone)]
pub struct RequestHeader {
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_prefixes: Vec<String>,
}

impl Default for RequestHeader {
    fn default() -> Self {
        Self {
            allowed_names: Vec::new(),
            username_headers: vec!["X-Remote-User".into()],
            group_headers: vec!["X-Remote-Group".into()],
            extra_prefixes: vec!["X-Remote-Extra-".into()],
        }
    }
}

/// Who a connection's verified client certificate says the peer is.
#[derive(Debug, Clone)]
pub enum Peer {
    /// Signed by the client CA: the certificate's user.
    User(UserInfo),
    /// Signed by the front-proxy CA: a proxy (its CN) vouching for users in headers.
    FrontProxy(String),
}

/// Every way a request can prove who it is.
pub struct Authenticator {
    tokens: Option<CsvFile>,
    passwords: Option<CsvFile>,
    request_header: RequestHeader,
}

/// What a request carried.
pub struct Credentials<'a> {
    pub authorization: Option<&'a str>,
    /// The connection's verified client certificate, if any.
    pub peer: Option<&'a Peer>,
    pub headers: Option<&'a hyper::HeaderMap>,
}

impl Authenticator {
    pub fn new(
        token_file: Option<PathBuf>,
        basic_file: Option<PathBuf>,
        request_header: RequestHeader,
    ) -> Arc<Self> {
        Arc::new(Self {
            tokens: token_file.map(CsvFile::new),
            passwords: basic_file.map(CsvFile::new),
            request_header,
        })
    }

    /// The user a trusted front proxy names in its headers.
    fn proxied_user(&self, proxy: &str, headers: &hyper::HeaderMap) -> Option<UserInfo> {
        let rh = &self.request_header;
        if !rh.allowed_names.is_empty() && !rh.allowed_names.iter().any(|n| n == proxy) {
            return None;
        }
        let values = |name: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let name = rh
            .username_headers
            .iter()
            .flat_map(|h| values(h))
            .find(|v| !v.is_empty())?;
        let groups = rh.group_headers.iter().flat_map(|h| values(h)).collect();
        let mut user = UserInfo::new(&name, "", groups);
        for (k, v) in headers {
            let key = k.as_str();
            for prefix in &rh.extra_prefixes {
                let p = prefix.to_ascii_lowercase();
                if let Some(rest) = key.strip_prefix(&p)
                    && let Ok(v) = v.to_str()
                {
                    user.extra
                        .entry(super::server::percent_decode(rest, false).to_ascii_lowercase())
                        .or_default()
                        .push(v.to_string());
                }
            }
        }
        Some(user)
    }

    /// The user, or `None` when nothing valid was presented (401). Front-proxy headers, then
    /// a client certificate, then an Authorization header, as upstream's chain.
    pub fn authenticate(&self, c: &Credentials) -> Option<UserInfo> {
        match c.peer {
            Some(Peer::FrontProxy(proxy)) => {
                if let Some(u) = c.headers.and_then(|h| self.proxied_user(proxy, h)) {
                    return Some(u);
                }
            }
            Some(Peer::User(u)) => return Some(u.clone()),
            None => {}
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

/// The certificate authorities client certificates may chain to: the client CA (users) and
/// the front-proxy CA (`--requestheader-client-ca-file`).
#[derive(Default)]
pub struct Authorities {
    pub client: Vec<Vec<u8>>,
    pub front_proxy: Vec<Vec<u8>>,
}

fn signed_by(leaf: &x509_parser::certificate::X509Certificate, cas: &[Vec<u8>]) -> bool {
    cas.iter().any(|der| {
        x509_parser::parse_x509_certificate(der).is_ok_and(|(_, ca)| {
            leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok()
        })
    })
}

impl Authorities {
    /// Who a connection's leaf certificate (verified in the handshake against both) is. Read
    /// once a connection.
    pub fn classify(&self, der: &[u8]) -> Option<Peer> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        if signed_by(&cert, &self.front_proxy) {
            let cn = cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|c| c.as_str().ok())
                .unwrap_or("")
                .to_string();
            return Some(Peer::FrontProxy(cn));
        }
        if signed_by(&cert, &self.client) {
            return user_from_cert(&cert).map(Peer::User);
        }
        None
    }
}

/// CN is the user, each O a group (as upstream's x509 authenticator).
fn user_from_cert(cert: &x509_parser::certificate::X509Certificate) -> Option<UserInfo> {
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
        let a = Authenticator::new(Some(t), Some(b), RequestHeader::default());
        let bearer = |h: &str| {
            a.authenticate(&Credentials {
                authorization: Some(h),
                peer: None,
                headers: None,
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
