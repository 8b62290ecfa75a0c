//! `cutover import-nginx`: turns the usual subset of an nginx config into a
//! `cutover.yaml` and a `weights.yaml`, and lists every directive it did not
//! convert with its `file:line`.
//!
//! What converts, and the decisions behind it:
//!
//! - `upstream NAME` → a backend `NAME`. An upstream with several servers is
//!   expanded into backends `NAME-1`, `NAME-2`… of the routes that proxy to
//!   it, weighted like nginx's `weight=` (`backup` servers get weight 0, which
//!   in cutover means "only when every weighted backend is unhealthy"), but
//!   only where that keeps nginx's behaviour: the upstream has no balancing
//!   method (`ip_hash`, `hash`, `least_conn`…) and the route is a plain
//!   `proxy_pass` (not a `split_clients` side or a mirror target, where a
//!   route backend must be one server). Otherwise the first server stands for
//!   the upstream and the others are listed as not converted.
//! - `server { listen; server_name; }` → listeners (deduplicated; `listen 80`
//!   is `0.0.0.0:80`). With several server blocks, the routes of each server
//!   that is not a default server get a `host` match per server name (exact
//!   or `*.example.com`); the default servers' routes come last, without one.
//! - `location` → routes, ordered so that cutover's first-match-wins picks
//!   the same location as nginx's precedence; see [`order_locations`].
//! - `proxy_pass` with a URI part → `rewrite: { prefix: <location>, to: <uri> }`,
//!   nginx's replacement of the matched prefix.
//! - `split_clients` used in `proxy_pass http://$var` → one route over its
//!   backends with the percentages in `weights.yaml`, sticky by cookie or
//!   header when the key is `$cookie_NAME` or `$http_NAME`.
//! - `mirror /uri` with `location = /uri { internal; proxy_pass ...; }` →
//!   `mirror: { to }` when the target is already a backend of the route.
//!   cutover mirrors only to a route's own backends, and adding the target as
//!   a weight-0 backend would let failover and retries send it live traffic,
//!   which nginx never does; so otherwise the mirror is listed.
//! - `proxy_set_header Host <literal>` → `host_header`; without any
//!   `proxy_set_header Host`, nginx sends `$proxy_host` (the upstream's
//!   name), and so does the generated backend; `$host` / `$http_host` is
//!   cutover's default (the client's Host).
//! - `proxy_connect_timeout` / `proxy_read_timeout` → backend
//!   `connect_timeout` / `timeout`. These are per location in nginx and per
//!   backend in cutover, so a location with different settings gets its own
//!   backend (`NAME-for-ROUTE`) for the same server.
//! - `client_max_body_size` → `server.max_body_bytes`: one limit for all
//!   routes, the largest in effect for any converted location (nginx's
//!   default 1m where none is set); smaller ones are listed.
//! - `listen ... ssl` with `ssl_certificate` / `ssl_certificate_key` → a
//!   listener with `tls: { certs }` (absolute paths, the default server's
//!   first), when the files load here as `cutover check` will load them;
//!   otherwise a plain listener, with the directives listed and a note.
//!   `proxy_pass https://` → an https backend, with
//!   `proxy_ssl_trusted_certificate` → `tls.ca_file` and `proxy_ssl_name` →
//!   `tls.server_name` (cutover always verifies; nginx only with
//!   `proxy_ssl_verify on`, which is noted).
//!
//! Everything else is listed as not converted, grouped by directive.

pub mod nginx;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;

use crate::config::{BackendUrl, Config, Weights, format_percent};
pub use nginx::{Arg, Directive, ParseError, Parsed, Pos};

/// 100% in basis points.
const ALL: u32 = 10_000;

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Import {
    /// The text of `cutover.yaml`.
    pub config: String,
    /// The text of `weights.yaml`.
    pub weights: String,
    /// Every directive that was not converted, in file order.
    pub not_converted: Vec<NotConverted>,
    /// Differences in behaviour worth knowing, also written at the top of `cutover.yaml`.
    pub notes: Vec<String>,
}

/// A directive the import did not convert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotConverted {
    pub at: Pos,
    /// The directive's name (`ssl_certificate`).
    pub directive: String,
    /// The directive as written (`ssl_certificate /etc/ssl/site.pem`).
    pub text: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// Nothing proxies anywhere; `report` lists what was found instead.
    #[error("nothing to import: no location proxies with proxy_pass to a backend cutover can reach")]
    NothingToRoute { report: String },
    /// The generated files do not validate: a defect of the importer.
    #[error("the generated config does not validate: {0}")]
    Invalid(String),
}

impl Import {
    /// The not-converted list grouped by directive and reason, then the notes.
    pub fn report(&self) -> String {
        render_report(&self.not_converted, &self.notes)
    }
}

/// Reads, parses and converts an nginx config file.
pub fn import_file(path: &Path) -> Result<Import, ImportError> {
    let parsed = nginx::parse_file(path)?;
    convert(&parsed, path)
}

/// Parses and converts nginx config text as if read from `path`.
pub fn import_str(path: &Path, text: &str) -> Result<Import, ImportError> {
    let parsed = nginx::parse_str(path, text)?;
    convert(&parsed, path)
}

/// Converts a parsed config; `source` names it in the generated comments.
pub fn convert(parsed: &Parsed, source: &Path) -> Result<Import, ImportError> {
    let mut c = Converter {
        prefix: source.parent().map(Path::to_path_buf).unwrap_or_default(),
        ..Converter::default()
    };
    for m in &parsed.missing {
        c.not_converted.push(NotConverted {
            at: m.at.clone(),
            directive: "include".into(),
            text: format!("include {}", m.path.display()),
            reason: format!("cannot read it ({}): the directives in it were not imported", m.error),
        });
    }
    if parsed.directives.iter().any(|d| d.name == "http") {
        for d in &parsed.directives {
            if d.name == "http" && d.block.is_some() {
                c.http(d.children());
            } else {
                c.skip(d, reason_for(&d.name));
            }
        }
    } else {
        // A site file (conf.d/*.conf, sites-enabled/*): the http context itself.
        c.http(&parsed.directives);
    }
    c.finish(source)
}

// ---------------------------------------------------------------- reasons

/// Why a directive with no cutover equivalent was left out.
fn reason_for(name: &str) -> String {
    let r = match name {
        n if n.starts_with("ssl") => "cutover's TLS is not tunable: rustls' safe defaults (TLS 1.2 and 1.3, no legacy ciphers)",
        n if n.starts_with("proxy_ssl") => {
            "cutover verifies https backends against the system roots or tls.ca_file; nothing else is tunable"
        }
        "http2" | "http3" | "quic" => "protocol setting: cutover serves HTTP/1.1 and HTTP/2 (h2c, or ALPN h2 with TLS) on every listener",
        "root" | "alias" | "index" | "try_files" | "autoindex" | "expires" | "sendfile" | "open_file_cache" => {
            "cutover does not serve files: requests nginx served from disk must be served by a backend"
        }
        "return" | "rewrite" | "error_page" | "if" | "set" | "break" => {
            "cutover does not answer or rewrite requests itself (only a route backend's rewrite: prefix)"
        }
        "allow" | "deny" | "auth_basic" | "auth_basic_user_file" | "auth_request" | "satisfy" | "limit_except" => {
            "ACCESS CONTROL NOT CONVERTED: nginx refused some requests here; cutover forwards them"
        }
        "limit_req" | "limit_req_zone" | "limit_conn" | "limit_conn_zone" | "limit_rate" => "cutover does not limit request rates",
        "access_log" | "error_log" | "log_format" | "log_not_found" => {
            "cutover writes its own access log (access_log: { format: combined | json, path })"
        }
        "add_header" | "more_set_headers" | "proxy_hide_header" | "proxy_pass_header" | "proxy_cookie_path" | "proxy_cookie_domain" => {
            "cutover does not change response headers"
        }
        "proxy_redirect" => "cutover does not rewrite Location headers",
        n if n.starts_with("gzip") || n.starts_with("brotli") => "cutover does not compress responses",
        n if n.starts_with("proxy_buffer") || n == "proxy_buffers" || n == "proxy_max_temp_file_size" || n == "proxy_request_buffering" => {
            "cutover streams bodies both ways without buffering"
        }
        n if n.starts_with("proxy_cache") => "cutover does not cache",
        "proxy_next_upstream" | "proxy_next_upstream_tries" | "proxy_next_upstream_timeout" => {
            "cutover retries a request that got no answer once, on another backend of the route (route retry)"
        }
        "proxy_send_timeout" => "cutover has no send timeout (backend timeout is the deadline for the response head)",
        "keepalive" | "keepalive_requests" | "keepalive_timeout" => {
            "cutover keeps idle connections itself (backend pool_max_idle, pool_idle_timeout)"
        }
        "ip_hash" | "hash" | "least_conn" | "random" | "least_time" | "sticky" | "ntlm" => {
            "cutover balances by weight between backends; this balancing method is not available"
        }
        "map" | "geo" | "split_clients" => "variables are not converted",
        n if n.ends_with("_pass") => "only HTTP proxy_pass is converted",
        "events"
        | "user"
        | "worker_processes"
        | "worker_connections"
        | "worker_rlimit_nofile"
        | "pid"
        | "daemon"
        | "master_process"
        | "load_module"
        | "include"
        | "types"
        | "default_type"
        | "server_tokens"
        | "tcp_nopush"
        | "tcp_nodelay"
        | "types_hash_max_size"
        | "server_names_hash_bucket_size"
        | "resolver" => "nginx setting with no cutover equivalent",
        "stream" | "mail" => "only HTTP proxying is converted",
        _ => "no cutover equivalent",
    };
    r.to_string()
}

// ---------------------------------------------------------------- settings

/// What a location sends as Host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum HostSetting {
    /// No `proxy_set_header Host`: nginx sends `$proxy_host`.
    #[default]
    ProxyHost,
    /// `$host` / `$http_host`: the client's Host, cutover's default.
    Client,
    Literal(String, Pos),
    /// A value cutover cannot send (listed where it was written).
    Unsupported,
}

/// The settings that nginx inherits from http to server to location.
#[derive(Debug, Clone, Default)]
struct Settings {
    connect_timeout: Option<(Duration, Pos)>,
    read_timeout: Option<(Duration, Pos)>,
    host: HostSetting,
    /// `mirror` URIs with the directive that set each.
    mirrors: Vec<(String, Pos, String)>,
    /// `client_max_body_size` in bytes (0: no limit) and the directive.
    body_limit: Option<(u64, Pos, String)>,
    /// `proxy_ssl_verify on`.
    ssl_verify: bool,
    /// `proxy_ssl_trusted_certificate` (path as written) and the directive.
    ssl_trusted: Option<(String, Pos, String)>,
    /// `proxy_ssl_name` with a literal value, and the directive.
    ssl_name: Option<(String, Pos, String)>,
}

