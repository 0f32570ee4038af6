//! A pod's volumes and environment, as a kubelet prepares them: `emptyDir` and claims become host
//! directories (group-owned by the pod's `fsGroup`), Secrets, ConfigMaps, downward API and projected
//! service-account tokens become files written before the containers start; env comes from values,
//! Secrets, ConfigMaps and field references.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::{PermissionsExt, chown},
    path::{Path, PathBuf},
};

use k8s_openapi::{
    ByteString,
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{
            ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, ObjectFieldSelector, PersistentVolume,
            PersistentVolumeClaim, Pod, Secret, ServiceAccount, Volume,
        },
    },
};
use kube::{Api, Client, ResourceExt, api::PostParams};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{0}")]
    Missing(String),
    #[error("volume {volume}: {message}")]
    Unsupported { volume: String, message: String },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{what}: {source}")]
    Api { what: String, source: kube::Error },
}

/// Whether a prepared volume is still waiting for something (its claim is not bound yet).
#[derive(Debug)]
pub enum Prepared {
    Ready(BTreeMap<String, PathBuf>),
    Waiting(String),
}

fn write(path: &Path, data: &[u8], mode: u32, gid: Option<u32>) -> Result<(), VolumeError> {
    let err = |source| VolumeError::Write { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(err)?;
    }
    fs::write(path, data).map_err(err)?;
    // As a kubelet applies fsGroup to these read-only volumes: the group owns them and may read them.
    let mode = if gid.is_some() { mode | 0o440 } else { mode };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(err)?;
    if let Some(gid) = gid {
        chown(path, None, Some(gid)).map_err(err)?;
    }
    Ok(())
}

/// Gives the tree at `dir` to group `gid`, group-writable, directories set-group-ID (what a kubelet
/// does with `fsGroup`).
pub fn apply_fs_group(dir: &Path, gid: u32) {
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(path) else { continue };
        if meta.file_type().is_symlink() {
            continue;
        }
        let _ = chown(path, None, Some(gid));
        let mode = meta.permissions().mode() & 0o7777;
        let wanted = if meta.is_dir() { mode | 0o2070 } else { mode | 0o060 };
        if wanted != mode {
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(wanted));
        }
    }
}

fn project_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    gid: Option<u32>,
    what: &str,
) -> Result<(), VolumeError> {
    match items {
        Some(items) => {
            for item in items {
                let value = data
                    .get(&item.key)
                    .ok_or_else(|| VolumeError::Missing(format!("{what} has no key {}", item.key)))?;
                write(&dir.join(&item.path), value, item.mode.map(|m| m as u32).unwrap_or(default_mode), gid)?;
            }
        }
        None => {
            for (key, value) in data {
                write(&dir.join(key), value, default_mode, gid)?;
            }
        }
    }
    Ok(())
}

/// Writes the keys of the Secret or ConfigMap (`kind`) `name`, read as `data` (`None`: it does not
/// exist), into `dir`; a missing one is an error unless `optional`.
#[allow(clippy::too_many_arguments)]
fn project_object(
    dir: &Path,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    mode: u32,
    gid: Option<u32>,
    optional: Option<bool>,
    kind: &str,
    name: &str,
) -> Result<(), VolumeError> {
    match data {
        Some(data) => project_keys(dir, &data, items, mode, gid, &format!("{kind} {name}")),
        None if optional == Some(true) => Ok(()),
        None => Err(VolumeError::Missing(format!("{} \"{name}\" not found", kind.to_lowercase()))),
    }
}

async fn secret_data(client: &Client, ns: &str, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
    let secret: Option<Secret> = Api::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|source| VolumeError::Api { what: format!("reading Secret {name}"), source })?;
    Ok(secret.map(|s| {
        let mut data: BTreeMap<String, Vec<u8>> =
            s.data.unwrap_or_default().into_iter().map(|(k, ByteString(v))| (k, v)).collect();
        for (k, v) in s.string_data.unwrap_or_default() {
            data.insert(k, v.into_bytes());
        }
        data
    }))
}

