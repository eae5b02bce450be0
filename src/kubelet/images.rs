//! Local container images, since no registry is ever reachable: builds OCI image archives in
//! pure Rust (the pod sandbox image among them), and imports and lists images in containerd's
//! CRI namespace (`k8s.io`) through `ctr`.
//!
//! Owns only the archive files it is asked to write. It must not touch containerd's state
//! directory (everything goes through its socket), nor pods, containers or snapshots.
//!
//! An archive is an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) that also
//! carries a docker-style `manifest.json`, the same kind `tools/busybox-image.sh` writes, so
//! `ctr images import` and docker-archive readers both accept it.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aws_lc_rs::digest;
use flate2::{Compression, GzBuilder};
use serde_json::{Value, json};
use tar::{EntryType, Header};

use crate::common::fsutil::{self, IoError, io_err};

/// The pod sandbox ("pause") image; containerd's CRI `sandbox_image` must name it.
pub const SANDBOX_IMAGE: &str = "mk8s.local/pause:3.10";
/// containerd namespace of the CRI plugin: images the kubelet can run live here.
pub const NAMESPACE: &str = "k8s.io";
/// Where Debian's busybox-static puts its binary.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// The containerd client, found on PATH.
const CTR: &str = "ctr";
/// How long `ctr` may take to reach containerd before it gives up (not the whole command:
/// importing a large archive legitimately takes longer).
const CONNECT_TIMEOUT: &str = "10s";
/// `list` is quick; a hung containerd must not hang the caller forever.
const LIST_TIMEOUT: Duration = Duration::from_secs(60);
/// Same PATH as the upstream busybox image.
const IMAGE_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Fixed timestamp for every tar entry and the config, so builds are reproducible.
const EPOCH_RFC3339: &str = "1970-01-01T00:00:00Z";

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The sandbox's PID 1: sleeps forever, reaps whatever gets reparented to it (`wait` with no
/// argument waits for any child), and exits 0 on TERM or INT. `sleep` runs in the background
/// because the shell only runs a trap once its foreground command has finished. Uses
/// `busybox sleep` rather than a `sleep` symlink, so the image needs only `/bin/sh`.
pub const PAUSE_SCRIPT: &str = "trap 'kill $! 2>/dev/null; exit 0' TERM INT; \
     while :; do /bin/busybox sleep 86400 & wait; done";

/// What can go wrong building, importing or listing images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("invalid image name {name:?}: {why}")]
    BadName { name: String, why: &'static str },
    #[error("invalid path {path:?} in an image layer: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("cannot add {path:?} to an image layer: {cause}")]
    Layer { path: String, cause: io::Error },
    #[error("cannot write the archive {}: {cause}", .path.display())]
    Archive { path: PathBuf, cause: io::Error },
    #[error("{} is missing: install busybox-static (apt-get install busybox-static)", .0.display())]
    NoBusybox(PathBuf),
    #[error("cannot run {CTR} (is containerd installed?): {0}")]
    CtrSpawn(io::Error),
    #[error("ctr {action} failed: {stderr}")]
    Ctr { action: String, stderr: String },
    #[error("ctr {action} did not finish in {} s", .timeout.as_secs())]
    CtrTimeout { action: String, timeout: Duration },
    #[error("importing {} did not create {name}", .archive.display())]
    NotImported { archive: PathBuf, name: String },
    #[error("building the sandbox image was interrupted: {0}")]
    Interrupted(String),
}

/// A sha256 content digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        let d = digest::digest(&digest::SHA256, data);
        let hex = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Self { hex }
    }

    /// The 64 hex digits, as in `blobs/sha256/<hex>`.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// One entry of an image's single layer. Paths are relative to the root (a leading `/` is
/// ignored); missing parent directories are added with mode 0755. Owner is always 0:0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerEntry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        contents: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl LayerEntry {
    fn path(&self) -> &str {
        match self {
            Self::Dir { path, .. } | Self::File { path, .. } | Self::Symlink { path, .. } => path,
        }
    }
}

