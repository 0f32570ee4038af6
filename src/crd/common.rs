//! Parts shared by the custom resources: where a server is, where backups are stored, how Jobs run,
//! and the flat form of replication positions shown in status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::format::manifest::Totals;
use crate::mysql::position::{GtidState, Positions};

/// A key of a Secret in the resource's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

/// The keys of each Secret that exists, by name (values are never kept).
pub type SecretKeys = std::collections::BTreeMap<String, std::collections::BTreeSet<String>>;

impl SecretKeyRef {
    /// Why the key cannot be read, given the Secrets that exist; `field` is where the spec names it.
    pub fn missing_in(&self, field: &str, secrets: &SecretKeys) -> Option<String> {
        match secrets.get(&self.name) {
            None => Some(format!("Secret {} ({field}) not found", self.name)),
            Some(held) if !held.contains(&self.key) => {
                Some(format!("Secret {} has no key {:?} ({field}.key)", self.name, self.key))
            }
            Some(_) => None,
        }
    }
}

/// How the agent connects to the database server.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// Host name or address of the server. Default: the source pod's IP address.
    pub host: Option<String>,
    /// TCP port. Default: 3306.
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// User name. Default: root. mariadb-backup needs RELOAD, PROCESS, LOCK TABLES and BINLOG MONITOR.
    pub user: Option<String>,
    /// Secret key holding the user's password. It reaches the agent as a file, never as a value in the
    /// Job spec.
    pub password_secret: Option<SecretKeyRef>,
}

/// The database server to back up.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSpec {
    /// Name of the database pod, in the resource's namespace. The backup Job runs on its node and mounts
    /// the volume that holds its datadir.
    pub pod: String,
    /// Container of the pod that runs the server. Default: the pod's first container.
    pub container: Option<String>,
    /// Path of the datadir inside the database container.
    #[serde(default = "default_datadir")]
    pub datadir: String,
    /// How to reach the server, for methods that need a running one.
    #[serde(default)]
    pub connection: ConnectionSpec,
    /// Bytes a second read from the server's files, over all of them together: `20Mi`, `500M`, or bytes
    /// (`K`, `M`, `G` are powers of 1000; `Ki`, `Mi`, `Gi` of 1024). Bursts last at most a tenth of a
    /// second. `mariabackup` is held to it by backpressure on its stream. Files taken over from an earlier
    /// backup unread do not count. Unset: no limit.
    #[x_kube(validation = Rule::new(RATE_RULE).message("readRate is bytes a second: 20Mi, 500M or a whole number"))]
    pub read_rate: Option<String>,
}

/// What a rate in bytes a second looks like (the agent's parser accepts these and more).
const RATE_RULE: &str = "self.matches('^[1-9][0-9]*(K|k|Ki|M|Mi|G|Gi)?B?$')";

/// The default datadir.
pub fn default_datadir() -> String {
    "/var/lib/mysql".to_string()
}

/// Where backups are stored.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Storage URL: `s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix`, or
    /// `file:///path` on the volume named by `persistentVolumeClaim`, mounted in the Job at that path.
    #[x_kube(validation = Rule::new("self.matches('^(s3|az|gs|file)://.+')").message("url must start with s3://, az://, gs:// or file://"))]
    pub url: String,
    /// Backend options as object_store configuration keys (`endpoint`, `region`, `allow_http`,
    /// `virtual_hosted_style_request`, `account_name`, …). Credentials are refused here: put them in
    /// `credentialsSecret`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Secret whose keys become the agent's environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, `GOOGLE_SERVICE_ACCOUNT_KEY`, …
    pub credentials_secret: Option<String>,
    /// For `file://` URLs: the PersistentVolumeClaim mounted at the URL's path.
    pub persistent_volume_claim: Option<String>,
    /// zstd level of newly stored chunks, 1 (fastest) to 19 (smallest).
    #[serde(default = "default_compression_level")]
    #[schemars(range(min = 1, max = 19))]
    pub compression_level: i32,
    /// Files or chunks processed at once (also mariadb-backup's `--parallel`).
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1, max = 64))]
    pub parallelism: i32,
    /// Bytes a second over all of a Job's uploads together (backups, the binary-log archiver): `20Mi`,
    /// `500M`, or bytes (`K`, `M`, `G` are powers of 1000; `Ki`, `Mi`, `Gi` of 1024). Bursts last at most
    /// a tenth of a second. Unset: no limit.
    #[x_kube(validation = Rule::new(RATE_RULE).message("rateLimit is bytes a second: 20Mi, 500M or a whole number"))]
    pub rate_limit: Option<String>,
    /// Client-side encryption: every object the Job writes is sealed with this key before it leaves
    /// the pod, and chunk names are keyed hashes that reveal nothing of the data. A prefix holds
    /// objects of one key at a time: an encrypted prefix refuses a Job without its key, and a prefix
    /// in the clear refuses encryption. Object names, sizes and times stay visible.
    pub encryption: Option<EncryptionSpec>,
}

