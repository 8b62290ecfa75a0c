//! `server` blocks: their listen addresses, server names, certificates and
//! the routes of their locations.

use super::backends::sanitize_name;
use super::certs::{CertFiles, Certs, TlsPair};
use super::locations::plan_locations;
use super::nginx::{Directive, Pos};
use super::report::{Report, reason_for};
use super::routes::{RoutePlan, RoutePlanner};
use super::settings::{Settings, is_setting};

#[derive(Debug)]
pub(super) struct ServerPlan {
    pub(super) at: Pos,
    pub(super) listens: Vec<Listen>,
    pub(super) names: Vec<ServerName>,
    /// Some server names could not be converted (regex, `www.example.*`).
    pub(super) odd_names: bool,
    pub(super) routes: Vec<RoutePlan>,
    /// For a server with `listen ... ssl`: its certificates, or why they cannot be used.
    pub(super) tls: Option<Result<Vec<TlsPair>, String>>,
    /// A server that sends every request to `https://` (`return 301
    /// https://$host$request_uri`): the `return`, and the port redirected to.
    pub(super) to_https: Option<HttpsRedirect>,
}

/// A server-level `return` to the same URI on `https://`.
#[derive(Debug, Clone)]
pub(super) struct HttpsRedirect {
    /// `file:line return ...`
    pub(super) origin: String,
    pub(super) port: u16,
    /// The host it names, when not the client's (`$host`, `$http_host`).
    pub(super) named_host: Option<String>,
}

/// One address of a `listen` directive.
#[derive(Debug, Clone)]
pub(super) struct Listen {
    pub(super) addr: String,
    pub(super) default: bool,
    pub(super) ssl: bool,
    pub(super) at: Pos,
    pub(super) text: String,
}

/// A server name cutover can match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ServerName {
    Exact(String),
    /// `*.example.com`
    Wildcard(String),
}

impl ServerName {
    /// The route's `host` match.
    pub(super) fn pattern(&self) -> &str {
        match self {
            ServerName::Exact(h) | ServerName::Wildcard(h) => h,
        }
    }

    /// The name as a route name prefix.
    pub(super) fn label(&self) -> String {
        match self {
            ServerName::Exact(x) => sanitize_name(x),
            ServerName::Wildcard(x) => format!("any.{}", sanitize_name(x.trim_start_matches("*."))),
        }
    }
}

/// Reads a `server` block under the http level's settings and certificates.
pub(super) fn read_server(
    d: &Directive,
    http: &Settings,
    http_certs: &Certs,
    certs: &mut CertFiles,
    planner: &mut RoutePlanner<'_>,
) -> ServerPlan {
    let settings = Settings::at_level(http, d.children(), planner.report);
    let server_certs = certs.at_level(http_certs, d.children(), planner.report);
    let mut plan = ServerPlan {
        at: d.at.clone(),
        listens: Vec::new(),
        names: Vec::new(),
        odd_names: false,
        routes: Vec::new(),
        tls: None,
        to_https: None,
    };
    let mut locations = Vec::new();
    let mut to_https = None;
    for c in d.children() {
        match c.name.as_str() {
            "listen" => listen(c, &mut plan, planner.report),
            "server_name" => server_name(c, &mut plan, planner.report),
            "location" if c.block.is_some() => locations.push(c),
            "ssl_certificate" | "ssl_certificate_key" => {}
            "return" if to_https.is_none() => match https_redirect(c) {
                Some(r) => to_https = Some((c, r)),
                None => planner.report.skip(c, reason_for("return")),
            },
            n if is_setting(n) => {}
            n => planner.report.skip(c, reason_for(n)),
        }
    }
    match to_https {
        // Over https already, such a return changes the host only (www. to none): not converted.
        Some((c, r)) if plan.listens.iter().any(|l| l.ssl) => planner
            .report
            .skip(c, format!("{}: cutover redirects plain HTTP listeners to https only", r.origin)),
        Some((_, r)) => plan.to_https = Some(r),
        None => {}
    }
    if plan.listens.iter().any(|l| l.ssl) {
        plan.tls = Some(certs.server_tls(&server_certs));
    }
    if plan.listens.is_empty() && d.children().iter().all(|c| c.name != "listen") {
        plan.listens.push(Listen {
            addr: "0.0.0.0:80".into(),
            default: false,
            ssl: false,
            at: d.at.clone(),
            text: "listen *:80 (nginx's default)".into(),
        });
        planner.report.note(format!(
            "{}: server without listen: nginx listens on *:80, and so does the import",
            d.at
        ));
    }
    // A server-level `return` answers every request before any location is chosen.
    if let Some(r) = d.children().iter().find(|c| c.name == "return") {
        let reason = format!("never reached in nginx: the server answers every request with `{}` first", r.text());
        for l in locations {
            planner.report.skip(l, reason.clone());
        }
    } else {
        plan.routes = plan_locations(&locations, &settings, planner);
    }
    plan
}

