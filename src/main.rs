//! Command line of mysql-backup-operator: parses arguments and dispatches to the library.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use mysql_backup_operator::agent;
use mysql_backup_operator::agent::{AgentError, BackupSettings, error_chain};
use mysql_backup_operator::datapath::chunk::writer::ChunkParams;
use mysql_backup_operator::datapath::method::binlog::Binlog;
use mysql_backup_operator::datapath::method::choice;
use mysql_backup_operator::datapath::method::cold::Cold;
use mysql_backup_operator::datapath::method::mariabackup::Mariabackup;
use mysql_backup_operator::datapath::restore::RestoreOptions;
use mysql_backup_operator::format::manifest::MethodKind;
use mysql_backup_operator::format::summary::Summary;
use mysql_backup_operator::mysql::server::ServerConfig;

mod cli;
use cli::{AgentCommand, ArchiveArgs, BackupArgs, BinlogCommand, Cli, Command, DrillArgs, LogFormat, MethodChoice};

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
            max_read_rate: args.max_read_rate,
        },
        progress_interval: Duration::from_secs(args.common.progress_interval),
        tags: args.tags.into_iter().collect(),
        incremental: None,
    };
    let method = match args.method {
        MethodChoice::Kind(kind) => kind,
        MethodChoice::Auto => {
            let server = server_of(args.mysql_url.as_deref(), args.mysql_password_file.as_ref(), "--method auto")?;
            let evidence = choice::observe(&server, &args.datadir).await?;
            let kind = choice::choose(&evidence)?;
            tracing::info!(
                method = kind.as_str(),
                version = %evidence.version,
                rocksdb_bytes = evidence.rocksdb_bytes,
                datadir_bytes = evidence.datadir_bytes,
                "method auto chose"
            );
            kind
        }
    };
    let summary = match method {
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
            let server =
                server_of(args.mysql_url.as_deref(), args.mysql_password_file.as_ref(), "--method mariabackup")?;
            let method = Mariabackup {
                server,
                datadir: args.datadir,
                defaults_file: args.mariabackup_defaults_file,
                parallel,
                tool: args.mariabackup_path,
            };
            agent::backup(&method, &storage, settings).await?
        }
        MethodKind::Myrocks => {
            let server = server_of(args.mysql_url.as_deref(), args.mysql_password_file.as_ref(), "--method myrocks")?;
            let previous = agent::previous_myrocks_ssts(&storage, &server, &settings.tags).await?;
            let method = mysql_backup_operator::datapath::method::myrocks::Myrocks {
                mariabackup: Mariabackup {
                    server,
                    datadir: args.datadir,
                    defaults_file: args.mariabackup_defaults_file,
                    parallel,
                    tool: args.mariabackup_path,
                },
                previous,
                read_size: chunk_size,
            };
            agent::backup(&method, &storage, settings).await?
        }
        MethodKind::Catchup => {
            let source = server_of(args.mysql_url.as_deref(), args.mysql_password_file.as_ref(), "--method catchup")?;
            let replica_server_id = args.replica_server_id.unwrap_or_else(|| {
                mysql_backup_operator::archive::archiver::default_replica_id(&format!("catchup {}", storage.url()))
            });
            let opts = agent::CatchupOptions {
                source,
                scratch: args.scratch.unwrap_or_else(std::env::temp_dir),
                parallel,
                mariabackup_tool: args.mariabackup_path,
                server_tool: args.mariadbd_path,
                replica_server_id,
                read_size: chunk_size,
            };
            agent::catchup(&storage, &opts, settings).await?
        }
        MethodKind::Binlog => {
            let server = server_of(args.mysql_url.as_deref(), args.mysql_password_file.as_ref(), "--method binlog")?;
            let incremental = agent::incremental_from(&storage, &args.from, &settings.tags).await?;
            let method =
                Binlog { server, binlog_dir: args.binlog_dir, from: incremental.from.clone(), read_size: chunk_size };
            agent::backup(&method, &storage, BackupSettings { incremental: Some(incremental), ..settings }).await?
        }
    };
    finish(summary, args.common.summary_file.as_ref())
}

async fn run_drill(args: DrillArgs) -> Result<(), AgentError> {
    let storage = args.storage.open()?;
    let pit = &args.point_in_time;
    let target = match &pit.until {
        Some(until) => agent::DrillTarget::Until {
            target: until.parse().map_err(AgentError::Pitr)?,
            archive: pit.archive_choice(),
            force: pit.force,
        },
        None => agent::DrillTarget::Backup(args.backup.clone()),
    };
    let opts = agent::DrillOptions {
        scratch: args.scratch.clone().unwrap_or_else(std::env::temp_dir),
        parallel: args.common.parallel as usize,
        mariabackup_tool: args.tools.mariabackup_path.clone(),
        tools: args.tools.replay_tools(),
        progress_interval: Duration::from_secs(args.common.progress_interval),
    };
    let summary = agent::drill(&storage, &target, &opts).await?;
    finish(summary, args.common.summary_file.as_ref())
}

/// The server `--mysql-url` names, which `needed_by` requires.
fn server_of(
    url: Option<&str>,
    password_file: Option<&PathBuf>,
    needed_by: &'static str,
) -> Result<ServerConfig, AgentError> {
    let url = url.ok_or(AgentError::MissingOption { option: "--mysql-url (or MYSQL_URL)", needed_by })?;
    Ok(ServerConfig::from_url(url, password_file)?)
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
                AgentCommand::Drill(a) => a.common.summary_file.clone(),
                AgentCommand::Delete(a) => a.summary_file.clone(),
                AgentCommand::Prune(a) => a.summary_file.clone(),
                AgentCommand::Binlog(BinlogCommand::Archive(a)) => a.summary_file.clone(),
                AgentCommand::List(_) | AgentCommand::Binlog(_) => None,
            };
            let result = run_agent(*agent).await;
            if let (Err(e), Some(path)) = (&result, summary_file) {
                // The controller reads the reason of a failed Job from here (its termination message).
                let failure = mysql_backup_operator::format::summary::Failure::of(&error_chain(e));
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
                println!(
                    "{:<24} {:<20} {:<12} {:>14} {:>14}  {:<28} POSITION",
                    "ID", "STARTED", "METHOD", "DATA", "STORED", "LAST DRILL"
                );
                for b in backups {
                    let drill = match &b.last_drill {
                        Some(d) => format!(
                            "{} {}",
                            if d.passed { "passed" } else { "FAILED" },
                            d.completed_at.strftime("%Y-%m-%d %H:%M:%S")
                        ),
                        None => "-".to_string(),
                    };
                    println!(
                        "{:<24} {:<20} {:<12} {:>14} {:>14}  {:<28} {}",
                        b.backup_id,
                        b.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                        b.method.as_str(),
                        b.data_bytes,
                        b.stored_bytes,
                        drill,
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
                mariabackup_tool: args.tools.mariabackup_path.clone(),
            };
            let interval = Duration::from_secs(args.common.progress_interval);
            let pit = &args.point_in_time;
            let summary = match &pit.until {
                Some(until) => {
                    let target: mysql_backup_operator::datapath::pitr::Target =
                        until.parse().map_err(AgentError::Pitr)?;
                    let tools = args.tools.replay_tools();
                    agent::restore_until(&storage, &target, &opts, &tools, interval, pit.archive_choice(), pit.force)
                        .await?
                }
                None => agent::restore(&storage, &args.backup, &opts, interval).await?,
            };
            finish(summary, args.common.summary_file.as_ref())
        }
        AgentCommand::Drill(args) => run_drill(args).await,
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
