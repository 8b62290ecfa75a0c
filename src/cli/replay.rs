//! `cutover replay`: an access log's safe requests asked of each route's
//! stable backend and its mirror target, compared, and reported as
//! `cutover parity` reports live traffic.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use http::{HeaderMap, HeaderName, HeaderValue};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::control::{Format, print_parity};
use cutover::config::Config;
use cutover::replay::{Options, Replay, ReplaySummary};

#[derive(clap::Args)]
pub struct Args {
    /// Config file: its routes, backends and compare rules are the ones used.
    #[arg(short, long, default_value = "config/cutover.yaml")]
    config: PathBuf,
    /// The access log: nginx `combined` (or a format that begins like it) or cutover's JSON lines; `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    log: PathBuf,
    /// Replay at most N requests.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Start at most R requests per second (each asks two or three backend requests); 0: no limit.
    #[arg(long, value_name = "R", default_value_t = 20.0, value_parser = parse_rate)]
    rate: f64,
    /// Requests in flight at most.
    #[arg(long, value_name = "C", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// A header added to every replayed request, e.g. 'Authorization: Token test-account' (repeatable); `Host` also routes.
    #[arg(long = "header", value_name = "'NAME: VALUE'", value_parser = parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Compare each route's stable backend with this backend of the config instead of its mirror target.
    #[arg(long, value_name = "BACKEND")]
    against: Option<String>,
    /// Print the JSON report (as `--format json`).
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// `text`, `json`, or `markdown`: the sign-off document.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!("{s:?} is not a number of requests per second (0 for no limit)")),
    }
}

/// Parses `Name: value`.
fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s.split_once(':').ok_or_else(|| format!("expected 'NAME: VALUE', got {s:?}"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| format!("{:?} is not a header name", name.trim()))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| format!("the value of {name} is not a valid header value"))?;
    Ok((name, value))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let mut headers = HeaderMap::new();
    for (name, value) in args.headers {
        headers.append(name, value);
    }
    let options = Options {
        limit: args.limit,
        rate: (args.rate > 0.0).then_some(args.rate),
        concurrency: usize::from(args.concurrency),
        headers,
        against: args.against,
    };
    let replay = std::sync::Arc::new(Replay::new(config, options)?);
    let (reader, size) = open(&args.log)?;
    let stop = CancellationToken::new();
    let interrupt = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupt.cancel();
        }
    });
    let progress = progress_bar(size);
    let ticker = progress.clone().map(|bar| {
        let replay = replay.clone();
        tokio::spawn(async move {
            loop {
                let p = replay.progress();
                bar.set_position(p.bytes);
                bar.set_message(format!(
                    "{} lines, {} replayed, {} compared, {} errors",
                    p.lines, p.replayed, p.finished, p.errors
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    });
    let name = args.log.display().to_string();
    let summary = replay.run(&name, reader, stop).await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let summary = summary?;
    if summary.interrupted {
        eprintln!("interrupted: the report covers what was compared by then");
    }
    let format = if args.json { Format::Json } else { args.format };
    if format == Format::Text {
        print!("{}", render_summary(&summary));
    }
    print_parity(&replay.report(), format, false)
}

/// The log, and its size when it is a file (for the progress bar).
fn open(log: &Path) -> anyhow::Result<(Box<dyn BufRead + Send>, Option<u64>)> {
    if log == Path::new("-") {
        return Ok((Box::new(BufReader::new(std::io::stdin())), None));
    }
    let file = File::open(log).with_context(|| format!("cannot open the log {}", log.display()))?;
    let meta = file.metadata().with_context(|| format!("cannot read the log {}", log.display()))?;
    if meta.is_dir() {
        bail!("{} is a folder, not a log", log.display());
    }
    let size = meta.is_file().then_some(meta.len());
    Ok((Box::new(BufReader::with_capacity(64 * 1024, file)), size))
}

/// A progress bar on standard error, when it is a terminal.
fn progress_bar(size: Option<u64>) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match size {
        Some(len) => ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
            .with_style(ProgressStyle::with_template("{elapsed_precise} {wide_bar} {bytes}/{total_bytes}  {msg}").ok()?),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
            .with_style(ProgressStyle::with_template("{elapsed_precise} {spinner} {bytes}  {msg}").ok()?),
    };
    Some(bar)
}

/// What was read, sent and left out, above the parity report.
fn render_summary(s: &ReplaySummary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "replayed {} requests of {} lines of {}", s.replayed, s.lines, s.log);
    let n = &s.not_replayed;
    let _ = writeln!(
        out,
        "  not replayed: {} method (mutating, or not mirrored by the route), {} target (not an origin-form path), {} no route, {} route without mirror",
        n.method, n.target, n.no_route, n.not_mirrored
    );
    let _ = write!(out, "  malformed lines: {}", s.malformed);
    for m in &s.malformed_lines {
        let _ = write!(out, "\n    line {}: {}", m.line, m.error);
    }
    out.push('\n');
    if s.limit_reached {
        let _ = writeln!(out, "  stopped at --limit, before the end of the log");
    }
    if s.interrupted {
        let _ = writeln!(out, "  INTERRUPTED: the counts cover what was compared by then");
    }
    out.push('\n');
    out
}
