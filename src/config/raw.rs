//! The config file exactly as written. Only `compile` looks at these.
//!
//! The same types write a config (`cutover import-nginx`): a field equal to
//! what the loader would fill in for a missing key is not written, except
//! `admin`, `weights_file` and `access_log`, which a written config always
//! states.

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::routing::EncodedSlashes;

use super::values::{Addr, BackendUrl, Cidr, Dur, HeaderNameValue, MethodValue, Pattern, RedirectHttps};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<RawListener>,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default = "default_weights_file")]
    pub weights_file: PathBuf,
    #[serde(default)]
    pub access_log: RawAccessLog,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<Cidr>,
    /// Optional JSON-lines file of parity samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parity_log: Option<RawParityLog>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub server: RawServer,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<super::compression::RawCompression>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub backends: IndexMap<String, RawBackend>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RawRoute>,
    /// Fleet mode: one weight table for every replica, kept in etcd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<RawFleet>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawParityLog {
    pub path: PathBuf,
    /// The file is rotated to `PATH.1` beyond this size.
    #[serde(default = "default_parity_log_bytes")]
    #[serde(skip_serializing_if = "is_default_parity_log_bytes")]
    pub max_bytes: u64,
}

fn default_parity_log_bytes() -> u64 {
    10 * 1024 * 1024
}

fn default_weights_file() -> PathBuf {
    PathBuf::from("weights.yaml")
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub addr: Addr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawListenerTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_https: Option<RedirectHttps>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    /// SNI picks among them; the first is the default.
    pub certs: Vec<RawCertPair>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackendTls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(default = "default_admin_addr")]
    pub addr: Addr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Names (or addresses) besides loopback ones by which clients reach
    /// the admin API: the `Host` they send.
    #[serde(default)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            addr: default_admin_addr(),
            token_file: None,
            hosts: Vec::new(),
        }
    }
}

fn default_admin_addr() -> Addr {
    Addr(([127, 0, 0, 1], 9901).into())
}

#[derive(Debug, Deserialize, Serialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Combined,
    Json,
}

#[derive(Debug, Deserialize, Serialize)]
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
#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default = "default_max_header_bytes")]
    #[serde(skip_serializing_if = "is_default_max_header_bytes")]
    pub max_header_bytes: usize,
    #[serde(default = "default_max_headers")]
    #[serde(skip_serializing_if = "is_default_max_headers")]
    pub max_headers: usize,
    #[serde(default = "default_header_read_timeout")]
    #[serde(skip_serializing_if = "is_default_header_read_timeout")]
    pub header_read_timeout: Dur,
    #[serde(default = "default_drain_timeout")]
    #[serde(skip_serializing_if = "is_default_drain_timeout")]
    pub drain_timeout: Dur,
    /// Largest request body accepted (413 beyond); none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Longest wait for the next piece of a request body (408 beyond).
    #[serde(default = "default_body_read_timeout")]
    #[serde(skip_serializing_if = "is_default_body_read_timeout")]
    pub body_read_timeout: Dur,
    /// Threads serving client connections; one per CPU by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// A client connection with no new request for this long is closed
    /// gracefully (HTTP/1.1 and HTTP/2).
    #[serde(default = "default_idle_timeout")]
    #[serde(skip_serializing_if = "is_default_idle_timeout")]
    pub idle_timeout: Dur,
    /// A client that takes none of a response for this long is
    /// cut off (nginx's `send_timeout`); zero: never.
    #[serde(default = "default_send_timeout")]
    #[serde(skip_serializing_if = "is_default_send_timeout")]
    pub send_timeout: Dur,
    /// `%2F` in a request path: refused (400), decoded to `/`, or kept.
    #[serde(default)]
    #[serde(skip_serializing_if = "is_default")]
    pub encoded_slashes: EncodedSlashes,
    /// Open client connections per listener; more are closed at once.
    #[serde(default = "default_max_connections")]
    #[serde(skip_serializing_if = "is_default_max_connections")]
    pub max_connections: usize,
    /// A request body of unknown length read up to this many bytes before
    /// it is forwarded; 0 streams it at once.
    #[serde(default = "default_unsized_body_buffer_bytes")]
    #[serde(skip_serializing_if = "is_default_unsized_body_buffer_bytes")]
    pub unsized_body_buffer_bytes: u64,
}

fn default_unsized_body_buffer_bytes() -> u64 {
    1024 * 1024
}

