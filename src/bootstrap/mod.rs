//! Bootstrap: the cluster's PKI and credentials under `$SNAP_DATA` (design §2).
//!
//! Owns `certs/`, `credentials/` and `certs-backup/`: the CAs, every component's certificate,
//! `csr.conf` rendered from the user's `csr.conf.template`, static tokens and kubeconfigs, and
//! `refresh-certs` and the running node's renewal of serving certificates ([`renew_serving`]).
//! Every change is one [`Txn`], so a crash leaves the old set or the new one.
//! Never starts or stops anything: [`Refreshed::restart`] names the components a caller must
//! restart.

pub mod credentials;
pub mod csrconf;
pub mod pki;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType};
use time::OffsetDateTime;

use crate::common::fsutil::{IoError, io_err, read_optional};
use crate::common::paths::{CERTS_BACKUP_DIR, CERTS_DIR, CREDENTIALS_DIR, Paths};
use crate::common::txn::{StateLock, Txn, TxnError};
use credentials::{CredentialsError, KUBECONFIGS};
use csrconf::{AltName, CsrConfError, DnField, ExtKeyUsage, KeyUsage, ServerCertSpec};
use pki::{Authority, Issued, LeafRequest, PkiError};

/// The template shipped with the binary, installed once and then the user's.
pub const DEFAULT_CSR_TEMPLATE: &str = include_str!("../../certs-templates/csr.conf.template");

/// The cluster CA's common name, as MicroK8s's (the `kubernetes` service IP).
pub const CA_CN: &str = "10.152.183.1";
pub const FRONT_PROXY_CA_CN: &str = "front-proxy-ca";
pub const CA_DAYS: i64 = 3650;
pub const LEAF_DAYS: i64 = 365;

const TEMPLATE: &str = "certs/csr.conf.template";
const CSR_CONF: &str = "certs/csr.conf";
const SA_KEY: &str = "certs/serviceaccount.key";
const KNOWN_TOKENS: &str = "credentials/known_tokens.csv";
const BASIC_AUTH: &str = "credentials/basic_auth.csv";

/// Everything that can stop a bootstrap or refresh. Nothing on disk changes when one occurs.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    CsrConf(#[from] CsrConfError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Txn(#[from] TxnError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{} exists but {} is missing; restore it or remove both to create a new CA", present.display(), missing.display())]
    HalfCa { present: PathBuf, missing: PathBuf },
    #[error("{} is missing: run 'mk8s bootstrap' first", .0.display())]
    NotBootstrapped(PathBuf),
    #[error("no backup in {}: nothing to undo", .0.display())]
    NoBackup(PathBuf),
}

/// This machine as certificates see it.
#[derive(Debug, Clone)]
pub struct Host {
    /// Node name (lower-case hostname).
    pub node: String,
    /// Host addresses for `#MOREIPS` and serving certificates.
    pub ips: Vec<IpAddr>,
}

impl Host {
    /// The real machine.
    pub fn detect() -> Self {
        Self {
            node: crate::common::host::node_name(),
            ips: crate::common::host::host_addresses(),
        }
    }
}

/// Certificates `refresh-certs --cert` can renew, by their file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshTarget {
    Server,
    FrontProxyClient,
    Ca,
}

impl RefreshTarget {
    pub const ALL: [RefreshTarget; 3] = [Self::Server, Self::FrontProxyClient, Self::Ca];

    pub fn file_name(self) -> &'static str {
        match self {
            Self::Server => "server.crt",
            Self::FrontProxyClient => "front-proxy-client.crt",
            Self::Ca => "ca.crt",
        }
    }

    /// The help line MicroK8s prints for each choice.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Server => "refreshes the server certificate",
            Self::FrontProxyClient => "refreshes the front proxy client certificate",
            Self::Ca => "refreshes the root CA and all certificates created from it.",
        }
    }

    pub fn from_file_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.file_name() == name)
    }

    /// Components that read the refreshed files and must restart to use them.
    pub fn components(self) -> &'static [&'static str] {
        match self {
            // Every server of it (API server, controller manager and scheduler on their
            // secure ports) re-reads its serving pair by itself: no downtime.
            Self::Server => &[],
            Self::FrontProxyClient => &["apiserver"],
            Self::Ca => &[
                "datastore",
                "apiserver",
                "controller-manager",
                "scheduler",
                "kubelet",
                "proxy",
                "dns",
                "cluster-agent",
            ],
        }
    }
}

