//! Configuration: the main config file and the weight file, read once and
//! compiled into typed, checked values. Nothing downstream re-parses them.

mod compile;
pub mod compression;
pub mod error;
pub mod file;
pub mod fleet;
pub mod raw;
pub mod values;
pub mod weight_file;
pub mod weights;
pub mod yaml;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

pub use error::{ConfigError, Location};
pub use file::{FileError, read_text};
pub use raw::LogFormat;
pub use values::BackendUrl;
pub use weight_file::WeightFile;
pub use weights::{NamedWeights, Weights, format_percent};

use crate::routing::Matcher;

/// The compiled main config.
#[derive(Debug)]
pub struct Config {
    /// The config file this came from.
    pub path: PathBuf,
    /// The weight file, resolved against the config file's folder.
    pub weights_path: PathBuf,
    /// The config file's text, kept to fingerprint the live version.
    pub text: String,
    pub listeners: Vec<Listener>,
    pub admin: Admin,
    pub access_log: AccessLogSettings,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub parity_log: Option<ParityLogSettings>,
    pub server: ServerSettings,
    /// Response compression, when on.
    pub compression: Option<Box<compression::Compression>>,
    pub backends: Vec<Arc<BackendSpec>>,
    pub routes: Vec<RouteSpec>,
    /// Candidate routes by first path segment, for fast first-match lookup.
    pub route_lookup: crate::routing::RouteIndex,
    /// Fleet mode, when configured.
    pub fleet: Option<Arc<fleet::FleetSettings>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub addr: SocketAddr,
    /// Certificates when the listener terminates TLS.
    pub tls: Option<Vec<crate::tls::CertSource>>,
    /// The port of `https://` every request is redirected to, but ACME's
    /// HTTP challenges (`/.well-known/acme-challenge/`).
    pub redirect_https: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub addr: SocketAddr,
    /// Bearer token for every endpoint but health, readiness and metrics,
    /// read from `token_file`.
    pub token: Option<String>,
    /// `Host`s accepted besides loopback ones and the listener's own address.
    pub hosts: Vec<AdminHost>,
}

/// A name or address by which clients reach the admin API (`admin.hosts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminHost {
    /// A DNS name, lower case.
    Name(String),
    Ip(std::net::IpAddr),
}

impl AdminHost {
    /// Reads an `admin.hosts` entry: a DNS name or an IP address (IPv6 with
    /// or without brackets), with no scheme, port or wildcard.
    pub fn parse(text: &str) -> Option<AdminHost> {
        let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            return Some(AdminHost::Ip(ip.to_canonical()));
        }
        let name = text.strip_suffix('.').unwrap_or(text);
        let is_label = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        (name.len() <= 253 && name.split('.').all(is_label)).then(|| AdminHost::Name(name.to_ascii_lowercase()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    pub format: LogFormat,
    pub target: LogTarget,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

/// Where parity samples are also written, as JSON lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParityLogSettings {
    pub path: PathBuf,
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_body_bytes: Option<u64>,
    pub body_read_timeout: Duration,
    /// Threads serving client connections, each with its own runtime.
    pub workers: usize,
    /// Longest a client connection may go without a new request.
    pub idle_timeout: Duration,
    /// Longest a client may take none of a response; zero: never.
    pub send_timeout: Duration,
    /// What `%2F` in a request path does; read per request, so a reload applies it.
    pub encoded_slashes: crate::routing::EncodedSlashes,
    /// Open client connections allowed on each listener.
    pub max_connections: usize,
    /// A request body of unknown length (chunked, HTTP/2 without
    /// `content-length`) is read up to this size first: one that ends within
    /// it is sent with `Content-Length`, as nginx sends every body, since
    /// Django and most WSGI servers read a body by its length alone.
    pub unsized_body_buffer_bytes: u64,
}

/// A backend as configured; shared by every route that uses it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendSpec {
    pub name: Arc<str>,
    pub url: BackendUrl,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    /// A response body that sends nothing this long is cut off; zero: never.
    pub body_timeout: Duration,
    /// A protocol-switched connection (WebSocket) with no byte either way
    /// this long is closed; zero: never.
    pub tunnel_idle_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    pub host_header: Option<HeaderValue>,
    pub health_check: Option<HealthCheckSpec>,
    pub passive: Option<PassiveSpec>,
    /// For `https://` backends.
    pub tls: Option<crate::tls::BackendTls>,
}

/// Active health checking of a backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheckSpec {
    /// Path and query requested with GET; 2xx and 3xx are healthy.
    pub path: http::uri::PathAndQuery,
    /// The Host sent, when not the backend's `host_header` or URL host.
    pub host: Option<HeaderValue>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// Passive ejection on live traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PassiveSpec {
    pub consecutive_failures: u32,
    pub cool_off: Duration,
}

