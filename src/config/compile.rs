//! Raw config → typed [`Config`], with every cross-reference checked.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use http::HeaderValue;
use indexmap::IndexMap;

use super::error::ConfigError;
use super::raw::{
    CompareMode, RawBackend, RawClientNets, RawConfig, RawForceHeader, RawGuard, RawGuardRollback, RawHeaderMatch, RawMirror, RawRoute,
};
use super::values::RedirectHttps;
use super::yaml::{self, Positions};
use super::{
    AcceptRule, AccessLogSettings, Admin, AdminHost, BackendSpec, Config, ForceHeader, ForceToken, GuardSpec, HealthCheckSpec, Listener,
    LogTarget, MirrorSpec, PassiveSpec, RetrySpec, Rewrite, RouteBackend, RouteSpec, ServerSettings, Sticky,
};
use crate::compare::endpoint::{Endpoints, Template};
use crate::compare::redact::Redactor;
use crate::compare::{CompareRules, Kind, PathPattern};
use crate::routing::{HeaderMatch, HostMatch, Matcher, PathMatch};

pub fn compile(path: &Path, text: String) -> Result<Config, ConfigError> {
    let (raw, pos): (RawConfig, Positions) = yaml::parse(path, &text)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut errors = Vec::new();

    let listeners = compile_listeners(&raw, base, &pos, &mut errors);
    let backends = compile_backends(&raw.backends, base, &pos, &mut errors);
    let routes = compile_routes(&raw.routes, &backends, base, &pos, &mut errors);

    let token = raw
        .admin
        .token_file
        .as_ref()
        .and_then(|file| read_token(base, file, pos.value(&["admin", "token_file"]), &mut errors));
    let mut hosts = Vec::new();
    for (i, text) in raw.admin.hosts.iter().enumerate() {
        match AdminHost::parse(text) {
            Some(host) => hosts.push(host),
            None => errors.push(ConfigError::at(
                pos.value(&["admin", "hosts", &i.to_string()]),
                format!("{text:?} is not a host name or IP address (write it without scheme, port or wildcard)"),
            )),
        }
    }
    let admin = Admin {
        addr: raw.admin.addr.0,
        token,
        hosts,
    };
    if !admin.addr.ip().is_loopback() && admin.token.is_none() {
        errors.push(ConfigError::at(
            pos.value(&["admin", "addr"]),
            "admin address is not loopback: set admin.token_file so the admin API is not open to the network",
        ));
    }

    let target = match raw.access_log.path.as_str() {
        "off" => LogTarget::Off,
        "stdout" | "-" => LogTarget::Stdout,
        p => LogTarget::File(base.join(p)),
    };
    let server = ServerSettings {
        max_header_bytes: raw.server.max_header_bytes,
        max_headers: raw.server.max_headers,
        header_read_timeout: raw.server.header_read_timeout.0,
        drain_timeout: raw.server.drain_timeout.0,
        max_body_bytes: raw.server.max_body_bytes,
        body_read_timeout: raw.server.body_read_timeout.0,
        workers: raw
            .server
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(64)),
        idle_timeout: raw.server.idle_timeout.0,
        send_timeout: raw.server.send_timeout.0,
        encoded_slashes: raw.server.encoded_slashes,
        max_connections: raw.server.max_connections,
        unsized_body_buffer_bytes: raw.server.unsized_body_buffer_bytes,
    };
    if server.workers == 0 || server.workers > 64 {
        errors.push(ConfigError::at(
            pos.value(&["server", "workers"]),
            "workers must be between 1 and 64",
        ));
    }
    if server.max_connections == 0 {
        errors.push(ConfigError::at(
            pos.value(&["server", "max_connections"]),
            "max_connections must be at least 1",
        ));
    }
    if server.max_header_bytes < 8192 {
        errors.push(ConfigError::at(
            pos.value(&["server", "max_header_bytes"]),
            "max_header_bytes must be at least 8192",
        ));
    }

    let compression = raw
        .compression
        .as_ref()
        .and_then(|c| super::compression::compile(c, &pos, &mut errors))
        .map(Box::new);
    let fleet = raw
        .fleet
        .as_ref()
        .and_then(|f| super::fleet::compile(f, base, admin.addr.port(), &pos, &mut errors))
        .map(Arc::new);

    if let Some(err) = ConfigError::collect(errors) {
        return Err(err);
    }
    Ok(Config {
        path: path.to_path_buf(),
        weights_path: base.join(&raw.weights_file),
        text,
        listeners,
        admin,
        access_log: AccessLogSettings {
            format: raw.access_log.format,
            target,
        },
        trusted_proxies: raw.trusted_proxies.iter().map(|c| c.0).collect(),
        parity_log: raw.parity_log.as_ref().map(|l| super::ParityLogSettings {
            path: base.join(&l.path),
            max_bytes: l.max_bytes.max(4096),
        }),
        server,
        compression,
        backends,
        route_lookup: crate::routing::RouteIndex::build(routes.iter().map(|r| &r.matcher)),
        routes,
        fleet,
    })
}

