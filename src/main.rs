//! Command line of mysql-backup-operator: parses arguments and dispatches to the library.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use mysql_backup_operator::agent;
use mysql_backup_operator::agent::{AgentError, BackupSettings};
use mysql_backup_operator::datapath::chunk::writer::ChunkParams;
use mysql_backup_operator::datapath::method::binlog::Binlog;
use mysql_backup_operator::datapath::method::cold::Cold;
use mysql_backup_operator::datapath::method::mariabackup::Mariabackup;
use mysql_backup_operator::datapath::restore::RestoreOptions;
use mysql_backup_operator::format::manifest::MethodKind;
use mysql_backup_operator::format::summary::Summary;
use mysql_backup_operator::mysql::server::ServerConfig;
use mysql_backup_operator::storage::{RetryPolicy, Storage, parse_option};

/// Physical backups of MySQL and MariaDB to object storage: a Kubernetes operator and a standalone agent.
#[derive(Parser)]
#[command(name = "mysql-backup-operator", version, about)]
struct Cli {
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, global = true, env = "LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
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
enum AgentCommand {
    /// Take a backup of a datadir into storage.
    Backup(BackupArgs),
    /// List the complete backups in storage.
    List(ListArgs),
    /// Re-read every chunk of a backup and check every hash.
    Verify(VerifyArgs),
    /// Restore a backup into an empty directory.
    Restore(RestoreArgs),
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
enum BinlogCommand {
    /// Stream the server's binary log into an archive, segment by segment, until stopped (SIGTERM).
    /// Resumes where the archive ends.
    Archive(ArchiveArgs),
    /// Show an archive: its extent and every gap. Fails when it has a gap.
    Status(ArchiveStatusArgs),
}

#[derive(Args)]
struct ArchiveArgs {
    /// Server to stream from: mysql://user@host:port. The user needs REPLICATION SLAVE and BINLOG
    /// MONITOR (MariaDB). The password comes from MYSQL_PWD or --mysql-password-file.
    #[arg(long, env = "MYSQL_URL")]
    mysql_url: String,
    /// File holding the server password.
    #[arg(long, env = "MYSQL_PASSWORD_FILE")]
    mysql_password_file: Option<PathBuf>,
    /// Archive name: the segments go under binlogs/<archive>/ in the storage.
    #[arg(long)]
    archive: String,
    /// Store a segment once its first transaction is this many seconds old: the most an archiver's
    /// own crash can leave out of the archive (a server crash leaves out nothing it had received).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    segment_seconds: u64,
    /// Store a segment once it holds this many MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    segment_mib: u64,
    /// Server id this replica registers with; must differ from every server and replica of the
    /// topology. Default: derived from the archive name, in 3000000000..3999999999.
    #[arg(long)]
    replica_server_id: Option<u32>,
    /// Where an empty archive starts (a MariaDB GTID position). Default: the start of the oldest
    /// binary log the server still has. Ignored when the archive has segments.
    #[arg(long)]
    from: Option<String>,
    /// Address of /status (JSON), /metrics and /healthz, e.g. 0.0.0.0:8081.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    storage: StorageArgs,
    /// Also write the JSON summary to this file when stopped.
    #[arg(long)]
    summary_file: Option<PathBuf>,
}

#[derive(Args)]
struct ArchiveStatusArgs {
    /// Archive name.
    #[arg(long)]
    archive: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    storage: StorageArgs,
}

#[derive(Args)]
struct PruneArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// Keep the N newest backups.
    #[arg(long, default_value_t = 0)]
    keep_last: u32,
    /// Keep the newest backup of each of the N newest hours that have one.
    #[arg(long, default_value_t = 0)]
    keep_hourly: u32,
    /// Keep the newest backup of each of the N newest days that have one.
    #[arg(long, default_value_t = 0)]
    keep_daily: u32,
    /// Keep the newest backup of each of the N newest ISO weeks that have one.
    #[arg(long, default_value_t = 0)]
    keep_weekly: u32,
    /// Keep the newest backup of each of the N newest months that have one.
    #[arg(long, default_value_t = 0)]
    keep_monthly: u32,
    /// Keep every backup younger than this (e.g. 720h, 30d, 2w).
    #[arg(long)]
    max_age: Option<String>,
    /// IANA time zone whose hours, days, weeks and months the rules count. Default: UTC.
    #[arg(long)]
    time_zone: Option<String>,
    /// Only backups whose manifest has this tag, as key=value. Repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// Also delete the segments of this binary-log archive that the oldest kept full backup already
    /// holds (no kept backup can replay them).
    #[arg(long)]
    archive: Option<String>,
    /// Print what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also write the JSON summary to this file (e.g. /dev/termination-log in a Job).
    #[arg(long)]
    summary_file: Option<PathBuf>,
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}

#[derive(Args)]
struct DeleteArgs {
    #[command(flatten)]
    storage: StorageArgs,
    /// Id of the backup to delete (`latest` is refused: a deletion names its backup).
    #[arg(long)]
    backup: String,
    /// Succeed when the backup is already gone (for retried clean-ups).
    #[arg(long)]
    ignore_missing: bool,
    /// Also write the JSON summary to this file (e.g. /dev/termination-log in a Job).
    #[arg(long)]
    summary_file: Option<PathBuf>,
}

#[derive(Args)]
struct StorageArgs {
    /// Where backups live: file:///dir (or a plain path), s3://bucket/prefix, az://container/prefix,
    /// gs://bucket/prefix. Credentials come from the environment (AWS_*, AZURE_STORAGE_*, GOOGLE_*).
    #[arg(long, env = "BACKUP_STORAGE", default_value = "./backups")]
    storage: String,
    /// Backend option as key=value (object_store keys: endpoint, region, allow_http,
    /// virtual_hosted_style_request, account_name, …). Repeatable. Credentials are refused here.
    #[arg(long = "storage-option", value_name = "KEY=VALUE")]
    storage_options: Vec<String>,
    /// Seconds one storage request is retried before the operation fails.
    #[arg(long, default_value_t = 180)]
    storage_retry_timeout: u64,
}

impl StorageArgs {
    fn open(&self) -> Result<Storage, AgentError> {
        let options = self.storage_options.iter().map(|o| parse_option(o)).collect::<Result<Vec<_>, _>>()?;
        Ok(Storage::open(
            &self.storage,
            &options,
            RetryPolicy { timeout: Duration::from_secs(self.storage_retry_timeout) },
        )?)
    }
}

#[derive(Args)]
struct CommonArgs {
    /// Files or chunks processed at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,
    /// Seconds between progress log lines when stderr is not a terminal.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    progress_interval: u64,
    /// Also write the JSON summary to this file (e.g. /dev/termination-log in a Job).
    #[arg(long)]
    summary_file: Option<PathBuf>,
}

#[derive(Args)]
struct BackupArgs {
    /// How to read the server's files.
    #[arg(long, value_enum)]
    method: MethodKind,
    /// The server's datadir.
    #[arg(long, default_value = "/var/lib/mysql")]
    datadir: PathBuf,
    /// Binary log directory, when outside the datadir (cold method), or elsewhere than the server says
    /// (binlog method; default: the directory of the server's @@log_bin_basename).
    #[arg(long)]
    binlog_dir: Option<PathBuf>,
    /// Server to back up: mysql://user@host:port or mysql://user@localhost?socket=/path. The password
    /// comes from MYSQL_PWD or --mysql-password-file, never from the URL.
    #[arg(long, env = "MYSQL_URL")]
    mysql_url: Option<String>,
    /// File holding the server password.
    #[arg(long, env = "MYSQL_PASSWORD_FILE")]
    mysql_password_file: Option<PathBuf>,
    /// Option file for mariadb-backup (e.g. the server's my.cnf); default: the system's option files.
    #[arg(long)]
    mariabackup_defaults_file: Option<PathBuf>,
    /// mariadb-backup binary.
    #[arg(long, default_value = "mariadb-backup")]
    mariabackup_path: String,
    /// zstd level of new chunks (1 fastest … 19 smallest).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    compression_level: i32,
    /// Chunk size in KiB (64 KiB … 64 MiB).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(64..=65536))]
    chunk_size_kib: u32,
    /// Chunks held in memory at once (default: 4 per --parallel).
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Copy a datadir even if a running server seems to use it (cold method).
    #[arg(long)]
    force: bool,
    /// For --method binlog: back up the transactions after this GTID position (MariaDB `0-1-42,1-2-7`
    /// or a MySQL GTID set), or `auto`: after the end of the newest backup in the storage.
    #[arg(long, default_value = "auto")]
    from: String,
    /// Label recorded in the manifest, as key=value (e.g. the schedule that took it). Repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    #[command(flatten)]
    storage: StorageArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    storage: StorageArgs,
}

#[derive(Args)]
struct VerifyArgs {
    /// Backup id, or `latest`.
    #[arg(long, default_value = "latest")]
    backup: String,
    #[command(flatten)]
    storage: StorageArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Args)]
