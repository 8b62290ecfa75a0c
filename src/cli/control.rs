//! `shift`, `rollback`, `undo` and `status`: through the admin API when the
//! proxy is up, else by editing the weight file with the same checks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use cutover::admin::ACTOR_HEADER;
use cutover::change::{self, CHANGE_WARNING, Change, RollbackCause, Routes};
use cutover::config::{Config, Weights};
use cutover::live::Live;
use cutover::metrics::Metrics;
use cutover::report::{ParityReport, markdown};

/// Whether to wait until every replica of the fleet applied a change.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Wait {
    /// Fleet mode: return once every live replica serves the change; fail naming the replicas that do not.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, requires = "wait")]
    pub timeout: u64,
}

/// How to reach the proxy.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Config file (names the weight file, the admin address and token).
    #[arg(short, long, default_value = "config/cutover.yaml")]
    config: PathBuf,
    /// Admin API address; defaults to the config's `admin.addr`.
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// File holding the admin bearer token; defaults to the config's
    /// `admin.token_file` (or the CUTOVER_ADMIN_TOKEN variable).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// Where a command is carried out.
pub(super) enum Mode {
    Api(AdminClient),
    File(Config),
}

pub fn block_on(fut: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(fut)
}

/// Parses `new=25`.
pub fn parse_assignment(s: &str) -> Result<(String, f64), String> {
    let (name, pct) = s.split_once('=').ok_or_else(|| format!("expected BACKEND=PERCENT, got {s:?}"))?;
    let pct: f64 = pct.trim_end_matches('%').parse().map_err(|_| format!("{pct:?} is not a number"))?;
    Ok((name.trim().to_string(), pct))
}

/// The operator's login name, when the environment tells it.
fn actor() -> Option<String> {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
}

pub(super) fn file_actor() -> String {
    actor().map_or_else(|| "cli".to_string(), |a| format!("cli ({a})"))
}

pub(super) async fn connect(target: &Target) -> anyhow::Result<Mode> {
    let config = Config::load(&target.config);
    let admin = match (target.admin, &config) {
        (Some(addr), _) => addr,
        (None, Ok(c)) => c.admin.addr,
        (None, Err(e)) => bail!("{e}"),
    };
    // A wildcard listen address is reached over loopback.
    let admin = if admin.ip().is_unspecified() {
        SocketAddr::new(
            if admin.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            admin.port(),
        )
    } else {
        admin
    };
    let up = tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(admin)).await;
    if let Ok(Ok(_)) = up {
        let token = match &target.token_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("CUTOVER_ADMIN_TOKEN")
                .ok()
                .or_else(|| config.as_ref().ok().and_then(|c| c.admin.token.clone())),
        };
        return Ok(Mode::Api(AdminClient {
            addr: admin,
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }));
    }
    let config = config.map_err(|e| anyhow!("the proxy is not reachable at {admin} and the config cannot be read:\n{e}"))?;
    eprintln!("proxy not reachable at {admin}: editing {} directly", config.weights_path.display());
    Ok(Mode::File(config))
}

/// Carries out a change: through the admin API (`method` `path` `body`)
/// when the proxy is up, else on the weight file by the same function the
/// proxy applies changes with. Offline there is no measured parity: routes
/// with a parity bar need --force to be raised.
async fn carry_out(target: &Target, change: Change, method: Method, path: &str, body: Value) -> anyhow::Result<Value> {
    match connect(target).await? {
        Mode::Api(client) => client.call(method, path, Some(body)).await,
        Mode::File(config) if config.fleet.is_some() => bail!(
            "no replica answers at {}: in fleet mode a change goes through a running replica (any one: --admin ADDR), \
             since the weight file only caches the fleet table",
            target.admin.map_or_else(|| config.admin.addr.to_string(), |a| a.to_string())
        ),
        Mode::File(config) => {
            let weights = Weights::load(&config).map_err(|e| anyhow!("{e}"))?;
            let live = Live::new(config, weights, Arc::new(Metrics::new()));
            let changed = live.apply(change).map_err(|e| anyhow!("{e}"))?;
            Ok(serde_json::to_value(changed)?)
        }
    }
}

pub async fn shift(target: Target, route: String, weights: Vec<(String, f64)>, force: bool, wait: Wait) -> anyhow::Result<()> {
    let body: serde_json::Map<String, Value> = weights.iter().map(|(b, w)| (b.clone(), json!(w))).collect();
    let path = if force {
        format!("/admin/weights/{route}?force=true")
    } else {
        format!("/admin/weights/{route}")
    };
    let change = Change::shift(file_actor(), route, weights, force);
    let changed = carry_out(&target, change, Method::PUT, &path, Value::Object(body)).await?;
    report(&changed)?;
    super::fleet::wait(&target, &changed, wait).await
}