/// Tracked files by path relative to `$SNAP_DATA`.
type Files = BTreeMap<String, Vec<u8>>;

/// What a bootstrap did.
#[derive(Debug)]
pub struct Bootstrapped {
    pub written: Vec<String>,
}

/// What a refresh did.
#[derive(Debug)]
pub struct Refreshed {
    pub written: Vec<String>,
    pub backup_dir: PathBuf,
    /// Components to restart so they serve the new files.
    pub restart: &'static [&'static str],
}

/// A certificate's remaining lifetime, as `refresh-certs --check` reports it.
#[derive(Debug)]
pub struct Expiry {
    /// "CA", "server", "front proxy client".
    pub label: &'static str,
    pub days: i64,
}

struct Leaf {
    name: String,
    /// `ca` or `front-proxy-ca`.
    signer: &'static str,
    request: LeafRequest,
}

/// File mode for a tracked file: secrets 0600, the rest 0644.
fn mode_for(rel: &str) -> u32 {
    if rel.ends_with(".key") || rel.starts_with("credentials/") || rel.contains("/credentials/") {
        0o600
    } else {
        0o644
    }
}

/// Reads every regular file of `certs/` and `credentials/`.
fn load(paths: &Paths) -> Result<Files, BootstrapError> {
    let mut files = Files::new();
    for dir in [CERTS_DIR, CREDENTIALS_DIR] {
        read_tree(&paths.snap_data, dir, &mut files)?;
    }
    Ok(files)
}

/// Reads the regular files directly in `root/rel` into `files`, keyed `rel/name`.
fn read_tree(root: &Path, rel: &str, files: &mut Files) -> Result<(), BootstrapError> {
    let dir = root.join(rel);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("read", &dir)(e).into()),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("read", &dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        // Follow symlinks: a user may link certs/ca.* to a CA kept elsewhere.
        let ft = fs::metadata(entry.path()).map_err(io_err("read", &entry.path()))?;
        let child = format!("{rel}/{name}");
        if ft.is_dir() {
            read_tree(root, &child, files)?;
        } else if ft.is_file() {
            let data = fs::read(entry.path()).map_err(io_err("read", &entry.path()))?;
            files.insert(child, data);
        }
    }
    Ok(())
}

