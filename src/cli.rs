//! The command line: every subcommand and flag, as clap parses them. `main.rs` dispatches.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use mysql_backup_operator::agent::{AgentError, ArchiveChoice};
use mysql_backup_operator::datapath::pitr::Tools;
use mysql_backup_operator::encryption::Keyring;
use mysql_backup_operator::format::manifest::MethodKind;
use mysql_backup_operator::storage::{RetryPolicy, Storage, parse_option};
use mysql_backup_operator::throttle::ByteRate;

/// Physical backups of MySQL and MariaDB to object storage: a Kubernetes operator and a standalone agent.
#[derive(Parser)]
#[command(name = "mysql-backup-operator", version, about)]
pub struct Cli {
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, global = true, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// `--method`: a method, or `auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodChoice {
    /// Chosen by asking the server.
    Auto,
    /// This one.
    Kind(MethodKind),
}

impl ValueEnum for MethodChoice {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            Self::Auto,
            Self::Kind(MethodKind::Cold),
            Self::Kind(MethodKind::Mariabackup),
            Self::Kind(MethodKind::Binlog),
            Self::Kind(MethodKind::Catchup),
            Self::Kind(MethodKind::Myrocks),
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        match self {
            Self::Auto => Some(clap::builder::PossibleValue::new("auto").help("The best method the server supports")),
            Self::Kind(kind) => kind.to_possible_value(),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// The data path: back up, list, verify and restore (inside Jobs, or on any host).
    #[command(subcommand)]
    Agent(Box<AgentCommand>),
    /// Run the operator: reconcile the custom resources (in the operator Deployment).
    Controller {
        /// The operator's own image, run by init containers and by methods that need no server tools.
        #[arg(long, env = "OPERATOR_IMAGE")]
        operator_image: String,
        /// Address of /healthz, /readyz and /metrics.
        #[arg(long, env = "LISTEN_ADDRESS", default_value = "0.0.0.0:8080")]
        listen: std::net::SocketAddr,
        /// Run without leader election: only for a single replica, or outside a cluster.
        #[arg(long)]
        no_leader_election: bool,
        /// Name of the Lease the replicas compete for.
        #[arg(long, env = "LEASE_NAME", default_value = "mysql-backup-operator")]
        lease_name: String,
        /// Namespace of the Lease. Default: the pod's own namespace.
        #[arg(long, env = "POD_NAMESPACE")]
        lease_namespace: Option<String>,
        /// This replica's identity in the Lease. Default: the host name (the pod name in a cluster).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
    },
    /// Print the CustomResourceDefinitions (the YAML committed under crds/).
    Crd,
    /// Copy this binary into a directory (the init container of agent Jobs).
    Install {
        /// Target directory.
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Take a backup of a datadir into storage.
    Backup(BackupArgs),
    /// List the complete backups in storage.
    List(ListArgs),
    /// Re-read every chunk of a backup and check every hash.
    Verify(VerifyArgs),
    /// Restore a backup into an empty directory.
    Restore(RestoreArgs),
    /// Prove a backup restorable: restore it into scratch space, start a private server on it, check
    /// every table and its position, then remove the scratch data. The outcome is stored beside the
    /// backup (`list` shows it); a failed drill exits with an error naming what failed.
    Drill(DrillArgs),
    /// Delete a backup: its manifest first (it stops being listed), then every chunk no backup
    /// references. An interrupted deletion is finished by running it again.
    Delete(DeleteArgs),
    /// Apply a retention policy: delete the backups it does not keep, then every chunk no backup
    /// references. Only backups carrying every --tag are considered.
    Prune(PruneArgs),
    /// Continuous binary-log archiving.
    #[command(subcommand)]
    Binlog(BinlogCommand),
}

#[derive(Subcommand)]
pub enum BinlogCommand {
    /// Stream the server's binary log into an archive, segment by segment, until stopped (SIGTERM).
    /// Resumes where the archive ends.
    Archive(ArchiveArgs),
    /// Show an archive: its extent and every gap. Fails when it has a gap.
    Status(ArchiveStatusArgs),
}

#[derive(Args)]
pub struct ArchiveArgs {
    /// Server to stream from: mysql://user@host:port. The user needs REPLICATION SLAVE and BINLOG
    /// MONITOR (MariaDB). The password comes from MYSQL_PWD or --mysql-password-file.
    #[arg(long, env = "MYSQL_URL")]
    pub mysql_url: String,
    /// File holding the server password.
    #[arg(long, env = "MYSQL_PASSWORD_FILE")]
    pub mysql_password_file: Option<PathBuf>,
    /// Archive name: the segments go under binlogs/<archive>/ in the storage.
    #[arg(long)]
    pub archive: String,
    /// Store a segment once its first transaction is this many seconds old: the most an archiver's
    /// own crash can leave out of the archive (a server crash leaves out nothing it had received).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub segment_seconds: u64,
    /// Store a segment once it holds this many MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub segment_mib: u64,
    /// Server id this replica registers with; must differ from every server and replica of the
    /// topology. Default: derived from the archive name, in 3000000000..3999999999.
    #[arg(long)]
    pub replica_server_id: Option<u32>,
    /// Where an empty archive starts (a MariaDB GTID position). Default: the start of the oldest
    /// binary log the server still has. Ignored when the archive has segments.
    #[arg(long)]
    pub from: Option<String>,
    /// Address of /status (JSON), /metrics and /healthz, e.g. 0.0.0.0:8081.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Also write the JSON summary to this file when stopped.
    #[arg(long)]
    pub summary_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct ArchiveStatusArgs {
    /// Archive name.
    #[arg(long)]
    pub archive: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Keep the N newest backups.
    #[arg(long, default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest backup of each of the N newest hours that have one.
    #[arg(long, default_value_t = 0)]
    pub keep_hourly: u32,
    /// Keep the newest backup of each of the N newest days that have one.
    #[arg(long, default_value_t = 0)]
    pub keep_daily: u32,
    /// Keep the newest backup of each of the N newest ISO weeks that have one.
    #[arg(long, default_value_t = 0)]
    pub keep_weekly: u32,
    /// Keep the newest backup of each of the N newest months that have one.
    #[arg(long, default_value_t = 0)]
    pub keep_monthly: u32,
    /// Keep every backup younger than this (e.g. 720h, 30d, 2w).
    #[arg(long)]
    pub max_age: Option<String>,
    /// IANA time zone whose hours, days, weeks and months the rules count. Default: UTC.
    #[arg(long)]
    pub time_zone: Option<String>,
    /// Only backups whose manifest has this tag, as key=value. Repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Also delete the segments of this binary-log archive that the oldest kept full backup already
    /// holds (no kept backup can replay them).
    #[arg(long)]
    pub archive: Option<String>,
    /// Print what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also write the JSON summary to this file (e.g. /dev/termination-log in a Job).
    #[arg(long)]
    pub summary_file: Option<PathBuf>,
}

pub fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}

#[derive(Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Id of the backup to delete (`latest` is refused: a deletion names its backup).
    #[arg(long)]
    pub backup: String,
    /// Succeed when the backup is already gone (for retried clean-ups).
    #[arg(long)]
    pub ignore_missing: bool,
    /// Also write the JSON summary to this file (e.g. /dev/termination-log in a Job).
    #[arg(long)]
    pub summary_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct StorageArgs {
    /// Where backups live: file:///dir (or a plain path), s3://bucket/prefix, az://container/prefix,
    /// gs://bucket/prefix. Credentials come from the environment (AWS_*, AZURE_STORAGE_*, GOOGLE_*).
    #[arg(long, env = "BACKUP_STORAGE", default_value = "./backups")]
    pub storage: String,
    /// Backend option as key=value (object_store keys: endpoint, region, allow_http,
    /// virtual_hosted_style_request, account_name, …). Repeatable. Credentials are refused here.
    #[arg(long = "storage-option", value_name = "KEY=VALUE")]
    pub storage_options: Vec<String>,
    /// Seconds one storage request is retried before the operation fails.
    #[arg(long, default_value_t = 180)]
    pub storage_retry_timeout: u64,
    /// Bytes a second over every upload together (20MiB, 20Mi, 500M, or bytes); bursts last at most a
    /// tenth of a second.
    #[arg(long, value_name = "RATE")]
    pub max_upload_rate: Option<ByteRate>,
    /// A file holding an encryption key: 32 random bytes as base64 (openssl rand -base64 32) or 64 hex
    /// digits. Every object written is sealed with the first one given; objects are opened with
    /// whichever key sealed them, so give the new key first and the old ones after it while backups
    /// they sealed remain. Repeatable.
    #[arg(long = "encryption-key-file", value_name = "PATH")]
    pub encryption_key_files: Vec<PathBuf>,
    /// A directory whose every file (but hidden ones) is a key that opens older objects, after the
    /// --encryption-key-file ones: a mounted Kubernetes Secret holding the current and the earlier keys.
    #[arg(long = "encryption-key-dir", value_name = "DIR", requires = "encryption_key_files")]
    pub encryption_key_dir: Option<PathBuf>,
}

impl StorageArgs {
    pub fn open(&self) -> Result<Storage, AgentError> {
        let options = self.storage_options.iter().map(|o| parse_option(o)).collect::<Result<Vec<_>, _>>()?;
        let storage = Storage::open(
            &self.storage,
            &options,
            RetryPolicy { timeout: Duration::from_secs(self.storage_retry_timeout) },
        )?;
        let storage = match self.max_upload_rate {
            Some(rate) => storage.with_upload_limit(rate),
            None => storage,
        };
        Ok(match Keyring::read(&self.encryption_key_files, self.encryption_key_dir.as_deref())? {
            Some(ring) => storage.with_keyring(ring),
            None => storage,
        })
    }
}

#[derive(Args)]
pub struct CommonArgs {
    /// Files or chunks processed at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Seconds between progress log lines when stderr is not a terminal.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub progress_interval: u64,
    /// Also write the JSON summary to this file (e.g. /dev/termination-log in a Job).
    #[arg(long)]
    pub summary_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct BackupArgs {
    /// How to read the server's files; `auto` asks the server (MariaDB: `myrocks` when RocksDB holds most
    /// of the datadir, `mariabackup` otherwise).
    #[arg(long, value_enum)]
    pub method: MethodChoice,
    /// The server's datadir.
    #[arg(long, default_value = "/var/lib/mysql")]
    pub datadir: PathBuf,
    /// Binary log directory, when outside the datadir (cold method), or elsewhere than the server says
    /// (binlog method; default: the directory of the server's @@log_bin_basename).
    #[arg(long)]
    pub binlog_dir: Option<PathBuf>,
    /// Server to back up: mysql://user@host:port or mysql://user@localhost?socket=/path. The password
    /// comes from MYSQL_PWD or --mysql-password-file, never from the URL.
    #[arg(long, env = "MYSQL_URL")]
    pub mysql_url: Option<String>,
    /// File holding the server password.
    #[arg(long, env = "MYSQL_PASSWORD_FILE")]
    pub mysql_password_file: Option<PathBuf>,
    /// Option file for mariadb-backup (e.g. the server's my.cnf); default: the system's option files.
    #[arg(long)]
    pub mariabackup_defaults_file: Option<PathBuf>,
    /// mariadb-backup binary.
    #[arg(long, default_value = "mariadb-backup")]
    pub mariabackup_path: String,
    /// zstd level of new chunks (1 fastest … 19 smallest).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compression_level: i32,
    /// Chunk size in KiB (64 KiB … 64 MiB).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(64..=65536))]
    pub chunk_size_kib: u32,
    /// Chunks held in memory at once (default: 4 per --parallel).
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Bytes a second read from the server's files, over every file together (20MiB, 20Mi, 500M, or
    /// bytes); mariadb-backup gets its own --throttle too. Files taken over from an earlier backup are
    /// not read and do not count.
    #[arg(long, value_name = "RATE")]
    pub max_read_rate: Option<ByteRate>,
    /// Copy a datadir even if a running server seems to use it (cold method).
    #[arg(long)]
    pub force: bool,
    /// For --method binlog: back up the transactions after this GTID position (MariaDB `0-1-42,1-2-7`
    /// or a MySQL GTID set), or `auto`: after the end of the newest backup in the storage.
    #[arg(long, default_value = "auto")]
    pub from: String,
    /// For --method catchup: where the scratch datadir goes (a new directory under it, removed at the
    /// end; it needs room for the newest full backup). Default: the temporary directory ($TMPDIR).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// For --method catchup: server id of the private replica; must differ from every server of the
    /// topology. Default: derived from the storage URL, in 3000000000..3999999999.
    #[arg(long)]
    pub replica_server_id: Option<u32>,
    /// For --method catchup: the server binary run on the scratch datadir.
    #[arg(long, default_value = "mariadbd")]
    pub mariadbd_path: String,
    /// Label recorded in the manifest, as key=value (e.g. the schedule that took it). Repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Backup id, or `latest`.
    #[arg(long, default_value = "latest")]
    pub backup: String,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// Backup id, or `latest`.
    #[arg(long, default_value = "latest")]
    pub backup: String,
    /// Target datadir: must be empty or absent, unless --overwrite.
    #[arg(long)]
    pub datadir: PathBuf,
    /// Where to put files of the backup's binlog directory (default: the datadir).
    #[arg(long)]
    pub binlog_dir: Option<PathBuf>,
    /// Delete the target's current contents first.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub point_in_time: PointInTimeArgs,
    #[command(flatten)]
    pub tools: ServerToolArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// A point in time to restore to instead of a backup.
#[derive(Args)]
pub struct PointInTimeArgs {
    /// Restore to a point in time (MariaDB): a GTID (`0-1-42`, included) or an RFC 3339 time (the last
    /// transaction at or before it). Restores the newest full backup before it, then replays the binary
    /// logs of the incrementals after it on a private server. Replaces --backup (a drill's record goes beside that full backup).
    #[arg(long, conflicts_with = "backup")]
    pub until: Option<String>,
    /// With --until: the binary-log archive whose segments continue the incrementals. Default: the
    /// storage's only archive, if it has one.
    #[arg(long, requires = "until")]
    pub archive: Option<String>,
    /// With --until: replay across gaps in the binary-log archive; their transactions are lost.
    #[arg(long, requires = "until")]
    pub force: bool,
}

impl PointInTimeArgs {
    /// The archive to replay: the named one, else the storage's only one.
    pub fn archive_choice(&self) -> ArchiveChoice {
        match self.archive.clone() {
            Some(name) => ArchiveChoice::Named(name),
            None => ArchiveChoice::Auto,
        }
    }
}

/// The server's tools a restore runs: to prepare, to replay, to start a private server.
#[derive(Args)]
pub struct ServerToolArgs {
    /// mariadb-backup binary (for the prepare step).
    #[arg(long, default_value = "mariadb-backup")]
    pub mariabackup_path: String,
    /// Server binary (point-in-time replays, drills, catch-up backups).
    #[arg(long, default_value = "mariadbd")]
    pub mariadbd_path: String,
    /// Binary-log reader for the replay of --until.
    #[arg(long, default_value = "mariadb-binlog")]
    pub mariadb_binlog_path: String,
    /// Client for the replay of --until.
    #[arg(long, default_value = "mariadb")]
    pub mariadb_client_path: String,
}

impl ServerToolArgs {
    /// The replay's tools.
    pub fn replay_tools(&self) -> Tools {
        Tools {
            server: self.mariadbd_path.clone(),
            binlog: self.mariadb_binlog_path.clone(),
            client: self.mariadb_client_path.clone(),
        }
    }
}

#[derive(Args)]
pub struct DrillArgs {
    /// Backup id, or `latest` (the newest backup that restores on its own).
    #[arg(long, default_value = "latest")]
    pub backup: String,
    #[command(flatten)]
    pub point_in_time: PointInTimeArgs,
    /// Scratch space: the restored data goes into a new directory under it, removed at the end. It
    /// needs room for the backup's data. Default: the temporary directory ($TMPDIR).
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    #[command(flatten)]
    pub tools: ServerToolArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}
