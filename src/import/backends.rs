//! The backends the routes use. nginx sets timeouts, the Host and backend
//! TLS per location; cutover per backend. So there is one backend per
//! server and distinct settings: the first keeps the upstream's (or host's)
//! name, another with different settings is `NAME-for-ROUTE`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;

use super::absolute;
use super::proxy_pass::proxy_host_of;
use super::report::Report;
use super::settings::{HostSetting, Settings, Sourced};
use super::upstreams::Upstreams;

#[derive(Debug)]
pub(super) struct BackendPlan {
    pub(super) name: String,
    /// `scheme://host:port`
    pub(super) url: String,
    /// The Host to send and why.
    pub(super) host_header: Option<(String, String)>,
    pub(super) tls: Option<BackendTlsPlan>,
    pub(super) connect_timeout: Option<Sourced<Duration>>,
    pub(super) timeout: Option<Sourced<Duration>>,
    /// The nginx lines it stands for.
    pub(super) origin: String,
}

/// `tls:` of an https backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct BackendTlsPlan {
    pub(super) ca_file: Option<PathBuf>,
    pub(super) server_name: Option<String>,
    /// The directives they came from.
    pub(super) origin: String,
}

/// A server a route sends requests to, before a location's settings make it a backend.
#[derive(Debug)]
pub(super) struct Destination {
    /// The backend's name, if no backend has it yet.
    pub(super) base: String,
    /// `scheme://host:port`
    pub(super) url: String,
    /// The Host nginx sends when no proxy_set_header sets one (`$proxy_host`).
    pub(super) proxy_host: String,
    /// The nginx lines it stands for.
    pub(super) origin: String,
}

impl Destination {
    /// A `host:port` named directly (in a proxy_pass or as a split value),
    /// named after nginx's `$proxy_host` for it.
    pub(super) fn host(host_port: &str, scheme: &str, origin: String) -> Destination {
        let proxy_host = proxy_host_of(host_port, scheme);
        // A socket is named after its file: unix:/run/gunicorn.sock is gunicorn.
        let socket_name = host_port
            .strip_prefix("unix:")
            .and_then(|path| Path::new(path).file_stem())
            .map(|stem| stem.to_string_lossy());
        Destination {
            base: sanitize_name(socket_name.as_deref().unwrap_or(&proxy_host)),
            url: format!("{scheme}://{host_port}"),
            proxy_host,
            origin,
        }
    }
}

/// What makes two backends the same.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Identity {
    base: String,
    url: String,
    tls: Option<(Option<PathBuf>, Option<String>)>,
    host_header: Option<String>,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
}

#[derive(Debug)]
pub(super) struct Backends {
    /// The main config's folder, against which nginx resolves file names.
    config_dir: PathBuf,
    by_name: IndexMap<String, BackendPlan>,
    by_identity: HashMap<Identity, String>,
}

impl Backends {
    pub(super) fn new(config_dir: PathBuf) -> Backends {
        Backends {
            config_dir,
            by_name: IndexMap::new(),
            by_identity: HashMap::new(),
        }
    }

    pub(super) fn into_plans(self) -> Vec<BackendPlan> {
        self.by_name.into_values().collect()
    }

    /// The name of the backend for `dest` with the settings of a location,
    /// added if there is none yet; `route` names the route it is for.
    pub(super) fn add(&mut self, dest: Destination, settings: &Settings, route: &str, report: &mut Report) -> String {
        let Destination {
            base,
            url,
            proxy_host,
            origin,
        } = dest;
        let tls = if url.starts_with("https://") {
            self.tls(settings, report)
        } else {
            None
        };
        let host_header = match &settings.host {
            // Files have no Host to be sent.
            _ if url.starts_with("file:") => None,
            HostSetting::ProxyHost => Some((
                proxy_host,
                "nginx's default Host is $proxy_host (no proxy_set_header Host)".to_string(),
            )),
            HostSetting::Literal(v) => Some((v.value.clone(), v.origin())),
            HostSetting::Client | HostSetting::Unsupported => None,
        };
        let identity = Identity {
            base: base.clone(),
            url: url.clone(),
            tls: tls.as_ref().map(|t| (t.ca_file.clone(), t.server_name.clone())),
            host_header: host_header.as_ref().map(|h| h.0.clone()),
            connect_timeout: settings.connect_timeout.as_ref().map(|t| t.value),
            timeout: settings.read_timeout.as_ref().map(|t| t.value),
        };
        if let Some(name) = self.by_identity.get(&identity) {
            return name.clone();
        }
        let mut name = base.clone();
        if self.by_name.contains_key(&name) {
            name = format!("{base}-for-{route}");
            let mut k = 2;
            while self.by_name.contains_key(&name) {
                name = format!("{base}-for-{route}-{k}");
                k += 1;
            }
        }
        self.by_name.insert(
            name.clone(),
            BackendPlan {
                name: name.clone(),
                url,
                host_header,
                tls,
                connect_timeout: settings.connect_timeout.clone(),
                timeout: settings.read_timeout.clone(),
                origin,
            },
        );
        self.by_identity.insert(identity, name.clone());
        name
    }