/// The parts of an OCI image config mk8s sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// OCI architecture name (`amd64`, `arm64`, …).
    pub architecture: String,
    /// OCI variant (`v7` for 32-bit arm), if any.
    pub variant: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// Empty: the runtime's default (`/`).
    pub working_dir: String,
    /// Empty: root.
    pub user: String,
}

impl Default for ImageConfig {
    /// This machine's platform, the usual PATH, no command.
    fn default() -> Self {
        let (architecture, variant) = host_platform();
        Self {
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: vec![IMAGE_PATH_ENV.to_string()],
            working_dir: String::new(),
            user: String::new(),
        }
    }
}

/// One row of `ctr images ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    /// Full reference, e.g. `docker.io/library/busybox:1.35`.
    pub name: String,
    /// Manifest (or index) digest, `sha256:…`.
    pub digest: String,
    /// As ctr prints it, e.g. `1.0 MiB`.
    pub size: String,
}

/// OCI (GOARCH-style) architecture and variant of the machine mk8s runs on.
fn host_platform() -> (&'static str, Option<&'static str>) {
    let little = cfg!(target_endian = "little");
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", None),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" if little => ("ppc64le", None),
        "mips64" if little => ("mips64le", None),
        "loongarch64" => ("loong64", None),
        // s390x and riscv64 are spelled the same in both worlds.
        other => (other, None),
    }
}

/// The full reference containerd's CRI looks an image up by, and its tag:
/// `busybox:1.35` → (`docker.io/library/busybox:1.35`, `1.35`). No tag means `latest`.
pub fn normalize_name(name: &str) -> Result<(String, String), ImageError> {
    let bad = |why| ImageError::BadName {
        name: name.to_string(),
        why,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.contains('@') {
        return Err(bad("a digest reference cannot name a built image"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':'))
    {
        return Err(bad("only letters, digits and . _ - / : are allowed"));
    }
    let mut full = match name.split_once('/') {
        None => format!("docker.io/library/{name}"),
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => name.to_string(),
        Some(_) => format!("docker.io/{name}"),
    };
    let last = full.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') {
        full.push_str(":latest");
    }
    let (repo, tag) = full
        .rsplit_once(':')
        .ok_or_else(|| bad("no tag"))
        .map(|(r, t)| (r.to_string(), t.to_string()))?;
    if tag.is_empty() || tag.len() > 128 || tag.contains('/') {
        return Err(bad("the tag must be 1 to 128 characters"));
    }
    if repo.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad("the repository must be lowercase"));
    }
    if repo.split('/').any(str::is_empty) {
        return Err(bad("empty path component"));
    }
    Ok((full, tag))
}

/// Relative, `/`-separated, no `.`/`..` components.
fn clean_path(path: &str) -> Result<String, ImageError> {
    let bad = |why| ImageError::BadPath {
        path: path.to_string(),
        why,
    };
    if path.contains('\0') {
        return Err(bad("contains NUL"));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Err(bad("names the root"));
    }
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(bad("contains . or .."));
    }
    Ok(parts.join("/"))
}