/// The leaves signed by the cluster CA and the front-proxy CA, with upstream identities.
fn leaves(host: &Host, server: &ServerCertSpec) -> Vec<Leaf> {
    let node = host.node.as_str();
    let client = |name: &str, cn: &str, groups: &[&str]| Leaf {
        name: name.to_string(),
        signer: "ca",
        request: LeafRequest::client(&format!("{name}.crt"), cn, groups, LEAF_DAYS),
    };
    let local_names = vec![node.to_string(), "localhost".to_string()];
    let mut local_ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
    local_ips.extend(host.ips.iter().copied());
    let mut datastore_ips = local_ips.clone();
    datastore_ips.push(IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
    vec![
        Leaf {
            name: "server".into(),
            signer: "ca",
            request: server_request(server),
        },
        client("admin", "admin", &["system:masters"]),
        client("kubelet", &format!("system:node:{node}"), &["system:nodes"]),
        client("controller", "system:kube-controller-manager", &[]),
        client("scheduler", "system:kube-scheduler", &[]),
        client("proxy", "system:kube-proxy", &[]),
        client("dns", "system:kube-dns", &[]),
        client(
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            &["system:masters"],
        ),
        client("apiserver-etcd-client", "kube-apiserver-etcd-client", &[]),
        Leaf {
            name: "kubelet-server".into(),
            signer: "ca",
            request: LeafRequest::server(
                "kubelet-server.crt",
                node,
                &local_names,
                &local_ips,
                false,
                LEAF_DAYS,
            ),
        },
        Leaf {
            name: "datastore".into(),
            signer: "ca",
            request: LeafRequest::server(
                "datastore.crt",
                node,
                &local_names,
                &datastore_ips,
                true,
                LEAF_DAYS,
            ),
        },
        Leaf {
            name: "front-proxy-client".into(),
            signer: "front-proxy-ca",
            request: LeafRequest::client(
                "front-proxy-client.crt",
                "front-proxy-client",
                &[],
                LEAF_DAYS,
            ),
        },
    ]
}

/// The server certificate request the rendered `csr.conf` describes.
fn server_request(spec: &ServerCertSpec) -> LeafRequest {
    let subject = spec
        .subject
        .iter()
        .map(|(f, v)| {
            let t = match f {
                DnField::Country => DnType::CountryName,
                DnField::State => DnType::StateOrProvinceName,
                DnField::Locality => DnType::LocalityName,
                DnField::Organization => DnType::OrganizationName,
                DnField::OrganizationalUnit => DnType::OrganizationalUnitName,
                DnField::CommonName => DnType::CommonName,
            };
            (t, v.clone())
        })
        .collect();
    let sans = spec
        .alt_names
        .iter()
        .filter_map(|a| match a {
            AltName::Dns(d) => d.clone().try_into().ok().map(SanType::DnsName),
            AltName::Ip(ip) => Some(SanType::IpAddress(*ip)),
            AltName::Uri(u) => u.clone().try_into().ok().map(SanType::URI),
            AltName::Email(e) => e.clone().try_into().ok().map(SanType::Rfc822Name),
        })
        .collect();
    let key_usages = spec
        .key_usages
        .iter()
        .map(|k| match k {
            KeyUsage::DigitalSignature => KeyUsagePurpose::DigitalSignature,
            KeyUsage::NonRepudiation => KeyUsagePurpose::ContentCommitment,
            KeyUsage::KeyEncipherment => KeyUsagePurpose::KeyEncipherment,
            KeyUsage::DataEncipherment => KeyUsagePurpose::DataEncipherment,
            KeyUsage::KeyAgreement => KeyUsagePurpose::KeyAgreement,
            KeyUsage::KeyCertSign => KeyUsagePurpose::KeyCertSign,
            KeyUsage::CrlSign => KeyUsagePurpose::CrlSign,
            KeyUsage::EncipherOnly => KeyUsagePurpose::EncipherOnly,
            KeyUsage::DecipherOnly => KeyUsagePurpose::DecipherOnly,
        })
        .collect();
    let ext_key_usages = spec
        .ext_key_usages
        .iter()
        .map(|k| match k {
            ExtKeyUsage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            ExtKeyUsage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
            ExtKeyUsage::CodeSigning => ExtendedKeyUsagePurpose::CodeSigning,
            ExtKeyUsage::EmailProtection => ExtendedKeyUsagePurpose::EmailProtection,
            ExtKeyUsage::TimeStamping => ExtendedKeyUsagePurpose::TimeStamping,
            ExtKeyUsage::OcspSigning => ExtendedKeyUsagePurpose::OcspSigning,
        })
        .collect();
    LeafRequest {
        what: "server.crt".into(),
        subject,
        sans,
        key_usages,
        ext_key_usages,
        days: LEAF_DAYS,
    }
}

/// Which certificates to issue anew even if the current ones are fine, and which leaves may
/// change at all.
#[derive(Debug, Default, Clone, Copy)]
struct Force {
    ca: bool,
    server: bool,
    front_proxy_client: bool,
    /// Only these leaves are checked and re-issued; the others stay as they are (`None`: all).
    only: Option<&'static [&'static str]>,
}