struct RestoreArgs {
    /// Backup id, or `latest`.
    #[arg(long, default_value = "latest")]
    backup: String,
    /// Target datadir: must be empty or absent, unless --overwrite.
    #[arg(long)]
    datadir: PathBuf,
    /// Where to put files of the backup's binlog directory (default: the datadir).
    #[arg(long)]
    binlog_dir: Option<PathBuf>,
    /// Delete the target's current contents first.
    #[arg(long)]
    overwrite: bool,
    /// mariadb-backup binary (for the prepare step).
    #[arg(long, default_value = "mariadb-backup")]
    mariabackup_path: String,
    /// Restore to a point in time (MariaDB): a GTID (`0-1-42`, included) or an RFC 3339 time (the last
    /// transaction at or before it). Restores the newest full backup before it, then replays the binary
    /// logs of the incrementals after it on a private server. Replaces --backup.
    #[arg(long, conflicts_with = "backup")]
    until: Option<String>,
    /// With --until: the binary-log archive whose segments continue the incrementals. Default: the
    /// storage's only archive, if it has one.
    #[arg(long, requires = "until")]
    archive: Option<String>,
    /// With --until: replay across gaps in the binary-log archive; their transactions are lost.
    #[arg(long, requires = "until")]
    force: bool,
    /// Server binary for the replay of --until.
    #[arg(long, default_value = "mariadbd")]
    mariadbd_path: String,
    /// Binary-log reader for the replay of --until.
    #[arg(long, default_value = "mariadb-binlog")]
    mariadb_binlog_path: String,
    /// Client for the replay of --until.
    #[arg(long, default_value = "mariadb")]
    mariadb_client_path: String,
    #[command(flatten)]
    storage: StorageArgs,
    #[command(flatten)]
    common: CommonArgs,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for people: a Job's log, a file or a pipe gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The error and its causes, one per clause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn finish(summary: Summary, summary_file: Option<&PathBuf>) -> Result<(), AgentError> {
    println!("{}", serde_json::to_string_pretty(&summary).expect("summaries always serialise"));
    if let Some(path) = summary_file {
        summary.write_to(path).map_err(|source| AgentError::SummaryFile { path: path.clone(), source })?;
    }
    Ok(())
}

