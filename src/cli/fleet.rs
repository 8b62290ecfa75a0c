//! Fleet mode on the command line: `fleet seed`, `status --fleet`,
//! `parity --fleet`, and `--wait` after a change.

use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use http::Method;
use serde_json::Value;

use super::control::{Mode, Target, Wait, connect, file_actor};
use cutover::clock;
use cutover::config::weight_file::HistoryEntry;
use cutover::config::{Config, Weights, read_text};
use cutover::fleet::{FleetStore, SeedError};

/// How often `--wait` asks the replica how the fleet stands.
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Writes the config's weight file to etcd as the fleet's first table.
pub async fn seed(config_path: &Path, force: bool) -> anyhow::Result<()> {
    let config = Config::load(config_path).map_err(|e| anyhow!("{e}"))?;
    let settings = config
        .fleet
        .clone()
        .ok_or_else(|| anyhow!("{} has no fleet section: fleet mode is off", config_path.display()))?;
    let path = &config.weights_path;
    let text = read_text(path).map_err(|e| anyhow!("{e}"))?;
    let weights = Weights::parse(path, &text, &config).map_err(|e| anyhow!("{e}"))?;
    let store = FleetStore::new(&settings);
    let after = weights.named(&config);
    // What `undo` would restore: the table replaced, or (a first seed) the
    // seeded one itself, never nothing.
    let replaced = match store.read().await {
        Ok(Some(current)) => Weights::parse(path, &current.text, &config).ok().map(|w| w.named(&config)),
        _ => None,
    };
    let entry = HistoryEntry {
        time: clock::now_rfc3339(),
        who: file_actor(),
        why: format!("fleet seeded from {}", path.display()),
        before: replaced.unwrap_or_else(|| after.clone()),
        after,
    };
    match store.seed(&text, force, Some(entry)).await {
        Ok(revision) => {
            println!("seeded {} from {} at revision {revision}", store.keys().weights, path.display());
            Ok(())
        }
        Err(SeedError::AlreadySeeded { current }) => bail!(
            "the fleet already has a weight table ({} at revision {}); pass --force to overwrite it with {}",
            store.keys().weights,
            current.revision,
            path.display()
        ),
        Err(e) => Err(anyhow!("{e}")),
    }
}

async fn client(target: &Target) -> anyhow::Result<super::control::AdminClient> {
    match connect(target).await? {
        Mode::Api(client) => Ok(client),
        Mode::File(_) => bail!("no replica answers: fleet mode's view of the fleet comes from a running replica (--admin ADDR)"),
    }
}

/// After a change: returns once every live replica serves it, or fails
/// naming those that do not.
pub async fn wait(target: &Target, changed: &Value, wait: Wait) -> anyhow::Result<()> {
    if !wait.wait {
        return Ok(());
    }
    let Some(revision) = changed["fleet_revision"].as_i64() else {
        bail!(
            "not waiting: the change is not in the fleet table{}",
            changed["persist_error"].as_str().map(|e| format!(" ({e})")).unwrap_or_default()
        );
    };
    let client = client(target).await?;
    let started = Instant::now();
    let limit = Duration::from_secs(wait.timeout);
    loop {
        let answer = client.call(Method::GET, "/admin/fleet", None).await;
        let mut behind = Vec::new();
        if let Ok(fleet) = &answer {
            let replicas = fleet["replicas"].as_array().cloned().unwrap_or_default();
            for r in &replicas {
                let id = r["id"].as_str().unwrap_or("?");
                if let Some(refused) = r["rejected"].as_object()
                    && refused.get("revision").and_then(Value::as_i64) >= Some(revision)
                {
                    bail!(
                        "replica {id} refused the fleet table at revision {}: {}",
                        refused.get("revision").and_then(Value::as_i64).unwrap_or(revision),
                        refused.get("error").and_then(Value::as_str).unwrap_or("?")
                    );
                }
                if r["applied_revision"].as_i64().is_none_or(|applied| applied < revision) {
                    behind.push(format!("{id} (at {})", revision_text(&r["applied_revision"])));
                }
            }
            if behind.is_empty() {
                println!(
                    "all {} replicas serve revision {revision} ({:.0} ms)",
                    replicas.len(),
                    started.elapsed().as_secs_f64() * 1000.0
                );
                return Ok(());
            }
        }
        if started.elapsed() >= limit {
            match answer {
                Ok(_) => bail!(
                    "not every replica serves revision {revision} after {}s; lagging: {}",
                    wait.timeout,
                    behind.join(", ")
                ),
                Err(e) => bail!(
                    "cannot tell whether the fleet serves revision {revision} after {}s: {e}",
                    wait.timeout
                ),
            }
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

fn revision_text(v: &Value) -> String {
    v.as_i64().map_or_else(|| "none".to_string(), |r| r.to_string())
}

/// `status --fleet`: every live replica and the revision it serves.
pub async fn status(target: &Target) -> anyhow::Result<()> {
    let fleet = client(target).await?.call(Method::GET, "/admin/fleet", None).await?;
    print!("{}", render_fleet(&fleet));
    Ok(())
}

/// The `status --fleet` table.
pub fn render_fleet(fleet: &Value) -> String {
    let mut out = String::new();
    let reachable = fleet["etcd_reachable"].as_bool().unwrap_or(false);
    let _ = writeln!(
        out,
        "fleet table revision {}   {}   etcd {}",
        revision_text(&fleet["revision"]),
        if !reachable {
            "convergence unknown"
        } else if fleet["converged"].as_bool().unwrap_or(false) {
            "converged"
        } else {
            "NOT CONVERGED"
        },
        if reachable {
            "reachable"
        } else {
            "UNREACHABLE (as last seen by this replica)"
        }
    );
    if fleet["unseeded"].as_bool().unwrap_or(false) {
        let _ = writeln!(out, "the fleet has no weight table: seed it with `cutover fleet seed`");
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:<22} {:>9}  {:<9} {:<6} {:>7}",
        "REPLICA", "ADMIN", "REVISION", "STATE", "ETCD", "HELD"
    );
    for r in fleet["replicas"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<24} {:<22} {:>9}  {:<9} {:<6} {:>7}",
            r["id"].as_str().unwrap_or("?"),
            r["admin_addr"].as_str().unwrap_or("?"),
            revision_text(&r["applied_revision"]),
            r["state"].as_str().unwrap_or("?"),
            if r["connected"].as_bool().unwrap_or(false) { "ok" } else { "DOWN" },
            r["pending_rollbacks"].as_u64().unwrap_or(0),
        );
    }
    if let Some(laggards) = fleet["laggards"].as_array().filter(|l| !l.is_empty()) {
        let ids: Vec<&str> = laggards.iter().filter_map(Value::as_str).collect();
        let _ = writeln!(out, "\nlagging: {}", ids.join(", "));
    }
    for r in fleet["rejected"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "REJECTED by {}: revision {} ({}): {}",
            r["id"].as_str().unwrap_or("?"),
            revision_text(&r["revision"]),
            r["reason"].as_str().unwrap_or("?"),
            r["error"].as_str().unwrap_or("?")
        );
    }
    out
}