#[derive(Debug)]
pub struct RouteSpec {
    pub name: Arc<str>,
    pub matcher: Matcher,
    pub backends: Vec<RouteBackend>,
    /// Index into `backends` of the rollback target.
    pub stable: usize,
    pub sticky: Sticky,
    pub force_header: Option<ForceHeader>,
    pub mirror: Option<MirrorSpec>,
    pub retry: RetrySpec,
    pub guard: Option<GuardSpec>,
    /// The client networks the route answers (nginx's `allow`); others get 403.
    pub allow_from: Option<Vec<ipnet::IpNet>>,
}

/// A header that lets trusted clients pin a backend of the route.
#[derive(Debug)]
pub struct ForceHeader {
    pub name: HeaderName,
    /// Client networks allowed to force (loopback unless configured).
    pub from: Vec<ipnet::IpNet>,
    /// When set, the request must also carry it in `X-Cutover-Force-Token`.
    pub token: Option<ForceToken>,
    /// Forced requests count in the guard's windows.
    pub guard: bool,
}

impl ForceHeader {
    /// Whether a client at `client` may force.
    pub fn allows_client(&self, client: std::net::IpAddr) -> bool {
        self.from.iter().any(|net| net.contains(&client))
    }
}

/// The header that carries a force header's secret, when it has a `token_file`.
pub static FORCE_TOKEN: http::HeaderName = http::HeaderName::from_static("x-cutover-force-token");

/// A force header's secret, read from its `token_file`; never printed.
pub struct ForceToken(Box<[u8]>);

impl ForceToken {
    /// Compares in constant time, so the answer's timing tells nothing of the token.
    pub fn matches(&self, presented: &[u8]) -> bool {
        subtle::ConstantTimeEq::ct_eq(presented, &*self.0).into()
    }
}

impl std::fmt::Debug for ForceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForceToken(..)")
    }
}

/// Automatic rollback thresholds for a route's non-stable backends.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardSpec {
    pub max_error_rate: Option<f64>,
    pub max_p99_latency: Option<Duration>,
    pub max_mismatch_rate: Option<f64>,
    pub window: Duration,
    pub min_requests: u64,
    /// Passive ejections of a backend within the window that roll back
    /// whatever the traffic; `None`: off.
    pub max_ejections: Option<u32>,
    /// `None`: instant rollback; else move weight back over this long.
    pub ramp: Option<Duration>,
}

/// Which requests that got no answer are sent again, once, to another backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySpec {
    pub enabled: bool,
    pub non_idempotent: bool,
}

impl RetrySpec {
    pub fn allows(&self, method: &http::Method) -> bool {
        self.enabled && (method.is_idempotent() || self.non_idempotent)
    }
}

/// Shadow traffic and comparison for a route. Comparisons are always
/// oriented stable backend (left) against the mirror target (right),
/// whichever of the two served the client.
#[derive(Debug)]
pub struct MirrorSpec {
    /// Index into the route's backends of the mirror target (≠ stable).
    pub to: usize,
    /// Share of eligible requests mirrored, 0..=1.
    pub share: f64,
    pub methods: Vec<http::Method>,
    pub max_body_bytes: usize,
    pub max_in_flight: usize,
    pub timeout: Duration,
    pub rules: crate::compare::CompareRules,
    /// Share of mirrored safe requests also sent to the primary twice, to learn noise.
    pub noise_sample: f64,
    pub accept: Vec<AcceptRule>,
    /// Hides secrets in what parity stores: the built-in names and value
    /// patterns, and the route's `redact` names.
    pub redact: crate::compare::redact::Redactor,
    pub compare_max_bytes: usize,
    /// Names the endpoint of each compared request (`compare.endpoints`, else learned).
    pub endpoints: crate::compare::endpoint::Endpoints,
    pub min_clean_share: Option<f64>,
}