/// Loads the CA `name` from `files`, or issues one when both files are absent (or `force`).
/// Returns the authority and whether it is new.
fn ensure_ca(
    paths: &Paths,
    files: &mut Files,
    name: &str,
    cn: &str,
    force: bool,
    now: OffsetDateTime,
) -> Result<(Authority, bool), BootstrapError> {
    let crt = format!("certs/{name}.crt");
    let key = format!("certs/{name}.key");
    let shown = |rel: &str| paths.data_file(rel).display().to_string();
    match (files.get(&crt), files.get(&key)) {
        (Some(c), Some(k)) if !force => {
            Ok((pki::load_ca(c, k, &shown(&crt), &shown(&key))?, false))
        }
        (Some(_), None) if !force => Err(BootstrapError::HalfCa {
            present: paths.data_file(&crt),
            missing: paths.data_file(&key),
        }),
        (None, Some(_)) if !force => Err(BootstrapError::HalfCa {
            present: paths.data_file(&key),
            missing: paths.data_file(&crt),
        }),
        _ => {
            let (issued, authority) = pki::new_ca(cn, CA_DAYS, now)?;
            put_pair(files, name, issued);
            Ok((authority, true))
        }
    }
}

fn put_pair(files: &mut Files, name: &str, issued: Issued) {
    files.insert(format!("certs/{name}.crt"), issued.cert_pem.into_bytes());
    files.insert(format!("certs/{name}.key"), issued.key_pem.into_bytes());
}

/// The user's template (or the default one) and `csr.conf` rendered from it for `host`.
fn render_csr_conf(
    paths: &Paths,
    old: &Files,
    host: &Host,
) -> Result<(String, csrconf::Rendered), BootstrapError> {
    let template_path = paths.data_file(TEMPLATE).display().to_string();
    let template = match old.get(TEMPLATE) {
        Some(t) => String::from_utf8(t.clone()).map_err(|_| CsrConfError::File {
            file: template_path.clone(),
            msg: "not UTF-8 text".into(),
        })?,
        None => DEFAULT_CSR_TEMPLATE.to_string(),
    };
    let rendered = csrconf::render(&template, &template_path, &host.ips)?;
    Ok((template, rendered))
}

/// The complete, consistent set of files that should exist, given what exists.
fn plan(
    paths: &Paths,
    old: &Files,
    host: &Host,
    force: Force,
    now: OffsetDateTime,
) -> Result<Files, BootstrapError> {
    let mut files = old.clone();
    let (template, rendered) = render_csr_conf(paths, old, host)?;
    files.insert(TEMPLATE.into(), template.into_bytes());
    files.insert(CSR_CONF.into(), rendered.text.into_bytes());

    let (ca, ca_new) = ensure_ca(paths, &mut files, "ca", CA_CN, force.ca, now)?;
    let (fp_ca, fp_new) = ensure_ca(
        paths,
        &mut files,
        "front-proxy-ca",
        FRONT_PROXY_CA_CN,
        false,
        now,
    )?;

    for leaf in leaves(host, &rendered.spec) {
        let (signer, signer_new) = match leaf.signer {
            "front-proxy-ca" => (&fp_ca, fp_new),
            _ => (&ca, ca_new),
        };
        if force
            .only
            .is_some_and(|only| !only.contains(&leaf.name.as_str()))
        {
            continue;
        }
        let forced = (leaf.name == "server" && force.server)
            || (leaf.name == "front-proxy-client" && force.front_proxy_client);
        let crt = format!("certs/{}.crt", leaf.name);
        let key = format!("certs/{}.key", leaf.name);
        let current = match (files.get(&crt), files.get(&key)) {
            (Some(c), Some(k)) => pki::leaf_is_current(c, k, signer, &leaf.request, now),
            _ => false,
        };
        if forced || signer_new || !current {
            let issued = pki::issue(&leaf.request, signer, now)?;
            put_pair(&mut files, &leaf.name, issued);
        }
    }

    match files.get(SA_KEY) {
        Some(k) => {
            // A new key would silently invalidate every service-account token: refuse instead.
            pki::parse_key(k, &paths.data_file(SA_KEY).display().to_string())?;
        }
        None => {
            let pem = pki::new_private_key_pem("serviceaccount.key")?;
            files.insert(SA_KEY.into(), pem.into_bytes());
        }
    }

    files
        .entry(KNOWN_TOKENS.into())
        .or_insert_with(|| credentials::new_known_tokens(&host.node).into_bytes());
    files
        .entry(BASIC_AUTH.into())
        .or_insert_with(|| credentials::new_basic_auth().into_bytes());

    let ca_pem = files.get("certs/ca.crt").cloned().unwrap_or_default();
    let server = credentials::local_server(paths);
    for kc in KUBECONFIGS {
        let cert = files
            .get(&format!("certs/{}.crt", kc.cert))
            .cloned()
            .unwrap_or_default();
        let key = files
            .get(&format!("certs/{}.key", kc.cert))
            .cloned()
            .unwrap_or_default();
        let text = credentials::render_kubeconfig(&server, kc.user, &ca_pem, &cert, &key)?;
        files.insert(format!("credentials/{}", kc.file), text.into_bytes());
    }
    Ok(files)
}

