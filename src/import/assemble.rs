//! From nginx's server blocks to cutover's one route table and listener set.
//!
//! nginx first picks a server by address and name, then a location; cutover
//! has one ordered route table for every listener. So the routes of each
//! server that is not a default server come first, with a `host` match per
//! server name, and the default servers' routes last, without one. Every
//! listen address becomes one listener, and the request body limit, per
//! location in nginx, becomes the largest of them.

use indexmap::IndexMap;
use std::collections::HashSet;

use crate::config::compression::RawCompression;

use super::backends::{BackendPlan, Backends};
use super::certs::{CertFiles, TlsPair};
use super::nginx::Pos;
use super::report::Report;
use super::routes::RoutePlan;
use super::servers::{Listen, ServerName, ServerPlan};
use super::settings::Sourced;
use super::upstreams::Upstreams;

/// nginx's default `client_max_body_size`.
const NGINX_BODY_LIMIT: u64 = 1 << 20;
/// nginx's default `gzip_min_length`.
const NGINX_GZIP_MIN_LENGTH: u64 = 20;

/// Everything `cutover.yaml` and `weights.yaml` are written from.
#[derive(Debug)]
pub(super) struct ConfigPlan {
    pub(super) listeners: Vec<ListenerPlan>,
    pub(super) backends: Vec<BackendPlan>,
    pub(super) routes: Vec<NamedRoute>,
    /// `server.max_body_bytes`, and the nginx line it came from.
    pub(super) body_limit: Option<(u64, String)>,
    /// `compression`, and the nginx lines it came from.
    pub(super) compression: Option<(RawCompression, Vec<String>)>,
}

#[derive(Debug)]
pub(super) struct ListenerPlan {
    pub(super) name: String,
    pub(super) addr: String,
    /// The `listen` it came from.
    pub(super) origin: String,
    pub(super) tls: Vec<TlsPair>,
    /// `redirect_https`: the port, and the `return` it came from.
    pub(super) to_https: Option<(u16, String)>,
}

/// A route with its final name and host match.
#[derive(Debug)]
pub(super) struct NamedRoute {
    pub(super) name: String,
    pub(super) host: Option<String>,
    pub(super) plan: RoutePlan,
}

/// What the earlier phases produced.
pub(super) struct Phases<'a> {
    pub(super) servers: Vec<ServerPlan>,
    pub(super) upstreams: &'a Upstreams,
    pub(super) backends: Backends,
    pub(super) certs: CertFiles,
    pub(super) auto_redirects: &'a [String],
}

/// The config to write, or `None` when no route converted.
pub(super) fn assemble(phases: Phases<'_>, report: &mut Report) -> Option<ConfigPlan> {
    let Phases {
        servers,
        upstreams,
        backends,
        mut certs,
        auto_redirects,
    } = phases;
    let defaults = DefaultServers::of(&servers);
    let routes = routes(&servers, &defaults, report);
    let mut listeners = listeners(&servers, &defaults, &mut certs, report);
    certs.report_unused(report);
    if listeners.iter().any(|l| !l.tls.is_empty()) {
        report.note(
            "TLS listeners use the certificate files named by ssl_certificate, as absolute paths; cutover picks a \
             certificate by the names it covers (SNI) rather than by server_name, with rustls' defaults (TLS 1.2 and \
             1.3) rather than ssl_protocols and ssl_ciphers",
        );
    }
    upstreams.report_unused_blocks(report);
    if listeners.is_empty() {
        listeners.push(ListenerPlan {
            name: "public".into(),
            addr: "0.0.0.0:8080".into(),
            origin: "no listen address could be converted".into(),
            tls: Vec::new(),
            to_https: None,
        });
        report.note("no nginx listen address could be converted: the listener is 0.0.0.0:8080");
    }
    if routes.is_empty() {
        return None;
    }
    let backends = backends.into_plans();
    if backends.iter().any(|b| b.connect_timeout.is_none() || b.timeout.is_none()) {
        report.note(
            "where nginx used its default proxy timeouts (connect 60s, read 60s), the backends keep cutover's \
             (connect_timeout 2s; timeout 30s, a deadline for the response head; body_timeout 60s between two reads of the body; tunnel_idle_timeout 1h for a WebSocket)",
        );
    }
    if !auto_redirects.is_empty() {
        let list = super::dedup(auto_redirects).join(", ");
        report.note(format!(
            "nginx answers a request for a proxied location's prefix without its trailing slash ({list}) with a 301 to \
             the slashed form; cutover passes it to whichever route matches it"
        ));
    }
    let body_limit = body_limit(&routes, report);
    let compression = compression(&routes, report);
    Some(ConfigPlan {
        listeners,
        backends,
        routes,
        body_limit,
        compression,
    })
}

/// nginx's default server for each address: the one marked default_server, else the first.
struct DefaultServers {
    by_addr: IndexMap<String, usize>,
    /// Per server: it is the default server of some address.
    is_default: Vec<bool>,
}

