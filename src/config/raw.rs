//! The config file exactly as written. Only `compile` looks at these.

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::Deserialize;

use super::values::{Addr, BackendUrl, Cidr, Dur, HeaderNameValue, MethodValue, Pattern};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default = "default_weights_file")]
    pub weights_file: PathBuf,
    #[serde(default)]
    pub access_log: RawAccessLog,
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    /// Optional JSON-lines file of parity samples.
    pub parity_log: Option<RawParityLog>,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub backends: IndexMap<String, RawBackend>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Fleet mode: one weight table for every replica, kept in etcd.
    pub fleet: Option<RawFleet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParityLog {
    pub path: PathBuf,
    /// The file is rotated to `PATH.1` beyond this size.
    #[serde(default = "default_parity_log_bytes")]
    pub max_bytes: u64,
}

fn default_parity_log_bytes() -> u64 {
    10 * 1024 * 1024
}

fn default_weights_file() -> PathBuf {
    PathBuf::from("weights.yaml")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub addr: Addr,
    pub tls: Option<RawListenerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    /// SNI picks among them; the first is the default.
    pub certs: Vec<RawCertPair>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendTls {
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(default = "default_admin_addr")]
    pub addr: Addr,
    pub token_file: Option<PathBuf>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            addr: default_admin_addr(),
            token_file: None,
        }
    }
}

fn default_admin_addr() -> Addr {
    Addr(([127, 0, 0, 1], 9901).into())
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Combined,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default = "default_log_path")]
    pub path: String,
}

impl Default for RawAccessLog {
    fn default() -> Self {
        RawAccessLog {
            format: LogFormat::Combined,
            path: default_log_path(),
        }
    }
}

fn default_log_path() -> String {
    "stdout".into()
}

/// Client-facing connection limits (an extension of the SPEC's schema).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Dur,
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: Dur,
    /// Largest request body accepted (413 beyond); none by default.
    pub max_body_bytes: Option<u64>,
    /// Longest wait for the next piece of a request body (408 beyond).
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout: Dur,
    /// Threads serving client connections; one per CPU by default.
    pub workers: Option<usize>,
    /// A client connection with no new request for this long is closed
    /// gracefully (HTTP/1.1 and HTTP/2).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
}

fn default_idle_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(75))
}

fn default_body_read_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            header_read_timeout: default_header_read_timeout(),
            drain_timeout: default_drain_timeout(),
            max_body_bytes: None,
            body_read_timeout: default_body_read_timeout(),
            workers: None,
            idle_timeout: default_idle_timeout(),
        }
    }
}

fn default_max_header_bytes() -> usize {
    64 * 1024
}
fn default_max_headers() -> usize {
    100
}
fn default_header_read_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(30))
}
fn default_drain_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(30))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub url: BackendUrl,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_pool_idle_timeout")]
    pub pool_idle_timeout: Dur,
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
    pub host_header: Option<String>,
    pub health_check: Option<RawHealthCheck>,
    #[serde(default)]
    pub passive_health: RawPassiveHealth,
    pub tls: Option<RawBackendTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: String,
    #[serde(default = "default_check_interval")]
    pub interval: Dur,
    #[serde(default = "default_check_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_check_interval() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}
fn default_check_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(1))
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}

/// Ejection on live traffic: consecutive connect failures, resets or 5xx.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassiveHealth {
    /// 0 turns passive ejection off.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    #[serde(default = "default_cool_off")]
    pub cool_off: Dur,
}

impl Default for RawPassiveHealth {
    fn default() -> Self {
        RawPassiveHealth {
            consecutive_failures: default_consecutive_failures(),
            cool_off: default_cool_off(),
        }
    }
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_cool_off() -> Dur {
    Dur(std::time::Duration::from_secs(10))
}

fn default_connect_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(2))
}
fn default_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(30))
}
fn default_pool_idle_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(1))
}
fn default_pool_max_idle() -> usize {
    256
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    pub stable: Option<String>,
    pub backends: IndexMap<String, Option<RawRouteBackend>>,
    pub sticky: Option<RawSticky>,
    pub force_header: Option<HeaderNameValue>,
    pub mirror: Option<RawMirror>,
    pub guard: Option<RawGuard>,
    #[serde(default)]
    pub retry: RawRetry,
}

/// Automatic rollback when a non-stable backend misbehaves.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    pub max_error_rate: Option<f64>,
    pub max_p99_latency: Option<Dur>,
    pub max_mismatch_rate: Option<f64>,
    #[serde(default = "default_guard_window")]
    pub window: Dur,
    #[serde(default = "default_guard_min_requests")]
    pub min_requests: u64,
    #[serde(default)]
    pub rollback: RawGuardRollback,
}

fn default_guard_window() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}
fn default_guard_min_requests() -> u64 {
    50
}