fn compile_listeners(raw: &RawConfig, base: &Path, pos: &Positions, errors: &mut Vec<ConfigError>) -> Vec<Listener> {
    if raw.listeners.is_empty() {
        errors.push(ConfigError::at(pos.value(&[]), "at least one listener is required"));
    }
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, l) in raw.listeners.iter().enumerate() {
        let idx = i.to_string();
        if !names.insert(l.name.as_str()) {
            errors.push(ConfigError::at(
                pos.value(&["listeners", &idx, "name"]),
                format!("duplicate listener name {:?}", l.name),
            ));
        }
        let tls = l.tls.as_ref().map(|t| {
            if t.certs.is_empty() {
                errors.push(ConfigError::at(
                    pos.value(&["listeners", &idx, "tls", "certs"]),
                    "tls needs at least one certificate",
                ));
            }
            t.certs
                .iter()
                .enumerate()
                .map(|(ci, c)| {
                    let source = crate::tls::CertSource {
                        cert: base.join(&c.cert),
                        key: base.join(&c.key),
                    };
                    if let Err(e) = crate::tls::load(&source) {
                        errors.push(ConfigError::at(
                            pos.value(&["listeners", &idx, "tls", "certs", &ci.to_string()]),
                            e.to_string(),
                        ));
                    }
                    source
                })
                .collect()
        });
        let redirect_https = l.redirect_https.and_then(RedirectHttps::port);
        if redirect_https.is_some() && tls.is_some() {
            errors.push(ConfigError::at(
                pos.value(&["listeners", &idx, "redirect_https"]),
                "redirect_https is for a listener without tls",
            ));
        }
        out.push(Listener {
            name: l.name.clone(),
            addr: l.addr.0,
            tls,
            redirect_https,
        });
    }
    out
}

