//! Pod volumes on the host, under `<root-dir>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>`:
//! emptyDir (disk or a tmpfs for `medium: Memory`), configMap, secret, downwardAPI and projected
//! (service-account token through TokenRequest, configMaps, secrets, downward API) written
//! with upstream's atomic-writer layout (`..data` symlink swapped in one rename, so running
//! containers see an update all at once), and hostPath with its type checks. Owns only the
//! pod directories under its root; never writes API objects.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Secret, ServiceAccount, Volume,
};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::env::{EnvContext, field_ref, resource_ref};

/// A volume that could not be set up, worded as upstream's FailedMount event.
#[derive(Debug, Clone)]
pub struct MountError {
    pub volume: String,
    pub message: String,
}

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MountVolume.SetUp failed for volume \"{}\" : {}",
            self.volume, self.message
        )
    }
}

/// One pod's volumes: remembers what it wrote so unchanged content is not rewritten, and
/// when each service-account token must be renewed.
#[derive(Default)]
pub struct PodVolumes {
    written: HashMap<String, u64>,
    tokens: HashMap<String, (String, Instant, Duration)>,
    tmpfs: Vec<PathBuf>,
}

pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("pods").join(uid)
}

fn volume_dir(root: &Path, uid: &str, plugin: &str, name: &str) -> PathBuf {
    pod_dir(root, uid)
        .join("volumes")
        .join(format!("kubernetes.io~{plugin}"))
        .join(name)
}

type Payload = BTreeMap<String, (Vec<u8>, u32)>;

fn fingerprint(p: &Payload) -> u64 {
    let mut h = crc32fast::Hasher::new();
    for (k, (v, m)) in p {
        h.update(k.as_bytes());
        h.update(&[0]);
        h.update(v);
        h.update(&m.to_le_bytes());
    }
    (h.finalize() as u64) << 32 | p.len() as u64
}

/// Upstream's atomic writer: payload into a fresh `..<stamp>` dir, `..data` swapped by rename,
/// visible names are symlinks into `..data`.
fn write_atomic_dir(dir: &Path, payload: &Payload) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stamp = format!(
        "..{}",
        time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    );
    let ts_dir = dir.join(&stamp);
    std::fs::create_dir(&ts_dir)?;
    std::fs::set_permissions(&ts_dir, std::fs::Permissions::from_mode(0o755))?;
    for (rel, (data, mode)) in payload {
        let p = ts_dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, data)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    let tops: std::collections::BTreeSet<String> = payload
        .keys()
        .map(|k| k.split('/').next().unwrap_or(k).to_string())
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(top), &link)?;
        }
    }
    // Names no longer in the payload disappear.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !tops.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old
        && old != Path::new(&stamp)
    {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn items_payload(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    what: &str,
    optional: bool,
    out: &mut Payload,
) -> Result<(), String> {
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        let mode = it.mode.map(|m| m as u32).unwrap_or(default_mode);
                        out.insert(it.path.clone(), (v.clone(), mode));
                    }
                    None if optional => {}
                    None => {
                        return Err(format!(
                            "configmap references non-existent config key: {}",
                            it.key
                        )
                        .replace("configmap", what));
                    }
                }
            }
        }
        _ => {
            for (k, v) in data {
                out.insert(k.clone(), (v.clone(), default_mode));
            }
        }
    }
    Ok(())
}

fn configmap_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut m: BTreeMap<String, Vec<u8>> = cm
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.clone().unwrap_or_default() {
        m.insert(k, v.0);
    }
    m
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut m: BTreeMap<String, Vec<u8>> = s
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in s.string_data.clone().unwrap_or_default() {
        m.insert(k, v.into_bytes());
    }
    m
}

/// A configMap's keys (or `items`) into `out`; a missing one is an error unless optional.
async fn configmap_into(
    client: &Client,
    ns: &str,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    mode: u32,
    optional: bool,
    out: &mut Payload,
) -> Result<(), String> {
    match Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(obj) => items_payload(
            &configmap_data(&obj),
            items,
            mode,
            "configmap",
            optional,
            out,
        ),
        None if optional => Ok(()),
        None => Err(format!("configmap \"{name}\" not found")),
    }
}

/// A secret's keys (or `items`) into `out`; a missing one is an error unless optional.
async fn secret_into(
    client: &Client,
    ns: &str,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    mode: u32,
    optional: bool,
    out: &mut Payload,
) -> Result<(), String> {
    match Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(obj) => items_payload(&secret_data(&obj), items, mode, "secret", optional, out),
        None if optional => Ok(()),
        None => Err(format!("secret \"{name}\" not found")),
    }
}

fn downward_payload(
    ctx: &EnvContext<'_>,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    out: &mut Payload,
) -> Result<(), String> {
    let spec = ctx.pod.spec.clone().unwrap_or_default();
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            field_ref(ctx, &f.field_path)?
        } else if let Some(r) = &it.resource_field_ref {
            let c = spec
                .containers
                .iter()
                .find(|c| Some(&c.name) == r.container_name.as_ref())
                .or(spec.containers.first())
                .cloned()
                .unwrap_or_default();
            resource_ref(
                ctx,
                &c,
                &r.resource,
                r.divisor.as_ref().map(|d| d.0.as_str()),
            )?
        } else {
            String::new()
        };
        let mode = it.mode.map(|m| m as u32).unwrap_or(default_mode);
        out.insert(it.path.clone(), (value.into_bytes(), mode));
    }
    Ok(())
}