pub async fn rollback(target: Target, routes: Vec<String>, all: bool, reason: Option<String>, wait: Wait) -> anyhow::Result<()> {
    if routes.is_empty() && !all {
        bail!("name the routes to roll back, or pass --all");
    }
    let started = std::time::Instant::now();
    let body = json!({"routes": routes, "all": all, "reason": reason});
    let change = Change::rollback(file_actor(), Routes::new(routes, all), RollbackCause::Manual).because(reason);
    let changed = carry_out(&target, change, Method::POST, "/admin/rollback", body).await?;
    report(&changed)?;
    println!("rolled back in {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    super::fleet::wait(&target, &changed, wait).await
}

pub async fn undo(target: Target) -> anyhow::Result<()> {
    let changed = carry_out(&target, Change::undo(file_actor()), Method::POST, "/admin/undo", json!({})).await?;
    report(&changed)
}

pub async fn status(target: Target, fleet: bool) -> anyhow::Result<()> {
    if fleet {
        return super::fleet::status(&target).await;
    }
    match connect(&target).await? {
        Mode::Api(client) => {
            let status = client.call(Method::GET, "/admin/status", None).await?;
            print!("{}", render_status(&status));
        }
        Mode::File(config) => {
            let weights = Weights::load(&config).map_err(|e| anyhow!("{e}"))?;
            println!("proxy: not running; weights from {}", config.weights_path.display());
            if config.fleet.is_some() {
                println!("(fleet mode: this file caches the fleet table as this replica last applied it)");
            }
            for (route, per_backend) in weights.named(&config) {
                let parts: Vec<String> = per_backend.iter().map(|(b, w)| format!("{b} {w}%")).collect();
                println!("  {route:<16} {}", parts.join("  "));
            }
        }
    }
    Ok(())
}

/// How a parity report is printed.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A table for the terminal.
    Text,
    /// The JSON report, as `/admin/parity` gives it.
    Json,
    /// The sign-off document: Markdown to attach to a go/no-go decision.
    Markdown,
}

pub async fn parity(target: Target, route: Option<String>, format: Format, examples: bool, fleet: bool) -> anyhow::Result<()> {
    if fleet {
        if format == Format::Markdown || examples {
            bail!("--fleet sums the counts of every replica: it prints them as text or --json only");
        }
        return super::fleet::parity(&target, route, format == Format::Json).await;
    }
    let Mode::Api(client) = connect(&target).await? else {
        bail!("parity is measured by the running proxy, and it is not reachable");
    };
    let path = match &route {
        Some(r) => format!("/admin/parity?route={r}"),
        None => "/admin/parity".to_string(),
    };
    let mut report = client.call(Method::GET, &path, None).await?;
    if report.is_object() && report.get("source").is_none() {
        report["source"] = json!(format!("live traffic through the proxy whose admin API is {}", client.addr));
    }
    print_parity(&report, format, examples)
}

/// Prints a parity report (from the proxy or from `replay`) in `format`;
/// with `examples`, the text also lists the requests behind each difference.
pub fn print_parity(report: &Value, format: Format, examples: bool) -> anyhow::Result<()> {
    match format {
        Format::Text => {
            print!("{}", render_parity(report));
            if examples {
                print!("{}", render_examples(report));
            }
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(report)?),
        Format::Markdown => {
            let typed: ParityReport = serde_json::from_value(report.clone()).context("the parity report is not as expected")?;
            print!("{}", markdown::render(&typed));
        }
    }
    Ok(())
}

/// A route's `left` and `right` backend names in a report.
fn backend_names(r: &Value) -> (&str, &str) {
    let name = |i: usize| r["backends"][i].as_str();
    (name(0).unwrap_or("left"), name(1).unwrap_or("right"))
}

/// Endpoints shown by `parity`, the worst first (as the report orders them).
const SHOWN_ENDPOINTS: usize = 10;

