//! The `cutover` command line.

mod check;
mod control;
mod fleet;
mod import;
mod ready;
mod replay;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use cutover::demo;
use cutover::server::{self, Running};
use ready::ReadyFile;

#[derive(Parser)]
#[command(
    name = "cutover",
    version,
    about = "A traffic-splitting reverse proxy for migrations",
    after_help = "Try `cutover demo` first.\n\n\
                  `shift`, `rollback`, `undo`, `status` and `parity` talk to the running proxy's admin API;\n\
                  when it is not running, `shift`, `rollback` and `undo` edit the weight file.\n\
                  `replay` measures parity on an access log before any traffic goes through the proxy."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Config file; its weight file is found relative to it.
        #[arg(short, long, default_value = "config/cutover.yaml")]
        config: PathBuf,
        /// Once every listener is bound, write their addresses to this file as JSON (removed at shutdown).
        #[arg(long, value_name = "FILE")]
        ready_file: Option<PathBuf>,
    },
    /// Validate the config and weight file; print the route table and splits.
    Check {
        /// Config file; its weight file is found relative to it.
        #[arg(short, long, default_value = "config/cutover.yaml")]
        config: PathBuf,
    },
    /// Start two built-in demo backends and the proxy in front of them.
    Demo {
        /// Proxy address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin API address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Address of the built-in legacy app.
        #[arg(long, default_value = "127.0.0.1:18000")]
        legacy: SocketAddr,
        /// Address of the built-in new app.
        #[arg(long, default_value = "127.0.0.1:19000")]
        new: SocketAddr,
        /// Once every listener is bound, write their addresses to this file as JSON (removed at shutdown).
        #[arg(long, value_name = "FILE")]
        ready_file: Option<PathBuf>,
    },
    /// Set a route's weights, e.g. `cutover shift api new=25`.
    Shift {
        /// The route to change, by its name in the config.
        route: String,
        /// Each named backend's share in percent; with two backends, naming one gives the rest to the other.
        #[arg(required = true, value_name = "BACKEND=PERCENT", value_parser = control::parse_assignment)]
        weights: Vec<(String, f64)>,
        /// Shift even though the route's measured parity is below its `min_clean_share`.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: control::Wait,
        #[command(flatten)]
        target: control::Target,
    },
    /// Parity report: how the backends' answers differ, by kind and JSON path, with samples.
    Parity {
        /// Only this route (default: every route that mirrors traffic).
        route: Option<String>,
        /// Print the raw JSON report (as `--format json`).
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// `text`, `json`, or `markdown`: the sign-off document.
        #[arg(long, value_enum, default_value = "text")]
        format: control::Format,
        /// Also print, per endpoint and difference, the last requests that showed it.
        #[arg(long)]
        examples: bool,
        /// Fleet mode: sum the counts of every live replica.
        #[arg(long)]
        fleet: bool,
        #[command(flatten)]
        target: control::Target,
    },
    /// Replay the safe requests of an access log to each route's stable backend and its mirror target; print the parity report.
    Replay(replay::Args),
    /// Send 100% of the named routes (or all) to their stable backend.
    Rollback {
        /// The routes to roll back, by name.
        routes: Vec<String>,
        /// Roll back every route.
        #[arg(long, conflicts_with = "routes")]
        all: bool,
        /// Why, for the log and the history.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        wait: control::Wait,
        #[command(flatten)]
        target: control::Target,
    },
    /// Restore the weight table from before the last change.
    Undo {
        #[command(flatten)]
        target: control::Target,
    },
    /// Live weights, request and error rates, health, the guard, last reload and last change.
    Status {
        /// Fleet mode: every live replica, the fleet table revision it serves, and whether the fleet converged.
        #[arg(long)]
        fleet: bool,
        #[command(flatten)]
        target: control::Target,
    },
    /// Fleet mode: manage the fleet's weight table in etcd.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Convert an nginx config into cutover.yaml and weights.yaml; lists what was not converted.
    #[command(name = "import-nginx")]
    ImportNginx {
        /// The main nginx config (nginx.conf) or a site file; includes are followed.
        file: PathBuf,
        /// Folder to write cutover.yaml and weights.yaml into (default: print both).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Overwrite existing files in the output folder.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Write the local weight file to etcd as the fleet's table, when the fleet has none.
    Seed {
        /// Config file: its `fleet:` section names etcd, its weight file is written.
        #[arg(short, long, default_value = "config/cutover.yaml")]
        config: PathBuf,
        /// Overwrite the fleet's table if it has one.
        #[arg(long)]
        force: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. } | Command::Demo { .. }) {
        // Reports piped into `head` should end quietly, as other Unix tools do.
        // (Not for the servers: a closed client socket must not kill the proxy.)
        // SAFETY: called before any other thread exists; SIG_DFL is a valid disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    cutover::access_log::init_local_offset();
    init_tracing();
    let result = match cli.command {
        Command::Check { config } => check::run(&config),
        Command::Run { config, ready_file } => runtime().and_then(|rt| rt.block_on(run(&config, ready_file))),
        Command::Demo {
            listen,
            admin,
            legacy,
            new,
            ready_file,
        } => runtime().and_then(|rt| {
            rt.block_on(run_demo(
                demo::Addresses {
                    listen,
                    admin,
                    legacy,
                    new,
                },
                ready_file,
            ))
        }),
        Command::Shift {
            route,
            weights,
            force,
            wait,
            target,
        } => control::block_on(control::shift(target, route, weights, force, wait)),
        Command::Parity {
            route,
            json,
            format,
            examples,
            fleet,
            target,
        } => control::block_on(control::parity(
            target,
            route,
            if json { control::Format::Json } else { format },
            examples,
            fleet,
        )),
        Command::Replay(args) => runtime().and_then(|rt| rt.block_on(replay::run(args))),
        Command::Rollback {
            routes,
            all,
            reason,
            wait,
            target,
        } => control::block_on(control::rollback(target, routes, all, reason, wait)),
        Command::Undo { target } => control::block_on(control::undo(target)),
        Command::Status { fleet, target } => control::block_on(control::status(target, fleet)),
        Command::Fleet(FleetCommand::Seed { config, force }) => control::block_on(fleet::seed(&config, force)),
        Command::ImportNginx { file, output, force } => import::run(&file, output.as_deref(), force),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn run(config: &Path, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    let ready = ready_file.map(ReadyFile::new);
    let running = server::start(config).await?;
    serve_until_signalled(running, ready).await
}

/// Announces `running` in the ready file, if any; waits for SIGTERM/SIGINT
/// (drain, then return), reloads on SIGHUP and opens the log files again on
/// SIGUSR1 (nginx's `reopen`, for logrotate).
async fn serve_until_signalled(running: Running, mut ready: Option<ReadyFile>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    if let Some(ready) = &mut ready {
        ready.announce(&running)?;
    }
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                let live = running.live.clone();
                // Off the runtime (it reads files); the outcome is reported by `reload`.
                drop(tokio::task::spawn_blocking(move || live.reload()));
            }
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: opening the log files again");
                running.reopen_logs();
            }
        }
    }
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    drop(ready);
    running.begin_shutdown();
    running.wait().await;
    Ok(())
}