fn compile_backends(
    raw: &IndexMap<String, RawBackend>,
    base: &Path,
    pos: &Positions,
    errors: &mut Vec<ConfigError>,
) -> Vec<Arc<BackendSpec>> {
    if raw.is_empty() {
        errors.push(ConfigError::at(pos.value(&[]), "at least one backend is required"));
    }
    let mut out = Vec::new();
    for (name, b) in raw {
        // Names are written unquoted into the weight file, metrics labels and
        // `cutover shift NAME=PCT`: `a: b` or `x=y` would not read back.
        if !is_plain_name(name) {
            errors.push(ConfigError::at(
                pos.key(&["backends", name]),
                format!("backend name {name:?} must be letters, digits, '-', '_' or '.'"),
            ));
        }
        let health_check = b.health_check.as_ref().and_then(|h| {
            let at = |field: &str| pos.value(&["backends", name, "health_check", field]);
            let path = match h.path.parse::<http::uri::PathAndQuery>() {
                Ok(p) if h.path.starts_with('/') => Some(p),
                _ => {
                    errors.push(ConfigError::at(
                        at("path"),
                        format!("health check path {:?} must be a path starting with '/'", h.path),
                    ));
                    None
                }
            };
            if h.healthy_threshold == 0 || h.unhealthy_threshold == 0 {
                errors.push(ConfigError::at(at("healthy_threshold"), "thresholds must be at least 1"));
            }
            if h.interval.0.is_zero() {
                errors.push(ConfigError::at(at("interval"), "interval must be positive"));
            }
            let host = match h.host.as_deref().map(HeaderValue::from_str) {
                Some(Err(_)) => {
                    errors.push(ConfigError::at(
                        at("host"),
                        format!("invalid Host value {:?}", h.host.as_deref().unwrap_or("")),
                    ));
                    return None;
                }
                host => host.and_then(Result::ok),
            };
            Some(HealthCheckSpec {
                path: path?,
                host,
                interval: h.interval.0,
                timeout: h.timeout.0,
                healthy_threshold: h.healthy_threshold.max(1),
                unhealthy_threshold: h.unhealthy_threshold.max(1),
            })
        });
        let passive = (b.passive_health.consecutive_failures > 0).then_some(PassiveSpec {
            consecutive_failures: b.passive_health.consecutive_failures,
            cool_off: b.passive_health.cool_off.0,
        });
        let host_header = match &b.host_header {
            None => None,
            Some(h) => match HeaderValue::from_str(h) {
                Ok(v) => Some(v),
                Err(_) => {
                    errors.push(ConfigError::at(
                        pos.value(&["backends", name, "host_header"]),
                        format!("invalid Host value {h:?}"),
                    ));
                    None
                }
            },
        };
        let tls = b.tls.as_ref().map(|t| crate::tls::BackendTls {
            ca_file: t.ca_file.as_ref().map(|f| base.join(f)),
            server_name: t.server_name.clone(),
        });
        if tls.is_some() && b.url.scheme != http::uri::Scheme::HTTPS {
            errors.push(ConfigError::at(
                pos.key(&["backends", name, "tls"]),
                "tls settings need an https:// url",
            ));
        }
        if let Some(dir) = &b.url.directory
            && !dir.is_dir()
        {
            let why = if dir.exists() { "is not a directory" } else { "does not exist" };
            errors.push(ConfigError::at(
                pos.value(&["backends", name, "url"]),
                format!("{} {why}", dir.display()),
            ));
        }
        if let Some(t) = &tls {
            if let Err(e) = crate::tls::client_config(Some(t)) {
                errors.push(ConfigError::at(pos.value(&["backends", name, "tls"]), e.to_string()));
            }
            if let Some(n) = &t.server_name
                && rustls_pki_types::ServerName::try_from(n.as_str()).is_err()
            {
                errors.push(ConfigError::at(
                    pos.value(&["backends", name, "tls", "server_name"]),
                    format!("invalid server name {n:?}"),
                ));
            }
        }
        out.push(Arc::new(BackendSpec {
            name: name.as_str().into(),
            url: b.url.clone(),
            connect_timeout: b.connect_timeout.0,
            timeout: b.timeout.0,
            body_timeout: b.body_timeout.0,
            tunnel_idle_timeout: b.tunnel_idle_timeout.0,
            pool_idle_timeout: b.pool_idle_timeout.0,
            pool_max_idle: b.pool_max_idle,
            host_header,
            health_check,
            passive,
            tls,
        }));
    }
    out
}

/// A secret from a file, trimmed; resolved against the config file's folder.
fn read_token(base: &Path, file: &Path, at: super::Location, errors: &mut Vec<ConfigError>) -> Option<String> {
    let file = base.join(file);
    match super::file::read_text(&file) {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
        Ok(_) => {
            errors.push(ConfigError::at(at, format!("token file {} is empty", file.display())));
            None
        }
        Err(e) => {
            errors.push(ConfigError::at(at, format!("cannot read token file {e}")));
            None
        }
    }
}