/// Adds to `t` the writes that turn `old` into `new`.
fn diff_into(t: &mut Txn, old: &Files, new: &Files) {
    for (rel, data) in new {
        if old.get(rel) != Some(data) {
            t.write(rel.clone(), data.clone(), mode_for(rel));
        }
    }
}

fn base_txn() -> Txn {
    let mut t = Txn::new();
    t.dir(CERTS_DIR, 0o700).dir(CREDENTIALS_DIR, 0o700);
    t
}

/// Locks an existing `$SNAP_DATA`, finishing or discarding an interrupted transaction.
fn lock_existing(paths: &Paths) -> Result<StateLock, BootstrapError> {
    if !paths.snap_data.is_dir() {
        return Err(BootstrapError::NotBootstrapped(
            paths.data_file("certs/ca.crt"),
        ));
    }
    Ok(StateLock::acquire(&paths.snap_data)?)
}

/// First-start setup: creates whatever is missing or no longer valid, keeps the rest.
pub fn bootstrap(paths: &Paths, host: &Host) -> Result<Bootstrapped, BootstrapError> {
    fs::create_dir_all(&paths.snap_data).map_err(io_err("create", &paths.snap_data))?;
    let lock = StateLock::acquire(&paths.snap_data)?;
    let old = load(paths)?;
    let new = plan(
        paths,
        &old,
        host,
        Force::default(),
        OffsetDateTime::now_utc(),
    )?;
    let mut t = base_txn();
    diff_into(&mut t, &old, &new);
    let written = t.written_paths().map(str::to_string).collect();
    t.commit(&lock)?;
    Ok(Bootstrapped { written })
}

fn require_bootstrapped(paths: &Paths, files: &Files) -> Result<(), BootstrapError> {
    for rel in ["certs/ca.crt", "certs/ca.key"] {
        if !files.contains_key(rel) {
            return Err(BootstrapError::NotBootstrapped(paths.data_file(rel)));
        }
    }
    Ok(())
}

/// Lists, in the backup, the files a refresh created, so that undo removes them.
const BACKUP_CREATED: &str = "certs-backup/created";

