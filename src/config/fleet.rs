//! The `fleet:` section compiled into typed settings: where etcd is, how to
//! reach it, and which replica this is. Files (CA, client certificate, key,
//! password) are read once, at load, like the admin token.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;
use super::raw::RawFleet;
use super::yaml::Positions;

/// How long one etcd call may take, connecting included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// A replica's registration disappears this long after it stops renewing it.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// Fleet mode's settings.
#[derive(Clone, Debug)]
pub struct FleetSettings {
    /// `http://host:port` or `https://host:port`, one per etcd member.
    pub endpoints: Vec<String>,
    /// Every key of this fleet starts with it; no trailing '/'.
    pub prefix: String,
    pub tls: Option<EtcdTls>,
    pub auth: Option<EtcdAuth>,
    /// Unique in the fleet; names this replica's registration key.
    pub replica_id: String,
    /// Bound on every etcd call, connecting included.
    pub request_timeout: Duration,
    /// Time to live of the replica registration's lease.
    pub lease_ttl: Duration,
}

impl FleetSettings {
    /// Settings with the default timings.
    pub fn new(endpoints: Vec<String>, prefix: impl Into<String>, replica_id: impl Into<String>) -> FleetSettings {
        FleetSettings {
            endpoints,
            prefix: prefix.into(),
            tls: None,
            auth: None,
            replica_id: replica_id.into(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            lease_ttl: DEFAULT_LEASE_TTL,
        }
    }
}

/// TLS to etcd (through rustls). Without a CA the system's roots are trusted.
#[derive(Clone)]
pub struct EtcdTls {
    pub ca_file: Option<PathBuf>,
    /// The CA file's PEM text.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and its key, both PEM.
    pub identity: Option<ClientIdentity>,
}

#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_file: PathBuf,
    pub cert_pem: Vec<u8>,
    pub key_file: PathBuf,
    pub key_pem: Vec<u8>,
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.identity.as_ref().map(|i| &i.cert_file))
            .field("key_file", &self.identity.as_ref().map(|i| &i.key_file))
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// etcd user and password. The password never appears in `Debug` output.
#[derive(Clone)]
pub struct EtcdAuth {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Compiles the `fleet:` section; errors are pushed with their position.
/// `admin_port` makes the default replica id (`HOST:PORT`).
pub(crate) fn compile(
    raw: &RawFleet,
    base: &Path,
    admin_port: u16,
    pos: &Positions,
    errors: &mut Vec<ConfigError>,
) -> Option<FleetSettings> {
    let before = errors.len();
    let etcd = &raw.etcd;
    let at = |rest: &[&str]| {
        let mut path = vec!["fleet", "etcd"];
        path.extend_from_slice(rest);
        pos.value(&path)
    };

    if etcd.endpoints.is_empty() {
        errors.push(ConfigError::at(
            at(&["endpoints"]),
            "fleet.etcd.endpoints needs at least one etcd member",
        ));
    }
    let mut endpoints = Vec::new();
    for (i, e) in etcd.endpoints.iter().enumerate() {
        match endpoint(e) {
            Ok(e) => endpoints.push(e),
            Err(message) => errors.push(ConfigError::at(at(&["endpoints", &i.to_string()]), message)),
        }
    }
    let https = endpoints.iter().filter(|e| e.starts_with("https://")).count();
    if https != 0 && https != endpoints.len() {
        errors.push(ConfigError::at(
            at(&["endpoints"]),
            "endpoints mix http:// and https://: use one scheme for every member",
        ));
    }

    let prefix = match prefix(&etcd.prefix) {
        Ok(p) => p,
        Err(message) => {
            errors.push(ConfigError::at(at(&["prefix"]), message));
            String::new()
        }
    };

    let read = |file: &Path, field: &[&str], errors: &mut Vec<ConfigError>| -> Option<Vec<u8>> {
        let file = base.join(file);
        match std::fs::read(&file) {
            Ok(bytes) if !bytes.iter().all(u8::is_ascii_whitespace) => Some(bytes),
            Ok(_) => {
                errors.push(ConfigError::at(at(field), format!("{} is empty", file.display())));
                None
            }
            Err(e) => {
                errors.push(ConfigError::at(at(field), format!("cannot read {}: {e}", file.display())));
                None
            }
        }
    };

    let tls = etcd.tls.as_ref().map(|t| {
        if https == 0 && !endpoints.is_empty() {
            errors.push(ConfigError::at(at(&["tls"]), "tls settings need https:// endpoints"));
        }
        let ca_pem = t.ca_file.as_ref().and_then(|f| {
            let checked = crate::tls::client_config(Some(&crate::tls::BackendTls {
                ca_file: Some(base.join(f)),
                server_name: None,
            }));
            match checked {
                Ok(_) => read(f, &["tls", "ca_file"], errors),
                Err(e) => {
                    errors.push(ConfigError::at(at(&["tls", "ca_file"]), e.to_string()));
                    None
                }
            }
        });
        let identity = match (&t.cert_file, &t.key_file) {
            (Some(cert), Some(key)) => {
                let source = crate::tls::CertSource {
                    cert: base.join(cert),
                    key: base.join(key),
                };
                if let Err(e) = crate::tls::load(&source) {
                    errors.push(ConfigError::at(at(&["tls"]), e.to_string()));
                    None
                } else {
                    let cert_pem = read(cert, &["tls", "cert_file"], errors);
                    let key_pem = read(key, &["tls", "key_file"], errors);
                    cert_pem.zip(key_pem).map(|(cert_pem, key_pem)| ClientIdentity {
                        cert_file: source.cert,
                        cert_pem,
                        key_file: source.key,
                        key_pem,
                    })
                }
            }
            (None, None) => None,
            _ => {
                errors.push(ConfigError::at(
                    at(&["tls"]),
                    "a client certificate needs both cert_file and key_file",
                ));
                None
            }
        };
        EtcdTls {
            ca_file: t.ca_file.as_ref().map(|f| base.join(f)),
            ca_pem,
            identity,
        }
    });

    let auth = etcd.auth.as_ref().and_then(|a| {
        if a.username.trim().is_empty() {
            errors.push(ConfigError::at(at(&["auth", "username"]), "username is empty"));
        }
        let password = read(&a.password_file, &["auth", "password_file"], errors)?;
        match String::from_utf8(password) {
            // A file written with `echo` ends with a newline that is not part of the password.
            Ok(p) => Some(EtcdAuth {
                username: a.username.clone(),
                password: p.trim_end_matches(['\r', '\n']).to_string(),
            }),
            Err(_) => {
                errors.push(ConfigError::at(
                    at(&["auth", "password_file"]),
                    "the password file is not UTF-8 text",
                ));
                None
            }
        }
    });

    let replica_id = match &raw.replica_id {
        None => Ok(format!("{}:{admin_port}", host_name())),
        Some(template) => expand_env(template, |name| std::env::var(name).ok()),
    }
    .and_then(|id| check_replica_id(&id).map(|()| id));
    let replica_id = match replica_id {
        Ok(id) => id,
        Err(message) => {
            errors.push(ConfigError::at(pos.value(&["fleet", "replica_id"]), message));
            String::new()
        }
    };

    (errors.len() == before).then_some(FleetSettings {
        endpoints,
        prefix,
        tls,
        auth,
        replica_id,
        request_timeout: DEFAULT_REQUEST_TIMEOUT,
        lease_ttl: DEFAULT_LEASE_TTL,
    })
}

/// An etcd member's URL, checked: `http(s)://host:port`, nothing after.
fn endpoint(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let uri: http::Uri = trimmed
        .parse()
        .map_err(|_| format!("{raw:?} is not a URL like https://10.0.0.5:2379"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{raw:?}: an etcd endpoint starts with http:// or https://")),
    }
    let authority = uri.authority().ok_or_else(|| format!("{raw:?} names no host"))?;
    if authority.port_u16().is_none() {
        return Err(format!("{raw:?} names no port (etcd's client port is usually 2379)"));
    }
    if authority.as_str().contains('@') || uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(format!("{raw:?}: an etcd endpoint is scheme://host:port, nothing more"));
    }
    Ok(trimmed.to_string())
}

/// The key prefix, checked: `/a/b`, no trailing '/', no spaces or controls.
fn prefix(raw: &str) -> Result<String, String> {
    let p = raw.trim_end_matches('/');
    if !p.starts_with('/') {
        return Err(format!("prefix {raw:?} must start with '/', like /cutover/shop"));
    }
    if p.is_empty() {
        return Err("prefix must name this fleet, like /cutover/shop, not the whole keyspace".into());
    }
    if p.chars().any(|c| c.is_whitespace() || c.is_control()) || p.contains("//") {
        return Err(format!("prefix {raw:?} must be a path without spaces, control characters or '//'"));
    }
    Ok(p.to_string())
}

/// Replica ids name an etcd key: letters, digits, '-', '_', '.', ':'.
fn check_replica_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 253 {
        return Err(format!("replica_id {id:?} must be 1 to 253 characters"));
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) {
        return Err(format!("replica_id {id:?} must be letters, digits, '-', '_', '.' or ':'"));
    }
    Ok(())
}