fn compile_routes(
    raw: &[RawRoute],
    backends: &[Arc<BackendSpec>],
    base: &Path,
    pos: &Positions,
    errors: &mut Vec<ConfigError>,
) -> Vec<RouteSpec> {
    if raw.is_empty() {
        errors.push(ConfigError::at(pos.value(&[]), "at least one route is required"));
    }
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let idx = i.to_string();
        let at = |rest: &[&str]| {
            let mut p = vec!["routes", idx.as_str()];
            p.extend_from_slice(rest);
            p.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        };
        let value = |rest: &[&str]| pos.value(&at(rest).iter().map(String::as_str).collect::<Vec<_>>());
        let key = |rest: &[&str]| pos.key(&at(rest).iter().map(String::as_str).collect::<Vec<_>>());

        if !is_plain_name(&r.name) {
            errors.push(ConfigError::at(
                value(&["name"]),
                format!("route name {:?} must be letters, digits, '-', '_' or '.'", r.name),
            ));
        }
        if !names.insert(r.name.as_str()) {
            errors.push(ConfigError::at(value(&["name"]), format!("duplicate route name {:?}", r.name)));
        }

        let mut route_backends = Vec::new();
        if r.backends.is_empty() {
            errors.push(ConfigError::at(value(&["backends"]), "a route needs at least one backend"));
        }
        for (name, rb) in &r.backends {
            let Some(spec) = backends.iter().find(|b| &*b.name == name) else {
                errors.push(ConfigError::at(
                    key(&["backends", name]),
                    format!("unknown backend {name:?} (not in `backends`)"),
                ));
                continue;
            };
            let rewrite = rb.as_ref().and_then(|rb| rb.rewrite.as_ref()).map(|rw| Rewrite {
                prefix: rw.prefix.clone(),
                to: rw.to.clone(),
            });
            if let Some(rw) = &rewrite
                && (!rw.prefix.starts_with('/') || !rw.to.starts_with('/'))
            {
                errors.push(ConfigError::at(
                    value(&["backends", name, "rewrite"]),
                    "rewrite prefix and to must start with '/'",
                ));
            }
            route_backends.push(RouteBackend {
                spec: spec.clone(),
                rewrite,
            });
        }

        let stable = match &r.stable {
            None => 0,
            Some(s) => match r.backends.get_index_of(s.as_str()) {
                Some(i) => i,
                None => {
                    errors.push(ConfigError::at(
                        value(&["stable"]),
                        format!("stable backend {s:?} is not one of this route's backends"),
                    ));
                    0
                }
            },
        };

        let sticky = match &r.sticky {
            None => Sticky::None,
            Some(s) => match (&s.cookie, &s.header, &s.pin_cookie) {
                (Some(c), None, None) => Sticky::Cookie(c.clone()),
                (None, Some(h), None) => Sticky::Header(h.0.clone()),
                (None, None, Some(p)) if is_cookie_name(p) => Sticky::Pin(p.clone()),
                (None, None, Some(p)) => {
                    errors.push(ConfigError::at(
                        value(&["sticky", "pin_cookie"]),
                        format!("{p:?} is not a valid cookie name"),
                    ));
                    Sticky::None
                }
                _ => {
                    errors.push(ConfigError::at(
                        value(&["sticky"]),
                        "sticky takes exactly one of cookie, header, pin_cookie",
                    ));
                    Sticky::None
                }
            },
        };

        if r.retry.attempts > 1 {
            errors.push(ConfigError::at(value(&["retry", "attempts"]), "at most 1 retry is supported"));
        }
        let matcher = compile_matcher(r, &value, errors);
        let mirror = r.mirror.as_ref().and_then(|m| compile_mirror(m, r, stable, &value, errors));
        out.push(RouteSpec {
            name: r.name.as_str().into(),
            matcher,
            backends: route_backends,
            stable,
            sticky,
            force_header: r.force_header.as_ref().map(|f| compile_force(f, base, &value, errors)),
            mirror,
            retry: RetrySpec {
                enabled: r.retry.attempts > 0,
                non_idempotent: r.retry.non_idempotent,
            },
            guard: r.guard.as_ref().and_then(|g| compile_guard(g, &value, errors)),
            allow_from: r.allow_from.as_ref().map(|nets| {
                if nets.is_empty() {
                    errors.push(ConfigError::at(
                        value(&["allow_from"]),
                        "allow_from lists the client networks the route answers; leave it out to answer everyone",
                    ));
                }
                nets.iter().map(|c| c.0).collect()
            }),
        });
    }
    out
}