/// `refresh-certs --cert <target>`: backs up the current set to `certs-backup/` and issues
/// the target anew (with the CA, everything it signed), in one transaction.
pub fn refresh(
    paths: &Paths,
    host: &Host,
    target: RefreshTarget,
) -> Result<Refreshed, BootstrapError> {
    let lock = lock_existing(paths)?;
    let old = load(paths)?;
    require_bootstrapped(paths, &old)?;
    let force = Force {
        ca: target == RefreshTarget::Ca,
        server: target == RefreshTarget::Server,
        front_proxy_client: target == RefreshTarget::FrontProxyClient,
        only: None,
    };
    let new = plan(paths, &old, host, force, OffsetDateTime::now_utc())?;

    let mut t = base_txn();
    for d in [
        CERTS_BACKUP_DIR,
        "certs-backup/certs",
        "certs-backup/credentials",
    ] {
        t.dir(d, 0o700);
    }
    let mut stale_backup = Files::new();
    read_tree(&paths.snap_data, CERTS_BACKUP_DIR, &mut stale_backup)?;
    for (rel, data) in &old {
        // The template is the user's: undo must not revert their edits to it.
        if rel == TEMPLATE {
            continue;
        }
        let backup_rel = format!("{CERTS_BACKUP_DIR}/{rel}");
        stale_backup.remove(&backup_rel);
        t.write(backup_rel, data.clone(), mode_for(rel));
    }
    let created: String = new
        .keys()
        .filter(|rel| !old.contains_key(*rel))
        .map(|rel| format!("{rel}\n"))
        .collect();
    stale_backup.remove(BACKUP_CREATED);
    t.write(BACKUP_CREATED, created, 0o600);
    for rel in stale_backup.keys() {
        t.remove(rel.clone());
    }
    diff_into(&mut t, &old, &new);
    let written = t
        .written_paths()
        .filter(|p| !p.starts_with(CERTS_BACKUP_DIR))
        .map(str::to_string)
        .collect();
    t.commit(&lock)?;
    Ok(Refreshed {
        written,
        backup_dir: paths.certs_backup_dir(),
        restart: target.components(),
    })
}

/// `refresh-certs --undo`: restores the set the last refresh backed up, removes what it
/// created, and drops the backup.
pub fn undo(paths: &Paths) -> Result<Refreshed, BootstrapError> {
    let lock = lock_existing(paths)?;
    let mut backup = Files::new();
    read_tree(&paths.snap_data, CERTS_BACKUP_DIR, &mut backup)?;
    let prefix = format!("{CERTS_BACKUP_DIR}/");
    let restorable = |rel: &str| {
        rel.strip_prefix(&prefix)
            .filter(|orig| orig.starts_with("certs/") || orig.starts_with("credentials/"))
            .map(str::to_string)
    };
    if !backup.keys().any(|rel| restorable(rel).is_some()) {
        return Err(BootstrapError::NoBackup(paths.certs_backup_dir()));
    }
    let mut t = base_txn();
    for (rel, data) in &backup {
        if let Some(orig) = restorable(rel) {
            t.write(orig.clone(), data.clone(), mode_for(&orig));
        }
        t.remove(rel.clone());
    }
    if let Some(created) = backup.get(BACKUP_CREATED) {
        for rel in String::from_utf8_lossy(created).lines() {
            if rel.starts_with("certs/") || rel.starts_with("credentials/") {
                t.remove(rel.to_string());
            }
        }
    }
    let written = t.written_paths().map(str::to_string).collect();
    t.commit(&lock)?;
    Ok(Refreshed {
        written,
        backup_dir: paths.certs_backup_dir(),
        restart: RefreshTarget::Ca.components(),
    })
}

/// `refresh-certs --check`: days left on the CA, server and front-proxy client certificates.
pub fn check(paths: &Paths) -> Result<Vec<Expiry>, BootstrapError> {
    let _lock = lock_existing(paths)?;
    let now = OffsetDateTime::now_utc();
    let mut out = Vec::new();
    for (label, rel) in [
        ("CA", "certs/ca.crt"),
        ("server", "certs/server.crt"),
        ("front proxy client", "certs/front-proxy-client.crt"),
    ] {
        let path = paths.data_file(rel);
        let pem = read_optional(&path)
            .map_err(io_err("read", &path))?
            .ok_or_else(|| BootstrapError::NotBootstrapped(path.clone()))?;
        let info = pki::inspect(&pem, &path.display().to_string())?;
        out.push(Expiry {
            label,
            days: pki::days_left(info.not_after, now),
        });
    }
    Ok(out)
}