/// The endpoints of a route in the `parity` report.
fn render_endpoints(out: &mut String, r: &Value) {
    use std::fmt::Write;
    let endpoints = r["endpoints"].as_array().map(Vec::as_slice).unwrap_or_default();
    if endpoints.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n  {:<44} {:>9} {:>7}  WORST DIFFERENCE",
        "ENDPOINT (worst first)", "COMPARED", "CLEAN"
    );
    for e in endpoints.iter().take(SHOWN_ENDPOINTS) {
        let worst = e["paths"][0]
            .as_object()
            .map(|p| {
                let path = p["path"].as_str().unwrap_or("");
                format!(
                    "{} {} {} -> {} [{}]",
                    p["kind"].as_str().unwrap_or("?"),
                    if path.is_empty() { "(whole)" } else { path },
                    p["left"].as_str().unwrap_or(""),
                    p["right"].as_str().unwrap_or(""),
                    p["verdict"].as_str().unwrap_or("?"),
                )
            })
            .unwrap_or_else(|| "-".to_string());
        let _ = writeln!(
            out,
            "  {:<44} {:>9} {:>7}  {worst}",
            e["endpoint"].as_str().unwrap_or("?"),
            e["compared"].as_u64().unwrap_or(0),
            pct(e["clean_share"].as_f64().unwrap_or(0.0)),
        );
    }
    if endpoints.len() > SHOWN_ENDPOINTS {
        let _ = writeln!(
            out,
            "  ... {} more endpoints (--json lists them)",
            endpoints.len() - SHOWN_ENDPOINTS
        );
    }
}

/// `parity --examples`: per endpoint, the worst first, each difference with
/// the last requests that showed it.
pub fn render_examples(report: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for r in report["routes"].as_array().into_iter().flatten() {
        let (left, right) = backend_names(r);
        let _ = writeln!(out, "examples, route {}:", r["route"].as_str().unwrap_or("?"));
        let mut any = false;
        for e in r["endpoints"].as_array().into_iter().flatten() {
            let rows: Vec<&Value> = e["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["examples"].as_array().is_some_and(|x| !x.is_empty()))
                .collect();
            if rows.is_empty() {
                continue;
            }
            any = true;
            let _ = writeln!(out, "\n  {}", e["endpoint"].as_str().unwrap_or("?"));
            for p in rows {
                let path = p["path"].as_str().unwrap_or("");
                let _ = writeln!(
                    out,
                    "    {} {}  {} -> {}  [{}]",
                    p["kind"].as_str().unwrap_or("?"),
                    if path.is_empty() { "(whole)" } else { path },
                    p["left"].as_str().unwrap_or(""),
                    p["right"].as_str().unwrap_or(""),
                    p["verdict"].as_str().unwrap_or("?"),
                );
                for x in p["examples"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "      {} {} {}  request {}\n          {left}: {}\n          {right}: {}",
                        x["time"].as_str().unwrap_or(""),
                        x["method"].as_str().unwrap_or(""),
                        x["path"].as_str().unwrap_or(""),
                        x["request_id"].as_str().unwrap_or(""),
                        x["left"].as_str().unwrap_or(""),
                        x["right"].as_str().unwrap_or(""),
                    );
                }
            }
        }
        if !any {
            out.push_str("  no differences with examples yet\n");
        }
        out.push('\n');
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The `parity` report.
pub fn render_parity(report: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let routes = report["routes"].as_array().cloned().unwrap_or_default();
    if routes.is_empty() {
        out.push_str("no route mirrors traffic: add `mirror:` to a route to measure parity\n");
    }
    for r in routes {
        let name = r["route"].as_str().unwrap_or("?");
        let backends = r["backends"]
            .as_array()
            .map(|b| b.iter().filter_map(Value::as_str).collect::<Vec<_>>())
            .unwrap_or_default();
        let (left, right) = (
            backends.first().copied().unwrap_or("left"),
            backends.get(1).copied().unwrap_or("right"),
        );
        let compared = r["compared"].as_u64().unwrap_or(0);
        let _ = write!(out, "route {name}: {left} vs {right}, {compared} requests compared");
        match r["clean_share"].as_f64() {
            Some(share) => {
                let _ = write!(out, ", {} clean", pct(share));
                if let Some(bar) = r["min_clean_share"].as_f64() {
                    let verdict = if share >= bar { "meets" } else { "BELOW" };
                    let _ = write!(
                        out,
                        " ({verdict} the bar of {}; shift is {})",
                        pct(bar),
                        if share >= bar { "allowed" } else { "refused without --force" }
                    );
                }
                out.push('\n');
            }
            None => out.push_str(", nothing compared yet\n"),
        }
        let outcomes = r["outcomes"]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  shadows: {}   noise samples: {}",
            if outcomes.is_empty() { "none" } else { &outcomes },
            r["noise_samples"]
        );
        let rates = r["mismatch_rate"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| format!("{k} {}", pct(v.as_f64().unwrap_or(0.0))))
                    .collect::<Vec<_>>()
                    .join("  ")
            })
            .unwrap_or_default();
        let _ = writeln!(out, "  mismatching requests by kind: {rates}");
        let paths = r["paths"].as_array().cloned().unwrap_or_default();
        if !paths.is_empty() {
            let _ = writeln!(
                out,
                "\n  {:<8} {:<40} {:>7} {:>7}  {:<9} {left} -> {right}",
                "KIND", "PATH", "RATE", "NOISE", "VERDICT"
            );
            for p in paths {
                let path = p["path"].as_str().unwrap_or("");
                let verdict = p["verdict"].as_str().unwrap_or("?");
                let mut line = format!(
                    "  {:<8} {:<40} {:>7} {:>7}  {:<9} {} -> {}",
                    p["kind"].as_str().unwrap_or("?"),
                    if path.is_empty() { "(whole)" } else { path },
                    pct(p["rate"].as_f64().unwrap_or(0.0)),
                    pct(p["noise_rate"].as_f64().unwrap_or(0.0)),
                    verdict,
                    p["left"].as_str().unwrap_or(""),
                    p["right"].as_str().unwrap_or(""),
                );
                if let Some(reason) = p["accepted_reason"].as_str() {
                    line.push_str(&format!("  (accepted: {reason})"));
                }
                let _ = writeln!(out, "{line}");
            }
        }
        render_endpoints(&mut out, &r);
        let samples = r["samples"].as_array().cloned().unwrap_or_default();
        if !samples.is_empty() {
            let _ = writeln!(out, "\n  recent differences:");
            for s in samples.iter().take(5) {
                let _ = writeln!(
                    out,
                    "  {} {} {}  request {}  {left} {} / {right} {}  served by {}",
                    s["time"].as_str().unwrap_or(""),
                    s["method"].as_str().unwrap_or(""),
                    s["path"].as_str().unwrap_or(""),
                    s["request_id"].as_str().unwrap_or(""),
                    s["statuses"][0],
                    s["statuses"][1],
                    s["served_by"].as_str().unwrap_or(""),
                );
                for d in s["differences"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "      {:<6} {:<34} {} -> {}  [{}]",
                        d["kind"].as_str().unwrap_or(""),
                        d["path"].as_str().unwrap_or(""),
                        d["left"].as_str().unwrap_or(""),
                        d["right"].as_str().unwrap_or(""),
                        d["verdict"].as_str().unwrap_or(""),
                    );
                }
            }
        }
        out.push('\n');
    }
    out
}

