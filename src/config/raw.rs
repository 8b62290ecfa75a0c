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
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub backends: IndexMap<String, RawBackend>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

fn default_weights_file() -> PathBuf {
    PathBuf::from("weights.yaml")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub addr: Addr,
    pub tls: Option<serde_yaml::Value>,
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
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            header_read_timeout: default_header_read_timeout(),
            drain_timeout: default_drain_timeout(),
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
    pub health_check: Option<serde_yaml::Value>,
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
    pub mirror: Option<serde_yaml::Value>,
    pub guard: Option<serde_yaml::Value>,
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