impl DefaultServers {
    fn of(servers: &[ServerPlan]) -> DefaultServers {
        let mut by_addr: IndexMap<String, usize> = IndexMap::new();
        for (i, s) in servers.iter().enumerate() {
            for l in s.listens.iter().filter(|l| l.default) {
                by_addr.insert(l.addr.clone(), i);
            }
        }
        for (i, s) in servers.iter().enumerate() {
            for l in &s.listens {
                by_addr.entry(l.addr.clone()).or_insert(i);
            }
        }
        let is_default = (0..servers.len()).map(|i| by_addr.values().any(|&d| d == i)).collect();
        DefaultServers { by_addr, is_default }
    }
}

/// The routes of every server: those that are not a default server first,
/// each route with a host match per server name; then the default servers'
/// routes, without one.
fn routes(servers: &[ServerPlan], defaults: &DefaultServers, report: &mut Report) -> Vec<NamedRoute> {
    let routed: Vec<usize> = (0..servers.len()).filter(|&i| !servers[i].routes.is_empty()).collect();
    let default_routed: Vec<usize> = routed.iter().copied().filter(|&i| defaults.is_default[i]).collect();
    if default_routed.len() > 1 {
        let list: Vec<String> = default_routed.iter().map(|&i| servers[i].at.to_string()).collect();
        report.note(format!(
            "the server blocks at {} are each the default server of their own address; cutover routes do not depend on \
             the listener, so their routes are all tried in that order on every listener",
            list.join(", ")
        ));
    }
    let mut out: Vec<NamedRoute> = Vec::new();
    let mut order: Vec<usize> = routed.iter().copied().filter(|&i| !defaults.is_default[i]).collect();
    order.extend(default_routed.iter().copied());
    let mut names_used: HashSet<String> = HashSet::new();
    for &i in &order {
        let s = &servers[i];
        let hosts: Vec<Option<&ServerName>> = if !defaults.is_default[i] {
            if s.names.is_empty() {
                let reason = if s.odd_names {
                    "its server names are not ones cutover can match"
                } else {
                    "it has no server_name"
                };
                for r in &s.routes {
                    report.list(
                        r.at.clone(),
                        "location",
                        r.loc_text.clone(),
                        format!("server at {} is not a default server and {reason}", s.at),
                    );
                }
                continue;
            }
            s.names.iter().map(Some).collect()
        } else {
            vec![None]
        };
        for host in hosts {
            for plan in &s.routes {
                let base = match host {
                    Some(h) => format!("{}-{}", h.label(), plan.base_name),
                    None => plan.base_name.clone(),
                };
                let mut name = base.clone();
                let mut k = 2;
                while !names_used.insert(name.clone()) {
                    name = format!("{base}-{k}");
                    k += 1;
                }
                out.push(NamedRoute {
                    name,
                    host: host.map(|h| h.pattern().to_string()),
                    plan: plan.clone(),
                });
            }
        }
    }
    out
}

/// Every listen address once; a wildcard address covers the specific ones on its port.
fn listeners(servers: &[ServerPlan], defaults: &DefaultServers, certs: &mut CertFiles, report: &mut Report) -> Vec<ListenerPlan> {
    let mut all: IndexMap<&str, &Listen> = IndexMap::new();
    for s in servers {
        for l in &s.listens {
            all.entry(l.addr.as_str()).or_insert(l);
        }
    }
    let mut out: Vec<ListenerPlan> = Vec::new();
    for (&addr, listen) in &all {
        let port = addr.rsplit_once(':').map(|x| x.1).unwrap_or("");
        let v4_wild = format!("0.0.0.0:{port}");
        let v6_wild = format!("[::]:{port}");
        let is_v6 = addr.starts_with('[');
        let covered_by = if addr != v4_wild && all.contains_key(v4_wild.as_str()) {
            Some(v4_wild)
        } else if is_v6 && addr != v6_wild && all.contains_key(v6_wild.as_str()) {
            Some(v6_wild)
        } else {
            None
        };
        if let Some(w) = covered_by {
            report.list(
                listen.at.clone(),
                "listen",
                listen.text.clone(),
                format!(
                    "served by the listener on {w}: cutover cannot bind both{}",
                    if is_v6 {
                        "; for IPv6 clients use addr \"[::]:PORT\" alone (on Linux it accepts IPv4 too)"
                    } else {
                        ""
                    }
                ),
            );
            continue;
        }
        let mut name = format!("port-{port}");
        let mut k = 2;
        while out.iter().any(|l| l.name == name) {
            name = format!("port-{port}-{k}");
            k += 1;
        }
        let tls = certs.listener_tls(addr, servers, defaults.by_addr.get(addr).copied(), report);
        out.push(ListenerPlan {
            name,
            addr: addr.to_string(),
            origin: format!("{} {}", listen.at, listen.text),
            to_https: to_https(addr, servers, report),
            tls,
        });
    }
    out
}