fn default_max_connections() -> usize {
    10_000
}

fn default_idle_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(75))
}

fn default_send_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(60))
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
            send_timeout: default_send_timeout(),
            encoded_slashes: EncodedSlashes::default(),
            max_connections: default_max_connections(),
            unsized_body_buffer_bytes: default_unsized_body_buffer_bytes(),
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

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub url: BackendUrl,
    #[serde(default = "default_connect_timeout")]
    #[serde(skip_serializing_if = "is_default_connect_timeout")]
    pub connect_timeout: Dur,
    #[serde(default = "default_timeout")]
    #[serde(skip_serializing_if = "is_default_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_body_timeout")]
    #[serde(skip_serializing_if = "is_default_body_timeout")]
    pub body_timeout: Dur,
    #[serde(default = "default_tunnel_idle_timeout")]
    #[serde(skip_serializing_if = "is_default_tunnel_idle_timeout")]
    pub tunnel_idle_timeout: Dur,
    #[serde(default = "default_pool_idle_timeout")]
    #[serde(skip_serializing_if = "is_default_pool_idle_timeout")]
    pub pool_idle_timeout: Dur,
    #[serde(default = "default_pool_max_idle")]
    #[serde(skip_serializing_if = "is_default_pool_max_idle")]
    pub pool_max_idle: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<RawHealthCheck>,
    #[serde(default)]
    #[serde(skip_serializing_if = "is_default")]
    pub passive_health: RawPassiveHealth,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawBackendTls>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: String,
    /// The Host the check sends; default the backend's `host_header`, else its URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default = "default_check_interval", skip_serializing_if = "is_default_check_interval")]
    pub interval: Dur,
    #[serde(default = "default_check_timeout", skip_serializing_if = "is_default_check_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_healthy_threshold", skip_serializing_if = "is_default_healthy_threshold")]
    pub healthy_threshold: u32,
    #[serde(default = "default_unhealthy_threshold", skip_serializing_if = "is_default_unhealthy_threshold")]
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
#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawPassiveHealth {
    /// 0 turns passive ejection off.
    #[serde(default = "default_consecutive_failures")]
    #[serde(skip_serializing_if = "is_default_consecutive_failures")]
    pub consecutive_failures: u32,
    #[serde(default = "default_cool_off")]
    #[serde(skip_serializing_if = "is_default_cool_off")]
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
/// nginx's `proxy_read_timeout`, which applies between two reads of a body too.
fn default_body_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}
/// HAProxy's `timeout tunnel` as its documentation suggests it for WebSockets.
fn default_tunnel_idle_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(3600))
}
fn default_pool_idle_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(1))
}
fn default_pool_max_idle() -> usize {
    256
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable: Option<String>,
    pub backends: IndexMap<String, Option<RawRouteBackend>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky: Option<RawSticky>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_header: Option<RawForceHeader>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<RawMirror>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<RawGuard>,
    #[serde(default)]
    #[serde(skip_serializing_if = "is_default")]
    pub retry: RawRetry,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_from: Option<Vec<Cidr>>,
}

/// `force_header`: a header name (short form), or the long form with who may use it.
#[derive(Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum RawForceHeader {
    Name(HeaderNameValue),
    Long(RawForce),
}