fn compile_matcher(r: &RawRoute, value: &dyn Fn(&[&str]) -> super::Location, errors: &mut Vec<ConfigError>) -> Matcher {
    let m = &r.matcher;
    let path_conditions = [m.path_prefix.is_some(), m.path.is_some(), m.path_regex.is_some()];
    if path_conditions.iter().filter(|c| **c).count() > 1 {
        errors.push(ConfigError::at(value(&["match"]), "use only one of path_prefix, path, path_regex"));
    }
    for (field, p) in [("path_prefix", &m.path_prefix), ("path", &m.path)] {
        if let Some(p) = p
            && !p.starts_with('/')
        {
            errors.push(ConfigError::at(value(&["match", field]), format!("{field} must start with '/'")));
        }
    }
    let path = if let Some(p) = &m.path_prefix {
        if p == "/" {
            PathMatch::Any
        } else {
            PathMatch::Prefix(p.as_str().into())
        }
    } else if let Some(p) = &m.path {
        PathMatch::Exact(p.as_str().into())
    } else if let Some(re) = &m.path_regex {
        PathMatch::Regex(re.0.clone())
    } else {
        PathMatch::Any
    };
    let headers = m
        .headers
        .iter()
        .filter_map(|(name, hm)| {
            let compiled = match hm {
                RawHeaderMatch::Exact(v) => match HeaderValue::from_str(v) {
                    Ok(v) => HeaderMatch::Exact(v),
                    Err(_) => {
                        errors.push(ConfigError::at(
                            value(&["match", "headers", name.0.as_str()]),
                            "invalid header value",
                        ));
                        return None;
                    }
                },
                RawHeaderMatch::Regex { regex } => HeaderMatch::Regex(regex.0.clone()),
                RawHeaderMatch::Present { present: true } => HeaderMatch::Present,
                RawHeaderMatch::Present { present: false } => HeaderMatch::Absent,
            };
            Some((name.0.clone(), compiled))
        })
        .collect();
    Matcher {
        path,
        host: m.host.as_deref().map(HostMatch::parse),
        methods: m.methods.as_ref().map(|ms| ms.iter().map(|m| m.0.clone()).collect()),
        headers,
    }
}

