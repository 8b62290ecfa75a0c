//! `upstream` and `split_clients` blocks. They are read once, from the http
//! level, and then looked up (and marked used) by the routes that proxy to
//! them; the ones no converted route uses are listed at the end.

use indexmap::IndexMap;

use super::nginx::{Directive, Pos};
use super::proxy_pass::normalize_host_port;
use super::report::{Report, reason_for};

/// 100% in basis points.
const HUNDRED_PERCENT: u32 = 10_000;

/// A `server` of an `upstream` block.
#[derive(Debug, Clone)]
pub(super) struct UpstreamServer {
    /// `host:port`.
    pub(super) addr: String,
    pub(super) weight: u32,
    pub(super) backup: bool,
    pub(super) at: Pos,
    pub(super) text: String,
}

/// An nginx `upstream NAME { server ...; }` block.
#[derive(Debug)]
pub(super) struct UpstreamBlock {
    pub(super) at: Pos,
    pub(super) text: String,
    /// A converted route proxies to it.
    pub(super) used: bool,
    pub(super) servers: Vec<UpstreamServer>,
    /// Why its servers cannot become separate backends, if they cannot.
    pub(super) no_expand: Option<String>,
    /// The servers after the first were listed as not converted already.
    pub(super) rest_listed: bool,
}

impl UpstreamBlock {
    /// Basis points per server, in proportion to `weight=`; `backup` servers get 0.
    pub(super) fn basis_points(&self) -> Vec<u32> {
        let total: u32 = self.servers.iter().filter(|s| !s.backup).map(|s| s.weight).sum();
        let shares: Vec<u32> = self.servers.iter().map(|s| if s.backup { 0 } else { s.weight }).collect();
        if total == 0 { vec![0; shares.len()] } else { apportion(&shares) }
    }
}

/// A `split_clients KEY $variable { PERCENT VALUE; ... }` block.
#[derive(Debug)]
pub(super) struct SplitClients {
    pub(super) key: String,
    pub(super) at: Pos,
    pub(super) text: String,
    /// (basis points, value) in nginx's order; `*` resolved.
    pub(super) entries: Vec<(u32, String)>,
    /// Why the split cannot be converted, if it cannot.
    pub(super) error: Option<String>,
    pub(super) used: bool,
}

/// The upstream blocks by name and the splits by variable name.
#[derive(Debug, Default)]
pub(super) struct Upstreams {
    pub(super) blocks: IndexMap<String, UpstreamBlock>,
    pub(super) splits: IndexMap<String, SplitClients>,
}

impl Upstreams {
    /// The `upstream` and `split_clients` blocks among the http-level directives.
    pub(super) fn read(dirs: &[Directive], report: &mut Report) -> Upstreams {
        let mut out = Upstreams::default();
        for d in dirs {
            match d.name.as_str() {
                "upstream" if d.block.is_some() => out.upstream(d, report),
                "split_clients" if d.block.is_some() => out.split_clients(d, report),
                _ => {}
            }
        }
        out
    }

    fn upstream(&mut self, d: &Directive, report: &mut Report) {
        let Some(name) = d.arg(0).filter(|_| d.args.len() == 1) else {
            report.skip(d, "invalid upstream block");
            return;
        };
        let mut up = UpstreamBlock {
            at: d.at.clone(),
            text: d.text(),
            used: false,
            servers: Vec::new(),
            no_expand: None,
            rest_listed: false,
        };
        for c in d.children() {
            match c.name.as_str() {
                "server" => {
                    if let Some(server) = upstream_server(c, report) {
                        up.servers.push(server);
                    }
                }
                n @ ("ip_hash" | "hash" | "least_conn" | "random" | "least_time" | "sticky" | "ntlm") => {
                    up.no_expand = Some(format!("upstream {name} balances with {n}"));
                    report.skip(c, reason_for(n));
                }
                n => report.skip(c, reason_for(n)),
            }
        }
        if up.servers.is_empty() {
            report.skip(d, "no server cutover can reach");
        }
        self.blocks.insert(name.to_string(), up);
    }

    fn split_clients(&mut self, d: &Directive, report: &mut Report) {
        let (Some(key), Some(var), 2) = (d.arg(0), d.arg(1), d.args.len()) else {
            report.skip(d, "invalid split_clients block");
            return;
        };
        let Some(var) = var.strip_prefix('$') else {
            report.skip(d, "invalid split_clients variable");
            return;
        };
        let mut split = SplitClients {
            key: key.to_string(),
            at: d.at.clone(),
            text: d.text(),
            entries: Vec::new(),
            error: None,
            used: false,
        };
        let mut total = 0u32;
        let mut rest = None;
        for c in d.children() {
            let value = c.arg(0).unwrap_or("").to_string();
            if c.name == "*" {
                rest = Some(value);
            } else if let Some(bp) = c.name.strip_suffix('%').and_then(parse_basis_points) {
                total += bp;
                split.entries.push((bp, value));
            } else {
                split.error = Some(format!("{}: invalid percentage {:?}", c.at, c.name));
            }
        }
        if total > HUNDRED_PERCENT {
            split.error = Some("percentages add up to more than 100%".into());
        } else if total < HUNDRED_PERCENT {
            match rest {
                Some(v) => split.entries.push((HUNDRED_PERCENT - total, v)),
                None => split.error = Some("percentages add up to less than 100% and there is no `*` entry".into()),
            }
        }
        if split.entries.iter().any(|(bp, v)| v.is_empty() && *bp > 0) {
            split.error = Some("some requests get an empty value".into());
        }
        self.splits.insert(var.to_string(), split);
    }

