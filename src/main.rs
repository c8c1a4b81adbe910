//! The `stepgate` command line (DESIGN.md §2). Parses arguments, runs a command, maps the
//! result to the exit code: 0 ok, 1 invalid input or config, 2 runtime failure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stepgate::cmd;

/// Identity-aware reverse proxy for pipeline triggers: OIDC callers, Cedar policies per step,
/// a hash-chained audit log written before anything is forwarded, and signed forwards to
/// AWS Step Functions with stepgate's own credentials.
#[derive(Parser)]
#[command(name = "stepgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// Configuration file (TOML).
        #[arg(long, env = "STEPGATE_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a configuration, its policies (against the Cedar schema) and steps; print
    /// `ok` or every problem with file:line, exit 1 on any.
    Check {
        /// Configuration file (TOML).
        #[arg(long, env = "STEPGATE_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// One-command demo on loopback: the real proxy with the sample policies, a development
    /// OIDC issuer and a sandbox Step Functions upstream. Prints curl commands to try.
    Dev {
        /// Where the proxy listens (loopback only; port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Folder for the generated config, sample policies and the audit log.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify a log's hash chain; print `ok N records` or the first broken record (exit 1).
    Verify {
        /// The audit log file.
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STEPGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Check { config } => cmd::check::run(&config),
        Command::Audit {
            command: AuditCommand::Verify { path },
        } => cmd::audit::verify(&path),
        Command::Serve { config } => block_on(cmd::serve::run(&config)),
        Command::Dev { listen, dir } => {
            let dir = dir.unwrap_or_else(|| std::env::temp_dir().join("stepgate-dev"));
            block_on(stepgate::dev::run(listen, dir))
        }
    }
}

fn block_on(
    f: impl std::future::Future<Output = Result<(), stepgate::app::StartError>>,
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cmd::exit_for(&e),
    }
}
