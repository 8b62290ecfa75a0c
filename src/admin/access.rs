//! Who may call the admin API. A browser page of another site can send
//! requests to a loopback admin port (simple POSTs need no CORS preflight),
//! and DNS rebinding points a page's own name at 127.0.0.1: such requests
//! carry a foreign `Host`, `Origin` or `Sec-Fetch-Site`, and are refused
//! before anything else. A configured bearer token is checked after them.

use std::net::{IpAddr, SocketAddr};

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use subtle::ConstantTimeEq;

use crate::config::{Admin, AdminHost};

/// Why a request is turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a request needs exactly one valid Host header")]
    NoHost,
    #[error(
        "Host {0:?} is not a name of this admin API (accepted: localhost, loopback addresses, \
         the listener's own address and admin.hosts)"
    )]
    ForeignHost(String),
    #[error("requests from pages of another origin are refused (Origin: {0})")]
    ForeignOrigin(String),
    #[error("requests from pages of another site are refused (Sec-Fetch-Site: {0})")]
    CrossSite(String),
    #[error("a valid bearer token is required")]
    Unauthorized,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::NoHost => StatusCode::BAD_REQUEST,
            Refusal::ForeignHost(_) | Refusal::ForeignOrigin(_) | Refusal::CrossSite(_) => StatusCode::FORBIDDEN,
            Refusal::Unauthorized => StatusCode::UNAUTHORIZED,
        }
    }
}

/// Checks `Host`, then `Origin` and `Sec-Fetch-Site`, then the token.
///
/// `local` is the address the client reached (for a wildcard listen
/// address, the host's address it connected to). With a token on a
/// non-loopback admin address any `Host` is accepted: such a listener is
/// reached by names no list can foresee, and the token already keeps out
/// pages that do not hold it. The dashboard page itself (`GET /`) is static:
/// it needs no token and may be opened from a link on another site.
pub fn check(parts: &Parts, admin: &Admin, local: SocketAddr) -> Result<(), Refusal> {
    let host = request_host(parts).ok_or(Refusal::NoHost)?;
    let any_host = admin.token.is_some() && !admin.addr.ip().is_loopback();
    if !any_host && !is_admin_host(&host, admin, local) {
        return Err(Refusal::ForeignHost(host));
    }
    if is_dashboard_page(parts) {
        return Ok(());
    }
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        let same = origin_host(origin).is_some_and(|o| o.eq_ignore_ascii_case(&host) || is_admin_host(&o, admin, local));
        if !same {
            return Err(Refusal::ForeignOrigin(printable(origin)));
        }
    }
    if let Some(site) = parts.headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(Refusal::CrossSite(printable(site)));
    }
    match &admin.token {
        Some(token) if !authorized(&parts.headers, token) => Err(Refusal::Unauthorized),
        _ => Ok(()),
    }
}

fn is_dashboard_page(parts: &Parts) -> bool {
    matches!(parts.method, Method::GET | Method::HEAD) && parts.uri.path() == "/"
}

/// The host the client asked for, without port: from an absolute-form
/// target, else from the single `Host` header (RFC 9112 §3.2.2).
fn request_host(parts: &Parts) -> Option<String> {
    if let Some(host) = parts.uri.host() {
        return Some(host.to_string());
    }
    let mut all = parts.headers.get_all(header::HOST).iter();
    let value = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let authority: http::uri::Authority = value.to_str().ok()?.parse().ok()?;
    (!authority.host().is_empty()).then(|| authority.host().to_string())
}

/// The host of an `Origin` (`scheme://host[:port]`); `None` for `null` and
/// anything else that is not an origin.
fn origin_host(origin: &HeaderValue) -> Option<String> {
    let uri: http::Uri = origin.to_str().ok()?.parse().ok()?;
    uri.scheme()?;
    uri.host().filter(|h| !h.is_empty()).map(str::to_string)
}

/// Loopback names and addresses, the address the client reached, and the
/// configured `admin.hosts`. Ports are not compared.
fn is_admin_host(host: &str, admin: &Admin, local: SocketAddr) -> bool {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        let ip = ip.to_canonical();
        return ip.is_loopback() || ip == local.ip().to_canonical() || admin.hosts.contains(&AdminHost::Ip(ip));
    }
    host.eq_ignore_ascii_case("localhost")
        || admin
            .hosts
            .iter()
            .any(|h| matches!(h, AdminHost::Name(name) if name.eq_ignore_ascii_case(host)))
}

/// Compares the bearer token in constant time.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    presented.is_some_and(|p| bool::from(p.trim().as_bytes().ct_eq(token.as_bytes())))
}