/// The directives [`Converter::level_settings`] handles.
fn is_setting(name: &str) -> bool {
    matches!(
        name,
        "proxy_set_header"
            | "proxy_connect_timeout"
            | "proxy_read_timeout"
            | "mirror"
            | "proxy_http_version"
            | "client_max_body_size"
            | "proxy_ssl_verify"
            | "proxy_ssl_trusted_certificate"
            | "proxy_ssl_name"
            | "proxy_ssl_server_name"
    )
}

/// nginx's time syntax: `60`, `60s`, `500ms`, `1m30s`, `1h`, `2d`.
fn parse_nginx_time(text: &str) -> Option<Duration> {
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let ms_per: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" | "" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "M" => 30 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(ms_per)?)?;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_millis(total))
}

/// nginx's size syntax: `1024`, `8k`, `20M`, `1g`.
fn parse_nginx_size(text: &str) -> Option<u64> {
    let (digits, factor) = match text.char_indices().last()? {
        (i, 'k' | 'K') => (&text[..i], 1 << 10),
        (i, 'm' | 'M') => (&text[..i], 1 << 20),
        (i, 'g' | 'G') => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

/// nginx's default `client_max_body_size`.
const NGINX_BODY_LIMIT: u64 = 1 << 20;

/// A duration as cutover writes it: `2s`, `1500ms`.
fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

// ---------------------------------------------------------------- upstreams and splits

#[derive(Debug, Clone)]
struct Endpoint {
    /// `host:port`.
    addr: String,
    weight: u32,
    backup: bool,
    at: Pos,
    text: String,
}

#[derive(Debug)]
struct Upstream {
    at: Pos,
    text: String,
    /// A converted route proxies to it.
    used: bool,
    endpoints: Vec<Endpoint>,
    /// Why its servers cannot become separate backends, if they cannot.
    no_expand: Option<String>,
    /// The servers after the first were listed as not converted already.
    rest_listed: bool,
}

#[derive(Debug)]
struct SplitDef {
    key: String,
    at: Pos,
    text: String,
    /// (basis points, value) in nginx's order; `*` resolved.
    entries: Vec<(u32, String)>,
    /// Why the split cannot be converted, if it cannot.
    error: Option<String>,
    used: bool,
}

/// A `proxy_pass` target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Upstream(String),
    /// A `host:port` named directly.
    Host(String),
    /// `http://$var` of a `split_clients`.
    Split(String),
}

#[derive(Debug, Clone)]
struct ProxyPass {
    target: Target,
    /// `http` or `https`.
    scheme: &'static str,
    /// The URI part, when it replaces the matched location prefix.
    uri: Option<String>,
    /// `$request_uri` was appended (the URI is passed unchanged).
    request_uri: bool,
}

// ---------------------------------------------------------------- locations

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocKind {
    Exact,
    Prefix,
    /// `^~`: a prefix that stops the regex search when it is the longest match.
    NoRegex,
    Regex,
    RegexCaseless,
    Named,
}

/// A route's backend: (name, rewrite as (prefix, to), identity of the
/// target for mirror lookups: `upstream:NAME` or `host:URL`).
type BackendUse = (String, Option<(String, String)>, String);

/// One route, before host matching and naming.
#[derive(Debug, Clone)]
struct RoutePlan {
    /// The location it came from.
    at: Pos,
    loc_text: String,
    kind: LocKind,
    pattern: String,
    /// The path condition, after ordering.
    matcher: PathCond,
    base_name: String,
    backends: Vec<BackendUse>,
    /// Basis points per backend when there are several.
    weights: Option<Vec<u32>>,
    stable: Option<String>,
    sticky: Option<(&'static str, String)>,
    mirror: Option<String>,
    /// The location's `client_max_body_size`, if one applies (else nginx's default).
    body_limit: Option<(u64, Pos, String)>,
    comments: Vec<String>,
    weight_comments: Vec<String>,
}

#[derive(Debug, Clone)]
enum PathCond {
    Prefix(String),
    Exact(String),
    Regex(String),
}

/// A server name cutover can match.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostName {
    Exact(String),
    /// `*.example.com`
    Wildcard(String),
}

impl HostName {
    fn pattern(&self) -> &str {
        match self {
            HostName::Exact(h) | HostName::Wildcard(h) => h,
        }
    }
}

/// An `ssl_certificate` or `ssl_certificate_key` directive.
#[derive(Debug, Clone)]
struct CertDirective {
    path: String,
    at: Pos,
}

/// The certificate directives in effect at a level (each list is inherited
/// whole by a level that sets none, as in nginx).
#[derive(Debug, Clone, Default)]
struct Certs {
    certs: Option<Vec<CertDirective>>,
    keys: Option<Vec<CertDirective>>,
}

/// A certificate and key cutover can load, as absolute paths.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsPair {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    cert_at: Pos,
    key_at: Pos,
}

/// One address of a `listen` directive.
#[derive(Debug, Clone)]
struct Listen {
    addr: String,
    default: bool,
    ssl: bool,
    at: Pos,
    text: String,
}

#[derive(Debug)]
struct ServerPlan {
    at: Pos,
    listens: Vec<Listen>,
    names: Vec<HostName>,
    /// Some server names could not be converted (regex, `www.example.*`).
    odd_names: bool,
    routes: Vec<RoutePlan>,
    /// For a server with `listen ... ssl`: its certificates, or why they cannot be used.
    tls: Option<Result<Vec<TlsPair>, String>>,
}

// ---------------------------------------------------------------- output model

#[derive(Debug)]
struct BackendOut {
    name: String,
    url: String,
    host_header: Option<(String, String)>,
    /// `tls:` of an https backend: (ca_file, server_name, where they came from).
    tls: Option<(Option<String>, Option<String>, String)>,
    connect_timeout: Option<(Duration, Pos)>,
    timeout: Option<(Duration, Pos)>,
    comment: String,
}

#[derive(Debug)]
struct ListenerOut {
    name: String,
    addr: String,
    comment: String,
    tls: Vec<TlsPair>,
}

#[derive(Debug)]
struct RouteOut {
    name: String,
    plan: RoutePlan,
    host: Option<String>,
}

#[derive(Default)]
struct Converter {
    not_converted: Vec<NotConverted>,
    notes: Vec<String>,
    upstreams: IndexMap<String, Upstream>,
    splits: IndexMap<String, SplitDef>,
    backends: IndexMap<String, BackendOut>,
    /// Backend identity (url, host, timeouts) → backend name.
    backend_ids: HashMap<String, String>,
    servers: Vec<ServerPlan>,
    /// Proxied prefixes ending in '/', which nginx redirects to without the slash.
    auto_redirects: Vec<String>,
    /// The main config's folder: nginx resolves relative file names against it.
    prefix: std::path::PathBuf,
    /// Every certificate directive, with why it could not be used, if it could not.
    cert_dirs: IndexMap<Pos, (String, Option<String>)>,
    cert_used: HashSet<Pos>,
    /// Directives already listed, for those reached from several places.
    listed: HashSet<Pos>,
}

impl Converter {
    fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    fn skip(&mut self, d: &Directive, reason: impl Into<String>) {
        self.not_converted.push(NotConverted {
            at: d.at.clone(),
            directive: d.name.clone(),
            text: d.text(),
            reason: reason.into(),
        });
    }

    // ------------------------------------------------------------ contexts

    fn http(&mut self, dirs: &[Directive]) {
        for d in dirs {
            match d.name.as_str() {
                "upstream" if d.block.is_some() => self.upstream(d),
                "split_clients" if d.block.is_some() => self.split_clients(d),
                _ => {}
            }
        }
        let settings = self.level_settings(&Settings::default(), dirs);
        let certs = self.certs(&Certs::default(), dirs);
        let mut servers = Vec::new();
        for d in dirs {
            match d.name.as_str() {
                "upstream" | "split_clients" if d.block.is_some() => {}
                "server" if d.block.is_some() => servers.push(d),
                "ssl_certificate" | "ssl_certificate_key" => {}
                n if is_setting(n) => {}
                n => self.skip(d, reason_for(n)),
            }
        }
        for s in servers {
            let plan = self.server(s, &settings, &certs);
            self.servers.push(plan);
        }
        for split in self.splits.values_mut() {
            if !split.used {
                self.not_converted.push(NotConverted {
                    at: split.at.clone(),
                    directive: "split_clients".into(),
                    text: split.text.clone(),
                    reason: "not used by a convertible proxy_pass http://$variable".into(),
                });
            }
        }
    }

    /// Applies the inheritable settings written at one level over `parent`'s.
    fn level_settings(&mut self, parent: &Settings, dirs: &[Directive]) -> Settings {
        let mut s = parent.clone();
        // proxy_set_header is inherited only by levels that set none themselves.
        if dirs.iter().any(|d| d.name == "proxy_set_header") {
            s.host = HostSetting::ProxyHost;
        }
        let mut mirrors_here: Option<Vec<(String, Pos, String)>> = None;
        for d in dirs {
            match d.name.as_str() {
                "proxy_set_header" => self.proxy_set_header(d, &mut s),
                "proxy_connect_timeout" | "proxy_read_timeout" => match d.arg(0).and_then(parse_nginx_time) {
                    Some(t) if d.args.len() == 1 && !t.is_zero() => {
                        let v = Some((t, d.at.clone()));
                        if d.name == "proxy_connect_timeout" {
                            s.connect_timeout = v;
                        } else {
                            s.read_timeout = v;
                        }
                    }
                    _ => self.skip(d, "not a time nginx would accept"),
                },
                "mirror" => match d.arg(0) {
                    Some("off") if d.args.len() == 1 => mirrors_here = Some(Vec::new()),
                    Some(uri) if d.args.len() == 1 => {
                        mirrors_here
                            .get_or_insert_with(Vec::new)
                            .push((uri.to_string(), d.at.clone(), d.text()));
                    }
                    _ => self.skip(d, "invalid mirror directive"),
                },
                "client_max_body_size" => match d.arg(0).and_then(parse_nginx_size) {
                    Some(n) if d.args.len() == 1 => s.body_limit = Some((n, d.at.clone(), d.text())),
                    _ => self.skip(d, "not a size nginx would accept"),
                },
                "proxy_ssl_verify" => match d.arg(0) {
                    Some("on") => s.ssl_verify = true,
                    Some("off") => s.ssl_verify = false,
                    _ => self.skip(d, "invalid proxy_ssl_verify"),
                },
                "proxy_ssl_trusted_certificate" => match d.arg(0) {
                    Some(path) if d.args.len() == 1 && !path.contains('$') => {
                        s.ssl_trusted = Some((path.to_string(), d.at.clone(), d.text()))
                    }
                    _ => self.skip(d, "not a file cutover can read"),
                },
                "proxy_ssl_name" => match d.arg(0) {
                    Some("$proxy_host") => s.ssl_name = None,
                    Some(name) if d.args.len() == 1 && !name.contains('$') => s.ssl_name = Some((name.to_string(), d.at.clone(), d.text())),
                    _ => self.skip(d, "cutover sends the URL's host or a fixed tls.server_name; this value is neither"),
                },
                // cutover always sends SNI to https backends.
                "proxy_ssl_server_name" => {}
                // cutover speaks HTTP/1.1 to backends, with keep-alive.
                "proxy_http_version" => {}
                _ => {}
            }
        }
        if let Some(m) = mirrors_here {
            s.mirrors = m;
        }
        s
    }

