//! `cutover check`: validate both files and print the compiled route table.

use std::path::Path;

use cutover::config::{Config, Weights, format_percent};

pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    // A fleet replica's weight file only caches the fleet's table: before
    // its first start there is none, and it starts on the stable backends.
    let weights = if config.fleet.is_some() && !config.weights_path.exists() {
        eprintln!(
            "note: no weight file yet at {}; in fleet mode the replica starts every route on its stable backend and follows the fleet table",
            config.weights_path.display()
        );
        Weights::all_stable(&config)
    } else {
        Weights::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?
    };
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
        let redirect = match l.redirect_https {
            Some(443) => " (redirects to https)".to_string(),
            Some(port) => format!(" (redirects to https on port {port})"),
            None => String::new(),
        };
        let _ = writeln!(out, "listener:  {} {}{redirect}", l.name, l.addr);
    }
    let token = if config.admin.token.is_some() {
        "token required"
    } else {
        "no token"
    };
    let _ = writeln!(out, "admin:     {} ({token})", config.admin.addr);
    if let Some(compression) = &config.compression {
        let _ = writeln!(out, "compression: {compression}");
    }
    let _ = writeln!(out, "\nroutes (first match wins):");
    for (ri, route) in config.routes.iter().enumerate() {
        let _ = writeln!(out, "{:>3}. {}  match: {}", ri + 1, route.name, route.matcher);
        let sticky = match &route.sticky {
            cutover::config::Sticky::None => "none (random per request)".to_string(),
            cutover::config::Sticky::Cookie(c) => format!("cookie {c}"),
            cutover::config::Sticky::Header(h) => format!("header {h}"),
            cutover::config::Sticky::Pin(c) => format!("pin cookie {c}"),
        };
        let _ = writeln!(out, "     sticky: {sticky}   stable: {}", route.backends[route.stable].spec.name);
        if let Some(nets) = &route.allow_from {
            let nets: Vec<String> = nets.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "     allow from: {} (others get 403)", nets.join(", "));
        }
        if let Some(f) = &route.force_header {
            let from: Vec<String> = f.from.iter().map(ToString::to_string).collect();
            let token = if f.token.is_some() { ", with its token" } else { "" };
            let _ = writeln!(out, "     force header: {} from {}{token}", f.name, from.join(", "));
        }
        if let Some(m) = &route.mirror {
            let methods: Vec<&str> = m.methods.iter().map(|m| m.as_str()).collect();
            let gate = m
                .min_clean_share
                .map(|s| format!(", shift gated below {:.1}% clean", s * 100.0))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "     mirror: {}% of {} to {} (the other way for its users), compare {}{gate}",
                m.share * 100.0,
                methods.join(","),
                route.backends[m.to].spec.name,
                if m.rules.values { "values" } else { "shape" },
            );
        }
        if let Some(g) = &route.guard {
            let mut limits = Vec::new();
            if let Some(r) = g.max_error_rate {
                limits.push(format!("errors > {:.1}%", r * 100.0));
            }
            if let Some(l) = g.max_p99_latency {
                limits.push(format!("p99 > {} ms", l.as_millis()));
            }
            if let Some(r) = g.max_mismatch_rate {
                limits.push(format!("mismatches > {:.1}%", r * 100.0));
            }
            let how = g
                .ramp
                .map_or("instantly".to_string(), |r| format!("over {}", humantime::format_duration(r)));
            let _ = writeln!(
                out,
                "     guard: roll back {how} when {} over {} (at least {} requests)",
                limits.join(" or "),
                humantime::format_duration(g.window),
                g.min_requests
            );
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