fn compile_mirror(
    m: &RawMirror,
    r: &RawRoute,
    stable: usize,
    value: &dyn Fn(&[&str]) -> super::Location,
    errors: &mut Vec<ConfigError>,
) -> Option<MirrorSpec> {
    let before = errors.len();
    let to = match r.backends.get_index_of(m.to.as_str()) {
        Some(i) if i == stable => {
            errors.push(ConfigError::at(
                value(&["mirror", "to"]),
                "mirror.to is the stable backend; name the backend being migrated to (requests it serves are mirrored to the stable one)",
            ));
            0
        }
        Some(i) => i,
        None => {
            errors.push(ConfigError::at(
                value(&["mirror", "to"]),
                format!("mirror target {:?} is not one of this route's backends", m.to),
            ));
            0
        }
    };
    if !(0.0..=100.0).contains(&m.percent) {
        errors.push(ConfigError::at(value(&["mirror", "percent"]), "percent must be between 0 and 100"));
    }
    let methods: Vec<http::Method> = match &m.methods {
        Some(ms) => ms.iter().map(|m| m.0.clone()).collect(),
        None => vec![http::Method::GET, http::Method::HEAD, http::Method::OPTIONS],
    };
    if !m.allow_mutating
        && let Some(unsafe_method) = methods.iter().find(|m| !m.is_safe())
    {
        errors.push(ConfigError::at(
            value(&["mirror", "methods"]),
            format!(
                "mirroring {unsafe_method} writes twice when both backends share a database; set `allow_mutating: true` to mirror it anyway"
            ),
        ));
    }
    if m.max_in_flight == 0 {
        errors.push(ConfigError::at(
            value(&["mirror", "max_in_flight"]),
            "max_in_flight must be at least 1",
        ));
    }
    let c = &m.compare;
    if !(0.0..=1.0).contains(&c.noise.sample) {
        errors.push(ConfigError::at(
            value(&["mirror", "compare", "noise", "sample"]),
            "noise.sample is a share between 0 and 1",
        ));
    }
    if let Some(share) = m.min_clean_share
        && !(0.0..=1.0).contains(&share)
    {
        errors.push(ConfigError::at(
            value(&["mirror", "min_clean_share"]),
            "min_clean_share is a share between 0 and 1",
        ));
    }
    let mut ignore = Vec::new();
    for (i, p) in c.ignore.iter().enumerate() {
        match PathPattern::parse(p) {
            Ok(p) => ignore.push(p),
            Err(e) => errors.push(ConfigError::at(value(&["mirror", "compare", "ignore", &i.to_string()]), e)),
        }
    }
    let (mut unwrap_left, mut unwrap_right) = (None, None);
    let stable_name = r.backends.get_index(stable).map(|(n, _)| n.as_str()).unwrap_or_default();
    for (backend, pointer) in &c.unwrap {
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            errors.push(ConfigError::at(
                value(&["mirror", "compare", "unwrap", backend]),
                "unwrap takes a JSON pointer starting with '/'",
            ));
        } else if backend == stable_name {
            unwrap_left = Some(pointer.clone());
        } else if *backend == m.to {
            unwrap_right = Some(pointer.clone());
        } else {
            errors.push(ConfigError::at(
                value(&["mirror", "compare", "unwrap", backend]),
                format!("unwrap names {backend:?}, which is neither the stable backend nor the mirror target"),
            ));
        }
    }
    let mut accept = Vec::new();
    for (i, a) in c.accept.iter().enumerate() {
        let idx = i.to_string();
        let kind = Kind::parse(&a.kind);
        let path = PathPattern::parse(&a.path);
        match (kind, path) {
            (Some(kind), Ok(path)) => accept.push(AcceptRule {
                path,
                pattern: a.path.clone(),
                kind,
                reason: a.reason.clone(),
                until: a.until.map(|d| d.0),
            }),
            (None, _) => errors.push(ConfigError::at(
                value(&["mirror", "compare", "accept", &idx, "kind"]),
                format!("kind {:?} must be one of {}", a.kind, Kind::ALL.map(Kind::label).join(", ")),
            )),
            (_, Err(e)) => errors.push(ConfigError::at(value(&["mirror", "compare", "accept", &idx, "path"]), e)),
        }
    }
    let mut endpoints = Vec::new();
    for (i, t) in c.endpoints.iter().enumerate() {
        match Template::parse(t) {
            Ok(t) => endpoints.push(t),
            Err(e) => errors.push(ConfigError::at(value(&["mirror", "compare", "endpoints", &i.to_string()]), e)),
        }
    }
    let redact = Redactor::new(&c.redact).unwrap_or_else(|e| {
        errors.push(ConfigError::at(value(&["mirror", "compare", "redact"]), e));
        Redactor::default()
    });
    if errors.len() > before {
        return None;
    }
    Some(MirrorSpec {
        to,
        share: m.percent / 100.0,
        methods,
        max_body_bytes: m.max_body_bytes,
        max_in_flight: m.max_in_flight,
        timeout: m.timeout.0,
        rules: CompareRules {
            values: c.mode == CompareMode::Values,
            headers: c.headers.iter().map(|h| h.0.clone()).collect(),
            ignore,
            unwrap_left,
            unwrap_right,
            normalize_url_host: c.normalize.url_host,
            normalize_decimal_strings: c.normalize.decimal_strings,
            normalize_numbers: c.normalize.numbers,
            max_body_bytes: c.max_body_bytes,
        },
        noise_sample: c.noise.sample,
        accept,
        redact,
        compare_max_bytes: c.max_body_bytes,
        endpoints: Endpoints::new(endpoints),
        min_clean_share: m.min_clean_share,
    })
}