impl PodVolumes {
    /// Sets up every volume of the pod (idempotent; rewrites only what changed). Returns the
    /// host path of each volume by name.
    pub async fn setup(
        &mut self,
        client: &Client,
        root: &Path,
        ctx: &EnvContext<'_>,
    ) -> Result<HashMap<String, PathBuf>, MountError> {
        let pod = ctx.pod;
        let uid = pod.uid().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let mut out = HashMap::new();
        for v in spec.volumes.clone().unwrap_or_default() {
            let path = self
                .setup_one(client, root, &uid, ctx, &v)
                .await
                .map_err(|message| MountError {
                    volume: v.name.clone(),
                    message,
                })?;
            out.insert(v.name.clone(), path);
        }
        Ok(out)
    }

    async fn setup_one(
        &mut self,
        client: &Client,
        root: &Path,
        uid: &str,
        ctx: &EnvContext<'_>,
        v: &Volume,
    ) -> Result<PathBuf, String> {
        let ns = ctx.pod.namespace().unwrap_or_default();
        let io = |e: std::io::Error| e.to_string();
        if let Some(hp) = &v.host_path {
            return host_path(&hp.path, hp.type_.as_deref().unwrap_or("")).map(PathBuf::from);
        }
        if let Some(ed) = &v.empty_dir {
            let dir = volume_dir(root, uid, "empty-dir", &v.name);
            if !dir.exists() {
                std::fs::create_dir_all(&dir).map_err(io)?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                    .map_err(io)?;
                if ed.medium.as_deref() == Some("Memory") {
                    let size = ed
                        .size_limit
                        .as_ref()
                        .and_then(|q| crate::common::quantity::parse(&q.0))
                        .map(|b| format!("size={}", b as u64));
                    nix::mount::mount(
                        Some("tmpfs"),
                        &dir,
                        Some("tmpfs"),
                        nix::mount::MsFlags::empty(),
                        size.as_deref(),
                    )
                    .map_err(|e| format!("mount tmpfs on {}: {e}", dir.display()))?;
                    self.tmpfs.push(dir.clone());
                }
            }
            return Ok(dir);
        }
        let (plugin, payload) = if let Some(cm) = &v.config_map {
            let mut p = Payload::new();
            let mode = cm.default_mode.unwrap_or(0o644) as u32;
            let optional = cm.optional == Some(true);
            configmap_into(
                client,
                &ns,
                &cm.name,
                cm.items.as_ref(),
                mode,
                optional,
                &mut p,
            )
            .await?;
            ("configmap", p)
        } else if let Some(s) = &v.secret {
            let mut p = Payload::new();
            let name = s.secret_name.clone().unwrap_or_default();
            let mode = s.default_mode.unwrap_or(0o644) as u32;
            let optional = s.optional == Some(true);
            secret_into(client, &ns, &name, s.items.as_ref(), mode, optional, &mut p).await?;
            ("secret", p)
        } else if let Some(d) = &v.downward_api {
            let mut p = Payload::new();
            let mode = d.default_mode.unwrap_or(0o644) as u32;
            downward_payload(ctx, &d.items.clone().unwrap_or_default(), mode, &mut p)?;
            ("downward-api", p)
        } else if let Some(pr) = &v.projected {
            let mut p = Payload::new();
            let mode = pr.default_mode.unwrap_or(0o644) as u32;
            for src in pr.sources.clone().unwrap_or_default() {
                if let Some(t) = &src.service_account_token {
                    let token = self
                        .token(client, ctx, t.audience.clone(), t.expiration_seconds)
                        .await?;
                    p.insert(t.path.clone(), (token.into_bytes(), mode));
                }
                if let Some(cm) = &src.config_map {
                    let optional = cm.optional == Some(true);
                    configmap_into(
                        client,
                        &ns,
                        &cm.name,
                        cm.items.as_ref(),
                        mode,
                        optional,
                        &mut p,
                    )
                    .await?;
                }
                if let Some(s) = &src.secret {
                    let optional = s.optional == Some(true);
                    secret_into(
                        client,
                        &ns,
                        &s.name,
                        s.items.as_ref(),
                        mode,
                        optional,
                        &mut p,
                    )
                    .await?;
                }
                if let Some(d) = &src.downward_api {
                    downward_payload(ctx, &d.items.clone().unwrap_or_default(), mode, &mut p)?;
                }
            }
            ("projected", p)
        } else if let Some(claim) = &v.persistent_volume_claim {
            return claim_path(client, &ns, &claim.claim_name).await;
        } else {
            return Err("unsupported volume type".into());
        };
        let dir = volume_dir(root, uid, plugin, &v.name);
        let fp = fingerprint(&payload);
        if self.written.get(&v.name) != Some(&fp) || !dir.join("..data").exists() {
            write_atomic_dir(&dir, &payload).map_err(io)?;
            self.written.insert(v.name.clone(), fp);
        }
        Ok(dir)
    }