async fn config_map_data(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, VolumeError> {
    let cm: Option<ConfigMap> = Api::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|source| VolumeError::Api { what: format!("reading ConfigMap {name}"), source })?;
    Ok(cm.map(|c| {
        let mut data: BTreeMap<String, Vec<u8>> =
            c.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
        for (k, ByteString(v)) in c.binary_data.unwrap_or_default() {
            data.insert(k, v);
        }
        data
    }))
}

/// The value of a downward-API field of `pod`.
pub fn field(pod: &Pod, selector: &ObjectFieldSelector, pod_ip: &str) -> Result<String, VolumeError> {
    let path = selector.field_path.as_str();
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: Option<&BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => Some(pod_ip.to_string()),
        "status.hostIP" => Some("127.0.0.1".into()),
        _ => keyed("metadata.labels['", meta.labels.as_ref())
            .or_else(|| keyed("metadata.annotations['", meta.annotations.as_ref())),
    };
    value.ok_or_else(|| VolumeError::Missing(format!("the field {path} is not supported by the local node")))
}

fn downward_items(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    pod_ip: &str,
) -> Result<BTreeMap<String, Vec<u8>>, VolumeError> {
    let mut out = BTreeMap::new();
    for item in items {
        let value = match &item.field_ref {
            Some(f) => field(pod, f, pod_ip)?,
            None => {
                return Err(VolumeError::Missing(format!(
                    "downward API item {}: only fieldRef is supported",
                    item.path
                )));
            }
        };
        out.insert(item.path.clone(), value.into_bytes());
    }
    Ok(out)
}