#[derive(Debug, Deserialize, Default)]
#[serde(untagged)]
pub enum RawGuardRollback {
    /// `instant`
    #[default]
    #[serde(skip)]
    Instant,
    Word(String),
    Ramp {
        ramp: Dur,
    },
}

/// Retrying a request that never got an answer on another backend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// 0 or 1.
    #[serde(default = "default_retry_attempts")]
    pub attempts: u32,
    /// Also retry POST and PATCH (only safe when the backend deduplicates them).
    #[serde(default)]
    pub non_idempotent: bool,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry {
            attempts: default_retry_attempts(),
            non_idempotent: false,
        }
    }
}

fn default_retry_attempts() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    pub to: String,
    #[serde(default = "default_mirror_percent")]
    pub percent: f64,
    pub methods: Option<Vec<MethodValue>>,
    /// Mirroring POST, PUT, PATCH or DELETE writes twice when both backends
    /// share a database, so it needs this explicit opt-in.
    #[serde(default)]
    pub allow_mutating: bool,
    #[serde(default = "default_mirror_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_mirror_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "default_mirror_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    pub compare: RawCompare,
    pub min_clean_share: Option<f64>,
}

fn default_mirror_percent() -> f64 {
    100.0
}
fn default_mirror_body() -> usize {
    1024 * 1024
}
fn default_mirror_in_flight() -> usize {
    256
}
fn default_mirror_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(5))
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CompareMode {
    #[default]
    Shape,
    Values,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompare {
    #[serde(default)]
    pub mode: CompareMode,
    #[serde(default = "default_compare_headers")]
    pub headers: Vec<HeaderNameValue>,
    #[serde(default)]
    pub ignore: Vec<String>,
    #[serde(default)]
    pub unwrap: IndexMap<String, String>,
    #[serde(default)]
    pub noise: RawNoise,
    #[serde(default)]
    pub accept: Vec<RawAccept>,
    #[serde(default)]
    pub normalize: RawNormalize,
    #[serde(default)]
    pub redact: Vec<String>,
    #[serde(default = "default_mirror_body")]
    pub max_body_bytes: usize,
}

impl Default for RawCompare {
    fn default() -> Self {
        RawCompare {
            mode: CompareMode::Shape,
            headers: default_compare_headers(),
            ignore: Vec::new(),
            unwrap: IndexMap::new(),
            noise: RawNoise::default(),
            accept: Vec::new(),
            normalize: RawNormalize::default(),
            redact: Vec::new(),
            max_body_bytes: default_mirror_body(),
        }
    }
}

fn default_compare_headers() -> Vec<HeaderNameValue> {
    vec![HeaderNameValue(http::header::CONTENT_TYPE)]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNoise {
    #[serde(default = "default_noise_sample")]
    pub sample: f64,
}

impl Default for RawNoise {
    fn default() -> Self {
        RawNoise {
            sample: default_noise_sample(),
        }
    }
}

fn default_noise_sample() -> f64 {
    0.05
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNormalize {
    #[serde(default = "yes")]
    pub url_host: bool,
    #[serde(default = "yes")]
    pub decimal_strings: bool,
}

impl Default for RawNormalize {
    fn default() -> Self {
        RawNormalize {
            url_host: true,
            decimal_strings: true,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccept {
    pub path: String,
    pub kind: String,
    pub reason: String,
    pub until: Option<DateValue>,
}

/// A calendar date, `2027-03-01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateValue(pub time::Date);

impl<'de> Deserialize<'de> for DateValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(raw.trim(), &format)
            .map(DateValue)
            .map_err(|e| serde::de::Error::custom(format!("invalid date {raw:?} (expected YYYY-MM-DD): {e}")))
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub path_prefix: Option<String>,
    pub path: Option<String>,
    pub path_regex: Option<Pattern>,
    pub host: Option<String>,
    pub methods: Option<Vec<MethodValue>>,
    #[serde(default)]
    pub headers: IndexMap<HeaderKey, RawHeaderMatch>,
}

/// A header name used as a mapping key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderKey(pub http::HeaderName);

impl<'de> Deserialize<'de> for HeaderKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        HeaderNameValue::deserialize(d).map(|h| HeaderKey(h.0))
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawHeaderMatch {
    Exact(String),
    Regex { regex: Pattern },
    Present { present: bool },
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRouteBackend {
    pub rewrite: Option<RawRewrite>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    pub prefix: String,
    pub to: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    pub cookie: Option<String>,
    pub header: Option<HeaderNameValue>,
    pub pin_cookie: Option<String>,
}

/// The weight file: route → backend → percent.
pub type RawWeights = IndexMap<String, IndexMap<String, f64>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    pub etcd: RawFleetEtcd,
    /// `${VAR}` is expanded; default: host name and admin port.
    pub replica_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleetEtcd {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub tls: Option<RawFleetTls>,
    pub auth: Option<RawFleetAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleetTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleetAuth {
    pub username: String,
    pub password_file: PathBuf,
}