/// Prints the new weights, and warns loudly when they were not persisted.
fn report(changed: &Value) -> anyhow::Result<()> {
    if let Some(routes) = changed["weights"].as_object() {
        for (route, per_backend) in routes {
            let parts: Vec<String> = per_backend
                .as_object()
                .map(|m| m.iter().map(|(b, w)| format!("{b} {}%", w.as_f64().unwrap_or(0.0))).collect())
                .unwrap_or_default();
            println!("{route:<16} {}", parts.join("  "));
        }
    }
    println!("version {}", changed["version"].as_str().unwrap_or("?"));
    if let Some(revision) = changed["fleet_revision"].as_i64() {
        println!("fleet table revision {revision}");
    }
    if changed["persisted"] == json!(false) {
        eprintln!(
            "WARNING: the change is live but was NOT persisted: {}",
            changed["persist_error"].as_str().unwrap_or("unknown error")
        );
    }
    Ok(())
}

/// The `status` table.
pub fn render_status(status: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let reload = &status["last_reload"];
    let _ = writeln!(
        out,
        "version {}   config {}",
        status["version"].as_str().unwrap_or("?"),
        status["config"].as_str().unwrap_or("?")
    );
    match reload["result"].as_str() {
        Some("error") => {
            let _ = writeln!(
                out,
                "last reload: FAILED at {} (old config still serving)",
                reload["time"].as_str().unwrap_or("?")
            );
            for line in reload["error"].as_str().unwrap_or("").lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        _ => {
            let _ = writeln!(out, "last reload: ok at {}", reload["time"].as_str().unwrap_or("?"));
        }
    }
    super::fleet::render_status_line(&mut out, &status["fleet"]);
    if let Some(change) = status["last_change"].as_object() {
        let text = |k: &str| change.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        let (why, who) = (text("why"), text("who"));
        let mut parts = why.split(CHANGE_WARNING);
        let what = change::describe(&who, parts.next().unwrap_or_default());
        let _ = writeln!(out, "last change: {what} at {}", text("time"));
        for warning in parts {
            let _ = writeln!(out, "  WARNING: {warning}");
        }
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:<12} {:>7} {:>9} {:>7}  HEALTH",
        "ROUTE", "BACKEND", "WEIGHT", "REQ/S 1m", "ERR 1m"
    );
    for route in status["routes"].as_array().into_iter().flatten() {
        let name = route["name"].as_str().unwrap_or("?");
        let stable = route["stable"].as_str().unwrap_or("");
        for (i, b) in route["backends"].as_array().into_iter().flatten().enumerate() {
            let backend = b["name"].as_str().unwrap_or("?");
            let marker = if backend == stable { "*" } else { "" };
            let _ = writeln!(
                out,
                "{:<16} {:<12} {:>6}% {:>9.1} {:>6.1}%  {}",
                if i == 0 { name } else { "" },
                format!("{backend}{marker}"),
                b["weight"].as_f64().unwrap_or(0.0),
                b["requests_per_second"].as_f64().unwrap_or(0.0),
                b["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
                b["health"].as_str().unwrap_or("?"),
            );
        }
    }
    for route in status["routes"].as_array().into_iter().flatten() {
        let Some(guard) = route["guard"].as_object() else {
            continue;
        };
        let name = route["name"].as_str().unwrap_or("?");
        let min = guard.get("min_requests").and_then(Value::as_u64).unwrap_or(0);
        if let Some(event) = guard.get("last_rollback").and_then(Value::as_object) {
            let _ = writeln!(
                out,
                "\nguard {name}: ROLLED BACK at {}: {}",
                event.get("time").and_then(Value::as_str).unwrap_or("?"),
                event.get("reason").and_then(Value::as_str).unwrap_or("?")
            );
        }
        for (backend, w) in guard.get("windows").and_then(Value::as_object).into_iter().flatten() {
            let n = w["requests"].as_u64().unwrap_or(0);
            let state = if n < min {
                format!("waiting for traffic ({n}/{min} requests in window)")
            } else {
                format!("armed ({n} requests in window)")
            };
            let _ = writeln!(
                out,
                "guard {name}/{backend}: {state}, errors {:.1}%, p99 {} ms, mismatches {:.1}% of {}",
                w["error_rate"].as_f64().unwrap_or(0.0) * 100.0,
                w["p99"].as_u64().map_or("-".to_string(), |v| v.to_string()),
                w["mismatch_rate"].as_f64().unwrap_or(0.0) * 100.0,
                w["compared"].as_u64().unwrap_or(0),
            );
        }
    }
    let _ = writeln!(out, "\n* stable backend (rollback target)");
    out
}

pub(super) struct AdminClient {
    addr: SocketAddr,
    token: Option<String>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    pub(super) async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(actor) = actor() {
            req = req.header(ACTOR_HEADER, actor);
        }
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req.body(Full::new(body))?))
            .await
            .context("the admin API did not answer within 10 s")?
            .with_context(|| format!("cannot reach the admin API at {}", self.addr))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"error": String::from_utf8_lossy(&bytes)}));
        if status == StatusCode::OK {
            Ok(value)
        } else if status == StatusCode::UNAUTHORIZED {
            bail!(
                "{} ({status}): the admin API needs its token: pass --token-file, set CUTOVER_ADMIN_TOKEN, \
                 or name the config whose admin.token_file holds it (-c)",
                value["error"].as_str().unwrap_or("unauthorized")
            )
        } else {
            bail!("{} ({status})", value["error"].as_str().unwrap_or("request failed"))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::render_status;

    fn last_change(who: &str, why: &str) -> Vec<String> {
        let status = json!({"last_change": {"time": "T", "who": who, "why": why}});
        render_status(&status)
            .lines()
            .skip_while(|l| !l.starts_with("last change"))
            .take_while(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn last_change_names_who_once_and_puts_warnings_on_their_own_lines() {
        assert_eq!(
            last_change("127.0.0.1:4000 (alice)", "shift api"),
            ["last change: shift api by 127.0.0.1:4000 (alice) at T"]
        );
        assert_eq!(
            last_change("weight file", "weight file changed"),
            ["last change: weight file changed at T"]
        );
        assert_eq!(
            last_change("weight file", "weight file changed; WARNING: api raised; WARNING: web raised"),
            [
                "last change: weight file changed at T",
                "  WARNING: api raised",
                "  WARNING: web raised"
            ]
        );
    }
}