async fn token(
    client: &Client,
    pod: &Pod,
    audience: Option<&str>,
    expiration: Option<i64>,
) -> Result<String, VolumeError> {
    let ns = pod.namespace().unwrap_or_default();
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
            expiration_seconds: expiration.or(Some(3607)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let response = api
        .create_token_request(&sa, &PostParams::default(), &request)
        .await
        .map_err(|source| VolumeError::Api { what: format!("requesting a token for ServiceAccount {sa}"), source })?;
    response.status.map(|s| s.token).ok_or_else(|| VolumeError::Missing(format!("no token issued for {sa}")))
}

/// Prepares every volume of `pod` under `dir` (`dir/<volume>/`), or says what it waits for. Returns
/// each volume's host path.
pub async fn prepare(client: &Client, pod: &Pod, dir: &Path, pod_ip: &str) -> Result<Prepared, VolumeError> {
    let ns = pod.namespace().unwrap_or_default();
    let spec = pod.spec.as_ref().ok_or_else(|| VolumeError::Missing("the pod has no spec".into()))?;
    let fs_group = spec.security_context.as_ref().and_then(|s| s.fs_group).map(|g| g as u32);
    let mut paths = BTreeMap::new();
    for volume in spec.volumes.iter().flatten() {
        match prepare_one(client, pod, &ns, volume, dir, fs_group, pod_ip).await? {
            Some(path) => {
                paths.insert(volume.name.clone(), path);
            }
            None => return Ok(Prepared::Waiting(format!("volume {}: its claim is not bound yet", volume.name))),
        }
    }
    Ok(Prepared::Ready(paths))
}

async fn prepare_one(
    client: &Client,
    pod: &Pod,
    ns: &str,
    volume: &Volume,
    dir: &Path,
    fs_group: Option<u32>,
    pod_ip: &str,
) -> Result<Option<PathBuf>, VolumeError> {
    let own = dir.join(&volume.name);
    let mkdir =
        |path: &Path| fs::create_dir_all(path).map_err(|source| VolumeError::Write { path: path.into(), source });
    if volume.empty_dir.is_some() {
        mkdir(&own)?;
        fs::set_permissions(&own, fs::Permissions::from_mode(0o777))
            .map_err(|source| VolumeError::Write { path: own.clone(), source })?;
        if let Some(gid) = fs_group {
            apply_fs_group(&own, gid);
        }
        return Ok(Some(own));
    }
    // A generic ephemeral volume is a claim the ephemeral-volume controller makes for the pod, named
    // `<pod>-<volume>`; until it exists the pod waits, as a kubelet's does.
    let ephemeral = volume.ephemeral.as_ref().map(|_| format!("{}-{}", pod.name_any(), volume.name));
    if let Some(claim_name) = volume.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone()).or(ephemeral) {
        let pvc: Option<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns)
            .get_opt(&claim_name)
            .await
            .map_err(|source| VolumeError::Api { what: format!("reading claim {claim_name}"), source })?;
        let Some(pvc) = pvc else {
            if volume.ephemeral.is_some() {
                return Ok(None);
            }
            return Err(VolumeError::Missing(format!("persistentvolumeclaim \"{claim_name}\" not found")));
        };
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let Some(pv_name) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|_| bound) else {
            return Ok(None);
        };
        let pv: PersistentVolume = Api::all(client.clone())
            .get(&pv_name)
            .await
            .map_err(|source| VolumeError::Api { what: format!("reading volume {pv_name}"), source })?;
        let spec = pv.spec.unwrap_or_default();
        let path =
            spec.host_path.map(|h| h.path).or(spec.local.map(|l| l.path)).ok_or_else(|| VolumeError::Unsupported {
                volume: volume.name.clone(),
                message: format!("volume {pv_name} is neither hostPath nor local"),
            })?;
        let path = PathBuf::from(path);
        mkdir(&path)?;
        if let Some(gid) = fs_group {
            apply_fs_group(&path, gid);
        }
        return Ok(Some(path));
    }
    if let Some(host) = &volume.host_path {
        return Ok(Some(PathBuf::from(&host.path)));
    }
    let _ = fs::remove_dir_all(&own);
    mkdir(&own)?;
    if let Some(s) = &volume.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = secret_data(client, ns, &name).await?;
        let mode = s.default_mode.map(|m| m as u32).unwrap_or(0o644);
        project_object(&own, data, s.items.as_ref(), mode, fs_group, s.optional, "Secret", &name)?;
        return Ok(Some(own));
    }
    if let Some(c) = &volume.config_map {
        let data = config_map_data(client, ns, &c.name).await?;
        let mode = c.default_mode.map(|m| m as u32).unwrap_or(0o644);
        project_object(&own, data, c.items.as_ref(), mode, fs_group, c.optional, "ConfigMap", &c.name)?;
        return Ok(Some(own));
    }
    if let Some(d) = &volume.downward_api {
        let data = downward_items(pod, d.items.as_deref().unwrap_or_default(), pod_ip)?;
        project_keys(&own, &data, None, d.default_mode.map(|m| m as u32).unwrap_or(0o644), fs_group, "downward API")?;
        return Ok(Some(own));
    }
    if let Some(p) = &volume.projected {
        let mode = p.default_mode.map(|m| m as u32).unwrap_or(0o644);
        for source in p.sources.iter().flatten() {
            if let Some(t) = &source.service_account_token {
                let token = token(client, pod, t.audience.as_deref(), t.expiration_seconds).await?;
                write(&own.join(&t.path), token.as_bytes(), mode, fs_group)?;
            }
            if let Some(c) = &source.config_map {
                let data = config_map_data(client, ns, &c.name).await?;
                project_object(&own, data, c.items.as_ref(), mode, fs_group, c.optional, "ConfigMap", &c.name)?;
            }
            if let Some(s) = &source.secret {
                let data = secret_data(client, ns, &s.name).await?;
                project_object(&own, data, s.items.as_ref(), mode, fs_group, s.optional, "Secret", &s.name)?;
            }
            if let Some(d) = &source.downward_api {
                let data = downward_items(pod, d.items.as_deref().unwrap_or_default(), pod_ip)?;
                project_keys(&own, &data, None, mode, fs_group, "downward API")?;
            }
        }
        return Ok(Some(own));
    }
    Err(VolumeError::Unsupported {
        volume: volume.name.clone(),
        message: "this volume type is not supported by the local node".into(),
    })
}

/// Writes a fresh service-account token over each projected token file of `pod` under `dir`, in place
/// (the files are bind-mounted into running containers), as a kubelet renews them before they expire.
pub async fn refresh_tokens(client: &Client, pod: &Pod, dir: &Path) -> Result<(), VolumeError> {
    let spec = pod.spec.as_ref().ok_or_else(|| VolumeError::Missing("the pod has no spec".into()))?;
    for volume in spec.volumes.iter().flatten() {
        let Some(p) = &volume.projected else { continue };
        for t in p.sources.iter().flatten().filter_map(|s| s.service_account_token.as_ref()) {
            let token = token(client, pod, t.audience.as_deref(), t.expiration_seconds).await?;
            let path = dir.join(&volume.name).join(&t.path);
            fs::write(&path, token.as_bytes()).map_err(|source| VolumeError::Write { path, source })?;
        }
    }
    Ok(())
}