/// Replaces each `${NAME}` with the variable's value. `HOSTNAME`, which
/// shells set without exporting it, falls back to the machine's host name.
pub fn expand_env(template: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("{template:?}: `${{` without a closing `}}`"))?;
        let name = &after[..end];
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("{template:?}: {name:?} is not an environment variable name"));
        }
        match lookup(name) {
            Some(value) => out.push_str(&value),
            None if name == "HOSTNAME" => out.push_str(&host_name()),
            None => return Err(format!("{template:?}: environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The machine's host name; `localhost` if it cannot be read.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for `buf.len()` bytes; gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "localhost".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const HEAD: &str = "listeners: [{name: p, addr: '127.0.0.1:0'}]\n\
                        admin: {addr: '127.0.0.1:9901'}\n\
                        backends: {legacy: {url: 'http://127.0.0.1:1'}}\n\
                        routes: [{name: all, backends: {legacy: {}}}]\n";

    fn parse(dir: &Path, fleet: &str) -> Result<Config, ConfigError> {
        Config::parse(&dir.join("cutover.yaml"), format!("{HEAD}{fleet}"))
    }

    #[test]
    fn without_a_fleet_section_there_is_no_fleet() {
        let dir = tempfile::tempdir().unwrap();
        assert!(parse(dir.path(), "").unwrap().fleet.is_none());
    }

    #[test]
    fn a_fleet_section_compiles_with_its_defaults_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("etcd-password"), "pa ss\n").unwrap();
        let config = parse(
            dir.path(),
            "fleet:\n  etcd:\n    endpoints: ['http://10.0.0.5:2379', 'http://10.0.0.6:2379/']\n    prefix: /cutover/shop/\n    auth: {username: cutover, password_file: etcd-password}\n",
        )
        .unwrap();
        let fleet = config.fleet.as_ref().unwrap();
        assert_eq!(fleet.endpoints, ["http://10.0.0.5:2379", "http://10.0.0.6:2379"]);
        assert_eq!(fleet.prefix, "/cutover/shop");
        assert_eq!(fleet.replica_id, format!("{}:9901", host_name()));
        let auth = fleet.auth.as_ref().unwrap();
        assert_eq!((auth.username.as_str(), auth.password.as_str()), ("cutover", "pa ss"));
        assert!(!format!("{config:?}").contains("pa ss"));
        assert_eq!(fleet.request_timeout, DEFAULT_REQUEST_TIMEOUT);
    }

    #[test]
    fn fleet_mistakes_are_reported_where_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let err = parse(
            dir.path(),
            "fleet:\n  etcd:\n    endpoints: ['10.0.0.5:2379']\n    prefix: shop\n    tls: {ca_file: ca.pem}\n    auth: {username: u, password_file: missing}\n  replica_id: 'a/b'\n",
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "cutover.yaml:7:17: \"10.0.0.5:2379\": an etcd endpoint starts with http:// or https://",
            "cutover.yaml:8:13: prefix \"shop\" must start with '/'",
            "cutover.yaml:9:20: ",
            "cutover.yaml:10:40: cannot read",
            "cutover.yaml:11:15: replica_id \"a/b\" must be",
        ] {
            assert!(err.contains(expected), "{expected:?} not in:\n{err}");
        }
        let err = parse(dir.path(), "fleet:\n  etcd:\n    endpoints: []\n    prefix: /x\n    tls: {}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least one etcd member"), "{err}");
        let err = parse(
            dir.path(),
            "fleet:\n  etcd:\n    endpoints: ['http://a:1']\n    prefix: /x\n    tls: {}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("tls settings need https:// endpoints"), "{err}");
        let err = parse(dir.path(), "fleet:\n  etcd: {endpoints: ['http://a:1'], prefix: /x, lease: 3}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("lease"), "{err}");
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn variables_are_expanded() {
        let lookup = env(&[("HOSTNAME", "web-1"), ("POD_PORT", "9901")]);
        assert_eq!(expand_env("${HOSTNAME}", &lookup).unwrap(), "web-1");
        assert_eq!(expand_env("${HOSTNAME}:${POD_PORT}", &lookup).unwrap(), "web-1:9901");
        assert_eq!(expand_env("plain", &lookup).unwrap(), "plain");
    }

    #[test]
    fn an_unexported_hostname_is_the_host_name() {
        assert_eq!(expand_env("${HOSTNAME}-a", env(&[])).unwrap(), format!("{}-a", host_name()));
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(expand_env("${NOPE}", env(&[])).unwrap_err().contains("NOPE is not set"));
        assert!(expand_env("${HOSTNAME", env(&[])).is_err());
        assert!(expand_env("${1x}", env(&[])).is_err());
    }

    #[test]
    fn endpoints_and_prefixes_are_checked() {
        assert_eq!(endpoint("https://10.0.0.5:2379/").unwrap(), "https://10.0.0.5:2379");
        assert!(endpoint("10.0.0.5:2379").is_err());
        assert!(endpoint("http://10.0.0.5").is_err());
        assert!(endpoint("http://u:p@10.0.0.5:2379").is_err());
        assert!(endpoint("http://10.0.0.5:2379/v3").is_err());
        assert_eq!(prefix("/cutover/shop/").unwrap(), "/cutover/shop");
        assert!(prefix("/").is_err());
        assert!(prefix("cutover").is_err());
        assert!(prefix("/a b").is_err());
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let auth = EtcdAuth {
            username: "cutover".into(),
            password: "s3cret-pass".into(),
        };
        let mut settings = FleetSettings::new(vec!["http://127.0.0.1:2379".into()], "/f", "r");
        settings.auth = Some(auth);
        settings.tls = Some(EtcdTls {
            ca_file: None,
            ca_pem: None,
            identity: Some(ClientIdentity {
                cert_file: "c.pem".into(),
                cert_pem: b"CERT".to_vec(),
                key_file: "k.pem".into(),
                key_pem: b"PRIVATE KEY BYTES".to_vec(),
            }),
        });
        let shown = format!("{settings:?}");
        assert!(shown.contains("cutover") && shown.contains("k.pem"), "{shown}");
        assert!(!shown.contains("s3cret") && !shown.contains("PRIVATE KEY"), "{shown}");
    }
}