    /// A bound service-account token, renewed after 80% of its life as upstream does.
    async fn token(
        &mut self,
        client: &Client,
        ctx: &EnvContext<'_>,
        audience: Option<String>,
        expiration: Option<i64>,
    ) -> Result<String, String> {
        let pod = ctx.pod;
        let ns = pod.namespace().unwrap_or_default();
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let key = format!(
            "{sa}/{}/{:?}",
            audience.clone().unwrap_or_default(),
            expiration
        );
        if let Some((tok, at, ttl)) = self.tokens.get(&key)
            && at.elapsed() < ttl.mul_f64(0.8)
        {
            return Ok(tok.clone());
        }
        let mut spec = json!({
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "uid": pod.uid()},
            "expirationSeconds": expiration.unwrap_or(3607),
        });
        if let Some(a) = audience.filter(|a| !a.is_empty()) {
            spec["audiences"] = json!([a]);
        }
        let req =
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        let tr: TokenRequest = api
            .create_subresource("token", &sa, &PostParams::default(), &req)
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) => s.message,
                other => other.to_string(),
            })?;
        let tok = tr.status.map(|s| s.token).unwrap_or_default();
        let ttl = Duration::from_secs(expiration.unwrap_or(3607).max(600) as u64);
        self.tokens.insert(key, (tok.clone(), Instant::now(), ttl));
        Ok(tok)
    }

    /// Unmounts what was mounted and removes the pod's directory.
    pub fn teardown(&mut self, root: &Path, uid: &str) {
        for dir in self.tmpfs.drain(..) {
            if let Err(e) = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!("unmount {}: {e}", dir.display());
            }
        }
        let dir = pod_dir(root, uid);
        // Mounts a previous kubelet made (this one does not know them) go too.
        unmount_under(&dir);
        // Never follow a mount: only remove when nothing below is still mounted.
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("remove {}: {e}", dir.display());
        }
    }
}

/// Unmounts every mount point below `dir` (deepest first), as /proc/self/mountinfo lists them.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        if let Err(e) = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!("unmount {}: {e}", p.display());
        }
    }
}

/// The host directory of a claim bound to a hostPath (or local) PersistentVolume.
async fn claim_path(client: &Client, ns: &str, claim: &str) -> Result<PathBuf, String> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get_opt(claim)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
    let phase = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if volume.is_empty() {
        return Err(format!(
            "PVC {ns}/{claim} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName (\"\")"
        ));
    }
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get_opt(&volume)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolume \"{volume}\" not found"))?;
    let spec = pv.spec.unwrap_or_default();
    if let Some(hp) = spec.host_path {
        return host_path(&hp.path, hp.type_.as_deref().unwrap_or("")).map(PathBuf::from);
    }
    if let Some(local) = spec.local {
        return host_path(&local.path, "Directory").map(PathBuf::from);
    }
    Err(format!(
        "persistentvolume \"{volume}\" is neither hostPath nor local, which is all mk8s can mount"
    ))
}

/// hostPath with upstream's type checks and its error words.
fn host_path(path: &str, kind: &str) -> Result<String, String> {
    let p = Path::new(path);
    let md = std::fs::metadata(p);
    use std::os::unix::fs::FileTypeExt;
    match kind {
        "" => {}
        "DirectoryOrCreate" => {
            if md.is_err() {
                std::fs::create_dir_all(p).map_err(|e| e.to_string())?;
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| e.to_string())?;
            } else if !md.as_ref().is_ok_and(|m| m.is_dir()) {
                return Err(format!(
                    "hostPath type check failed: {path} is not a directory"
                ));
            }
        }
        "Directory" => {
            if !md.as_ref().is_ok_and(|m| m.is_dir()) {
                return Err(format!(
                    "hostPath type check failed: {path} is not a directory"
                ));
            }
        }
        "FileOrCreate" => {
            if md.is_err() {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| e.to_string())?;
            } else if !md.as_ref().is_ok_and(|m| m.is_file()) {
                return Err(format!("hostPath type check failed: {path} is not a file"));
            }
        }
        "File" => {
            if !md.as_ref().is_ok_and(|m| m.is_file()) {
                return Err(format!("hostPath type check failed: {path} is not a file"));
            }
        }
        "Socket" => {
            if !md.as_ref().is_ok_and(|m| m.file_type().is_socket()) {
                return Err(format!(
                    "hostPath type check failed: {path} is not a socket file"
                ));
            }
        }
        "CharDevice" => {
            if !md.as_ref().is_ok_and(|m| m.file_type().is_char_device()) {
                return Err(format!(
                    "hostPath type check failed: {path} is not a character device"
                ));
            }
        }
        "BlockDevice" => {
            if !md.as_ref().is_ok_and(|m| m.file_type().is_block_device()) {
                return Err(format!(
                    "hostPath type check failed: {path} is not a block device"
                ));
            }
        }
        other => return Err(format!("invalid HostPathType {other:?}")),
    }
    Ok(path.to_string())
}