/// Loopback: who may force when `from` is not set.
const LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1/128"];
const ANYWHERE: [&str; 2] = ["0.0.0.0/0", "::/0"];

fn compile_force(
    f: &RawForceHeader,
    base: &Path,
    value: &dyn Fn(&[&str]) -> super::Location,
    errors: &mut Vec<ConfigError>,
) -> ForceHeader {
    let nets = |cidrs: [&str; 2]| cidrs.iter().map(|c| c.parse().expect("a valid CIDR")).collect();
    let f = match f {
        RawForceHeader::Name(name) => {
            return ForceHeader {
                name: name.0.clone(),
                from: nets(LOOPBACK),
                token: None,
                guard: false,
            };
        }
        RawForceHeader::Long(f) => f,
    };
    let from = match &f.from {
        None => nets(LOOPBACK),
        Some(RawClientNets::Any) => nets(ANYWHERE),
        Some(RawClientNets::Nets(cidrs)) => {
            if cidrs.is_empty() {
                errors.push(ConfigError::at(
                    value(&["force_header", "from"]),
                    "from lists no network, so no client could force: remove force_header instead",
                ));
            }
            cidrs.iter().map(|c| c.0).collect()
        }
    };
    if f.name.0.as_str() == super::FORCE_TOKEN.as_str() {
        errors.push(ConfigError::at(
            value(&["force_header", "name"]),
            format!("{} carries the force token; choose another name", super::FORCE_TOKEN),
        ));
    }
    let token = f
        .token_file
        .as_ref()
        .and_then(|file| read_token(base, file, value(&["force_header", "token_file"]), errors))
        .map(|t| ForceToken(t.into_bytes().into_boxed_slice()));
    ForceHeader {
        name: f.name.0.clone(),
        from,
        token,
        guard: f.guard,
    }
}

fn compile_guard(g: &RawGuard, value: &dyn Fn(&[&str]) -> super::Location, errors: &mut Vec<ConfigError>) -> Option<GuardSpec> {
    let before = errors.len();
    for (field, rate) in [("max_error_rate", g.max_error_rate), ("max_mismatch_rate", g.max_mismatch_rate)] {
        if let Some(rate) = rate
            && !(0.0..=1.0).contains(&rate)
        {
            errors.push(ConfigError::at(
                value(&["guard", field]),
                format!("{field} is a share between 0 and 1"),
            ));
        }
    }
    if g.max_error_rate.is_none() && g.max_p99_latency.is_none() && g.max_mismatch_rate.is_none() {
        errors.push(ConfigError::at(
            value(&["guard"]),
            "a guard needs at least one of max_error_rate, max_p99_latency, max_mismatch_rate",
        ));
    }
    if g.window.0 < std::time::Duration::from_secs(1) {
        errors.push(ConfigError::at(value(&["guard", "window"]), "window must be at least 1s"));
    }
    if g.min_requests == 0 {
        errors.push(ConfigError::at(
            value(&["guard", "min_requests"]),
            "min_requests must be at least 1: a guard must not judge a backend on no traffic",
        ));
    }
    let ramp = match &g.rollback {
        RawGuardRollback::Instant => None,
        RawGuardRollback::Word(w) if w == "instant" => None,
        RawGuardRollback::Word(w) => {
            errors.push(ConfigError::at(
                value(&["guard", "rollback"]),
                format!("rollback is `instant` or {{ ramp: 30s }}, not {w:?}"),
            ));
            None
        }
        RawGuardRollback::Ramp { ramp } => Some(ramp.0),
    };
    (errors.len() == before).then(|| GuardSpec {
        max_error_rate: g.max_error_rate,
        max_p99_latency: g.max_p99_latency.map(|d| d.0),
        max_mismatch_rate: g.max_mismatch_rate,
        window: g.window.0,
        min_requests: g.min_requests,
        max_ejections: (g.max_ejections > 0).then_some(g.max_ejections),
        ramp,
    })
}