/// The serving certificates whose servers re-read them when they change (`server`: API server,
/// controller manager, scheduler; `kubelet-server`: the kubelet), so [`renew_serving`] may
/// replace them under running components.
pub const RELOADED_SERVING: &[&str] = &["server", "kubelet-server"];

/// What [`renew_serving`] did.
#[derive(Debug)]
pub struct Renewed {
    /// Why, one line per certificate due.
    pub reasons: Vec<String>,
    pub written: Vec<String>,
}

/// Why a serving leaf is due: host addresses it should name but does not, or less than
/// [`pki::RENEW_BEFORE_DAYS`] left. Empty when it is fine.
fn renewal_reasons(
    file: &str,
    pem: &[u8],
    request: &LeafRequest,
    now: OffsetDateTime,
) -> Result<Vec<String>, PkiError> {
    let info = pki::inspect(pem, file)?;
    let mut reasons = Vec::new();
    let missing: Vec<String> = request
        .sans
        .iter()
        .filter_map(|s| match s {
            SanType::IpAddress(ip) if !info.sans.contains(&pki::San::Ip(*ip)) => {
                Some(ip.to_string())
            }
            _ => None,
        })
        .collect();
    if !missing.is_empty() {
        reasons.push(format!("{file} lacks address {}", missing.join(", ")));
    }
    let days = pki::days_left(info.not_after, now);
    if info.not_after - now <= time::Duration::days(pki::RENEW_BEFORE_DAYS) {
        reasons.push(format!(
            "{file} expires in {days} days (renewed within {} days)",
            pki::RENEW_BEFORE_DAYS
        ));
    }
    Ok(reasons)
}

/// Upkeep of a running node (the supervisor's watch): when a serving certificate its servers
/// reload ([`RELOADED_SERVING`]) lacks a host address `csr.conf` would now give it, or is
/// within [`pki::RENEW_BEFORE_DAYS`] of expiry, re-renders `csr.conf` and re-issues those
/// certificates, in one transaction; nothing else changes and no backup is taken (this is
/// not a user's refresh, `--undo` still undoes theirs). `None` when nothing is due. A
/// certificate that does not parse is an error and nothing is written: a hand-placed file is
/// the user's to fix (`refresh-certs`).
pub fn renew_serving(paths: &Paths, host: &Host) -> Result<Option<Renewed>, BootstrapError> {
    renew_serving_at(paths, host, OffsetDateTime::now_utc())
}

fn renew_serving_at(
    paths: &Paths,
    host: &Host,
    now: OffsetDateTime,
) -> Result<Option<Renewed>, BootstrapError> {
    let lock = lock_existing(paths)?;
    let old = load(paths)?;
    require_bootstrapped(paths, &old)?;
    let (_, rendered) = render_csr_conf(paths, &old, host)?;
    let mut reasons = Vec::new();
    for leaf in leaves(host, &rendered.spec)
        .into_iter()
        .filter(|l| RELOADED_SERVING.contains(&l.name.as_str()))
    {
        let rel = format!("certs/{}.crt", leaf.name);
        match old.get(&rel) {
            None => reasons.push(format!("{rel} is missing")),
            Some(pem) => reasons.extend(renewal_reasons(
                &paths.data_file(&rel).display().to_string(),
                pem,
                &leaf.request,
                now,
            )?),
        }
    }
    if reasons.is_empty() {
        return Ok(None);
    }
    let force = Force {
        only: Some(RELOADED_SERVING),
        ..Force::default()
    };
    let new = plan(paths, &old, host, force, now)?;
    let mut t = base_txn();
    diff_into(&mut t, &old, &new);
    let written = t.written_paths().map(str::to_string).collect();
    t.commit(&lock)?;
    Ok(Some(Renewed { reasons, written }))
}