async fn run_backup(args: BackupArgs) -> Result<(), AgentError> {
    let storage = args.storage.open()?;
    let parallel = args.common.parallel as usize;
    let chunk_size = args.chunk_size_kib as usize * 1024;
    let settings = BackupSettings {
        chunks: ChunkParams {
            chunk_size,
            level: args.compression_level,
            max_in_flight: args.max_in_flight.unwrap_or(parallel * 4).max(1),
        },
        progress_interval: Duration::from_secs(args.common.progress_interval),
        tags: args.tags.into_iter().collect(),
        incremental: None,
    };
    let summary = match args.method {
        MethodKind::Cold => {
            let method = Cold {
                datadir: args.datadir,
                binlog_dir: args.binlog_dir,
                force: args.force,
                parallel,
                read_size: chunk_size,
            };
            agent::backup(&method, &storage, settings).await?
        }
        MethodKind::Mariabackup => {
            let url = args.mysql_url.ok_or(AgentError::MissingOption {
                option: "--mysql-url (or MYSQL_URL)",
                needed_by: "--method mariabackup",
            })?;
            let server = ServerConfig::from_url(&url, args.mysql_password_file.as_ref())?;
            let method = Mariabackup {
                server,
                datadir: args.datadir,
                defaults_file: args.mariabackup_defaults_file,
                parallel,
                tool: args.mariabackup_path,
            };
            agent::backup(&method, &storage, settings).await?
        }
        MethodKind::Binlog => {
            let url = args.mysql_url.ok_or(AgentError::MissingOption {
                option: "--mysql-url (or MYSQL_URL)",
                needed_by: "--method binlog",
            })?;
            let server = ServerConfig::from_url(&url, args.mysql_password_file.as_ref())?;
            let incremental = agent::incremental_from(&storage, &args.from, &settings.tags).await?;
            let method =
                Binlog { server, binlog_dir: args.binlog_dir, from: incremental.from.clone(), read_size: chunk_size };
            agent::backup(&method, &storage, BackupSettings { incremental: Some(incremental), ..settings }).await?
        }
    };
    finish(summary, args.common.summary_file.as_ref())
}