/// Route and backend names: letters, digits, '-', '_', '.'.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// RFC 6265 cookie-name: a token.
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use std::path::Path;

    fn parse(dir: &Path, force: &str) -> Result<Config, String> {
        let text = format!(
            "listeners:\n  - {{ name: public, addr: \"127.0.0.1:0\" }}\n\
             backends:\n  legacy: {{ url: \"http://127.0.0.1:1\" }}\n\
             routes:\n  - name: api\n    backends: {{ legacy: {{}} }}\n    force_header: {force}\n"
        );
        Config::parse(&dir.join("cutover.yaml"), text).map_err(|e| e.to_string())
    }

    fn from_of(config: &Config) -> Vec<String> {
        let force = config.routes[0].force_header.as_ref().unwrap();
        force.from.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn force_headers_take_a_name_or_the_long_form() {
        let dir = tempfile::tempdir().unwrap();
        let short = parse(dir.path(), "X-Cutover-Backend").unwrap();
        let force = short.routes[0].force_header.as_ref().unwrap();
        assert_eq!(
            (force.name.as_str(), force.token.is_none(), force.guard),
            ("x-cutover-backend", true, false)
        );
        assert_eq!(from_of(&short), ["127.0.0.0/8", "::1/128"]);

        let long = parse(dir.path(), "{ name: X-Test, from: [10.0.0.0/8, 192.0.2.7], guard: true }").unwrap();
        let force = long.routes[0].force_header.as_ref().unwrap();
        assert_eq!((force.name.as_str(), force.guard), ("x-test", true));
        assert_eq!(from_of(&long), ["10.0.0.0/8", "192.0.2.7/32"]);
        assert!(force.allows_client("10.1.2.3".parse().unwrap()));
        assert!(!force.allows_client("127.0.0.1".parse().unwrap()));

        let any = parse(dir.path(), "{ name: X-Test, from: any }").unwrap();
        assert_eq!(from_of(&any), ["0.0.0.0/0", "::/0"]);

        // The token file is found beside the config file, and trimmed.
        std::fs::write(dir.path().join("force.token"), "  t0ken\n").unwrap();
        let tokened = parse(dir.path(), "{ name: X-Test, token_file: force.token }").unwrap();
        let token = tokened.routes[0].force_header.as_ref().unwrap().token.as_ref().unwrap();
        assert!(token.matches(b"t0ken"));
        assert!(!token.matches(b"t0ke") && !token.matches(b"t0ken ") && !token.matches(b""));
        assert_eq!(format!("{token:?}"), "ForceToken(..)", "the token is never printed");
    }

    #[test]
    fn bad_force_headers_are_reported_at_their_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty.token"), "\n").unwrap();
        for (force, message) in [
            ("{ name: X-Test, from: [10.0.0.0/33] }", "invalid CIDR \"10.0.0.0/33\""),
            ("{ name: X-Test, from: everyone }", "expected `any` or a list of CIDRs"),
            ("{ name: X-Test, from: [] }", "from lists no network"),
            ("{ name: X-Test, token_file: missing.token }", "cannot read token file"),
            ("{ name: X-Test, token_file: empty.token }", "is empty"),
            ("{ name: X-Test, guard: maybe }", "invalid type"),
            ("{ name: X-Test, form: any }", "unknown field `form`"),
            ("{ from: any }", "missing field `name`"),
            ("{ name: X-Cutover-Force-Token }", "carries the force token"),
            ("\"bad name\"", "invalid header name"),
        ] {
            let err = parse(dir.path(), force).expect_err(force);
            assert!(err.contains(message), "{force}: {err}");
            assert!(err.contains("cutover.yaml:8:"), "{force}: not on the force_header line: {err}");
        }
    }
}