/// The fleet lines of `status`: only what needs saying.
pub fn render_status_line(out: &mut String, fleet: &Value) {
    let Some(f) = fleet.as_object() else { return };
    let text = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("?");
    let _ = writeln!(
        out,
        "fleet: replica {}, serving fleet table revision {}, etcd {}",
        text("replica_id"),
        revision_text(&fleet["applied_revision"]),
        if fleet["connected"].as_bool().unwrap_or(false) {
            "connected".to_string()
        } else {
            format!("UNREACHABLE ({})", text("etcd_error"))
        }
    );
    if fleet["unseeded"].as_bool().unwrap_or(false) {
        let _ = writeln!(
            out,
            "fleet: UNSEEDED: serving the weight file; seed the fleet with `cutover fleet seed`"
        );
    }
    if let Some(r) = fleet["rejected"].as_object() {
        let _ = writeln!(
            out,
            "fleet: CONFIG SKEW: refused revision {}: {}",
            revision_text(&fleet["rejected"]["revision"]),
            r.get("error").and_then(Value::as_str).unwrap_or("?")
        );
    }
    for p in fleet["pending_rollbacks"].as_array().into_iter().flatten() {
        let routes: Vec<&str> = p["routes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let _ = writeln!(
            out,
            "fleet: ROLLBACK NOT YET IN ETCD (live here, written when etcd is back): {} by {} at {}",
            routes.join(", "),
            p["who"].as_str().unwrap_or("?"),
            p["time"].as_str().unwrap_or("?")
        );
    }
}

/// `parity --fleet`: each mirrored route's parity summed over the fleet.
pub async fn parity(target: &Target, route: Option<String>, raw: bool) -> anyhow::Result<()> {
    let path = match &route {
        Some(r) => format!("/admin/parity?fleet=true&route={r}"),
        None => "/admin/parity?fleet=true".to_string(),
    };
    let report = client(target).await?.call(Method::GET, &path, None).await.context("fleet parity")?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let mut out = String::new();
    let _ = writeln!(out, "parity summed over {} live replicas", report["replicas"]);
    let routes = report["routes"].as_array().cloned().unwrap_or_default();
    if routes.is_empty() {
        out.push_str("no route mirrors traffic: add `mirror:` to a route to measure parity\n");
    }
    for r in routes {
        let pct = |x: f64| format!("{:.1}%", x * 100.0);
        let backends: Vec<&str> = r["backends"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let _ = write!(
            out,
            "\nroute {}: {}, {} requests compared",
            r["route"].as_str().unwrap_or("?"),
            backends.join(" vs "),
            r["compared"]
        );
        match (r["clean_share"].as_f64(), r["min_clean_share"].as_f64()) {
            (Some(share), Some(bar)) => {
                let _ = writeln!(
                    out,
                    ", {} clean ({} the bar of {}; shift is {})",
                    pct(share),
                    if share >= bar { "meets" } else { "BELOW" },
                    pct(bar),
                    if share >= bar { "allowed" } else { "refused without --force" }
                );
            }
            (Some(share), None) => {
                let _ = writeln!(out, ", {} clean", pct(share));
            }
            (None, _) => out.push_str(", nothing compared yet\n"),
        }
        for p in r["per_replica"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  {:<24} {:>8} compared  {}",
                p["id"].as_str().unwrap_or("?"),
                p["compared"],
                p["clean_share"]
                    .as_f64()
                    .map_or_else(|| "-".to_string(), |s| format!("{} clean", pct(s)))
            );
        }
    }
    print!("{out}");
    Ok(())
}