async fn run_archiver(args: ArchiveArgs) -> Result<(), AgentError> {
    use mysql_backup_operator::archive::archiver;
    use mysql_backup_operator::archive::segment::Bounds;
    let storage = args.storage.open()?;
    let server = ServerConfig::from_url(&args.mysql_url, args.mysql_password_file.as_ref())?;
    let from = match &args.from {
        Some(pos) => Some(
            mysql_backup_operator::mysql::binlog::range::mariadb(pos)
                .map_err(|e| AgentError::From(format!("{pos:?} is not a MariaDB GTID position: {e}")))?,
        ),
        None => None,
    };
    let opts = archiver::ArchiverOptions {
        server,
        replica_id: args.replica_server_id.unwrap_or_else(|| archiver::default_replica_id(&args.archive)),
        archive: args.archive,
        bounds: Bounds {
            max_bytes: (args.segment_mib * 1024 * 1024) as usize,
            max_age: Duration::from_secs(args.segment_seconds),
        },
        from,
        heartbeat: Duration::from_secs(1),
        listen: args.listen,
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        mysql_backup_operator::shutdown::signal().await;
        let _ = stop_tx.send(true);
    });
    let started = std::time::Instant::now();
    let status = archiver::run(&storage, &opts, stop).await?;
    let summary = Summary::BinlogArchive {
        archive: status.archive.clone(),
        storage: storage.url().to_string(),
        archived_position: status.archived_position.clone(),
        last_segment: status.last_segment,
        segments: status.segments,
        transactions: status.transactions,
        duplicates: status.duplicates,
        reconnects: status.reconnects,
        gaps: status.gaps.len() as u64,
        duration_seconds: started.elapsed().as_secs_f64(),
    };
    finish(summary, args.summary_file.as_ref())
}

/// The host name, the default identity of a replica in leader election.
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| format!("pid-{}", std::process::id()))
}

/// What the binary fails with: the agent's errors, or the controller's.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// An agent command failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The controller stopped with an error.
    #[error(transparent)]
    Controller(#[from] mysql_backup_operator::controller::run::RunError),
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Controller { operator_image, listen, no_leader_election, lease_name, lease_namespace, identity } => {
            use mysql_backup_operator::controller::run::{ControllerOptions, LeaderElection};
            let leader_election = (!no_leader_election).then(|| LeaderElection {
                lease: lease_name,
                namespace: lease_namespace,
                identity: identity.unwrap_or_else(host_name),
            });
            let opts = ControllerOptions { operator_image, listen, leader_election };
            Ok(mysql_backup_operator::controller::run::run(opts).await?)
        }
        Command::Crd => {
            print!("{}", mysql_backup_operator::crd::crds_yaml());
            Ok(())
        }
        Command::Install { to } => {
            let path = mysql_backup_operator::install::install_self(&to)
                .map_err(|source| AgentError::Install { dir: to.clone(), source })?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Agent(agent) => {
            let summary_file = match agent.as_ref() {
                AgentCommand::Backup(a) => a.common.summary_file.clone(),
                AgentCommand::Verify(a) => a.common.summary_file.clone(),
                AgentCommand::Restore(a) => a.common.summary_file.clone(),
                AgentCommand::Delete(a) => a.summary_file.clone(),
                AgentCommand::Prune(a) => a.summary_file.clone(),
                AgentCommand::Binlog(BinlogCommand::Archive(a)) => a.summary_file.clone(),
                AgentCommand::List(_) | AgentCommand::Binlog(_) => None,
            };
            let result = run_agent(*agent).await;
            if let (Err(e), Some(path)) = (&result, summary_file) {
                // The controller reads the reason of a failed Job from here (its termination message).
                let failure = mysql_backup_operator::format::summary::Failure { error: error_chain(e) };
                let _ = std::fs::write(path, serde_json::to_string(&failure).unwrap_or_default());
            }
            Ok(result?)
        }
    }
}