fn listen(d: &Directive, plan: &mut ServerPlan, report: &mut Report) {
    let Some(raw) = d.arg(0) else {
        report.skip(d, "invalid listen");
        return;
    };
    let Some(addr) = listen_addr(raw) else {
        report.skip(
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
        report.skip(d, format!("parameters not converted: {}", odd.join(", ")));
    }
    plan.listens.push(Listen {
        addr,
        default,
        ssl,
        at: d.at.clone(),
        text: d.text(),
    });
}

fn server_name(d: &Directive, plan: &mut ServerPlan, report: &mut Report) {
    let mut odd = Vec::new();
    for a in &d.args {
        let n = a.text.to_ascii_lowercase();
        if n.is_empty() || n == "_" {
            continue;
        }
        if let Some(base) = n.strip_prefix('.') {
            plan.names.push(ServerName::Exact(base.to_string()));
            plan.names.push(ServerName::Wildcard(format!("*.{base}")));
        } else if n.starts_with("*.") && !n[2..].contains(['*', '~', '$']) {
            plan.names.push(ServerName::Wildcard(n));
        } else if n.contains(['*', '~', '$', '(', '^']) {
            odd.push(a.text.clone());
        } else {
            plan.names.push(ServerName::Exact(n));
        }
    }
    if !odd.is_empty() {
        plan.odd_names = true;
        report.skip(
            d,
            format!(
                "names not converted: {} (cutover matches exact names and *.example.com only)",
                odd.join(" ")
            ),
        );
    }
}

/// `return 301 https://$host$request_uri` (or 302, 307, 308; `$http_host`,
/// `$server_name` or a name for the host; a port after it): the same request
/// on `https://`.
fn https_redirect(d: &Directive) -> Option<HttpsRedirect> {
    let [code, url] = d.args.as_slice() else { return None };
    if !matches!(code.text.as_str(), "301" | "302" | "307" | "308") {
        return None;
    }
    let authority = url.text.strip_prefix("https://")?.strip_suffix("$request_uri")?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().ok()?),
        None => (authority, 443),
    };
    let named_host = match host {
        "$host" | "$http_host" => None,
        h if h.contains('$') && h != "$server_name" => return None,
        h => Some(h.to_string()),
    };
    Some(HttpsRedirect {
        origin: format!("{} {}", d.at, d.text()),
        port,
        named_host,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(listen_addr("80").as_deref(), Some("0.0.0.0:80"));
        assert_eq!(listen_addr("*:8080").as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(listen_addr("127.0.0.1").as_deref(), Some("127.0.0.1:80"));
        assert_eq!(listen_addr("[::]:443").as_deref(), Some("[::]:443"));
        assert_eq!(listen_addr("localhost:81").as_deref(), Some("127.0.0.1:81"));
        assert_eq!(listen_addr("unix:/run/x.sock"), None);
    }
}