/// A layer entry with its path cleaned; parents added implicitly are `Dir` 0755.
enum Node<'a> {
    Dir(u32),
    File(u32, &'a [u8]),
    Symlink(&'a str),
}

fn base_header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

/// The uncompressed layer tar: sorted by path, parents before children, fixed metadata.
fn layer_tar(entries: &[LayerEntry]) -> Result<Vec<u8>, ImageError> {
    let mut nodes: BTreeMap<String, Node<'_>> = BTreeMap::new();
    for e in entries {
        let path = clean_path(e.path())?;
        let node = match e {
            LayerEntry::Dir { mode, .. } => Node::Dir(*mode),
            LayerEntry::File { mode, contents, .. } => Node::File(*mode, contents),
            LayerEntry::Symlink { target, .. } => Node::Symlink(target),
        };
        if nodes.insert(path.clone(), node).is_some() {
            return Err(ImageError::BadPath {
                path,
                why: "appears twice",
            });
        }
    }
    let explicit: Vec<String> = nodes.keys().cloned().collect();
    for path in explicit {
        let mut parent = path.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            parent = p;
            match nodes.get(parent) {
                Some(Node::Dir(_)) => {}
                Some(_) => {
                    return Err(ImageError::BadPath {
                        path: path.clone(),
                        why: "a parent is not a directory",
                    });
                }
                None => {
                    nodes.insert(parent.to_string(), Node::Dir(0o755));
                }
            }
        }
    }

    let mut b = tar::Builder::new(Vec::new());
    for (path, node) in &nodes {
        let res = match node {
            Node::Dir(mode) => {
                let mut h = base_header(EntryType::Directory, *mode, 0);
                b.append_data(&mut h, format!("{path}/"), io::empty())
            }
            Node::File(mode, data) => {
                let mut h = base_header(EntryType::Regular, *mode, data.len() as u64);
                b.append_data(&mut h, path, *data)
            }
            Node::Symlink(target) => {
                let mut h = base_header(EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, path, target)
            }
        };
        // Writing to a Vec only fails on a name tar cannot store.
        res.map_err(|cause| ImageError::Layer {
            path: path.clone(),
            cause,
        })?;
    }
    b.into_inner().map_err(|cause| ImageError::Layer {
        path: "the end-of-archive marker".into(),
        cause,
    })
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    // GzBuilder writes mtime 0 and no file name: same input, same bytes.
    let mut gz = GzBuilder::new().write(Vec::new(), Compression::default());
    gz.write_all(data)?;
    gz.finish()
}

fn platform_json(config: &ImageConfig) -> Value {
    let mut p = json!({ "architecture": config.architecture, "os": "linux" });
    if let Some(v) = &config.variant {
        p["variant"] = json!(v);
    }
    p
}

fn config_json(config: &ImageConfig, diff_id: &Digest) -> Vec<u8> {
    let mut inner = serde_json::Map::new();
    if !config.env.is_empty() {
        inner.insert("Env".into(), json!(config.env));
    }
    if !config.entrypoint.is_empty() {
        inner.insert("Entrypoint".into(), json!(config.entrypoint));
    }
    if !config.cmd.is_empty() {
        inner.insert("Cmd".into(), json!(config.cmd));
    }
    if !config.working_dir.is_empty() {
        inner.insert("WorkingDir".into(), json!(config.working_dir));
    }
    if !config.user.is_empty() {
        inner.insert("User".into(), json!(config.user));
    }
    let mut v = platform_json(config);
    v["created"] = json!(EPOCH_RFC3339);
    v["config"] = Value::Object(inner);
    v["rootfs"] = json!({ "type": "layers", "diff_ids": [diff_id.to_string()] });
    v["history"] = json!([{ "created": EPOCH_RFC3339, "created_by": "mk8s" }]);
    // serde_json's maps are sorted: the same config always gives the same bytes.
    v.to_string().into_bytes()
}