/// A known difference, reported apart until it expires.
#[derive(Debug, Clone)]
pub struct AcceptRule {
    pub path: crate::compare::PathPattern,
    /// `path` as written, for reports.
    pub pattern: String,
    pub kind: crate::compare::Kind,
    pub reason: String,
    /// Last day the rule holds.
    pub until: Option<time::Date>,
}

impl AcceptRule {
    pub fn covers(&self, kind: crate::compare::Kind, path: &str, today: time::Date) -> bool {
        self.kind == kind && self.path.covers(path) && self.until.is_none_or(|d| today <= d)
    }
}

impl RouteSpec {
    pub fn backend_index(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| &*b.spec.name == name)
    }

    /// Whether the client may use the route (`allow_from`); `client` finds
    /// its address, `None` when it cannot be named (admitted nowhere).
    pub fn admits(&self, client: impl FnOnce() -> Option<std::net::IpAddr>) -> bool {
        let Some(nets) = &self.allow_from else { return true };
        client().is_some_and(|ip| nets.iter().any(|net| net.contains(&ip)))
    }
}

#[derive(Debug)]
pub struct RouteBackend {
    pub spec: Arc<BackendSpec>,
    pub rewrite: Option<Rewrite>,
}

/// Replaces a leading `prefix` of the forwarded path with `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub prefix: String,
    pub to: String,
}

impl Rewrite {
    pub fn apply<'a>(&self, path: &'a str) -> std::borrow::Cow<'a, str> {
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => format!("{}{rest}", self.to).into(),
            None => path.into(),
        }
    }
}

/// Where a route's bucket comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// A random bucket per request.
    None,
    /// The hash of a cookie's value; random when the cookie is absent.
    Cookie(String),
    /// The hash of a header's value; random when the header is absent.
    Header(HeaderName),
    /// The proxy draws a bucket once and stores it in this cookie.
    Pin(String),
}

impl Config {
    /// Reads and compiles the main config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = file::read_text(path)?;
        Config::parse(path, text)
    }

    /// Compiles config text as if read from `path` (relative paths in it resolve against its folder).
    pub fn parse(path: &Path, text: String) -> Result<Config, ConfigError> {
        compile::compile(path, text)
    }

    /// The index of the first route matching the request.
    pub fn route_for(&self, req: &crate::routing::RequestView<'_>) -> Option<usize> {
        self.route_lookup.find(req.path, |i| self.routes[i].matcher.matches(req))
    }

    pub fn route_index(&self, name: &str) -> Option<usize> {
        self.routes.iter().position(|r| &*r.name == name)
    }
}

/// Three routes over three backends (`api`: legacy/new, `three`:
/// legacy/new/third, `default`: legacy), for unit tests of weight changes.
#[cfg(test)]
pub(crate) fn test_config() -> Config {
    let text = "listeners: [{name: p, addr: '127.0.0.1:0'}]\n\
                backends: {legacy: {url: 'http://127.0.0.1:1'}, new: {url: 'http://127.0.0.1:2'}, third: {url: 'http://127.0.0.1:3'}}\n\
                routes:\n\
                - {name: api, match: {path_prefix: /api/}, backends: {legacy: {}, new: {}}}\n\
                - {name: three, match: {path_prefix: /t/}, backends: {legacy: {}, new: {}, third: {}}}\n\
                - {name: default, backends: {legacy: {}}}\n";
    Config::parse(Path::new("/tmp/cutover.yaml"), text.to_string()).unwrap()
}