impl StorageSpec {
    /// The names of the Secrets the storage's Jobs mount: credentials and encryption keys.
    pub fn secret_names(&self) -> impl Iterator<Item = String> + '_ {
        let keys = self.encryption.iter().map(|e| e.key_secret.name.clone());
        self.credentials_secret.iter().cloned().chain(keys)
    }

    /// What is missing among the Secrets it names, given the keys of each Secret that exists;
    /// `at` is the field path of this storage (`spec.storage`).
    pub fn missing_secret(&self, at: &str, secrets: &SecretKeys) -> Option<String> {
        if let Some(name) = &self.credentials_secret
            && !secrets.contains_key(name)
        {
            return Some(format!("Secret {name} ({at}.credentialsSecret) not found"));
        }
        let field = format!("{at}.encryption.keySecret");
        self.encryption.as_ref().and_then(|e| e.key_secret.missing_in(&field, secrets))
    }
}

/// The keys of client-side encryption. They reach the agent as files, never as values in a Job spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSpec {
    /// The Secret and key holding the key new objects are sealed with: 32 random bytes as base64
    /// (`openssl rand -base64 32`) or as 64 hex digits. Every other key of that Secret is mounted too,
    /// and opens the objects it sealed: to rotate, move the current key to another name in the Secret
    /// and put the new one under this key; keep the old one there until retention has deleted every
    /// backup it sealed.
    pub key_secret: SecretKeyRef,
}

/// The default zstd level.
pub fn default_compression_level() -> i32 {
    3
}

/// The default parallelism.
pub fn default_parallelism() -> i32 {
    2
}

/// How the agent's Job runs.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobOptions {
    /// Retries of a failed agent pod before the run counts as failed. Default: 1.
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: Option<i32>,
    /// Seconds the Job may run before it is stopped and the run fails. Default: 21600 (6 hours).
    #[schemars(range(min = 60))]
    pub active_deadline_seconds: Option<i64>,
    /// Seconds a finished Job is kept before Kubernetes deletes it. Default: 86400 (one day).
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
    /// CPU and memory of the agent container.
    pub resources: Option<ResourceRequirements>,
}

/// Scratch space of a Job that restores a backup for itself (a drill, a catch-up backup): a volume made
/// from `volumeClaimTemplate` for the pod's lifetime (a generic ephemeral volume: sized, on the storage
/// class you choose), or else an `emptyDir` on the node, limited to `sizeLimit`. It must hold the
/// backup's restored data.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScratchSpec {
    /// The claim of a volume that lives as long as the Job's pod.
    pub volume_claim_template: Option<k8s_openapi::api::core::v1::PersistentVolumeClaimTemplate>,
    /// Without a claim template: the most the `emptyDir` may hold (e.g. `50Gi`); the kubelet evicts the
    /// pod past it.
    pub size_limit: Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
}

/// Replication positions at a backup's consistent point, flattened for `kubectl`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PositionsStatus {
    /// `mariadb` or `mysql`.
    pub flavor: Option<String>,
    /// Server version.
    pub version: Option<String>,
    /// `@@server_id`.
    pub server_id: Option<i64>,
    /// `@@server_uuid` (MySQL).
    pub server_uuid: Option<String>,
    /// Executed GTIDs: MariaDB `gtid_binlog_pos` (e.g. `0-1-42`) or MySQL `gtid_executed` set.
    pub gtid_executed: Option<String>,
    /// GTIDs no longer in the server's binary logs: MariaDB position at the start of the oldest binary
    /// log, or MySQL `gtid_purged`.
    pub gtid_purged: Option<String>,
    /// Binary log file.
    pub binlog_file: Option<String>,
    /// Byte offset in the binary log file.
    pub binlog_position: Option<i64>,
}

impl From<&Positions> for PositionsStatus {
    fn from(p: &Positions) -> Self {
        let (executed, purged) = match &p.gtid {
            Some(GtidState::Mariadb { binlog_pos, purged, .. }) => {
                (Some(binlog_pos.to_string()), purged.as_ref().map(ToString::to_string))
            }
            Some(GtidState::Mysql { executed, purged }) => {
                (Some(executed.to_string()), purged.as_ref().map(ToString::to_string))
            }
            None => (None, None),
        };
        Self {
            flavor: p.flavor.map(|f| match f {
                crate::mysql::position::Flavor::Mariadb => "mariadb".to_string(),
                crate::mysql::position::Flavor::Mysql => "mysql".to_string(),
            }),
            version: p.version.clone(),
            server_id: p.server_id.map(i64::from),
            server_uuid: p.server_uuid.clone(),
            gtid_executed: executed,
            gtid_purged: purged,
            binlog_file: p.binlog.as_ref().map(|b| b.file.clone()),
            binlog_position: p.binlog.as_ref().and_then(|b| i64::try_from(b.position).ok()),
        }
    }
}

