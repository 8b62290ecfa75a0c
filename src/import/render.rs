//! Writes `cutover.yaml` and `weights.yaml`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::config::format_percent;

use super::assemble::{ConfigPlan, NamedRoute};
use super::routes::PathCond;
use super::upstreams::StickyBy;

pub(super) fn config(source: &Path, plan: &ConfigPlan, notes: &[String]) -> String {
    let (listeners, routes, body_limit) = (&plan.listeners, &plan.routes, &plan.body_limit);
    let mut o = String::new();
    let _ = writeln!(o, "# cutover config imported from {} by `cutover import-nginx`.", source.display());
    let _ = writeln!(
        o,
        "# Comments name the nginx lines each entry came from. Before relying on it, review"
    );
    let _ = writeln!(o, "# the directives the import listed as not converted.");
    if !notes.is_empty() {
        let _ = writeln!(o, "#\n# Notes:");
        for n in notes {
            for (k, line) in wrap(n, 86).iter().enumerate() {
                let _ = writeln!(o, "#   {} {line}", if k == 0 { "-" } else { " " });
            }
        }
    }
    let _ = writeln!(o, "\nlisteners:");
    for l in listeners {
        let _ = writeln!(o, "  - name: {}  # {}", yaml_scalar(&l.name), l.origin);
        let _ = writeln!(o, "    addr: {}", yaml_quoted(&l.addr));
        if !l.tls.is_empty() {
            let _ = writeln!(o, "    tls:\n      certs:");
            for p in &l.tls {
                let _ = writeln!(
                    o,
                    "        - {{ cert: {}, key: {} }}  # {}, {}",
                    yaml_quoted(&p.cert.to_string_lossy()),
                    yaml_quoted(&p.key.to_string_lossy()),
                    p.cert_at,
                    p.key_at
                );
            }
        }
    }
    let _ = writeln!(o, "admin:\n  addr: \"127.0.0.1:9901\"");
    let _ = writeln!(o, "weights_file: weights.yaml");
    let _ = writeln!(o, "access_log: {{ format: combined, path: stdout }}");
    if let Some((bytes, why)) = body_limit {
        let _ = writeln!(o, "server:\n  max_body_bytes: {bytes}  # {why}");
    }
    let _ = writeln!(o, "\nbackends:");
    for b in &plan.backends {
        let _ = writeln!(o, "  {}:  # {}", yaml_scalar(&b.name), b.origin);
        let _ = writeln!(o, "    url: {}", yaml_quoted(&b.url));
        if let Some(tls) = &b.tls {
            let mut parts = Vec::new();
            if let Some(ca) = &tls.ca_file {
                parts.push(format!("ca_file: {}", yaml_quoted(&ca.to_string_lossy())));
            }
            if let Some(n) = &tls.server_name {
                parts.push(format!("server_name: {}", yaml_scalar(n)));
            }
            let _ = writeln!(o, "    tls: {{ {} }}  # {}", parts.join(", "), tls.origin);
        }
        if let Some((h, why)) = &b.host_header {
            let _ = writeln!(o, "    host_header: {}  # {why}", yaml_scalar(h));
        }
        if let Some(t) = &b.connect_timeout {
            let _ = writeln!(o, "    connect_timeout: {}  # {}", format_duration(t.value), t.origin());
        }
        if let Some(t) = &b.timeout {
            let _ = writeln!(o, "    timeout: {}  # {}", format_duration(t.value), t.origin());
        }
    }
    let _ = writeln!(
        o,
        "\n# First match wins. The order reproduces nginx's location precedence: exact (=)"
    );
    let _ = writeln!(
        o,
        "# locations, then ^~ prefixes, then regexes in file order, then the other prefixes;"
    );
    let _ = writeln!(o, "# among prefixes, a longer one comes before every shorter one it extends.");
    let _ = writeln!(o, "routes:");
    for r in routes {
        let p = &r.plan;
        for c in &p.comments {
            let _ = writeln!(o, "  # {c}");
        }
        let _ = writeln!(o, "  - name: {}", yaml_scalar(&r.name));
        let mut m = match &p.matcher {
            PathCond::Prefix(x) => format!("path_prefix: {}", yaml_scalar(x)),
            PathCond::Exact(x) => format!("path: {}", yaml_scalar(x)),
            PathCond::Regex(x) => format!("path_regex: {}", yaml_quoted(x)),
        };
        if let Some(h) = &r.host {
            let _ = write!(m, ", host: {}", yaml_scalar(h));
        }
        let _ = writeln!(o, "    match: {{ {m} }}");
        if let Some(s) = &p.stable {
            let _ = writeln!(o, "    stable: {}", yaml_scalar(s));
        }
        let _ = writeln!(o, "    backends:");
        for rb in &p.backends {
            let b = &rb.name;
            match &rb.rewrite {
                Some((prefix, to)) => {
                    let _ = writeln!(
                        o,
                        "      {}: {{ rewrite: {{ prefix: {}, to: {} }} }}",
                        yaml_scalar(b),
                        yaml_scalar(prefix),
                        yaml_scalar(to)
                    );
                }
                None => {
                    let _ = writeln!(o, "      {}: {{}}", yaml_scalar(b));
                }
            }
        }
        if let Some(sticky) = &p.sticky {
            let (kind, v) = match sticky {
                StickyBy::Cookie(c) => ("cookie", c),
                StickyBy::Header(h) => ("header", h),
            };
            let _ = writeln!(o, "    sticky: {{ {kind}: {} }}", yaml_scalar(v));
        }
        if let Some(to) = &p.mirror {
            let _ = writeln!(o, "    mirror: {{ to: {} }}", yaml_scalar(to));
        }
    }
    o
}

pub(super) fn weights(source: &Path, routes: &[NamedRoute]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# Percent of each route's traffic per backend, imported from {}.",
        source.display()
    );
    let mut any = false;
    for r in routes {
        let Some(w) = &r.plan.weights else { continue };
        any = true;
        for c in &r.plan.weight_comments {
            let _ = writeln!(o, "# {c}");
        }
        let parts: Vec<String> = r
            .plan
            .backends
            .iter()
            .zip(w)
            .map(|(b, bp)| format!("{}: {}", yaml_scalar(&b.name), format_percent(*bp as u16)))
            .collect();
        let _ = writeln!(o, "{}: {{ {} }}", yaml_scalar(&r.name), parts.join(", "));
    }
    if !any {
        let _ = writeln!(o, "# No route is split between backends yet.\n{{}}");
    }
    o
}

/// A duration as cutover writes it: `2s`, `1500ms`.
fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("one line");
        if !last.is_empty() && last.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

/// A YAML scalar: plain when that is unambiguous, quoted otherwise.
fn yaml_scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c))
        && !s.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '-')
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n" | "~"
        );
    if plain { s.to_string() } else { yaml_quoted(s) }
}

/// A double-quoted YAML scalar (JSON string syntax is valid YAML).
fn yaml_quoted(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}