async fn run_demo(mut addrs: demo::Addresses, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    let ready = ready_file.map(ReadyFile::new);
    addrs.legacy = demo::start_app(demo::App::Legacy, addrs.legacy)
        .await
        .with_context(|| format!("cannot start the demo legacy app on {}", addrs.legacy))?;
    addrs.new = demo::start_app(demo::App::New, addrs.new)
        .await
        .with_context(|| format!("cannot start the demo new app on {}", addrs.new))?;
    let dir = std::env::temp_dir().join(format!("cutover-demo-{}", std::process::id()));
    let config = demo::write_config(&dir, &addrs).context("cannot write the demo config")?;
    let running = server::start(&config).await?;
    let proxy = running.listeners[0].1;
    let admin = running.admin_addr;
    println!(
        "\ncutover demo is running\n\
         \n  proxy         http://{proxy}/\
         \n  dashboard     http://{admin}/\
         \n  metrics       http://{admin}/metrics\
         \n  legacy app    http://{legacy}/   (Django-style: paginated lists, integer ids)\
         \n  new app       http://{new}/   (Flask-style: bare lists, string ids, a renamed field)\
         \n  config        {config}\
         \n\nTry (x-demo-backend says which app answered, x-demo-path the path it was asked for):\
         \n  curl -si http://{proxy}/api/users/                                 # 90% legacy, 10% new\
         \n  curl -si -H 'Authorization: Token alice' http://{proxy}/api/users/   # sticky per user\
         \n  curl -si -H 'X-Cutover-Backend: new' http://{proxy}/api/users/     # pin a backend\
         \n  curl -si -X POST -H 'X-Cutover-Backend: new' http://{proxy}/api/auth/login/  # new serves it at /auth/login/\
         \n  curl -s http://{admin}/metrics | grep cutover_requests_total\
         \n\nEvery /api/ request is mirrored to the other app and the answers compared:\
         \n  cutover parity --admin {admin} api                  # where legacy and new differ\
         \n  cutover shift --admin {admin} api new=50            # refused: parity is below min_clean_share\
         \n  cutover shift --admin {admin} api new=50 --force    # move half the users anyway\
         \n  cutover status --admin {admin}\
         \n  cutover rollback --admin {admin} api                # everyone back on legacy\
         \n\nThe weight file {weights} is watched: edit it and the change applies at once.\
         \n(`cutover` is `cargo run --release --` until installed with `cargo install --path .`)\
         \nPress Ctrl-C to stop.\n",
        legacy = addrs.legacy,
        new = addrs.new,
        config = config.display(),
        weights = dir.join("demo-weights.yaml").display(),
    );
    let result = serve_until_signalled(running, ready).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn every_command_and_argument_has_a_help_line() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut missing = Vec::new();
        for command in cli.get_subcommands() {
            if command.get_about().is_none() {
                missing.push(command.get_name().to_string());
            }
            for arg in command.get_arguments().filter(|a| a.get_help().is_none()) {
                missing.push(format!("{} {}", command.get_name(), arg.get_id()));
            }
        }
        assert!(missing.is_empty(), "no help line: {missing:?}");
    }
}
