//! `cutover check`: validate both files and print the compiled route table.

use std::path::Path;

use cutover::config::{Config, Weights, format_percent};

pub fn run(path: &Path) -> anyhow::Result<()> {
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
        let _ = writeln!(out, "{:>3}. {}  match: {}", ri + 1, route.name, route.matcher);
        let sticky = match &route.sticky {
            cutover::config::Sticky::None => "none (random per request)".to_string(),
            cutover::config::Sticky::Cookie(c) => format!("cookie {c}"),
            cutover::config::Sticky::Header(h) => format!("header {h}"),
            cutover::config::Sticky::Pin(c) => format!("pin cookie {c}"),
        };
        let _ = writeln!(out, "     sticky: {sticky}   stable: {}", route.backends[route.stable].spec.name);
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