/// The environment of `container` in `pod`, in order, `$(VAR)` references expanded.
pub async fn environment(
    client: &Client,
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
    base: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, VolumeError> {
    let ns = pod.namespace().unwrap_or_default();
    let mut env: Vec<(String, String)> = base;
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(s) = &from.secret_ref {
            match secret_data(client, &ns, &s.name).await? {
                Some(d) => d,
                None if s.optional == Some(true) => BTreeMap::new(),
                None => return Err(VolumeError::Missing(format!("secret \"{}\" not found", s.name))),
            }
        } else if let Some(c) = &from.config_map_ref {
            match config_map_data(client, &ns, &c.name).await? {
                Some(d) => d,
                None if c.optional == Some(true) => BTreeMap::new(),
                None => return Err(VolumeError::Missing(format!("configmap \"{}\" not found", c.name))),
            }
        } else {
            BTreeMap::new()
        };
        for (k, v) in data {
            set(&mut env, format!("{prefix}{k}"), String::from_utf8_lossy(&v).into_owned());
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    field(pod, f, pod_ip)?
                } else if let Some(s) = &from.secret_key_ref {
                    let data = secret_data(client, &ns, &s.name).await?;
                    match key_of(data, &s.key, s.optional, &format!("Secret {ns}/{}", s.name))? {
                        Some(v) => v,
                        None => continue,
                    }
                } else if let Some(c) = &from.config_map_key_ref {
                    let data = config_map_data(client, &ns, &c.name).await?;
                    match key_of(data, &c.key, c.optional, &format!("ConfigMap {ns}/{}", c.name))? {
                        Some(v) => v,
                        None => continue,
                    }
                } else if let Some(r) = &from.resource_field_ref {
                    resource_field(container, &r.resource)
                } else {
                    String::new()
                }
            }
            (Some(v), None) => expand(v, &env),
            (None, None) => String::new(),
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// The value of `key` in `data` (a Secret's or ConfigMap's, `what`), `None` when it is missing and
/// optional.
fn key_of(
    data: Option<BTreeMap<String, Vec<u8>>>,
    key: &str,
    optional: Option<bool>,
    what: &str,
) -> Result<Option<String>, VolumeError> {
    match data.and_then(|d| d.get(key).cloned()) {
        Some(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
        None if optional == Some(true) => Ok(None),
        None => Err(VolumeError::Missing(format!("couldn't find key {key} in {what}"))),
    }
}

/// A container's limit (or request) as an env value: CPU in whole cores rounded up, memory in bytes;
/// without one, the machine's.
fn resource_field(container: &Container, resource: &str) -> String {
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let r = container.resources.as_ref();
    let q = match kind {
        "requests" => r.and_then(|r| r.requests.as_ref()),
        _ => r.and_then(|r| r.limits.as_ref()),
    }
    .and_then(|m| m.get(name))
    .map(|q| q.0.clone());
    match (name, q) {
        ("cpu", Some(q)) => parse_cpu(&q).to_string(),
        ("memory", Some(q)) => parse_bytes(&q).to_string(),
        ("cpu", None) => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).to_string(),
        _ => "0".into(),
    }
}

fn parse_cpu(q: &str) -> u64 {
    match q.strip_suffix('m') {
        Some(milli) => milli.parse::<u64>().map(|m| m.div_ceil(1000)).unwrap_or(1),
        None => q.parse::<f64>().map(|c| c.ceil() as u64).unwrap_or(1),
    }
}

fn parse_bytes(q: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().map(|n| n * factor).unwrap_or(0);
        }
    }
    q.parse().unwrap_or(0)
}

/// Expands `$(VAR)` with earlier variables as Kubernetes does; `$$` escapes, unknown names stay.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x-$(A)-$(B)-$$(A)-$", &env), "x-1-$(B)-$(A)-$");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_cpu("250m"), 1);
        assert_eq!(parse_cpu("2"), 2);
        assert_eq!(parse_bytes("256Mi"), 256 << 20);
    }
}