/// The listener's `redirect_https`, when every server on `addr` (or one
/// covered by it) sends its requests to https; when only some do, theirs
/// are listed: cutover redirects a whole listener or none of it.
fn to_https(addr: &str, servers: &[ServerPlan], report: &mut Report) -> Option<(u16, String)> {
    let port = |a: &str| a.rsplit_once(':').map(|x| x.1.to_string());
    let wildcard = addr.starts_with("0.0.0.0:") || addr.starts_with("[::]:");
    let on_addr = |s: &&ServerPlan| {
        s.listens
            .iter()
            .any(|l| l.addr == addr || (wildcard && port(&l.addr) == port(addr)))
    };
    let here: Vec<&ServerPlan> = servers.iter().filter(on_addr).collect();
    let redirects: Vec<_> = here.iter().filter_map(|s| s.to_https.as_ref()).collect();
    let first = redirects.first()?;
    if redirects.len() < here.len() {
        for r in &redirects {
            report.note(format!(
                "{}: not converted, other servers on {addr} proxy; cutover redirects a whole listener to https or none of it",
                r.origin
            ));
        }
        return None;
    }
    if let Some(host) = redirects.iter().find_map(|r| r.named_host.as_ref()) {
        report.note(format!(
            "{}: nginx redirects to {host}; cutover redirects to the host the client asked for",
            first.origin
        ));
    }
    report.note(format!(
        "{}: the listener on {addr} redirects to https (redirect_https), except ACME's /.well-known/acme-challenge/, \
         which is routed so certificates can be renewed over plain HTTP",
        first.origin
    ));
    Some((first.port, first.origin.clone()))
}

/// nginx gzips per location, cutover for every route or none: on when a
/// converted route has `gzip on`, with that route's types, length and level.
fn compression(routes: &[NamedRoute], report: &mut Report) -> Option<(RawCompression, Vec<String>)> {
    let on = |r: &&NamedRoute| r.plan.gzip.on.as_ref().is_some_and(|on| on.value);
    let first = routes.iter().find(on)?;
    let g = &first.plan.gzip;
    for r in routes.iter().filter(|r| r.plan.gzip != *g) {
        let what = if on(&r) { "gzips with other settings" } else { "does not gzip" };
        report.note(format!(
            "{} {}: nginx {what} here; cutover's compression, taken from {} {}, covers every route",
            r.plan.at, r.plan.loc_text, first.plan.at, first.plan.loc_text
        ));
    }
    // nginx always compresses text/html, whatever gzip_types says.
    let mut types = vec!["text/html".to_string()];
    types.extend(g.types.iter().flat_map(|t| t.value.iter()).filter(|t| *t != "text/html").cloned());
    let raw = RawCompression {
        gzip: true,
        level: g.level.as_ref().map_or(1, |l| l.value),
        min_bytes: g.min_length.as_ref().map_or(NGINX_GZIP_MIN_LENGTH, |l| l.value),
        types,
    };
    let origin = [g.on.as_ref().map(Sourced::origin), g.types.as_ref().map(Sourced::origin)]
        .into_iter()
        .chain([g.min_length.as_ref().map(Sourced::origin), g.level.as_ref().map(Sourced::origin)])
        .flatten()
        .collect();
    Some((raw, origin))
}

/// One request body limit for every route: nginx sets it per location,
/// cutover once (`server.max_body_bytes`), so the largest applies.
fn body_limit(routes: &[NamedRoute], report: &mut Report) -> Option<(u64, String)> {
    let effective = |r: &NamedRoute| match &r.plan.body_limit {
        Some(l) if l.value == 0 => u64::MAX,
        Some(l) => l.value,
        None => NGINX_BODY_LIMIT,
    };
    let largest = routes.iter().map(effective).max()?;
    let mut listed: HashSet<&Pos> = HashSet::new();
    for r in routes.iter().filter(|r| effective(r) < largest) {
        match &r.plan.body_limit {
            Some(l) => {
                if listed.insert(&l.at) {
                    report.list(
                        l.at.clone(),
                        "client_max_body_size",
                        l.text.clone(),
                        "cutover has one request body limit for all routes (server.max_body_bytes), set to the largest \
                         in the config",
                    );
                }
            }
            None => report.note(format!(
                "{} {}: nginx limits request bodies to 1m here (its default); cutover has one limit for all routes, the \
                 largest in the config",
                r.plan.at, r.plan.loc_text
            )),
        }
    }
    if largest == u64::MAX {
        return None;
    }
    let why = routes
        .iter()
        .find(|r| effective(r) == largest)
        .and_then(|r| r.plan.body_limit.as_ref())
        .map(|l| l.origin())
        .unwrap_or_else(|| "nginx's default client_max_body_size (1m)".into());
    Some((largest, why))
}