    fn proxy_set_header(&mut self, d: &Directive, s: &mut Settings) {
        let (Some(name), Some(value), 2) = (d.arg(0), d.arg(1), d.args.len()) else {
            self.skip(d, "invalid proxy_set_header");
            return;
        };
        let lname = name.to_ascii_lowercase();
        let builtin = match lname.as_str() {
            "host" => {
                s.host = match value {
                    "$host" | "$http_host" => HostSetting::Client,
                    "$proxy_host" => HostSetting::ProxyHost,
                    v if !v.contains('$') && !v.is_empty() && http::HeaderValue::from_str(v).is_ok() => {
                        HostSetting::Literal(v.to_string(), d.at.clone())
                    }
                    _ => {
                        self.skip(d, "cutover sends the client's Host or a fixed host_header; this value is neither");
                        HostSetting::Unsupported
                    }
                };
                return;
            }
            "x-forwarded-for" => matches!(value, "$proxy_add_x_forwarded_for" | "$remote_addr"),
            "x-forwarded-proto" => value == "$scheme",
            "x-forwarded-host" => matches!(value, "$host" | "$http_host" | "$server_name"),
            "upgrade" => value == "$http_upgrade",
            "connection" => matches!(value, "$connection_upgrade" | "upgrade" | "Upgrade" | ""),
            "x-request-id" => value == "$request_id",
            _ => false,
        };
        if builtin {
            if lname.starts_with("x-forwarded") {
                self.note(
                    "cutover sets X-Forwarded-For, -Proto and -Host itself; it extends a client's X-Forwarded-For only when the \
                     peer is in trusted_proxies (nginx's $proxy_add_x_forwarded_for always extends it)",
                );
            }
            return;
        }
        let reason = if lname == "x-real-ip" {
            "cutover does not set X-Real-IP: backends can read the client address from X-Forwarded-For".to_string()
        } else {
            "cutover does not add request headers".to_string()
        };
        self.skip(d, reason);
    }

    // ------------------------------------------------------------ upstream

    fn upstream(&mut self, d: &Directive) {
        let Some(name) = d.arg(0).filter(|_| d.args.len() == 1) else {
            self.skip(d, "invalid upstream block");
            return;
        };
        let mut up = Upstream {
            at: d.at.clone(),
            text: d.text(),
            used: false,
            endpoints: Vec::new(),
            no_expand: None,
            rest_listed: false,
        };
        for c in d.children() {
            match c.name.as_str() {
                "server" => {
                    let Some(addr) = c.arg(0) else {
                        self.skip(c, "invalid server");
                        continue;
                    };
                    // Upstream servers default to port 80, whatever the proxy_pass scheme.
                    let Some(addr) = normalize_host_port(addr, 80) else {
                        self.skip(c, "not an HTTP host:port cutover can reach (unix sockets are not supported)");
                        continue;
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
                        self.skip(c, "marked down: left out");
                        continue;
                    }
                    if !ignored.is_empty() {
                        let hint = if ignored.iter().any(|p| p == "max_fails" || p == "fail_timeout") {
                            " (the nearest cutover setting is the backend's passive_health: consecutive_failures, cool_off)"
                        } else {
                            ""
                        };
                        self.skip(c, format!("parameters not converted: {}{hint}", ignored.join(", ")));
                    }
                    up.endpoints.push(Endpoint {
                        addr,
                        weight,
                        backup,
                        at: c.at.clone(),
                        text: c.text(),
                    });
                }
                n @ ("ip_hash" | "hash" | "least_conn" | "random" | "least_time" | "sticky" | "ntlm") => {
                    up.no_expand = Some(format!("upstream {name} balances with {n}"));
                    self.skip(c, reason_for(n));
                }
                n => self.skip(c, reason_for(n)),
            }
        }
        if up.endpoints.is_empty() {
            self.skip(d, "no server cutover can reach");
        }
        self.upstreams.insert(name.to_string(), up);
    }