    pub(super) fn report_unused_splits(&self, report: &mut Report) {
        for split in self.splits.values().filter(|s| !s.used) {
            report.list(
                split.at.clone(),
                "split_clients",
                split.text.clone(),
                "not used by a convertible proxy_pass http://$variable",
            );
        }
    }

    pub(super) fn report_unused_blocks(&self, report: &mut Report) {
        for up in self.blocks.values().filter(|u| !u.used && !u.servers.is_empty()) {
            report.list(up.at.clone(), "upstream", up.text.clone(), "no converted route proxies to it");
        }
    }
}

/// A `server` line of an upstream block, or `None` when it is listed instead.
fn upstream_server(c: &Directive, report: &mut Report) -> Option<UpstreamServer> {
    let Some(addr) = c.arg(0) else {
        report.skip(c, "invalid server");
        return None;
    };
    // Upstream servers default to port 80, whatever the proxy_pass scheme.
    let Some(addr) = normalize_host_port(addr, 80) else {
        report.skip(c, "not an HTTP host:port or unix socket cutover can reach");
        return None;
    };
    let mut weight = 1;
    let mut backup = false;
    let mut down = false;
    let mut ignored = Vec::new();
    for p in &c.args[1..] {
        let p = p.text.as_str();
        if let Some(w) = p.strip_prefix("weight=") {
            match w.parse::<u32>() {
                Ok(w) if w > 0 => weight = w,
                _ => ignored.push(p.to_string()),
            }
        } else if p == "backup" {
            backup = true;
        } else if p == "down" {
            down = true;
        } else {
            ignored.push(p.split('=').next().unwrap_or(p).to_string());
        }
    }
    if down {
        report.skip(c, "marked down: left out");
        return None;
    }
    if !ignored.is_empty() {
        let hint = if ignored.iter().any(|p| p == "max_fails" || p == "fail_timeout") {
            " (the nearest cutover setting is the backend's passive_health: consecutive_failures, cool_off)"
        } else {
            ""
        };
        report.skip(c, format!("parameters not converted: {}{hint}", ignored.join(", ")));
    }
    Some(UpstreamServer {
        addr,
        weight,
        backup,
        at: c.at.clone(),
        text: c.text(),
    })
}

/// Percent text (`12.5`) → basis points, at most two decimals as in nginx.
fn parse_basis_points(text: &str) -> Option<u32> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 2 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let whole: u32 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let frac: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<2}").parse().ok()? };
    whole.checked_mul(100)?.checked_add(frac).filter(|&bp| bp <= HUNDRED_PERCENT)
}

/// Splits 100% in proportion to `shares` with the largest-remainder method.
fn apportion(shares: &[u32]) -> Vec<u32> {
    let total: u64 = shares.iter().map(|&s| u64::from(s)).sum();
    if total == 0 {
        return vec![0; shares.len()];
    }
    let exact: Vec<u64> = shares.iter().map(|&s| u64::from(s) * u64::from(HUNDRED_PERCENT)).collect();
    let mut out: Vec<u32> = exact.iter().map(|e| (e / total) as u32).collect();
    let mut left = HUNDRED_PERCENT - out.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(exact[i] % total), i));
    for i in order {
        if left == 0 {
            break;
        }
        if shares[i] > 0 {
            out[i] += 1;
            left -= 1;
        }
    }
    out
}

/// The variables named in a split_clients key (`${cookie_id}x` → `cookie_id`).
fn key_variables(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = key;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let name = if let Some(inner) = rest.strip_prefix('{') {
            let end = inner.find('}').unwrap_or(inner.len());
            let name = &inner[..end];
            rest = inner.get(end + 1..).unwrap_or("");
            name
        } else {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let name = &rest[..end];
            rest = &rest[end..];
            name
        };
        if !name.is_empty() {
            out.push(name.to_string());
        }
    }
    out
}

/// Whether a split_clients key has text besides its variables.
pub(super) fn key_has_literal_text(key: &str) -> bool {
    let vars = key_variables(key);
    let mut stripped = key.to_string();
    for v in &vars {
        stripped = stripped.replacen(&format!("${{{v}}}"), "", 1).replacen(&format!("${v}"), "", 1);
    }
    !stripped.is_empty()
}

/// How a route with a split_clients key is sticky.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StickyBy {
    Cookie(String),
    Header(String),
}

/// The stickiness for a split_clients key: by a cookie or a header, else none (random).
pub(super) fn sticky_for_key(key: &str) -> Option<StickyBy> {
    let vars = key_variables(key);
    let [var] = vars.as_slice() else {
        return None;
    };
    if let Some(c) = var.strip_prefix("cookie_") {
        return Some(StickyBy::Cookie(c.to_string()));
    }
    if let Some(h) = var.strip_prefix("http_") {
        return Some(StickyBy::Header(h.replace('_', "-")));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_and_apportioning() {
        assert_eq!(parse_basis_points("12.5"), Some(1250));
        assert_eq!(parse_basis_points("0.01"), Some(1));
        assert_eq!(parse_basis_points("90"), Some(9000));
        assert_eq!(parse_basis_points("1.234"), None);
        assert_eq!(apportion(&[1, 1, 1]), vec![3334, 3333, 3333]);
        assert_eq!(apportion(&[3, 1, 0]), vec![7500, 2500, 0]);
    }

    #[test]
    fn sticky_keys() {
        assert_eq!(sticky_for_key("${cookie_sessionid}"), Some(StickyBy::Cookie("sessionid".into())));
        assert_eq!(sticky_for_key("$http_x_user_id"), Some(StickyBy::Header("x-user-id".into())));
        assert_eq!(sticky_for_key("${remote_addr}AAA"), None);
        assert!(key_has_literal_text("${cookie_id}salt"));
        assert!(!key_has_literal_text("$cookie_id"));
    }
}
