use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use cutover::config::{Config, Weights, format_percent};
use cutover::demo;
use cutover::server::{self, Running};

#[derive(Parser)]
#[command(
    name = "cutover",
    version,
    about = "A traffic-splitting reverse proxy for migrations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        #[arg(short, long, default_value = "config/cutover.yaml")]
        config: PathBuf,
    },
    /// Validate the config and weight file; print the route table and splits.
    Check {
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cutover::access_log::init_local_offset();
    init_tracing();
    let result = match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => runtime().and_then(|rt| rt.block_on(run(&config))),
        Command::Demo {
            listen,
            admin,
            legacy,
            new,
        } => runtime().and_then(|rt| {
            rt.block_on(run_demo(demo::Addresses {
                listen,
                admin,
                legacy,
                new,
            }))
        }),
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
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
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

async fn run(config: &Path) -> anyhow::Result<()> {
    let running = server::start(config).await?;
    serve_until_signalled(running).await
}

/// Waits for SIGTERM/SIGINT (drain, then return) and reloads on SIGHUP.
async fn serve_until_signalled(running: Running) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                let _ = running.live.reload();
            }
        }
    }
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    running.begin_shutdown();
    running.wait().await;
    Ok(())
}

async fn run_demo(mut addrs: demo::Addresses) -> anyhow::Result<()> {
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
         \n  metrics       http://{admin}/metrics\
         \n  legacy app    http://{legacy}/   (Django-style: paginated lists, integer ids)\
         \n  new app       http://{new}/   (Flask-style: bare lists, string ids)\
         \n  config        {config}\
         \n\nTry:\
         \n  curl -si http://{proxy}/api/users/                                # 90% legacy, 10% new\
         \n  curl -si -H 'Authorization: Token alice' http://{proxy}/api/users/  # sticky per user\
         \n  curl -si -H 'X-Cutover-Backend: new' http://{proxy}/api/users/    # pin a backend\
         \n  curl -si -X POST http://{proxy}/api/auth/login/                   # rewritten to /auth/login/ on new\
         \n  curl -s http://{admin}/metrics | grep cutover_requests_total\
         \n\nEdit the weights in {weights} and send SIGHUP (kill -HUP {pid}) to apply them.\
         \nPress Ctrl-C to stop.\n",
        legacy = addrs.legacy,
        new = addrs.new,
        config = config.display(),
        weights = dir.join("demo-weights.yaml").display(),
        pid = std::process::id(),
    );
    let result = serve_until_signalled(running).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn check(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let weights = Weights::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    print!("{}", describe(&config, &weights));
    Ok(())
}

/// The human-readable route table printed by `cutover check`.
fn describe(config: &Config, weights: &Weights) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "config ok: {}", config.path.display());
    let _ = writeln!(out, "weights:   {}", config.weights_path.display());
    for l in &config.listeners {
        let _ = writeln!(out, "listener:  {} {}", l.name, l.addr);
    }
    let token = if config.admin.token.is_some() {
        "token required"
    } else {
        "no token"
    };
    let _ = writeln!(out, "admin:     {} ({token})", config.admin.addr);
    let _ = writeln!(out, "\nroutes (first match wins):");
    for (ri, route) in config.routes.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:>3}. {}  match: {}",
            ri + 1,
            route.name,
            route.matcher
        );
        let sticky = match &route.sticky {
            cutover::config::Sticky::None => "none (random per request)".to_string(),
            cutover::config::Sticky::Cookie(c) => format!("cookie {c}"),
            cutover::config::Sticky::Header(h) => format!("header {h}"),
            cutover::config::Sticky::Pin(c) => format!("pin cookie {c}"),
        };
        let _ = writeln!(
            out,
            "     sticky: {sticky}   stable: {}",
            route.backends[route.stable].spec.name
        );
        if let Some(h) = &route.force_header {
            let _ = writeln!(out, "     force header: {h}");
        }
        let split = cutover::split::Split::from_basis_points(weights.route(ri));
        for (bi, b) in route.backends.iter().enumerate() {
            let range = split.range(bi);
            let buckets = if range.is_empty() {
                "-".to_string()
            } else {
                format!("{}..{}", range.start, range.end)
            };
            let rewrite = b
                .rewrite
                .as_ref()
                .map(|r| format!("  rewrite {} -> {}", r.prefix, r.to))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "     {:<12} {:>6}%  buckets {:<11} {}{rewrite}",
                b.spec.name,
                format_percent(weights.route(ri)[bi]),
                buckets,
                b.spec.url
            );
        }
    }
    out
}