/// The admin kubeconfig, pointed at `server` (for `mk8s config`).
pub fn admin_kubeconfig(paths: &Paths, server: &str) -> Result<String, BootstrapError> {
    let _lock = lock_existing(paths)?;
    let path = paths.data_file("credentials/client.config");
    let data = read_optional(&path)
        .map_err(io_err("read", &path))?
        .ok_or_else(|| BootstrapError::NotBootstrapped(path.clone()))?;
    let text = String::from_utf8_lossy(&data);
    Ok(credentials::with_server(&text, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            node: "node1".into(),
            ips: vec!["192.0.2.2".parse().unwrap()],
        }
    }

    #[test]
    fn bootstrap_twice_writes_nothing_the_second_time() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("data"), dir.path().join("common"));
        let first = bootstrap(&paths, &host()).unwrap();
        assert!(first.written.contains(&"certs/server.crt".to_string()));
        let second = bootstrap(&paths, &host()).unwrap();
        assert!(second.written.is_empty(), "{:?}", second.written);
    }

    #[test]
    fn a_new_host_address_reissues_only_the_certs_that_name_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("data"), dir.path().join("common"));
        bootstrap(&paths, &host()).unwrap();
        let mut moved = host();
        moved.ips.push("192.0.2.3".parse().unwrap());
        let again = bootstrap(&paths, &moved).unwrap();
        let mut written = again.written.clone();
        written.sort();
        assert_eq!(
            written,
            [
                "certs/csr.conf",
                "certs/datastore.crt",
                "certs/datastore.key",
                "certs/kubelet-server.crt",
                "certs/kubelet-server.key",
                "certs/server.crt",
                "certs/server.key"
            ]
        );
    }

    #[test]
    fn renewal_reissues_only_reloaded_serving_certs_and_only_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path().join("data"), dir.path().join("common"));
        bootstrap(&paths, &host()).unwrap();
        assert!(renew_serving(&paths, &host()).unwrap().is_none());

        let mut moved = host();
        moved.ips.push("192.0.2.3".parse().unwrap());
        let done = renew_serving(&paths, &moved).unwrap().unwrap();
        let mut written = done.written.clone();
        written.sort();
        // The datastore's certificate names the address too, but it is not reloaded.
        assert_eq!(
            written,
            [
                "certs/csr.conf",
                "certs/kubelet-server.crt",
                "certs/kubelet-server.key",
                "certs/server.crt",
                "certs/server.key"
            ]
        );
        assert!(
            done.reasons[0].contains("lacks address 192.0.2.3"),
            "{done:?}"
        );
        assert!(renew_serving(&paths, &moved).unwrap().is_none());
        // An address gone is no reason to renew.
        assert!(renew_serving(&paths, &host()).unwrap().is_none());

        let later = OffsetDateTime::now_utc() + time::Duration::days(LEAF_DAYS - 20);
        let done = renew_serving_at(&paths, &moved, later).unwrap().unwrap();
        assert!(done.reasons[0].contains("expires in 19 days"), "{done:?}");
        assert!(done.written.contains(&"certs/server.crt".to_string()));
        assert!(
            !done.written.iter().any(|w| w.contains("admin")),
            "{done:?}"
        );

        std::fs::write(paths.data_file("certs/server.crt"), "garbage").unwrap();
        assert!(renew_serving(&paths, &moved).is_err());
        assert_eq!(
            std::fs::read(paths.data_file("certs/server.crt")).unwrap(),
            b"garbage"
        );
    }

    #[test]
    fn refresh_targets_parse_from_file_names() {
        assert_eq!(
            RefreshTarget::from_file_name("ca.crt"),
            Some(RefreshTarget::Ca)
        );
        assert_eq!(RefreshTarget::from_file_name("server.key"), None);
    }
}
