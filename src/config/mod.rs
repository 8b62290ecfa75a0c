//! Configuration: the main config file and the weight file, read once and
//! compiled into typed, checked values. Nothing downstream re-parses them.

mod compile;
pub mod error;
pub mod raw;
pub mod values;
pub mod weights;
pub mod yaml;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

pub use error::{ConfigError, Location};
pub use raw::LogFormat;
pub use values::BackendUrl;
pub use weights::{Weights, format_percent};

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
    pub backends: Vec<Arc<BackendSpec>>,
    pub routes: Vec<RouteSpec>,
    /// Candidate routes by first path segment, for fast first-match lookup.
    pub route_lookup: crate::routing::RouteIndex,
    /// Fleet mode, when configured.
    pub fleet: Option<Arc<crate::fleet::FleetSettings>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub addr: SocketAddr,
    /// Certificates when the listener terminates TLS.
    pub tls: Option<Vec<crate::tls::CertSource>>,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub addr: SocketAddr,
    /// Bearer token for mutating endpoints, read from `token_file`.
    pub token: Option<String>,
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
}

/// A backend as configured; shared by every route that uses it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendSpec {
    pub name: Arc<str>,
    pub url: BackendUrl,
    pub connect_timeout: Duration,
    pub timeout: Duration,
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
    pub force_header: Option<HeaderName>,
    pub mirror: Option<MirrorSpec>,
    pub retry: RetrySpec,
    pub guard: Option<GuardSpec>,
}

/// Automatic rollback thresholds for a route's non-stable backends.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardSpec {
    pub max_error_rate: Option<f64>,
    pub max_p99_latency: Option<Duration>,
    pub max_mismatch_rate: Option<f64>,
    pub window: Duration,
    pub min_requests: u64,
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
    pub rules: crate::mirror::compare::CompareRules,
    /// Share of mirrored safe requests also sent to the primary twice, to learn noise.
    pub noise_sample: f64,
    pub accept: Vec<AcceptRule>,
    /// Lower-cased JSON keys whose values never appear in samples.
    pub redact: Vec<String>,
    pub compare_max_bytes: usize,
    pub min_clean_share: Option<f64>,
}

/// A known difference, reported apart until it expires.
#[derive(Debug, Clone)]
pub struct AcceptRule {
    pub path: crate::mirror::compare::PathPattern,
    pub kind: crate::mirror::compare::Kind,
    pub reason: String,
    /// Last day the rule holds.
    pub until: Option<time::Date>,
}

impl AcceptRule {
    pub fn covers(&self, kind: crate::mirror::compare::Kind, path: &str, today: time::Date) -> bool {
        self.kind == kind && self.path.covers(path) && self.until.is_none_or(|d| today <= d)
    }
}

impl RouteSpec {
    pub fn backend_index(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| &*b.spec.name == name)
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
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
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