    fn split_clients(&mut self, d: &Directive) {
        let (Some(key), Some(var), 2) = (d.arg(0), d.arg(1), d.args.len()) else {
            self.skip(d, "invalid split_clients block");
            return;
        };
        let Some(var) = var.strip_prefix('$') else {
            self.skip(d, "invalid split_clients variable");
            return;
        };
        let mut split = SplitDef {
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
        if total > ALL {
            split.error = Some("percentages add up to more than 100%".into());
        } else if total < ALL {
            match rest {
                Some(v) => split.entries.push((ALL - total, v)),
                None => split.error = Some("percentages add up to less than 100% and there is no `*` entry".into()),
            }
        }
        if split.entries.iter().any(|(bp, v)| v.is_empty() && *bp > 0) {
            split.error = Some("some requests get an empty value".into());
        }
        self.splits.insert(var.to_string(), split);
    }

    // ------------------------------------------------------------ server

    fn server(&mut self, d: &Directive, http: &Settings, http_certs: &Certs) -> ServerPlan {
        let settings = self.level_settings(http, d.children());
        let certs = self.certs(http_certs, d.children());
        let mut plan = ServerPlan {
            at: d.at.clone(),
            listens: Vec::new(),
            names: Vec::new(),
            odd_names: false,
            routes: Vec::new(),
            tls: None,
        };
        let mut locations = Vec::new();
        for c in d.children() {
            match c.name.as_str() {
                "listen" => self.listen(c, &mut plan),
                "server_name" => self.server_name(c, &mut plan),
                "location" if c.block.is_some() => locations.push(c),
                "ssl_certificate" | "ssl_certificate_key" => {}
                n if is_setting(n) => {}
                n => self.skip(c, reason_for(n)),
            }
        }
        if plan.listens.iter().any(|l| l.ssl) {
            plan.tls = Some(self.server_tls(&certs));
        }
        if plan.listens.is_empty() && d.children().iter().all(|c| c.name != "listen") {
            plan.listens.push(Listen {
                addr: "0.0.0.0:80".into(),
                default: false,
                ssl: false,
                at: d.at.clone(),
                text: "listen *:80 (nginx's default)".into(),
            });
            self.note(format!(
                "{}: server without listen: nginx listens on *:80, and so does the import",
                d.at
            ));
        }
        // A server-level `return` answers every request before any location is chosen.
        if let Some(r) = d.children().iter().find(|c| c.name == "return") {
            let reason = format!("never reached in nginx: the server answers every request with `{}` first", r.text());
            for l in locations {
                self.skip(l, reason.clone());
            }
        } else {
            plan.routes = self.locations(&locations, &settings);
        }
        plan
    }

    fn listen(&mut self, d: &Directive, plan: &mut ServerPlan) {
        let Some(raw) = d.arg(0) else {
            self.skip(d, "invalid listen");
            return;
        };
        let Some(addr) = listen_addr(raw) else {
            self.skip(
                d,
                "not an IP address and port cutover can bind (unix sockets and host names are not supported)",
            );
            return;
        };
        let mut default = false;
        let mut ssl = false;
        let mut odd = Vec::new();
        for p in &d.args[1..] {
            match p.text.as_str() {
                "default_server" | "default" => default = true,
                "ssl" => ssl = true,
                // cutover serves HTTP/2 cleartext on every listener.
                "http2" => {}
                other => odd.push(other.split('=').next().unwrap_or(other).to_string()),
            }
        }
        if !odd.is_empty() {
            self.skip(d, format!("parameters not converted: {}", odd.join(", ")));
        }
        plan.listens.push(Listen {
            addr,
            default,
            ssl,
            at: d.at.clone(),
            text: d.text(),
        });
    }

    /// The certificate directives at one level over `parent`'s.
    fn certs(&mut self, parent: &Certs, dirs: &[Directive]) -> Certs {
        let mut out = Certs::default();
        for d in dirs {
            let list = match d.name.as_str() {
                "ssl_certificate" => &mut out.certs,
                "ssl_certificate_key" => &mut out.keys,
                _ => continue,
            };
            let Some(path) = d.arg(0).filter(|_| d.args.len() == 1) else {
                self.skip(d, "invalid directive");
                continue;
            };
            self.cert_dirs.insert(d.at.clone(), (d.text(), None));
            list.get_or_insert_with(Vec::new).push(CertDirective {
                path: path.to_string(),
                at: d.at.clone(),
            });
        }
        Certs {
            certs: out.certs.or_else(|| parent.certs.clone()),
            keys: out.keys.or_else(|| parent.keys.clone()),
        }
    }

    /// The certificate pairs of a server with `listen ... ssl`, checked the way
    /// `cutover check` will check them.
    fn server_tls(&mut self, certs: &Certs) -> Result<Vec<TlsPair>, String> {
        let cs = certs.certs.clone().unwrap_or_default();
        let ks = certs.keys.clone().unwrap_or_default();
        let result = self.load_pairs(&cs, &ks);
        if let Err(why) = &result {
            for d in cs.iter().chain(&ks) {
                if let Some(entry) = self.cert_dirs.get_mut(&d.at) {
                    entry.1.get_or_insert_with(|| why.clone());
                }
            }
        }
        result
    }

    fn load_pairs(&self, cs: &[CertDirective], ks: &[CertDirective]) -> Result<Vec<TlsPair>, String> {
        if cs.is_empty() {
            return Err("the server has no ssl_certificate".to_string());
        }
        if cs.len() != ks.len() {
            return Err("ssl_certificate and ssl_certificate_key do not pair up".to_string());
        }
        let mut pairs = Vec::new();
        for (c, k) in cs.iter().zip(ks) {
            if c.path.contains('$') || k.path.contains('$') {
                return Err("certificates named by variables are not converted".to_string());
            }
            let (cert, key) = (self.absolute(&c.path), self.absolute(&k.path));
            let source = crate::tls::CertSource {
                cert: cert.clone(),
                key: key.clone(),
            };
            if let Err(e) = crate::tls::load(&source) {
                return Err(format!("cutover cannot load it here ({e})"));
            }
            pairs.push(TlsPair {
                cert,
                key,
                cert_at: c.at.clone(),
                key_at: k.at.clone(),
            });
        }
        Ok(pairs)
    }

    /// A file name from the config as an absolute path, resolved as nginx does.
    fn absolute(&self, path: &str) -> std::path::PathBuf {
        let joined = self.prefix.join(path);
        std::path::absolute(&joined).unwrap_or(joined)
    }

    fn server_name(&mut self, d: &Directive, plan: &mut ServerPlan) {
        let mut odd = Vec::new();
        for a in &d.args {
            let n = a.text.to_ascii_lowercase();
            if n.is_empty() || n == "_" {
                continue;
            }
            if let Some(base) = n.strip_prefix('.') {
                plan.names.push(HostName::Exact(base.to_string()));
                plan.names.push(HostName::Wildcard(format!("*.{base}")));
            } else if n.starts_with("*.") && !n[2..].contains(['*', '~', '$']) {
                plan.names.push(HostName::Wildcard(n));
            } else if n.contains(['*', '~', '$', '(', '^']) {
                odd.push(a.text.clone());
            } else {
                plan.names.push(HostName::Exact(n));
            }
        }
        if !odd.is_empty() {
            plan.odd_names = true;
            self.skip(
                d,
                format!(
                    "names not converted: {} (cutover matches exact names and *.example.com only)",
                    odd.join(" ")
                ),
            );
        }
    }

    // ------------------------------------------------------------ locations

    fn locations(&mut self, dirs: &[&Directive], server: &Settings) -> Vec<RoutePlan> {
        struct Loc<'a> {
            d: &'a Directive,
            kind: LocKind,
            pattern: String,
            settings: Settings,
            proxy_pass: Option<&'a Directive>,
            try_files: Option<&'a Directive>,
            returns: Option<&'a Directive>,
            internal: bool,
            /// Entries of `not_converted` for its children, reported only if it converts.
            child_reports: Vec<NotConverted>,
            child_names: Vec<String>,
        }
        let mut locs: Vec<Loc<'_>> = Vec::new();
        let mut seen: HashSet<(bool, String)> = HashSet::new();
        for &d in dirs {
            let Some((kind, pattern)) = location_head(d) else {
                self.skip(d, "invalid location");
                continue;
            };
            // Exact and prefix locations share nginx's tree; duplicates are an error there.
            let exact_key = (kind == LocKind::Exact, pattern.clone());
            if matches!(kind, LocKind::Exact | LocKind::Prefix | LocKind::NoRegex) && !seen.insert(exact_key) {
                self.skip(d, "duplicate location: nginx refuses this config");
                continue;
            }
            let mark = self.not_converted.len();
            let settings = self.level_settings(server, d.children());
            let mut loc = Loc {
                d,
                kind,
                pattern,
                settings,
                proxy_pass: None,
                try_files: None,
                returns: None,
                internal: false,
                child_reports: Vec::new(),
                child_names: Vec::new(),
            };
            for c in d.children() {
                match c.name.as_str() {
                    "proxy_pass" => loc.proxy_pass = Some(c),
                    "try_files" => {
                        loc.try_files = Some(c);
                        loc.child_names.push(c.name.clone());
                    }
                    "return" => {
                        loc.returns = Some(c);
                        loc.child_names.push(c.name.clone());
                    }
                    "internal" => loc.internal = true,
                    "location" => self.skip(c, "nested locations are not converted: move it out to the server level"),
                    n if is_setting(n) => {}
                    n => {
                        loc.child_names.push(n.to_string());
                        self.skip(c, reason_for(n));
                    }
                }
            }
            loc.child_reports = self.not_converted.split_off(mark);
            locs.push(loc);
        }

        let named: HashMap<String, usize> = locs
            .iter()
            .enumerate()
            .filter(|(_, l)| l.kind == LocKind::Named)
            .map(|(i, l)| (l.pattern.clone(), i))
            .collect();
        let mut named_used: HashSet<usize> = HashSet::new();

        // The internal locations that `mirror` points at.
        let find_mirror_loc = |uri: &str, locs: &[Loc<'_>]| {
            locs.iter().position(|l| l.kind == LocKind::Exact && l.pattern == uri).or_else(|| {
                locs.iter()
                    .position(|l| matches!(l.kind, LocKind::Prefix | LocKind::NoRegex) && l.pattern == uri)
            })
        };
        let mut mirror_locs: HashSet<usize> = HashSet::new();
        for l in &locs {
            for (uri, _, _) in &l.settings.mirrors {
                if let Some(i) = find_mirror_loc(uri, &locs) {
                    mirror_locs.insert(i);
                }
            }
        }

        let mut plans = Vec::new();
        for i in 0..locs.len() {
            let l = &locs[i];
            if l.kind == LocKind::Named || mirror_locs.contains(&i) {
                continue;
            }
            if l.internal {
                let reason = "internal location (reached only by nginx's own subrequests)";
                self.skip(l.d, reason);
                continue;
            }
            if let Some(r) = l.returns {
                self.skip(
                    l.d,
                    format!("nginx answers these requests itself (`{}`); cutover only proxies", r.text()),
                );
                continue;
            }
            // The proxy_pass of this location, or of the named location its try_files falls back to.
            let mut via_named = None;
            let (pp, settings) = match l.proxy_pass {
                Some(pp) => (pp, &l.settings),
                None => {
                    let fallback = l
                        .try_files
                        .and_then(|t| t.args.last())
                        .and_then(|a| named.get(a.text.as_str()))
                        .filter(|&&n| locs[n].proxy_pass.is_some());
                    match fallback {
                        Some(&n) => {
                            via_named = Some(n);
                            (locs[n].proxy_pass.expect("filtered"), &locs[n].settings)
                        }
                        None => {
                            let what = if l.child_names.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", dedup(&l.child_names).join(", "))
                            };
                            self.skip(
                                l.d,
                                format!(
                                    "no proxy_pass{what}: cutover only proxies; requests nginx answered here go to the next \
                                     matching route instead"
                                ),
                            );
                            continue;
                        }
                    }
                }
            };
            let settings = settings.clone();
            let plan = self.plan_route(l.d, l.kind, &l.pattern, pp, &settings);
            match plan {
                Ok(mut plan) => {
                    self.not_converted.extend(l.child_reports.iter().cloned());
                    if let Some(n) = via_named {
                        named_used.insert(n);
                        self.not_converted.extend(locs[n].child_reports.iter().cloned());
                        let t = l.try_files.expect("via try_files");
                        self.skip(
                            t,
                            format!(
                                "cutover does not serve files: every request here goes to {}'s backend",
                                locs[n].pattern
                            ),
                        );
                        plan.comments
                            .push(format!("{} {} (via {})", locs[n].d.at, locs[n].d.text(), t.text()));
                    }
                    // Mirrors.
                    let mirrors = settings.mirrors.clone();
                    for (k, (uri, at, text)) in mirrors.iter().enumerate() {
                        let fake = Directive {
                            name: "mirror".into(),
                            args: vec![Arg {
                                text: uri.clone(),
                                quoted: false,
                            }],
                            at: at.clone(),
                            block: None,
                        };
                        if k > 0 {
                            self.skip(&fake, "cutover mirrors a route to one backend only");
                            continue;
                        }
                        let Some(mi) = find_mirror_loc(uri, &locs) else {
                            self.skip(&fake, format!("no location {uri} in this server"));
                            continue;
                        };
                        match self.mirror_target(locs[mi].d, locs[mi].proxy_pass, &plan) {
                            Ok(to) => {
                                plan.mirror = Some(to.clone());
                                plan.comments
                                    .push(format!("{at} {text} -> {} {}", locs[mi].d.at, locs[mi].d.text()));
                                self.note(
                                    "nginx mirrors every request (all methods, with bodies) to its mirror location; cutover \
                                     mirrors GET, HEAD and OPTIONS unless the route's mirror sets methods and allow_mutating, \
                                     and sends requests served by the mirror target to the stable backend instead",
                                );
                            }
                            Err(reason) => self.skip(&fake, reason),
                        }
                    }
                    plans.push(plan);
                }
                Err(reason) => {
                    let pp_text = pp.text();
                    self.skip(l.d, format!("`{pp_text}`: {reason}"));
                }
            }
        }
        for (i, l) in locs.iter().enumerate() {
            if l.kind == LocKind::Named && !named_used.contains(&i) {
                self.skip(l.d, "named location: reached only by nginx's try_files/error_page fallbacks");
            }
        }
        order_locations(plans)
    }

    /// The route backend a mirror location's proxy_pass points at.
    fn mirror_target(&mut self, loc: &Directive, pp: Option<&Directive>, plan: &RoutePlan) -> Result<String, String> {
        let Some(pp) = pp else {
            return Err(format!("{} {} has no proxy_pass", loc.at, loc.text()));
        };
        let target = self.parse_proxy_pass(pp)?;
        let id = match &target.target {
            Target::Upstream(n) => format!("upstream:{n}"),
            Target::Host(h) => format!("host:{}://{h}", target.scheme),
            Target::Split(_) => return Err("the mirror location proxies to a split_clients variable".into()),
        };
        if target.uri.is_some() {
            return Err("the mirror location's proxy_pass has a URI part: nginx sends that URI, cutover the original one".into());
        }
        if !target.request_uri {
            self.note(format!(
                "{}: the mirror location proxies without $request_uri, so nginx sends its own URI ({}) to the mirror \
                 target; cutover sends the original request's path",
                pp.at,
                loc.arg(loc.args.len().saturating_sub(1)).unwrap_or("")
            ));
        }
        let Some((name, _, _)) = plan.backends.iter().find(|(_, _, bid)| *bid == id) else {
            return Err(format!(
                "the mirror target ({}) is not a backend of this route: cutover mirrors only to a route's own backends (add it \
                 with weight 0 and a mirror by hand if you accept that failover and retries may then send it live traffic)",
                match &target.target {
                    Target::Upstream(n) | Target::Host(n) | Target::Split(n) => n,
                }
            ));
        };
        let stable = plan.stable.clone().or_else(|| plan.backends.first().map(|b| b.0.clone()));
        if stable.as_ref() == Some(name) {
            return Err("the mirror target is the route's stable backend".into());
        }
        Ok(name.clone())
    }

    fn parse_proxy_pass(&self, d: &Directive) -> Result<ProxyPass, String> {
        let Some(url) = d.arg(0).filter(|_| d.args.len() == 1) else {
            return Err("invalid proxy_pass".into());
        };
        let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
            ("http", r)
        } else if let Some(r) = url.strip_prefix("https://") {
            ("https", r)
        } else {
            return Err("only http:// and https:// targets are converted".into());
        };
        let (host, uri) = match rest.find(['/', '$']) {
            // A variable at the start is the host itself.
            Some(0) if rest.starts_with('$') => match rest[1..].find(['/', '$']) {
                Some(i) => rest.split_at(i + 1),
                None => (rest, ""),
            },
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (uri, request_uri) = match uri {
            "" => (None, false),
            "$request_uri" => (None, true),
            // The normalised path and the query: what cutover forwards.
            "$uri$is_args$args" => (None, false),
            u if u.contains('$') => return Err("variables in the URI part are not converted".into()),
            u => (Some(u.to_string()), false),
        };
        if host.starts_with("unix:") {
            return Err("unix sockets are not supported".into());
        }
        let target = if let Some(var) = host.strip_prefix('$') {
            let var = var.trim_start_matches('{').trim_end_matches('}');
            if !self.splits.contains_key(var) {
                return Err(format!("${var} is not a split_clients variable"));
            }
            if uri.is_some() {
                return Err("a split with a URI part sends every request to that URI".into());
            }
            Target::Split(var.to_string())
        } else if host.contains('$') {
            return Err("variables in the host are not converted".into());
        } else if self.upstreams.contains_key(host) {
            Target::Upstream(host.to_string())
        } else {
            match normalize_host_port(host, default_port(scheme)) {
                Some(h) => Target::Host(h),
                None => return Err(format!("{host:?} is not a host:port")),
            }
        };
        Ok(ProxyPass {
            target,
            scheme,
            uri,
            request_uri,
        })
    }

    /// A route for one location whose requests go to `pp`.
    fn plan_route(
        &mut self,
        loc: &Directive,
        kind: LocKind,
        pattern: &str,
        pp: &Directive,
        settings: &Settings,
    ) -> Result<RoutePlan, String> {
        if matches!(kind, LocKind::Exact | LocKind::Prefix | LocKind::NoRegex) && !pattern.starts_with('/') {
            return Err("the location does not start with '/' and never matches".into());
        }
        if matches!(kind, LocKind::Regex | LocKind::RegexCaseless) {
            regex::Regex::new(&regex_for(kind, pattern)).map_err(|e| format!("the regex is not one cutover accepts: {e}"))?;
        }
        let target = self.parse_proxy_pass(pp)?;
        if target.uri.is_some() && matches!(kind, LocKind::Regex | LocKind::RegexCaseless) {
            return Err("a URI part in a regex location (nginx refuses this)".into());
        }
        let rewrite = target
            .uri
            .as_ref()
            .filter(|uri| uri.as_str() != pattern)
            .map(|uri| (pattern.to_string(), uri.clone()));
        if target.request_uri {
            self.note(format!(
                "{}: proxy_pass ...$request_uri: nginx passes the URI exactly as the client sent it; cutover passes the \
                 normalised path (dot segments resolved, slashes merged)",
                pp.at
            ));
        }
        let base_name = route_base_name(kind, pattern);
        let mut plan = RoutePlan {
            at: loc.at.clone(),
            loc_text: loc.text(),
            kind,
            pattern: pattern.to_string(),
            matcher: match kind {
                LocKind::Exact => PathCond::Exact(pattern.to_string()),
                LocKind::Regex | LocKind::RegexCaseless => PathCond::Regex(regex_for(kind, pattern)),
                _ => PathCond::Prefix(pattern.to_string()),
            },
            base_name: base_name.clone(),
            backends: Vec::new(),
            weights: None,
            stable: None,
            sticky: None,
            mirror: None,
            body_limit: settings.body_limit.clone(),
            comments: vec![format!("{} {}", loc.at, loc.text()), format!("{} {}", pp.at, pp.text())],
            weight_comments: Vec::new(),
        };
        match &target.target {
            Target::Upstream(name) => {
                self.upstreams[name.as_str()].used = true;
                let up = &self.upstreams[name.as_str()];
                let expand = up.endpoints.len() > 1 && up.no_expand.is_none();
                if expand {
                    let endpoints = up.endpoints.clone();
                    let total: u32 = endpoints.iter().filter(|e| !e.backup).map(|e| e.weight).sum();
                    let shares: Vec<u32> = endpoints.iter().map(|e| if e.backup { 0 } else { e.weight }).collect();
                    let bp = if total == 0 { vec![0; shares.len()] } else { apportion(&shares) };
                    for (k, e) in endpoints.iter().enumerate() {
                        let base = format!("{name}-{}", k + 1);
                        let comment = format!("{} {}", e.at, e.text);
                        let url = format!("{}://{}", target.scheme, e.addr);
                        let b = self.backend(&base, &url, name, settings, &base_name, comment);
                        plan.backends.push((b, rewrite.clone(), format!("upstream:{name}")));
                    }
                    plan.weights = Some(bp);
                    plan.weight_comments.push(format!(
                        "{} upstream {name}: {} servers, weighted as in nginx",
                        self.upstreams[name.as_str()].at,
                        endpoints.len()
                    ));
                    self.note(format!(
                        "upstream {name} has {} servers: each is a backend ({name}-1…) of the routes that use it, weighted in \
                         weights.yaml; `cutover rollback` on such a route sends everything to {name}-1",
                        endpoints.len()
                    ));
                } else {
                    let b = self.upstream_backend(name, target.scheme, settings, &base_name)?;
                    plan.backends.push((b, rewrite.clone(), format!("upstream:{name}")));
                }
            }
            Target::Host(host) => {
                let comment = format!("{} {}", pp.at, pp.text());
                let base = sanitize_name(&proxy_host_of(host, target.scheme));
                let url = format!("{}://{host}", target.scheme);
                let b = self.backend(&base, &url, &proxy_host_of(host, target.scheme), settings, &base_name, comment);
                plan.backends.push((b, rewrite.clone(), format!("host:{}://{host}", target.scheme)));
            }
            Target::Split(var) => {
                let split = &self.splits[var.as_str()];
                if let Some(e) = &split.error {
                    return Err(format!("split_clients at {}: {e}", split.at));
                }
                let entries = split.entries.clone();
                let (key, split_at, split_text) = (split.key.clone(), split.at.clone(), split.text.clone());
                // Resolve every side first, so a failure leaves nothing behind.
                let mut sides: Vec<(String, u32, String)> = Vec::new();
                for (bp, value) in &entries {
                    let (name, id) = if self.upstreams.contains_key(value.as_str()) {
                        self.upstreams[value.as_str()].used = true;
                        (
                            self.upstream_backend(value, target.scheme, settings, &base_name)?,
                            format!("upstream:{value}"),
                        )
                    } else {
                        let host = normalize_host_port(value, default_port(target.scheme))
                            .ok_or_else(|| format!("split value {value:?} is not an upstream"))?;
                        let comment = format!("{split_at} {split_text}: {value}");
                        let url = format!("{}://{host}", target.scheme);
                        let proxy_host = proxy_host_of(&host, target.scheme);
                        let b = self.backend(&sanitize_name(&proxy_host), &url, &proxy_host, settings, &base_name, comment);
                        (b, format!("host:{}://{host}", target.scheme))
                    };
                    match sides.iter_mut().find(|s| s.0 == name) {
                        Some(s) => s.1 += bp,
                        None => sides.push((name, *bp, id)),
                    }
                }
                self.splits[var.as_str()].used = true;
                // The largest share is the stable side (rollback target), listed first.
                let stable = sides
                    .iter()
                    .enumerate()
                    .max_by_key(|(i, s)| (s.1, std::cmp::Reverse(*i)))
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                let first = sides.remove(stable);
                sides.insert(0, first);
                plan.stable = Some(sides[0].0.clone());
                plan.weights = Some(sides.iter().map(|s| s.1).collect());
                for (name, _, id) in &sides {
                    plan.backends.push((name.clone(), rewrite.clone(), id.clone()));
                }
                plan.weight_comments.push(format!("{split_at} {split_text}"));
                plan.comments.push(format!("{split_at} {split_text}"));
                plan.sticky = sticky_for_key(&key);
                let how = match &plan.sticky {
                    Some((kind, v)) => format!("sticky by {kind} {v}"),
                    None => "random per request (the key is neither a cookie nor a header)".into(),
                };
                self.note(format!(
                    "{split_at}: split_clients {key} became weights in weights.yaml, {how}; nginx hashes the key with \
                     MurmurHash2 and cutover with SipHash, so at the switch a user may land on the other side once"
                ));
                if plan.sticky.is_some() && key_has_literal_text(&key) {
                    self.note(format!(
                        "{split_at}: the split_clients key {key} mixes text with the variable; cutover hashes the variable's \
                         value alone"
                    ));
                }
            }
        }
        if matches!(kind, LocKind::Prefix | LocKind::NoRegex) && pattern.ends_with('/') && pattern.len() > 1 {
            self.auto_redirects.push(pattern.trim_end_matches('/').to_string());
        }
        Ok(plan)
    }

    /// The single backend standing for upstream `name` (its first server).
    fn upstream_backend(&mut self, name: &str, scheme: &str, settings: &Settings, route: &str) -> Result<String, String> {
        let up = &self.upstreams[name];
        let up_at = up.at.clone();
        let Some(first) = up.endpoints.first().cloned() else {
            return Err(format!("upstream {name} has no server cutover can reach"));
        };
        let rest: Vec<Endpoint> = up.endpoints[1..].to_vec();
        let why = up
            .no_expand
            .clone()
            .unwrap_or_else(|| "a split side or mirror target must be a single server".into());
        if !rest.is_empty() && !up.rest_listed {
            self.upstreams[name].rest_listed = true;
            for e in &rest {
                self.not_converted.push(NotConverted {
                    at: e.at.clone(),
                    directive: "server".into(),
                    text: e.text.clone(),
                    reason: format!("upstream {name} is represented by its first server ({}): {why}", first.addr),
                });
            }
        }
        let comment = format!("{up_at} upstream {name}: {}", first.text);
        let url = format!("{scheme}://{}", first.addr);
        Ok(self.backend(name, &url, name, settings, route, comment))
    }

    /// The backend for `addr` with the settings of a location; one per distinct combination.
    /// The backend for `url` (`scheme://host:port`) with the settings of a location;
    /// one per distinct combination.
    fn backend(&mut self, base: &str, url: &str, proxy_host: &str, settings: &Settings, route: &str, comment: String) -> String {
        let url = url.to_string();
        let tls = if url.starts_with("https://") {
            self.backend_tls(settings)
        } else {
            None
        };
        let host_header = match &settings.host {
            HostSetting::ProxyHost => Some((
                proxy_host.to_string(),
                "nginx's default Host is $proxy_host (no proxy_set_header Host)".to_string(),
            )),
            HostSetting::Literal(v, at) => Some((v.clone(), format!("{at} proxy_set_header Host {v}"))),
            HostSetting::Client | HostSetting::Unsupported => None,
        };
        let id = format!(
            "{base}|{url}|{:?}|{:?}|{:?}|{:?}",
            tls.as_ref().map(|t| (&t.0, &t.1)),
            host_header.as_ref().map(|h| &h.0),
            settings.connect_timeout.as_ref().map(|t| t.0),
            settings.read_timeout.as_ref().map(|t| t.0)
        );
        if let Some(name) = self.backend_ids.get(&id) {
            return name.clone();
        }
        let mut name = base.to_string();
        if self.backends.contains_key(&name) {
            name = format!("{base}-for-{route}");
            let mut k = 2;
            while self.backends.contains_key(&name) {
                name = format!("{base}-for-{route}-{k}");
                k += 1;
            }
        }
        self.backends.insert(
            name.clone(),
            BackendOut {
                name: name.clone(),
                url,
                host_header,
                tls,
                connect_timeout: settings.connect_timeout.clone(),
                timeout: settings.read_timeout.clone(),
                comment,
            },
        );
        self.backend_ids.insert(id, name.clone());
        name
    }

    /// The `tls:` settings of an https backend, from proxy_ssl_trusted_certificate
    /// and proxy_ssl_name.
    fn backend_tls(&mut self, settings: &Settings) -> Option<(Option<String>, Option<String>, String)> {
        if !settings.ssl_verify {
            self.note(
                "nginx does not check an https backend's certificate unless proxy_ssl_verify is on; cutover always does \
                 (against the system roots, or the backend's tls.ca_file), so a backend with a self-signed or private-CA \
                 certificate needs tls.ca_file",
            );
        }
        let mut from = Vec::new();
        let ca_file = settings.ssl_trusted.as_ref().and_then(|(path, at, text)| {
            let file = self.absolute(path);
            let check = crate::tls::client_config(Some(&crate::tls::BackendTls {
                ca_file: Some(file.clone()),
                server_name: None,
            }));
            match check {
                Ok(_) => {
                    from.push(format!("{at} {text}"));
                    Some(file.to_string_lossy().into_owned())
                }
                Err(e) => {
                    if self.listed.insert(at.clone()) {
                        self.not_converted.push(NotConverted {
                            at: at.clone(),
                            directive: "proxy_ssl_trusted_certificate".into(),
                            text: text.clone(),
                            reason: format!("cutover cannot load it here ({e}): the backend is checked against the system roots"),
                        });
                    }
                    None
                }
            }
        });
        let server_name = settings.ssl_name.as_ref().and_then(|(name, at, text)| {
            if rustls_pki_types::ServerName::try_from(name.as_str()).is_ok() {
                from.push(format!("{at} {text}"));
                Some(name.clone())
            } else {
                if self.listed.insert(at.clone()) {
                    self.not_converted.push(NotConverted {
                        at: at.clone(),
                        directive: "proxy_ssl_name".into(),
                        text: text.clone(),
                        reason: "not a server name cutover can send".into(),
                    });
                }
                None
            }
        });
        (ca_file.is_some() || server_name.is_some()).then(|| (ca_file, server_name, from.join(", ")))
    }

    // ------------------------------------------------------------ output

    fn finish(mut self, source: &Path) -> Result<Import, ImportError> {
        let servers = std::mem::take(&mut self.servers);

        // nginx's default server for an address: the one marked default_server, else the first.
        let mut default_for: IndexMap<String, usize> = IndexMap::new();
        for (i, s) in servers.iter().enumerate() {
            for l in s.listens.iter().filter(|l| l.default) {
                default_for.insert(l.addr.clone(), i);
            }
        }
        for (i, s) in servers.iter().enumerate() {
            for l in &s.listens {
                default_for.entry(l.addr.clone()).or_insert(i);
            }
        }
        let is_default: Vec<bool> = (0..servers.len()).map(|i| default_for.values().any(|&d| d == i)).collect();
        let routed: Vec<usize> = (0..servers.len()).filter(|&i| !servers[i].routes.is_empty()).collect();
        let default_routed: Vec<usize> = routed.iter().copied().filter(|&i| is_default[i]).collect();
        if default_routed.len() > 1 {
            let list: Vec<String> = default_routed.iter().map(|&i| servers[i].at.to_string()).collect();
            self.note(format!(
                "the server blocks at {} are each the default server of their own address; cutover routes do not depend on \
                 the listener, so their routes are all tried in that order on every listener",
                list.join(", ")
            ));
        }

        // Routes: the servers that are not a default server first, each route with a
        // host match per server name; then the default servers' routes, without one.
        let mut routes: Vec<RouteOut> = Vec::new();
        let mut order: Vec<usize> = routed.iter().copied().filter(|&i| !is_default[i]).collect();
        order.extend(default_routed.iter().copied());
        let mut names_used: HashSet<String> = HashSet::new();
        for &i in &order {
            let s = &servers[i];
            let hosts: Vec<Option<HostName>> = if !is_default[i] {
                if s.names.is_empty() {
                    let reason = if s.odd_names {
                        "its server names are not ones cutover can match"
                    } else {
                        "it has no server_name"
                    };
                    for r in &s.routes {
                        self.not_converted.push(NotConverted {
                            at: r.at.clone(),
                            directive: "location".into(),
                            text: r.loc_text.clone(),
                            reason: format!("server at {} is not a default server and {reason}", s.at),
                        });
                    }
                    continue;
                }
                s.names.iter().cloned().map(Some).collect()
            } else {
                vec![None]
            };
            for host in hosts {
                for plan in &s.routes {
                    let base = match &host {
                        Some(h) => format!("{}-{}", host_label(h), plan.base_name),
                        None => plan.base_name.clone(),
                    };
                    let mut name = base.clone();
                    let mut k = 2;
                    while !names_used.insert(name.clone()) {
                        name = format!("{base}-{k}");
                        k += 1;
                    }
                    routes.push(RouteOut {
                        name,
                        plan: plan.clone(),
                        host: host.as_ref().map(|h| h.pattern().to_string()),
                    });
                }
            }
        }

        // Listeners: every address once; a wildcard covers specific addresses on its port.
        let mut listeners: Vec<ListenerOut> = Vec::new();
        let mut all: IndexMap<String, Listen> = IndexMap::new();
        for s in &servers {
            for l in &s.listens {
                all.entry(l.addr.clone()).or_insert_with(|| l.clone());
            }
        }
        let addrs: Vec<(String, Listen)> = all.into_iter().collect();
        for (addr, listen) in &addrs {
            let port = addr.rsplit_once(':').map(|x| x.1).unwrap_or("");
            let v4_wild = format!("0.0.0.0:{port}");
            let v6_wild = format!("[::]:{port}");
            let is_v6 = addr.starts_with('[');
            let covered_by = if *addr != v4_wild && addrs.iter().any(|(a, _)| *a == v4_wild) {
                Some(v4_wild.clone())
            } else if is_v6 && *addr != v6_wild && addrs.iter().any(|(a, _)| *a == v6_wild) {
                Some(v6_wild.clone())
            } else {
                None
            };
            if let Some(w) = covered_by {
                self.not_converted.push(NotConverted {
                    at: listen.at.clone(),
                    directive: "listen".into(),
                    text: listen.text.clone(),
                    reason: format!(
                        "served by the listener on {w}: cutover cannot bind both{}",
                        if is_v6 {
                            "; for IPv6 clients use addr \"[::]:PORT\" alone (on Linux it accepts IPv4 too)"
                        } else {
                            ""
                        }
                    ),
                });
                continue;
            }
            let mut name = format!("port-{port}");
            let mut k = 2;
            while listeners.iter().any(|l| l.name == name) {
                name = format!("port-{port}-{k}");
                k += 1;
            }
            let tls = self.listener_tls(addr, &servers, default_for.get(addr).copied());
            listeners.push(ListenerOut {
                name,
                addr: addr.clone(),
                comment: format!("{} {}", listen.at, listen.text),
                tls,
            });
        }
        let unused: Vec<(Pos, String, Option<String>)> = self
            .cert_dirs
            .iter()
            .filter(|(at, _)| !self.cert_used.contains(*at))
            .map(|(at, (text, why))| (at.clone(), text.clone(), why.clone()))
            .collect();
        for (at, text, why) in unused {
            self.not_converted.push(NotConverted {
                at,
                directive: text.split(' ').next().unwrap_or_default().to_string(),
                text,
                reason: match why {
                    Some(why) => format!("TLS not converted: {why}"),
                    None => "no TLS listener uses it".to_string(),
                },
            });
        }

        if listeners.iter().any(|l| !l.tls.is_empty()) {
            self.note(
                "TLS listeners use the certificate files named by ssl_certificate, as absolute paths; cutover picks a \
                 certificate by the names it covers (SNI) rather than by server_name, with rustls' defaults (TLS 1.2 and \
                 1.3) rather than ssl_protocols and ssl_ciphers",
            );
        }
        for up in self.upstreams.values() {
            if !up.used && !up.endpoints.is_empty() {
                self.not_converted.push(NotConverted {
                    at: up.at.clone(),
                    directive: "upstream".into(),
                    text: up.text.clone(),
                    reason: "no converted route proxies to it".into(),
                });
            }
        }
        if listeners.is_empty() {
            listeners.push(ListenerOut {
                name: "public".into(),
                addr: "0.0.0.0:8080".into(),
                comment: "no listen address could be converted".into(),
                tls: Vec::new(),
            });
            self.note("no nginx listen address could be converted: the listener is 0.0.0.0:8080");
        }
        self.not_converted.sort_by(|a, b| a.at.cmp(&b.at));
        if routes.is_empty() {
            return Err(ImportError::NothingToRoute {
                report: render_report(&self.not_converted, &self.notes),
            });
        }
        if self.backends.values().any(|b| b.connect_timeout.is_none() || b.timeout.is_none()) {
            self.note(
                "where nginx used its default proxy timeouts (connect 60s, read 60s), the backends keep cutover's \
                 (connect_timeout 2s; timeout 30s, a deadline for the response head rather than between two reads)",
            );
        }
        if !self.auto_redirects.is_empty() {
            let list = dedup(&self.auto_redirects).join(", ");
            self.note(format!(
                "nginx answers a request for a proxied location's prefix without its trailing slash ({list}) with a 301 to \
                 the slashed form; cutover passes it to whichever route matches it"
            ));
        }

        let body_limit = self.body_limit(&routes);
        let config = self.render_config(source, &listeners, &routes, body_limit);
        let weights = render_weights(source, &routes);
        // The output must pass `cutover check`.
        let config_path = Path::new("cutover.yaml");
        let compiled = Config::parse(config_path, config.clone()).map_err(|e| ImportError::Invalid(format!("{e}\n{config}")))?;
        Weights::parse(Path::new("weights.yaml"), &weights, &compiled).map_err(|e| ImportError::Invalid(format!("{e}\n{weights}")))?;
        Ok(Import {
            config,
            weights,
            not_converted: self.not_converted,
            notes: self.notes,
        })
    }

    /// The certificates of a listener address with `listen ... ssl`: those of
    /// its default server first, then of the other servers on it. When none can
    /// be used the listener serves plain HTTP and the `listen`s are listed.
    fn listener_tls(&mut self, addr: &str, servers: &[ServerPlan], default: Option<usize>) -> Vec<TlsPair> {
        let mut on_addr: Vec<usize> = (0..servers.len())
            .filter(|&i| servers[i].listens.iter().any(|l| l.addr == addr && l.ssl))
            .collect();
        if on_addr.is_empty() {
            return Vec::new();
        }
        if let Some(d) = default
            && let Some(pos) = on_addr.iter().position(|&i| i == d)
        {
            let first = on_addr.remove(pos);
            on_addr.insert(0, first);
        }
        let mut pairs: Vec<TlsPair> = Vec::new();
        for &i in &on_addr {
            if let Some(Ok(ps)) = &servers[i].tls {
                for p in ps {
                    if !pairs.iter().any(|q| q.cert == p.cert && q.key == p.key) {
                        pairs.push(p.clone());
                    }
                }
            }
        }
        for p in &pairs {
            self.cert_used.insert(p.cert_at.clone());
            self.cert_used.insert(p.key_at.clone());
        }
        if pairs.is_empty() {
            for &i in &on_addr {
                let why = match &servers[i].tls {
                    Some(Err(why)) => why.clone(),
                    _ => "no certificate".to_string(),
                };
                for l in servers[i].listens.iter().filter(|l| l.addr == addr && l.ssl) {
                    self.not_converted.push(NotConverted {
                        at: l.at.clone(),
                        directive: "listen".into(),
                        text: l.text.clone(),
                        reason: format!(
                            "TLS not converted ({why}): this listener serves plain HTTP; terminate TLS in front of cutover, \
                             or add tls: {{ certs: [...] }} where cutover can read the files"
                        ),
                    });
                }
            }
            self.note(format!(
                "{addr}: TLS not converted: `listen ... ssl` became a plain HTTP listener because its certificates could not be loaded"
            ));
        }
        pairs
    }

    /// One request body limit for every route: nginx sets it per location,
    /// cutover once (`server.max_body_bytes`), so the largest applies.
    fn body_limit(&mut self, routes: &[RouteOut]) -> Option<(u64, String)> {
        let effective = |r: &RouteOut| match &r.plan.body_limit {
            Some((0, _, _)) => u64::MAX,
            Some((n, _, _)) => *n,
            None => NGINX_BODY_LIMIT,
        };
        let largest = routes.iter().map(effective).max()?;
        let mut listed = HashSet::new();
        for r in routes {
            if effective(r) >= largest {
                continue;
            }
            match &r.plan.body_limit {
                Some((_, at, text)) => {
                    if listed.insert(at.clone()) {
                        self.not_converted.push(NotConverted {
                            at: at.clone(),
                            directive: "client_max_body_size".into(),
                            text: text.clone(),
                            reason: "cutover has one request body limit for all routes (server.max_body_bytes), set to the \
                                     largest in the config"
                                .into(),
                        });
                    }
                }
                None => self.note(format!(
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
            .map(|(_, at, text)| format!("{at} {text}"))
            .unwrap_or_else(|| "nginx's default client_max_body_size (1m)".into());
        Some((largest, why))
    }

    fn render_config(&self, source: &Path, listeners: &[ListenerOut], routes: &[RouteOut], body_limit: Option<(u64, String)>) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# cutover config imported from {} by `cutover import-nginx`.", source.display());
        let _ = writeln!(
            o,
            "# Comments name the nginx lines each entry came from. Before relying on it, review"
        );
        let _ = writeln!(o, "# the directives the import listed as not converted.");
        if !self.notes.is_empty() {
            let _ = writeln!(o, "#\n# Notes:");
            for n in &self.notes {
                for (k, line) in wrap(n, 86).iter().enumerate() {
                    let _ = writeln!(o, "#   {} {line}", if k == 0 { "-" } else { " " });
                }
            }
        }
        let _ = writeln!(o, "\nlisteners:");
        for l in listeners {
            let _ = writeln!(o, "  - name: {}  # {}", yaml_scalar(&l.name), l.comment);
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
        for b in self.backends.values() {
            let _ = writeln!(o, "  {}:  # {}", yaml_scalar(&b.name), b.comment);
            let _ = writeln!(o, "    url: {}", yaml_quoted(&b.url));
            if let Some((ca_file, server_name, from)) = &b.tls {
                let mut parts = Vec::new();
                if let Some(ca) = ca_file {
                    parts.push(format!("ca_file: {}", yaml_quoted(ca)));
                }
                if let Some(n) = server_name {
                    parts.push(format!("server_name: {}", yaml_scalar(n)));
                }
                let _ = writeln!(o, "    tls: {{ {} }}  # {from}", parts.join(", "));
            }
            if let Some((h, why)) = &b.host_header {
                let _ = writeln!(o, "    host_header: {}  # {why}", yaml_scalar(h));
            }
            if let Some((t, at)) = &b.connect_timeout {
                let _ = writeln!(o, "    connect_timeout: {}  # {at} proxy_connect_timeout", format_duration(*t));
            }
            if let Some((t, at)) = &b.timeout {
                let _ = writeln!(o, "    timeout: {}  # {at} proxy_read_timeout", format_duration(*t));
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
            for (b, rw, _) in &p.backends {
                match rw {
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
            if let Some((kind, v)) = &p.sticky {
                let _ = writeln!(o, "    sticky: {{ {kind}: {} }}", yaml_scalar(v));
            }
            if let Some(to) = &p.mirror {
                let _ = writeln!(o, "    mirror: {{ to: {} }}", yaml_scalar(to));
            }
        }
        o
    }
}

fn render_weights(source: &Path, routes: &[RouteOut]) -> String {
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
            .map(|((b, _, _), bp)| format!("{}: {}", yaml_scalar(b), format_percent(*bp as u16)))
            .collect();
        let _ = writeln!(o, "{}: {{ {} }}", yaml_scalar(&r.name), parts.join(", "));
    }
    if !any {
        let _ = writeln!(o, "# No route is split between backends yet.\n{{}}");
    }
    o
}

fn render_report(items: &[NotConverted], notes: &[String]) -> String {
    let mut o = String::new();
    if items.is_empty() {
        let _ = writeln!(o, "Every directive was converted.");
    } else {
        let _ = writeln!(
            o,
            "Not converted ({} {}; review each before switching):",
            items.len(),
            if items.len() == 1 { "directive" } else { "directives" }
        );
        let mut groups: IndexMap<(String, String), Vec<&NotConverted>> = IndexMap::new();
        for n in items {
            groups.entry((n.directive.clone(), n.reason.clone())).or_default().push(n);
        }
        for ((directive, reason), list) in &groups {
            let _ = writeln!(o, "\n  {directive}: {reason}");
            for n in list {
                let _ = writeln!(o, "    {}  {}", n.at, n.text);
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(o, "\nNotes:");
        for n in notes {
            let _ = writeln!(o, "  - {n}");
        }
    }
    o
}

// ---------------------------------------------------------------- precedence

/// Orders one server's routes so that cutover's first match picks the same
/// location as nginx.
///
/// nginx picks, for a path: an exact (`=`) location equal to it; otherwise it
/// finds the longest matching prefix location and, if that prefix is `^~`,
/// uses it; otherwise the first regex location (in file order) that matches;
/// otherwise that longest prefix. The routes are therefore emitted as:
///
/// 1. exact locations (`path:`);
/// 2. `^~` prefixes, a longer one before any shorter one it extends, each
///    restricted to the paths for which it is the longest matching prefix:
///    when a longer *plain* prefix extends it (`^~ /static/` and
///    `/static/img/`), nginx goes on to the regexes for `/static/img/...`, so
///    that route becomes a `path_regex` matching `/static/` but not
///    `/static/img/` (longer `^~` prefixes are already ahead of it);
/// 3. regex locations, in file order (`~*` gets `(?i)`);
/// 4. the remaining prefixes, a longer one before any shorter one it extends.
///
/// "Longest first" only matters between prefixes where one extends the other,
/// so otherwise the file's order is kept (see [`longer_first`]).
///
/// Only converted locations take part: a location that was left out is
/// treated as absent.
fn order_locations(plans: Vec<RoutePlan>) -> Vec<RoutePlan> {
    let by_kind = |k: &[LocKind]| plans.iter().filter(|p| k.contains(&p.kind)).cloned().collect::<Vec<_>>();
    let exact = by_kind(&[LocKind::Exact]);
    let noregex = by_kind(&[LocKind::NoRegex]);
    let regex = by_kind(&[LocKind::Regex, LocKind::RegexCaseless]);
    let prefix = by_kind(&[LocKind::Prefix]);
    let mut noregex = longer_first(noregex);
    let prefix = longer_first(prefix);
    for p in &mut noregex {
        let longer: Vec<&str> = prefix
            .iter()
            .filter(|q| q.pattern.len() > p.pattern.len() && q.pattern.starts_with(&p.pattern))
            .map(|q| q.pattern.as_str())
            .collect();
        if longer.is_empty() {
            continue;
        }
        let suffixes: Vec<&str> = longer.iter().map(|q| &q[p.pattern.len()..]).collect();
        p.matcher = PathCond::Regex(format!("^{}{}", regex::escape(&p.pattern), not_prefix_regex(&suffixes)));
        p.comments.push(format!(
            "^~ {} except under {}: there nginx checks the regex locations first",
            p.pattern,
            longer.join(", ")
        ));
    }
    let mut out = exact;
    out.extend(noregex);
    out.extend(regex);
    out.extend(prefix);
    out
}

/// Prefix routes in file order, except that a prefix comes before every
/// shorter prefix it extends (`/api/v2/` before `/api/`), so that the first
/// match is the longest, as in nginx.
fn longer_first(plans: Vec<RoutePlan>) -> Vec<RoutePlan> {
    let mut out: Vec<RoutePlan> = Vec::with_capacity(plans.len());
    for p in plans {
        // Before the first route it extends: every prefix of p is at or after that point,
        // and every route extending p is already before it (it had to precede that route too).
        match out.iter().position(|q| p.pattern.starts_with(&q.pattern)) {
            Some(i) => out.insert(i, p),
            None => out.push(p),
        }
    }
    out
}

/// A regex (to follow an anchored literal) matching any rest of the path that
/// does not start with one of `suffixes` (none empty).
fn not_prefix_regex(suffixes: &[&str]) -> String {
    #[derive(Default)]
    struct Node {
        end: bool,
        children: std::collections::BTreeMap<char, Node>,
    }
    fn build(node: &Node) -> Option<String> {
        if node.end {
            return None;
        }
        let mut alts = vec!["$".to_string()];
        let class: String = node.children.keys().map(|c| regex::escape(&c.to_string())).collect();
        alts.push(format!("[^{class}]"));
        for (c, child) in &node.children {
            if let Some(rest) = build(child) {
                alts.push(format!("{}{rest}", regex::escape(&c.to_string())));
            }
        }
        Some(format!("(?:{})", alts.join("|")))
    }
    let mut root = Node::default();
    for s in suffixes {
        let mut n = &mut root;
        for c in s.chars() {
            n = n.children.entry(c).or_default();
        }
        n.end = true;
    }
    build(&root).unwrap_or_else(|| "(?:$.)".into())
}

fn regex_for(kind: LocKind, pattern: &str) -> String {
    if kind == LocKind::RegexCaseless {
        format!("(?i){pattern}")
    } else {
        pattern.to_string()
    }
}

/// The modifier and pattern of a `location`.
fn location_head(d: &Directive) -> Option<(LocKind, String)> {
    let args = d.arg_texts();
    let modifier = |m: &str| match m {
        "=" => Some(LocKind::Exact),
        "^~" => Some(LocKind::NoRegex),
        "~" => Some(LocKind::Regex),
        "~*" => Some(LocKind::RegexCaseless),
        _ => None,
    };
    match args.as_slice() {
        [m, p] => Some((modifier(m)?, p.to_string())),
        [p] => {
            // nginx also accepts the modifier glued to the pattern: `=/healthz`, `~*\.png$`.
            for (m, kind) in [
                ("^~", LocKind::NoRegex),
                ("~*", LocKind::RegexCaseless),
                ("~", LocKind::Regex),
                ("=", LocKind::Exact),
                ("@", LocKind::Named),
            ] {
                if let Some(rest) = p.strip_prefix(m)
                    && !rest.is_empty()
                {
                    let pattern = if kind == LocKind::Named { p.to_string() } else { rest.to_string() };
                    return Some((kind, pattern));
                }
            }
            Some((LocKind::Prefix, p.to_string()))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------- small helpers

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// `host:port`, with `default` when no port is given; `None` for unix sockets and junk.
fn normalize_host_port(s: &str, default: u16) -> Option<String> {
    if s.starts_with("unix:") || s.is_empty() || s.contains('/') || s.contains('$') {
        return None;
    }
    let with_port = if let Some(rest) = s.strip_prefix('[') {
        let (_, after) = rest.split_once(']')?;
        if after.is_empty() {
            format!("{s}:{default}")
        } else {
            s.to_string()
        }
    } else if s.contains(':') {
        s.to_string()
    } else {
        format!("{s}:{default}")
    };
    format!("http://{with_port}").parse::<BackendUrl>().ok()?;
    Some(with_port)
}

/// nginx's `$proxy_host` for a `host:port`: the port is dropped when it is the scheme's default.
fn proxy_host_of(host_port: &str, scheme: &str) -> String {
    let default = format!(":{}", default_port(scheme));
    host_port.strip_suffix(default.as_str()).unwrap_or(host_port).to_string()
}

/// A listen address as a socket address cutover can bind.
fn listen_addr(raw: &str) -> Option<String> {
    if raw.starts_with("unix:") {
        return None;
    }
    if let Ok(port) = raw.parse::<u16>() {
        return Some(format!("0.0.0.0:{port}"));
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse::<u16>().ok()?,
            None if after.is_empty() => 80,
            None => return None,
        };
        (format!("[{h}]"), port)
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse::<u16>().ok()?),
            None => (raw.to_string(), 80),
        }
    };
    let host = match host.as_str() {
        "*" => "0.0.0.0".to_string(),
        "localhost" => "127.0.0.1".to_string(),
        h => h.to_string(),
    };
    let addr = format!("{host}:{port}");
    addr.parse::<std::net::SocketAddr>().ok()?;
    Some(addr)
}

/// Percent text (`12.5`) → basis points, at most two decimals as in nginx.
fn parse_basis_points(text: &str) -> Option<u32> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 2 || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let whole: u32 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let frac: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<2}").parse().ok()? };
    whole.checked_mul(100)?.checked_add(frac).filter(|&bp| bp <= ALL)
}

/// Splits 100% in proportion to `shares` with the largest-remainder method.
fn apportion(shares: &[u32]) -> Vec<u32> {
    let total: u64 = shares.iter().map(|&s| u64::from(s)).sum();
    if total == 0 {
        return vec![0; shares.len()];
    }
    let exact: Vec<u64> = shares.iter().map(|&s| u64::from(s) * u64::from(ALL)).collect();
    let mut out: Vec<u32> = exact.iter().map(|e| (e / total) as u32).collect();
    let mut left = ALL - out.iter().sum::<u32>();
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

fn key_has_literal_text(key: &str) -> bool {
    let vars = key_variables(key);
    let mut stripped = key.to_string();
    for v in &vars {
        stripped = stripped.replacen(&format!("${{{v}}}"), "", 1).replacen(&format!("${v}"), "", 1);
    }
    !stripped.is_empty()
}

/// `sticky` for a split_clients key: a cookie or a header, else random.
fn sticky_for_key(key: &str) -> Option<(&'static str, String)> {
    let vars = key_variables(key);
    let [var] = vars.as_slice() else {
        return None;
    };
    if let Some(c) = var.strip_prefix("cookie_") {
        return Some(("cookie", c.to_string()));
    }
    if let Some(h) = var.strip_prefix("http_") {
        return Some(("header", h.replace('_', "-")));
    }
    None
}

/// A readable route name for a location.
fn route_base_name(kind: LocKind, pattern: &str) -> String {
    let words: Vec<String> = pattern
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let joined = words.join("-");
    match kind {
        LocKind::Regex | LocKind::RegexCaseless => {
            if joined.is_empty() {
                "regex".into()
            } else {
                format!("regex-{joined}")
            }
        }
        _ if joined.is_empty() => "default".into(),
        _ => joined,
    }
}

/// A backend or route name made of letters, digits, '-', '_' and '.'.
fn sanitize_name(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() {
        "backend".into()
    } else {
        trimmed.to_string()
    }
}

fn host_label(h: &HostName) -> String {
    match h {
        HostName::Exact(x) => sanitize_name(x),
        HostName::Wildcard(x) => format!("any.{}", sanitize_name(x.trim_start_matches("*."))),
    }
}

fn dedup(items: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(i) {
            out.push(i.clone());
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_sizes_parse() {
        assert_eq!(parse_nginx_size("20M"), Some(20 << 20));
        assert_eq!(parse_nginx_size("8k"), Some(8192));
        assert_eq!(parse_nginx_size("1024"), Some(1024));
        assert_eq!(parse_nginx_size("0"), Some(0));
        assert_eq!(parse_nginx_size("big"), None);
    }

    #[test]
    fn nginx_times_parse() {
        assert_eq!(parse_nginx_time("60"), Some(Duration::from_secs(60)));
        assert_eq!(parse_nginx_time("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_nginx_time("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_nginx_time("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_nginx_time("soon"), None);
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
    }

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
    fn not_prefix_regex_excludes_exactly_the_longer_prefixes() {
        let re = regex::Regex::new(&format!("^/static/{}", not_prefix_regex(&["img/", "icons/"]))).unwrap();
        for ok in [
            "/static/",
            "/static/a.css",
            "/static/im",
            "/static/img",
            "/static/imgx/",
            "/static/icon/",
        ] {
            assert!(re.is_match(ok), "{ok}");
        }
        for no in ["/static/img/", "/static/img/a.png", "/static/icons/x", "/stat", "/other/"] {
            assert!(!re.is_match(no), "{no}");
        }
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(listen_addr("80").as_deref(), Some("0.0.0.0:80"));
        assert_eq!(listen_addr("*:8080").as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(listen_addr("127.0.0.1").as_deref(), Some("127.0.0.1:80"));
        assert_eq!(listen_addr("[::]:443").as_deref(), Some("[::]:443"));
        assert_eq!(listen_addr("localhost:81").as_deref(), Some("127.0.0.1:81"));
        assert_eq!(listen_addr("unix:/run/x.sock"), None);
    }

    #[test]
    fn sticky_keys() {
        assert_eq!(sticky_for_key("${cookie_sessionid}"), Some(("cookie", "sessionid".into())));
        assert_eq!(sticky_for_key("$http_x_user_id"), Some(("header", "x-user-id".into())));
        assert_eq!(sticky_for_key("${remote_addr}AAA"), None);
        assert!(key_has_literal_text("${cookie_id}salt"));
        assert!(!key_has_literal_text("$cookie_id"));
    }

    #[test]
    fn yaml_scalars_quote_what_needs_it() {
        assert_eq!(yaml_scalar("/api/"), "/api/");
        assert_eq!(yaml_scalar("legacy"), "legacy");
        assert_eq!(yaml_scalar("*.example.com"), "\"*.example.com\"");
        assert_eq!(yaml_scalar("127.0.0.1-8000"), "\"127.0.0.1-8000\"");
        assert_eq!(yaml_scalar("on"), "\"on\"");
        assert_eq!(yaml_quoted("\\.php$"), "\"\\\\.php$\"");
    }
}