/// Writes an OCI image archive holding one image named `name` (normalized: `busybox:1.35`
/// becomes `docker.io/library/busybox:1.35`) with one gzip layer made of `layer_files`.
/// Deterministic: the same input gives the same bytes. `out` is replaced atomically.
/// Returns the manifest digest (what `ctr images ls` shows).
pub fn build_oci_archive(
    out: &Path,
    name: &str,
    layer_files: &[LayerEntry],
    config: &ImageConfig,
) -> Result<Digest, ImageError> {
    let (full_name, tag) = normalize_name(name)?;
    let archive_err = |cause| ImageError::Archive {
        path: out.to_path_buf(),
        cause,
    };

    let layer = layer_tar(layer_files)?;
    let diff_id = Digest::of(&layer);
    let layer_gz = gzip(&layer).map_err(archive_err)?;
    drop(layer);
    let layer_digest = Digest::of(&layer_gz);

    let config_blob = config_json(config, &diff_id);
    let config_digest = Digest::of(&config_blob);

    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {
            "mediaType": MEDIA_CONFIG,
            "digest": config_digest.to_string(),
            "size": config_blob.len(),
        },
        "layers": [{
            "mediaType": MEDIA_LAYER_GZIP,
            "digest": layer_digest.to_string(),
            "size": layer_gz.len(),
        }],
    })
    .to_string()
    .into_bytes();
    let manifest_digest = Digest::of(&manifest);

    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": manifest_digest.to_string(),
            "size": manifest.len(),
            // containerd names the image after the first; OCI tools after the second.
            "annotations": {
                ANNOTATION_CONTAINERD_NAME: full_name,
                ANNOTATION_REF_NAME: tag,
            },
            "platform": platform_json(config),
        }],
    })
    .to_string();
    let docker_manifest = json!([{
        "Config": format!("blobs/sha256/{}", config_digest.hex()),
        "RepoTags": [full_name],
        "Layers": [format!("blobs/sha256/{}", layer_digest.hex())],
    }])
    .to_string();

    let mut blobs: BTreeMap<&str, &[u8]> = BTreeMap::new();
    blobs.insert(layer_digest.hex(), &layer_gz);
    blobs.insert(config_digest.hex(), &config_blob);
    blobs.insert(manifest_digest.hex(), &manifest);

    // Entries in sorted order, as the script writes them.
    let mut b = tar::Builder::new(Vec::new());
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut h = base_header(EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, dir, io::empty())
            .map_err(archive_err)?;
    }
    let files = blobs
        .iter()
        .map(|(hex, data)| (format!("blobs/sha256/{hex}"), *data))
        .chain([
            ("index.json".to_string(), index.as_bytes()),
            ("manifest.json".to_string(), docker_manifest.as_bytes()),
            (
                "oci-layout".to_string(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.as_slice(),
            ),
        ]);
    for (path, data) in files {
        let mut h = base_header(EntryType::Regular, 0o644, data.len() as u64);
        b.append_data(&mut h, &path, data).map_err(archive_err)?;
    }
    let bytes = b.into_inner().map_err(archive_err)?;

    // `x.tar` has the parent "", which cannot be opened to fsync.
    let out = match out.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new(".").join(out),
        _ => out.to_path_buf(),
    };
    fsutil::write_atomic(&out, &bytes, 0o644).map_err(io_err("write", &out))?;
    tracing::debug!(archive = %out.display(), image = %full_name, digest = %manifest_digest, "built image archive");
    Ok(manifest_digest)
}

/// Writes the pod sandbox image [`SANDBOX_IMAGE`]: `busybox` (the host's static busybox) as
/// `/bin/busybox`, `/bin/sh`, and an entrypoint that stays alive as PID 1 until SIGTERM.
pub fn build_sandbox_image(out: &Path, busybox: &Path) -> Result<(), ImageError> {
    let contents = match std::fs::read(busybox) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ImageError::NoBusybox(busybox.to_path_buf()));
        }
        Err(e) => return Err(io_err("read", busybox)(e).into()),
    };
    let dir = |path: &str, mode| LayerEntry::Dir {
        path: path.into(),
        mode,
    };
    let entries = [
        LayerEntry::File {
            path: "bin/busybox".into(),
            mode: 0o755,
            contents,
        },
        LayerEntry::Symlink {
            path: "bin/sh".into(),
            target: "busybox".into(),
        },
        // Mount points runc would otherwise create in the container's writable layer.
        dir("dev", 0o755),
        dir("proc", 0o755),
        dir("sys", 0o755),
        dir("etc", 0o755),
        dir("tmp", 0o1777),
    ];
    let config = ImageConfig {
        entrypoint: vec!["/bin/sh".into(), "-c".into(), PAUSE_SCRIPT.into()],
        ..ImageConfig::default()
    };
    build_oci_archive(out, SANDBOX_IMAGE, &entries, &config).map(|_| ())
}