/// Sizes of a backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SizesStatus {
    /// Number of files.
    pub files: i64,
    /// Bytes of original data.
    pub data_bytes: i64,
    /// Bytes the backup's distinct chunks take in storage.
    pub stored_bytes: i64,
    /// Bytes this run uploaded (the rest was already stored).
    pub uploaded_bytes: i64,
    /// Bytes not even read: files the previous backup holds unchanged, taken over from its manifest
    /// (the `myrocks` method's SST files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_over_bytes: Option<i64>,
}

impl From<&Totals> for SizesStatus {
    fn from(t: &Totals) -> Self {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            files: n(t.files),
            data_bytes: n(t.data_bytes),
            stored_bytes: n(t.stored_bytes),
            uploaded_bytes: n(t.uploaded_bytes),
            taken_over_bytes: (t.taken_over_bytes > 0).then(|| n(t.taken_over_bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::position::{BinlogCoordinate, Flavor};

    #[test]
    fn positions_flatten_for_status() {
        let p = Positions {
            flavor: Some(Flavor::Mariadb),
            version: Some("10.11.19-MariaDB".into()),
            server_id: Some(7),
            server_uuid: None,
            gtid: Some(GtidState::Mariadb {
                binlog_pos: "0-7-42".parse().unwrap(),
                current_pos: None,
                purged: Some("0-7-3".parse().unwrap()),
            }),
            binlog: Some(BinlogCoordinate { file: "mysql-bin.000004".into(), position: 1287 }),
        };
        let s = PositionsStatus::from(&p);
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({
                "flavor": "mariadb", "version": "10.11.19-MariaDB", "serverId": 7, "gtidExecuted": "0-7-42",
                "gtidPurged": "0-7-3", "binlogFile": "mysql-bin.000004", "binlogPosition": 1287
            })
        );
        assert_eq!(PositionsStatus::from(&Positions::default()), PositionsStatus::default());
    }

    #[test]
    fn sizes_say_what_was_taken_over_only_when_something_was() {
        let t = Totals { files: 3, data_bytes: 1000, stored_bytes: 400, uploaded_bytes: 40, ..Default::default() };
        let json = |t: &Totals| serde_json::to_value(SizesStatus::from(t)).unwrap();
        assert_eq!(
            json(&t),
            serde_json::json!({"files": 3, "dataBytes": 1000, "storedBytes": 400, "uploadedBytes": 40})
        );
        let t = Totals { taken_over_bytes: 900, ..t };
        assert_eq!(json(&t)["takenOverBytes"], 900);
    }
}

/// How a backup reads the server's files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupMethod {
    /// The best method the server supports, chosen by the backup Job when it starts: for MariaDB,
    /// `myrocks` when the RocksDB engine holds more than half of the datadir (binary logs not counted),
    /// `mariabackup` otherwise. `status.method` says which ran.
    #[default]
    Auto,
    /// File copy of a datadir nothing writes to (a stopped server, or a volume restored from a snapshot).
    Cold,
    /// `mariadb-backup --backup --stream=mbstream`, run in the database's own image.
    Mariabackup,
    /// An incremental: the closed binary logs after the newest backup in the same storage.
    Binlog,
    /// A full backup that spares the server: the newest full backup in the same storage is restored into
    /// scratch space (`spec.scratch`) by a Job on any node, caught up with the server by replication, and
    /// copied. The server serves only a replication stream. Needs a previous full backup.
    Catchup,
    /// MariaDB with the RocksDB engine: RocksDB checkpoints in rounds, each SST file that the previous
    /// backup of the server in the same storage holds (same name and size) taken over without being read;
    /// the rest of the server (InnoDB, Aria, the binary-log position) copied by `mariadb-backup` under the
    /// same `BACKUP STAGE BLOCK_COMMIT` as the final checkpoint. Runs in the database's own image.
    Myrocks,
}

/// What happens to the stored backup when the MySQLBackup object is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the backup in storage.
    #[default]
    Retain,
    /// Delete the manifest and every chunk no other backup uses.
    Delete,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Phase {
    /// Accepted; the Job is not running yet.
    Pending,
    /// The Job is running.
    Running,
    /// Finished successfully.
    Complete,
    /// Finished unsuccessfully; see the conditions.
    Failed,
}