    /// The single backend standing for upstream `name`: its first server. The
    /// other servers are listed, once.
    pub(super) fn for_upstream(
        &mut self,
        upstreams: &mut Upstreams,
        name: &str,
        scheme: &str,
        settings: &Settings,
        route: &str,
        report: &mut Report,
    ) -> Result<String, String> {
        let Some(up) = upstreams.blocks.get_mut(name) else {
            return Err(format!("no upstream {name}"));
        };
        let Some(first) = up.servers.first().cloned() else {
            return Err(format!("upstream {name} has no server cutover can reach"));
        };
        if up.servers.len() > 1 && !up.rest_listed {
            up.rest_listed = true;
            let why = up
                .no_expand
                .clone()
                .unwrap_or_else(|| "a split side or mirror target must be a single server".into());
            for s in &up.servers[1..] {
                report.list(
                    s.at.clone(),
                    "server",
                    s.text.clone(),
                    format!("upstream {name} is represented by its first server ({}): {why}", first.addr),
                );
            }
        }
        let dest = Destination {
            base: name.to_string(),
            url: format!("{scheme}://{}", first.addr),
            proxy_host: name.to_string(),
            origin: format!("{} upstream {name}: {}", up.at, first.text),
        };
        Ok(self.add(dest, settings, route, report))
    }

    /// The `tls:` settings of an https backend, from proxy_ssl_trusted_certificate
    /// and proxy_ssl_name.
    fn tls(&self, settings: &Settings, report: &mut Report) -> Option<BackendTlsPlan> {
        if !settings.ssl_verify {
            report.note(
                "nginx does not check an https backend's certificate unless proxy_ssl_verify is on; cutover always does \
                 (against the system roots, or the backend's tls.ca_file), so a backend with a self-signed or private-CA \
                 certificate needs tls.ca_file",
            );
        }
        let mut from = Vec::new();
        let ca_file = settings.ssl_trusted.as_ref().and_then(|trusted| {
            let file = absolute(&self.config_dir, &trusted.value);
            let check = crate::tls::client_config(Some(&crate::tls::BackendTls {
                ca_file: Some(file.clone()),
                server_name: None,
            }));
            match check {
                Ok(_) => {
                    from.push(trusted.origin());
                    Some(file)
                }
                Err(e) => {
                    report.list_once(
                        &trusted.at,
                        "proxy_ssl_trusted_certificate",
                        &trusted.text,
                        format!("cutover cannot load it here ({e}): the backend is checked against the system roots"),
                    );
                    None
                }
            }
        });
        let server_name = settings.ssl_name.as_ref().and_then(|name| {
            if rustls_pki_types::ServerName::try_from(name.value.as_str()).is_ok() {
                from.push(name.origin());
                Some(name.value.clone())
            } else {
                report.list_once(&name.at, "proxy_ssl_name", &name.text, "not a server name cutover can send");
                None
            }
        });
        (ca_file.is_some() || server_name.is_some()).then(|| BackendTlsPlan {
            ca_file,
            server_name,
            origin: from.join(", "),
        })
    }
}

/// A backend or route name made of letters, digits, '-', '_' and '.'.
pub(super) fn sanitize_name(s: &str) -> String {
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