/// Runs `ctr --address SOCKET --namespace k8s.io ARGS…`; its stdout, or its stderr as the error.
async fn ctr(
    socket: &Path,
    action: &str,
    args: &[&OsStr],
    timeout: Option<Duration>,
) -> Result<String, ImageError> {
    let mut cmd = tokio::process::Command::new(CTR);
    cmd.arg("--address")
        .arg(socket)
        .args([
            "--connect-timeout",
            CONNECT_TIMEOUT,
            "--namespace",
            NAMESPACE,
        ])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tracing::debug!(?cmd, "running ctr");
    let run = cmd.output();
    let output = match timeout {
        Some(t) => tokio::time::timeout(t, run)
            .await
            .map_err(|_| ImageError::CtrTimeout {
                action: action.to_string(),
                timeout: t,
            })?,
        None => run.await,
    }
    .map_err(ImageError::CtrSpawn)?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut line = one_line(&stderr);
        if line.is_empty() {
            line = format!("exited with {}", output.status);
        }
        return Err(ImageError::Ctr {
            action: action.to_string(),
            stderr: line,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Names ctr reports unpacking: `unpacking NAME (sha256:…)...done`, one a line.
fn parse_import_output(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("unpacking "))
        .filter_map(|rest| {
            rest.split_once(" (sha256:")
                .map(|(name, _)| name.to_string())
        })
        .collect()
}

/// Imports an image archive (OCI layout or `docker save` tar) into the CRI namespace and
/// unpacks it for the default snapshotter, as the CRI plugin needs. Returns the names imported.
pub async fn import(socket: &Path, archive: &Path) -> Result<Vec<String>, ImageError> {
    let mut path = OsString::from(archive.as_os_str());
    // ctr reads stdin for `-`; a file really named so must not be mistaken for it.
    if path == "-" {
        path = OsString::from("./-");
    }
    // Unpacking is ctr's default (for this machine's platform); it prints one
    // `unpacking NAME (DIGEST)...done` line an image, which is how we learn the names.
    let stdout = ctr(
        socket,
        "images import",
        &[OsStr::new("images"), OsStr::new("import"), &path],
        None,
    )
    .await?;
    let names = parse_import_output(&stdout);
    tracing::info!(archive = %archive.display(), images = ?names, "imported images");
    Ok(names)
}

/// Rows of `ctr images ls` (columns REF TYPE DIGEST SIZE PLATFORMS LABELS, SIZE being two
/// words such as `1.0 MiB`), without the header and without `sha256:…` ID names.
fn parse_list_output(stdout: &str) -> Vec<ImageRow> {
    stdout
        .lines()
        .filter_map(|l| {
            let t: Vec<&str> = l.split_whitespace().collect();
            let (name, digest) = (*t.first()?, *t.get(2)?);
            if name == "REF" || name.starts_with("sha256:") || !digest.starts_with("sha256:") {
                return None;
            }
            let size = match (t.get(3), t.get(4)) {
                (Some(n), Some(unit)) if unit.ends_with('B') => format!("{n} {unit}"),
                (Some(n), _) => n.to_string(),
                _ => String::new(),
            };
            Some(ImageRow {
                name: name.to_string(),
                digest: digest.to_string(),
                size,
            })
        })
        .collect()
}

/// The images in the CRI namespace, by name.
pub async fn list(socket: &Path) -> Result<Vec<ImageRow>, ImageError> {
    let stdout = ctr(
        socket,
        "images ls",
        &[OsStr::new("images"), OsStr::new("ls")],
        Some(LIST_TIMEOUT),
    )
    .await?;
    Ok(parse_list_output(&stdout))
}

/// Makes sure containerd has [`SANDBOX_IMAGE`]: unless it lists it already, builds the archive
/// in `work_dir` from the host's busybox-static and imports it. Every pod needs it, and it
/// cannot be pulled.
pub async fn ensure_sandbox(socket: &Path, work_dir: &Path) -> Result<(), ImageError> {
    if list(socket).await?.iter().any(|r| r.name == SANDBOX_IMAGE) {
        tracing::debug!(image = SANDBOX_IMAGE, "sandbox image present");
        return Ok(());
    }
    std::fs::create_dir_all(work_dir).map_err(io_err("create", work_dir))?;
    let archive = work_dir.join("mk8s-pause.tar");
    let build_at = archive.clone();
    // Reading and compressing ~2 MB: keep it off the async workers.
    tokio::task::spawn_blocking(move || build_sandbox_image(&build_at, Path::new(HOST_BUSYBOX)))
        .await
        .map_err(|e| ImageError::Interrupted(e.to_string()))??;
    let imported = import(socket, &archive).await;
    // The archive is rebuilt whenever it is needed; leaving it would only waste space.
    if let Err(e) = std::fs::remove_file(&archive) {
        tracing::warn!(archive = %archive.display(), error = %e, "cannot remove the sandbox archive");
    }
    if !imported?.iter().any(|n| n == SANDBOX_IMAGE) {
        return Err(ImageError::NotImported {
            archive,
            name: SANDBOX_IMAGE.to_string(),
        });
    }
    tracing::info!(image = SANDBOX_IMAGE, "imported the sandbox image");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn entries_of(tar_bytes: &[u8]) -> BTreeMap<String, (EntryType, u32, Vec<u8>, String)> {
        let mut a = tar::Archive::new(tar_bytes);
        let mut out = BTreeMap::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            // Directories carry a trailing `/`, as GNU tar writes them.
            let path = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            let kind = e.header().entry_type();
            let mode = e.header().mode().unwrap();
            assert_eq!(e.header().uid().unwrap(), 0);
            assert_eq!(e.header().gid().unwrap(), 0);
            assert_eq!(e.header().mtime().unwrap(), 0);
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(path, (kind, mode, data, link));
        }
        out
    }

    fn sample() -> Vec<LayerEntry> {
        vec![
            LayerEntry::File {
                path: "/bin/tool".into(),
                mode: 0o755,
                contents: b"#!/bin/sh\necho hi\n".to_vec(),
            },
            LayerEntry::Symlink {
                path: "usr/bin/env".into(),
                target: "../../bin/tool".into(),
            },
            LayerEntry::Dir {
                path: "tmp".into(),
                mode: 0o1777,
            },
        ]
    }

    fn json_of(data: &[u8]) -> Value {
        serde_json::from_slice(data).unwrap()
    }

    #[test]
    fn names_are_normalized_like_docker() {
        let n = |s| normalize_name(s).unwrap();
        assert_eq!(
            n("busybox:1.35"),
            ("docker.io/library/busybox:1.35".into(), "1.35".into())
        );
        assert_eq!(
            n("busybox"),
            ("docker.io/library/busybox:latest".into(), "latest".into())
        );
        assert_eq!(n("me/app:v1").0, "docker.io/me/app:v1");
        assert_eq!(n(SANDBOX_IMAGE).0, SANDBOX_IMAGE);
        assert_eq!(n("localhost:5000/x").0, "localhost:5000/x:latest");
        assert_eq!(n("localhost/x:Tag_1").1, "Tag_1");
        for bad in ["", "Busybox:1", "a@sha256:00", "a b", "a//b:1", "a:"] {
            assert!(normalize_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn layer_paths_are_checked() {
        let file = |p: &str| LayerEntry::File {
            path: p.into(),
            mode: 0o644,
            contents: vec![],
        };
        for bad in ["", "/", "a/../b", "./a"] {
            assert!(layer_tar(&[file(bad)]).is_err(), "{bad:?}");
        }
        assert!(layer_tar(&[file("a"), file("/a")]).is_err());
        assert!(layer_tar(&[file("a"), file("a/b")]).is_err());
    }

    #[test]
    fn layer_is_sorted_with_parents_and_fixed_metadata() {
        let layer = layer_tar(&sample()).unwrap();
        let e = entries_of(&layer);
        let paths: Vec<&str> = e.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            ["bin", "bin/tool", "tmp", "usr", "usr/bin", "usr/bin/env"]
        );
        assert_eq!(e["bin"].0, EntryType::Directory);
        assert_eq!(e["tmp"].1, 0o1777);
        assert_eq!(e["bin/tool"].1, 0o755);
        assert_eq!(e["bin/tool"].2, b"#!/bin/sh\necho hi\n");
        assert_eq!(e["usr/bin/env"].0, EntryType::Symlink);
        assert_eq!(e["usr/bin/env"].3, "../../bin/tool");
        // Archive order is the sorted order, parents first.
        let mut a = tar::Archive::new(layer.as_slice());
        let order: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
    }

    #[test]
    fn archive_is_a_consistent_oci_layout_and_docker_archive() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("img.tar");
        let config = ImageConfig {
            cmd: vec!["sh".into()],
            ..ImageConfig::default()
        };
        let digest = build_oci_archive(&out, "busybox:1.35", &sample(), &config).unwrap();
        let e = entries_of(&std::fs::read(&out).unwrap());
        assert_eq!(e["oci-layout"].2, br#"{"imageLayoutVersion":"1.0.0"}"#);

        // Every blob is stored under its own digest.
        for (path, (kind, _, data, _)) in &e {
            if let Some(hex) = path.strip_prefix("blobs/sha256/")
                && *kind == EntryType::Regular
            {
                assert_eq!(Digest::of(data).hex(), hex);
            }
        }
        let blob = |d: &str| &e[&format!("blobs/sha256/{}", d.trim_start_matches("sha256:"))].2;

        let index = json_of(&e["index.json"].2);
        let m = &index["manifests"][0];
        assert_eq!(m["digest"], digest.to_string());
        assert_eq!(
            m["annotations"][ANNOTATION_CONTAINERD_NAME],
            "docker.io/library/busybox:1.35"
        );
        assert_eq!(m["annotations"][ANNOTATION_REF_NAME], "1.35");
        assert_eq!(m["platform"]["architecture"], host_platform().0);

        let manifest_bytes = blob(m["digest"].as_str().unwrap());
        assert_eq!(m["size"], manifest_bytes.len());
        let manifest = json_of(manifest_bytes);
        let cfg = json_of(blob(manifest["config"]["digest"].as_str().unwrap()));
        assert_eq!(cfg["os"], "linux");
        assert_eq!(cfg["config"]["Cmd"], json!(["sh"]));
        assert_eq!(cfg["config"]["Env"], json!([IMAGE_PATH_ENV]));

        // diff_id is the digest of the uncompressed layer.
        let layer_gz = blob(manifest["layers"][0]["digest"].as_str().unwrap());
        let mut layer = Vec::new();
        flate2::read::GzDecoder::new(layer_gz.as_slice())
            .read_to_end(&mut layer)
            .unwrap();
        assert_eq!(cfg["rootfs"]["diff_ids"][0], Digest::of(&layer).to_string());
        assert!(entries_of(&layer).contains_key("bin/tool"));

        let docker = json_of(&e["manifest.json"].2);
        assert_eq!(
            docker[0]["RepoTags"],
            json!(["docker.io/library/busybox:1.35"])
        );
        assert_eq!(
            docker[0]["Config"],
            format!(
                "blobs/sha256/{}",
                manifest["config"]["digest"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:")
            )
        );
    }

    #[test]
    fn builds_are_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
        let c = ImageConfig::default();
        let da = build_oci_archive(&a, "x/y:1", &sample(), &c).unwrap();
        let db = build_oci_archive(&b, "x/y:1", &sample(), &c).unwrap();
        assert_eq!(da, db);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        // Replacing leaves no temp files behind.
        build_oci_archive(&a, "x/y:1", &sample(), &c).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn system_tar_reads_the_archive_and_layer() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("img.tar");
        build_oci_archive(&out, "x:1", &sample(), &ImageConfig::default()).unwrap();
        let x = dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        let st = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&out)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap();
        assert!(st.success());
        let index = json_of(&std::fs::read(x.join("index.json")).unwrap());
        let mdigest = index["manifests"][0]["digest"].as_str().unwrap();
        let manifest = json_of(&std::fs::read(x.join("blobs/sha256").join(&mdigest[7..])).unwrap());
        let layer = x
            .join("blobs/sha256")
            .join(&manifest["layers"][0]["digest"].as_str().unwrap()[7..]);
        let listing = std::process::Command::new("tar")
            .arg("-tvzf")
            .arg(&layer)
            .output()
            .unwrap();
        assert!(listing.status.success());
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(text.contains("usr/bin/env -> ../../bin/tool"), "{text}");
        assert!(text.contains("drwxrwxrwt"), "{text}");
    }

    #[test]
    fn sandbox_image_runs_busybox_sh_forever() {
        let dir = tempfile::tempdir().unwrap();
        let fake_busybox = dir.path().join("busybox");
        std::fs::write(&fake_busybox, b"\x7fELF fake").unwrap();
        let out = dir.path().join("pause.tar");
        build_sandbox_image(&out, &fake_busybox).unwrap();
        let e = entries_of(&std::fs::read(&out).unwrap());
        let index = json_of(&e["index.json"].2);
        assert_eq!(
            index["manifests"][0]["annotations"][ANNOTATION_CONTAINERD_NAME],
            SANDBOX_IMAGE
        );
        assert_eq!(
            index["manifests"][0]["annotations"][ANNOTATION_REF_NAME],
            "3.10"
        );
        let missing = build_sandbox_image(&out, &dir.path().join("nope")).unwrap_err();
        assert!(matches!(missing, ImageError::NoBusybox(_)));
        assert!(missing.to_string().contains("busybox-static"));
    }

    #[test]
    fn pause_script_stays_up_until_term() {
        // The real shell semantics, with the host's sh: alive after a while, exit 0 on TERM.
        if !Path::new(HOST_BUSYBOX).exists() {
            return;
        }
        let mut child = std::process::Command::new(HOST_BUSYBOX)
            .args(["sh", "-c", PAUSE_SCRIPT])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(child.try_wait().unwrap().is_none());
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(0));
    }

    #[test]
    fn ctr_output_is_parsed() {
        let import = "unpacking docker.io/library/busybox:1.35 (sha256:4306)...done\n\
                      unpacking mk8s.local/pause:3.10 (sha256:ab12)...done\n";
        assert_eq!(
            parse_import_output(import),
            ["docker.io/library/busybox:1.35", "mk8s.local/pause:3.10"]
        );
        let ls = "REF                            TYPE                                       DIGEST      SIZE    PLATFORMS   LABELS \n\
                  docker.io/library/busybox:1.35 application/vnd.oci.image.manifest.v1+json sha256:4306 1.0 MiB linux/amd64 io.cri-containerd.image=managed \n\
                  sha256:75780a                  application/vnd.oci.image.manifest.v1+json sha256:4306 1.0 MiB linux/amd64 - \n";
        assert_eq!(
            parse_list_output(ls),
            [ImageRow {
                name: "docker.io/library/busybox:1.35".into(),
                digest: "sha256:4306".into(),
                size: "1.0 MiB".into(),
            }]
        );
    }
}
