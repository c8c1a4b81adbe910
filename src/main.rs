//! The `stepgate` command line (DESIGN.md §2). Parses arguments, runs a command, maps the
//! result to the exit code: 0 ok, 1 invalid input or config, 2 runtime failure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stepgate::cmd;

/// mimalloc (v2, no transparent huge pages): the request path makes ~230 short-lived allocations
/// (headers, JSON, Cedar values, signing strings); glibc's malloc and free cost about a third of
/// its instructions, and after loading a large policy set glibc's fragmented heap made every
/// request ~20% dearer. mimalloc v3 is faster still but keeps more memory (106 MiB idle at
/// 10,000 policies, 111 MiB at 1,000 connections, against 91 and 102 MiB with v2).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Start even if the audit log's hash chain does not verify; the acceptance is itself
        /// written to the log. Without it, a broken chain stops start-up (exit 2).
        #[arg(long)]
        accept_broken_audit_chain: bool,
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
    /// Show the identity a token stands for and the policy decision for a step and action,
    /// with the deciding policy ids. Nothing is forwarded or audited.
    Explain {
        /// Configuration file (TOML).
        #[arg(long, env = "STEPGATE_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// The bearer token (default: `STEPGATE_TOKEN`, else standard input; prefer those
        /// over the command line, which other users of the machine can see).
        #[arg(long)]
        token: Option<String>,
        /// Step name.
        #[arg(long)]
        step: String,
        /// Action: start, stop, describe or list.
        #[arg(long)]
        action: String,
        /// Start input (JSON object) for policies that look at `context.input`.
        #[arg(long)]
        input: Option<String>,
        /// Caller address for `context.source_ip`.
        #[arg(long, default_value = "127.0.0.1")]
        source_ip: std::net::IpAddr,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run policy test cases (`[[case]]` tables: caller, action, step, context, expected
    /// decision and optionally the deciding policy ids); print pass/FAIL per case, exit 1 on
    /// any failure.
    Test {
        /// Configuration file (TOML): its steps and policies are tested.
        #[arg(long, env = "STEPGATE_CONFIG", value_name = "FILE")]
        config: PathBuf,
        /// The test cases.
        tests: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify a log's hash chain (a log file with its rotated files, or a folder of logs);
    /// print `ok N records` or the first broken record and exit 1.
    Verify {
        /// The audit log file or folder.
        path: PathBuf,
    },
    /// Print audit records for people, oldest first, optionally filtered and followed.
    Tail {
        /// The audit log file (its rotated files are read first).
        path: PathBuf,
        /// Keep printing records as they are written.
        #[arg(long, short)]
        follow: bool,
        /// Only records of this step.
        #[arg(long)]
        step: Option<String>,
        /// Only records of this caller (`<issuer>/<sub>` or just `<sub>`).
        #[arg(long)]
        caller: Option<String>,
        /// Only `allow` or `deny` records.
        #[arg(long, value_parser = ["allow", "deny"])]
        decision: Option<String>,
        /// Print at most the last N matching records before following.
        #[arg(long, short = 'n', default_value_t = 50)]
        lines: usize,
        /// Print the raw JSON lines.
        #[arg(long)]
        json: bool,
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
        Command::Policy {
            command: PolicyCommand::Test { config, tests },
        } => cmd::policy_test::run(
            &config,
            &tests,
            stepgate::clock::Clock::now(&stepgate::clock::SystemClock),
        ),
        Command::Explain {
            config,
            token,
            step,
            action,
            input,
            source_ip,
        } => runtime().map_or_else(
            |c| c,
            |rt| {
                rt.block_on(cmd::explain::run(cmd::explain::ExplainArgs {
                    config: &config,
                    token,
                    step: &step,
                    action: &action,
                    input: input.as_deref(),
                    source_ip,
                }))
            },
        ),
        Command::Audit {
            command: AuditCommand::Verify { path },
        } => cmd::audit::verify(&path),
        Command::Audit {
            command:
                AuditCommand::Tail {
                    path,
                    follow,
                    step,
                    caller,
                    decision,
                    lines,
                    json,
                },
        } => cmd::audit::tail(
            &path,
            &cmd::audit::TailFilter {
                step,
                caller,
                decision,
            },
            lines,
            follow,
            json,
        ),
        Command::Serve {
            config,
            accept_broken_audit_chain,
        } => block_on(cmd::serve::run(&config, accept_broken_audit_chain)),
        Command::Dev { listen, dir } => {
            let dir = dir.unwrap_or_else(|| std::env::temp_dir().join("stepgate-dev"));
            block_on(stepgate::dev::run(listen, dir))
        }
    }
}

/// One thread when the process may use one CPU (a pinned or 1-CPU container): no work
/// stealing and no cross-thread wake-ups on the request path. Else one worker per CPU.
/// `STEPGATE_RUNTIME=multi_thread` or `current_thread` overrides the choice (for measuring).
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let single = match std::env::var("STEPGATE_RUNTIME").as_deref() {
        Ok("current_thread") => true,
        Ok("multi_thread") => false,
        _ => cpus == 1,
    };
    let mut builder = if single {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the runtime: {e}");
        ExitCode::from(2)
    })
}

fn block_on(
    f: impl std::future::Future<Output = Result<(), stepgate::app::StartError>>,
) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(c) => return c,
    };
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cmd::exit_for(&e),
    }
}