async fn run_agent(command: AgentCommand) -> Result<(), AgentError> {
    agent::raise_open_files_limit();
    match command {
        AgentCommand::Backup(args) => run_backup(args).await,
        AgentCommand::List(args) => {
            let storage = args.storage.open()?;
            let backups = agent::list(&storage).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&backups).expect("listings always serialise"));
            } else {
                println!("{:<24} {:<20} {:<12} {:>14} {:>14}  POSITION", "ID", "STARTED", "METHOD", "DATA", "STORED");
                for b in backups {
                    println!(
                        "{:<24} {:<20} {:<12} {:>14} {:>14}  {}",
                        b.backup_id,
                        b.started_at.format("%Y-%m-%d %H:%M:%S"),
                        b.method.as_str(),
                        b.data_bytes,
                        b.stored_bytes,
                        b.positions.short()
                    );
                }
            }
            Ok(())
        }
        AgentCommand::Verify(args) => {
            let storage = args.storage.open()?;
            let interval = Duration::from_secs(args.common.progress_interval);
            let summary = agent::verify(&storage, &args.backup, args.common.parallel as usize, interval).await?;
            finish(summary, args.common.summary_file.as_ref())
        }
        AgentCommand::Restore(args) => {
            let storage = args.storage.open()?;
            let opts = RestoreOptions {
                datadir: args.datadir,
                binlog_dir: args.binlog_dir,
                overwrite: args.overwrite,
                parallel: args.common.parallel as usize,
                mariabackup_tool: args.mariabackup_path,
            };
            let interval = Duration::from_secs(args.common.progress_interval);
            let summary = match &args.until {
                Some(until) => {
                    let target: mysql_backup_operator::datapath::pitr::Target =
                        until.parse().map_err(AgentError::Pitr)?;
                    let tools = mysql_backup_operator::datapath::pitr::Tools {
                        server: args.mariadbd_path.clone(),
                        binlog: args.mariadb_binlog_path.clone(),
                        client: args.mariadb_client_path.clone(),
                    };
                    let archive = match args.archive.clone() {
                        Some(name) => agent::ArchiveChoice::Named(name),
                        None => agent::ArchiveChoice::Auto,
                    };
                    agent::restore_until(&storage, &target, &opts, &tools, interval, archive, args.force).await?
                }
                None => agent::restore(&storage, &args.backup, &opts, interval).await?,
            };
            finish(summary, args.common.summary_file.as_ref())
        }
        AgentCommand::Delete(args) => {
            let storage = args.storage.open()?;
            let summary = agent::delete(&storage, &args.backup, args.ignore_missing).await?;
            finish(summary, args.summary_file.as_ref())
        }
        AgentCommand::Binlog(BinlogCommand::Archive(args)) => run_archiver(args).await,
        AgentCommand::Binlog(BinlogCommand::Status(args)) => {
            let storage = args.storage.open()?;
            let summary = agent::archive_status(&storage, &args.archive).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary).expect("summaries always serialise"));
            } else {
                print!("{}", summary.text());
            }
            if summary.gaps.is_empty() { Ok(()) } else { Err(AgentError::ArchiveHasGaps(summary.gaps.len())) }
        }
        AgentCommand::Prune(args) => {
            let rules = mysql_backup_operator::gc::retention::Rules {
                keep_last: Some(args.keep_last as i32),
                keep_hourly: Some(args.keep_hourly as i32),
                keep_daily: Some(args.keep_daily as i32),
                keep_weekly: Some(args.keep_weekly as i32),
                keep_monthly: Some(args.keep_monthly as i32),
                max_age: args.max_age.as_deref(),
            };
            let policy =
                mysql_backup_operator::gc::retention::Policy::from_rules(&rules).map_err(AgentError::Retention)?;
            let tz = match &args.time_zone {
                None => jiff::tz::TimeZone::UTC,
                Some(zone) => jiff::tz::TimeZone::get(zone)
                    .map_err(|e| AgentError::TimeZone { zone: zone.clone(), reason: e.to_string() })?,
            };
            let storage = args.storage.open()?;
            let tags = args.tags.into_iter().collect();
            let summary = agent::prune(&storage, &policy, &tz, &tags, args.archive.as_deref(), args.dry_run).await?;
            finish(summary, args.summary_file.as_ref())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = error_chain(&e);
            tracing::error!(error = %text, "failed");
            eprintln!("error: {text}");
            ExitCode::FAILURE
        }
    }
}