impl<'de> Deserialize<'de> for RawForceHeader {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than `untagged`: errors inside the long form keep
        // their own message and position.
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawForceHeader;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a header name or { name, from, token_file, guard }")
            }
            fn visit_str<E: serde::de::Error>(self, raw: &str) -> Result<RawForceHeader, E> {
                raw.parse()
                    .map(RawForceHeader::Name)
                    .map_err(|e| E::custom(format!("invalid header name {raw:?}: {e}")))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawForceHeader, A::Error> {
                RawForce::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(RawForceHeader::Long)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawForce {
    pub name: HeaderNameValue,
    /// Client networks allowed to force; loopback only when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<RawClientNets>,
    /// The request must also carry this file's token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Forced requests count in the guard's windows.
    #[serde(default)]
    #[serde(skip_serializing_if = "is_false")]
    pub guard: bool,
}

/// `any`, or a list of CIDRs (or addresses).
#[derive(Debug, PartialEq)]
pub enum RawClientNets {
    Any,
    Nets(Vec<Cidr>),
}

impl Serialize for RawClientNets {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RawClientNets::Any => s.serialize_str("any"),
            RawClientNets::Nets(nets) => nets.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for RawClientNets {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawClientNets;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`any` or a list of CIDRs")
            }
            fn visit_str<E: serde::de::Error>(self, raw: &str) -> Result<RawClientNets, E> {
                match raw.trim() {
                    "any" => Ok(RawClientNets::Any),
                    _ => Err(E::custom(format!("expected `any` or a list of CIDRs, not {raw:?}"))),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<RawClientNets, A::Error> {
                Vec::<Cidr>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(RawClientNets::Nets)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Automatic rollback when a non-stable backend misbehaves.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_p99_latency: Option<Dur>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_mismatch_rate: Option<f64>,
    #[serde(default = "default_guard_window")]
    #[serde(skip_serializing_if = "is_default_guard_window")]
    pub window: Dur,
    #[serde(default = "default_guard_min_requests")]
    #[serde(skip_serializing_if = "is_default_guard_min_requests")]
    pub min_requests: u64,
    /// 0 turns it off.
    #[serde(default = "default_guard_max_ejections")]
    #[serde(skip_serializing_if = "is_default_guard_max_ejections")]
    pub max_ejections: u32,
    #[serde(default)]
    #[serde(skip_serializing_if = "is_default")]
    pub rollback: RawGuardRollback,
}

fn default_guard_window() -> Dur {
    Dur(std::time::Duration::from_secs(60))
}
fn default_guard_min_requests() -> u64 {
    50
}
fn default_guard_max_ejections() -> u32 {
    3
}

#[derive(Debug, Deserialize, Serialize, Default, PartialEq)]
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
#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// 0 or 1.
    #[serde(default = "default_retry_attempts")]
    #[serde(skip_serializing_if = "is_default_retry_attempts")]
    pub attempts: u32,
    /// Also retry POST and PATCH (only safe when the backend deduplicates them).
    #[serde(default)]
    #[serde(skip_serializing_if = "is_false")]
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

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    pub to: String,
    #[serde(default = "default_mirror_percent")]
    #[serde(skip_serializing_if = "is_default_mirror_percent")]
    pub percent: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<MethodValue>>,
    /// Mirroring POST, PUT, PATCH or DELETE writes twice when both backends
    /// share a database, so it needs this explicit opt-in.
    #[serde(default)]
    #[serde(skip_serializing_if = "is_false")]
    pub allow_mutating: bool,
    #[serde(default = "default_mirror_body")]
    #[serde(skip_serializing_if = "is_default_mirror_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_mirror_in_flight")]
    #[serde(skip_serializing_if = "is_default_mirror_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "default_mirror_timeout")]
    #[serde(skip_serializing_if = "is_default_mirror_timeout")]
    pub timeout: Dur,
    #[serde(default)]
    #[serde(skip_serializing_if = "is_default")]
    pub compare: RawCompare,
    #[serde(skip_serializing_if = "Option::is_none")]
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

#[derive(Debug, Deserialize, Serialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CompareMode {
    #[default]
    Shape,
    Values,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawCompare {
    #[serde(default)]
    #[serde(skip_serializing_if = "is_default")]
    pub mode: CompareMode,
    #[serde(default = "default_compare_headers")]
    #[serde(skip_serializing_if = "is_default_compare_headers")]
    pub headers: Vec<HeaderNameValue>,
    #[serde(default)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    #[serde(default)]
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub unwrap: IndexMap<String, String>,
    #[serde(default)]
    #[serde(skip_serializing_if = "is_default")]
    pub noise: RawNoise,
    #[serde(default)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accept: Vec<RawAccept>,
    #[serde(default)]
    #[serde(skip_serializing_if = "is_default")]
    pub normalize: RawNormalize,
    #[serde(default)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub redact: Vec<String>,
    /// Path templates (`/api/users/{id}/`) naming endpoints; the first match wins.
    #[serde(default)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    #[serde(default = "default_mirror_body")]
    #[serde(skip_serializing_if = "is_default_mirror_body")]
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
            endpoints: Vec::new(),
            max_body_bytes: default_mirror_body(),
        }
    }
}

fn default_compare_headers() -> Vec<HeaderNameValue> {
    vec![HeaderNameValue(http::header::CONTENT_TYPE)]
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawNoise {
    #[serde(default = "default_noise_sample")]
    #[serde(skip_serializing_if = "is_default_noise_sample")]
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

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawNormalize {
    #[serde(default = "yes")]
    #[serde(skip_serializing_if = "is_true")]
    pub url_host: bool,
    #[serde(default = "yes")]
    #[serde(skip_serializing_if = "is_true")]
    pub decimal_strings: bool,
    /// `1` equals `1.0`; off, an integer and a float differ as written.
    #[serde(default)]
    #[serde(skip_serializing_if = "is_false")]
    pub numbers: bool,
}

impl Default for RawNormalize {
    fn default() -> Self {
        RawNormalize {
            url_host: true,
            decimal_strings: true,
            numbers: false,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawAccept {
    pub path: String,
    pub kind: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateValue>,
}

/// A calendar date, `2027-03-01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateValue(pub time::Date);

impl Serialize for DateValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        let text = self.0.format(&format).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for DateValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(raw.trim(), &format)
            .map(DateValue)
            .map_err(|e| serde::de::Error::custom(format!("invalid date {raw:?} (expected YYYY-MM-DD): {e}")))
    }
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<Pattern>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<MethodValue>>,
    #[serde(default)]
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<HeaderKey, RawHeaderMatch>,
}

/// A header name used as a mapping key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderKey(pub http::HeaderName);

impl Serialize for HeaderKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for HeaderKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        HeaderNameValue::deserialize(d).map(|h| HeaderKey(h.0))
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawHeaderMatch {
    Exact(String),
    Regex { regex: Pattern },
    Present { present: bool },
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRouteBackend {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<RawRewrite>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    pub prefix: String,
    pub to: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderNameValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_cookie: Option<String>,
}

/// The weight file: route → backend → percent.
pub type RawWeights = IndexMap<String, IndexMap<String, f64>>;

/// `skip_serializing_if` for a field whose loader default is its type's `Default`.
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_true(value: &bool) -> bool {
    *value
}

/// `skip_serializing_if` companions of the `default = "..."` functions.
macro_rules! is_loader_default {
    ($($is:ident => $default:ident: $ty:ty),* $(,)?) => {
        $(fn $is(value: &$ty) -> bool { *value == $default() })*
    };
}

is_loader_default! {
    is_default_parity_log_bytes => default_parity_log_bytes: u64,
    is_default_max_header_bytes => default_max_header_bytes: usize,
    is_default_max_headers => default_max_headers: usize,
    is_default_header_read_timeout => default_header_read_timeout: Dur,
    is_default_drain_timeout => default_drain_timeout: Dur,
    is_default_body_read_timeout => default_body_read_timeout: Dur,
    is_default_idle_timeout => default_idle_timeout: Dur,
    is_default_send_timeout => default_send_timeout: Dur,
    is_default_connect_timeout => default_connect_timeout: Dur,
    is_default_timeout => default_timeout: Dur,
    is_default_body_timeout => default_body_timeout: Dur,
    is_default_tunnel_idle_timeout => default_tunnel_idle_timeout: Dur,
    is_default_pool_idle_timeout => default_pool_idle_timeout: Dur,
    is_default_pool_max_idle => default_pool_max_idle: usize,
    is_default_check_interval => default_check_interval: Dur,
    is_default_check_timeout => default_check_timeout: Dur,
    is_default_healthy_threshold => default_healthy_threshold: u32,
    is_default_unhealthy_threshold => default_unhealthy_threshold: u32,
    is_default_consecutive_failures => default_consecutive_failures: u32,
    is_default_cool_off => default_cool_off: Dur,
    is_default_guard_window => default_guard_window: Dur,
    is_default_guard_min_requests => default_guard_min_requests: u64,
    is_default_guard_max_ejections => default_guard_max_ejections: u32,
    is_default_max_connections => default_max_connections: usize,
    is_default_unsized_body_buffer_bytes => default_unsized_body_buffer_bytes: u64,
    is_default_retry_attempts => default_retry_attempts: u32,
    is_default_mirror_percent => default_mirror_percent: f64,
    is_default_mirror_body => default_mirror_body: usize,
    is_default_mirror_in_flight => default_mirror_in_flight: usize,
    is_default_mirror_timeout => default_mirror_timeout: Dur,
    is_default_compare_headers => default_compare_headers: Vec<HeaderNameValue>,
    is_default_noise_sample => default_noise_sample: f64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    pub etcd: RawFleetEtcd,
    /// `${VAR}` is expanded; default: host name and admin port.
    pub replica_id: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleetEtcd {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub tls: Option<RawFleetTls>,
    pub auth: Option<RawFleetAuth>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleetTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleetAuth {
    pub username: String,
    pub password_file: PathBuf,
}