/// A header value fit for an error message.
fn printable(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes())
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(addr: &str, token: Option<&str>, hosts: &[&str]) -> Admin {
        Admin {
            addr: addr.parse().unwrap(),
            token: token.map(str::to_string),
            hosts: hosts.iter().map(|h| AdminHost::parse(h).unwrap()).collect(),
        }
    }

    fn parts(method: &str, target: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    const LOCAL: &str = "127.0.0.1:9901";

    fn verdict(admin: &Admin, method: &str, target: &str, headers: &[(&str, &str)]) -> Result<(), Refusal> {
        check(&parts(method, target, headers), admin, LOCAL.parse().unwrap())
    }

    #[test]
    fn loopback_names_and_addresses_pass_and_other_hosts_do_not() {
        let open = admin(LOCAL, None, &["cutover-admin.internal", "10.1.2.3"]);
        for host in [
            "localhost",
            "LOCALHOST:9901",
            "127.0.0.1",
            "127.8.9.10:1",
            "[::1]:9901",
            "[::ffff:127.0.0.1]",
            "cutover-admin.internal:80",
            "Cutover-Admin.Internal",
            "10.1.2.3:9901",
        ] {
            assert_eq!(verdict(&open, "GET", "/admin/status", &[("host", host)]), Ok(()), "{host}");
        }
        for host in [
            "evil.example",
            "localhost.evil.example",
            "sub.localhost",
            "10.1.2.4",
            "[::2]",
            "127.0.0.1.nip.io",
        ] {
            assert!(
                matches!(
                    verdict(&open, "POST", "/admin/undo", &[("host", host)]),
                    Err(Refusal::ForeignHost(_))
                ),
                "{host}"
            );
        }
        // An absolute-form target names the host, whatever Host says.
        assert!(matches!(
            verdict(&open, "GET", "http://evil.example/admin/status", &[("host", "127.0.0.1")]),
            Err(Refusal::ForeignHost(_))
        ));
        assert_eq!(verdict(&open, "GET", "/admin/status", &[]), Err(Refusal::NoHost));
        assert_eq!(
            verdict(&open, "GET", "/admin/status", &[("host", "localhost"), ("host", "evil.example")]),
            Err(Refusal::NoHost)
        );
    }

    #[test]
    fn the_address_a_wildcard_listener_was_reached_on_is_accepted() {
        let with_token = admin("0.0.0.0:9901", Some("t"), &[]);
        let loopback_with_token = admin(LOCAL, Some("t"), &[]);
        let auth = ("authorization", "Bearer t");
        let local: SocketAddr = "10.0.0.7:9901".parse().unwrap();
        let req = parts("GET", "/admin/status", &[("host", "10.0.0.7:9901"), auth]);
        assert_eq!(check(&req, &loopback_with_token, local), Ok(()));
        // Any Host on a non-loopback listener with a token; the token still counts.
        let req = parts("GET", "/admin/status", &[("host", "cutover.prod.svc"), auth]);
        assert_eq!(check(&req, &with_token, local), Ok(()));
        assert!(check(&req, &loopback_with_token, local).is_err());
        let req = parts("GET", "/admin/status", &[("host", "cutover.prod.svc")]);
        assert_eq!(check(&req, &with_token, local), Err(Refusal::Unauthorized));
    }

    #[test]
    fn pages_of_other_origins_and_sites_are_refused() {
        let open = admin(LOCAL, None, &[]);
        let host = ("host", "127.0.0.1:9901");
        for origin in ["http://127.0.0.1:9901", "http://localhost:9901", "http://[::1]:9901"] {
            assert_eq!(
                verdict(&open, "POST", "/admin/undo", &[host, ("origin", origin)]),
                Ok(()),
                "{origin}"
            );
        }
        for origin in [
            "http://evil.example",
            "null",
            "https://127.0.0.1.evil.example",
            "file://",
            "garbage",
        ] {
            assert!(
                matches!(
                    verdict(&open, "POST", "/admin/undo", &[host, ("origin", origin)]),
                    Err(Refusal::ForeignOrigin(_))
                ),
                "{origin}"
            );
        }
        for site in ["same-origin", "none"] {
            assert_eq!(
                verdict(&open, "PUT", "/admin/weights/api", &[host, ("sec-fetch-site", site)]),
                Ok(())
            );
        }
        for site in ["cross-site", "same-site", ""] {
            assert!(matches!(
                verdict(&open, "GET", "/admin/status", &[host, ("sec-fetch-site", site)]),
                Err(Refusal::CrossSite(_))
            ));
        }
        // The page itself may be opened from a link on another site.
        assert_eq!(verdict(&open, "GET", "/", &[host, ("sec-fetch-site", "cross-site")]), Ok(()));
        assert!(verdict(&open, "GET", "/", &[("host", "evil.example")]).is_err());
    }

    #[test]
    fn a_token_guards_everything_but_the_page() {
        let secured = admin(LOCAL, Some("s3cret"), &[]);
        let host = ("host", "localhost:9901");
        assert_eq!(verdict(&secured, "GET", "/admin/parity", &[host]), Err(Refusal::Unauthorized));
        assert_eq!(
            verdict(&secured, "GET", "/admin/parity", &[host, ("authorization", "Bearer wrong")]),
            Err(Refusal::Unauthorized)
        );
        assert_eq!(
            verdict(&secured, "GET", "/admin/parity", &[host, ("authorization", "Bearer s3cret")]),
            Ok(())
        );
        assert_eq!(verdict(&secured, "GET", "/", &[host]), Ok(()));
        assert_eq!(verdict(&secured, "HEAD", "/", &[host]), Ok(()));
    }
}
