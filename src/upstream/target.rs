//! What a backend is sent: the request target after its base path and the
//! route's rewrite, its `Host`, and the framing of the body.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Uri, Version};
use http_body::Body as _;

use super::body::RequestBody;
use super::failure::{ClientFault, Failure};
use crate::config::{BackendSpec, Rewrite, RouteBackend};

/// What the client asked for, as every backend of its route is sent it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The normalised path, when it differs from the path of the client's
    /// URI (usually it does not, and nothing is copied).
    pub normalised: Option<&'a str>,
    /// The host the client asked for: the request target's authority, else `Host`.
    pub client_host: Option<&'a HeaderValue>,
    /// The head's `Host` header is `client_host` as the client sent it.
    pub host_in_headers: bool,
}

impl Target<'_> {
    /// The normalised path of the request whose URI is `client`, before any backend's rewrite.
    pub fn path<'a>(&'a self, client: &'a Uri) -> &'a str {
        self.normalised.unwrap_or(client.path())
    }
}

/// Points `req` (the client's URI, its headers prepared for any backend)
/// at route backend `to`: its target and `Host`, over HTTP/1.1. The one
/// place a backend's request is built: the first attempt, a retry on
/// another backend and a shadow all use it. In place: the request is not
/// moved on the way to the backend.
pub fn request_for(to: &RouteBackend, req: &mut Request<RequestBody>, target: Target<'_>) -> Result<(), Failure> {
    *req.uri_mut() = upstream_target(&to.spec, to.rewrite.as_ref(), target.path(req.uri()), req.uri())
        .map_err(|_| Failure::Client(ClientFault::BadTarget))?;
    // Usually the backend gets the client's own Host: then the header
    // hyper parsed stays as it is, and the map is not touched again.
    if to.spec.host_header.is_some() || !target.host_in_headers {
        req.headers_mut()
            .insert(header::HOST, upstream_host(&to.spec, target.client_host.cloned()));
    }
    *req.version_mut() = Version::HTTP_11;
    // hyper's client takes a GET, HEAD or CONNECT body of unknown length
    // for none and sends nothing; the client's `Transfer-Encoding` went
    // with the hop-by-hop headers, so the framing is said again here.
    // (A body of known length gets its `Content-Length` from hyper.)
    if !req.body().is_end_stream() && req.body().size_hint().exact().is_none() {
        req.headers_mut()
            .insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    }
    Ok(())
}

/// The origin-form URI to send `client`'s request to on `spec`; `path` is
/// its normalised path. Usually nothing changes the client's path and query,
/// and they are passed on as they came, without copying or checking again.
pub fn upstream_target(spec: &BackendSpec, rewrite: Option<&Rewrite>, path: &str, client: &Uri) -> Result<Uri, http::Error> {
    match (rewrite, client.path_and_query()) {
        // `PathAndQuery::path` says "/" for an empty path: only a target
        // that starts with its path is passed on as it came.
        (None, Some(as_sent)) if spec.url.base_path.is_empty() && as_sent.as_str().starts_with('/') && as_sent.path() == path => {
            Ok(Uri::from(as_sent.clone()))
        }
        _ => upstream_uri(spec, rewrite, path, client.query()),
    }
}

/// The origin-form URI of `path` (normalised) on `spec`, after the route's rewrite for it.
pub fn upstream_uri(spec: &BackendSpec, rewrite: Option<&Rewrite>, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
    let path = match rewrite {
        Some(rw) => rw.apply(path),
        None => path.into(),
    };
    origin_form(&spec.url.base_path, &path, query)
}

/// `base` and `path`, then `?query`, as an origin-form URI with bytes of its own.
pub fn origin_form(base: &str, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
    let mut pq = String::with_capacity(base.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    pq.push_str(base);
    pq.push_str(path);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    Ok(Uri::from(PathAndQuery::from_maybe_shared(Bytes::from(pq))?))
}

/// The `Host` a backend is sent: its `host_header`, else the client's, else its own authority.
pub fn upstream_host(spec: &BackendSpec, client_host: Option<HeaderValue>) -> HeaderValue {
    spec.host_header
        .clone()
        .or(client_host)
        .unwrap_or_else(|| HeaderValue::from_str(spec.url.authority.as_str()).expect("authority is a valid header value"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use http::request::Parts;

    fn config() -> Config {
        Config::parse(
            std::path::Path::new("cutover.yaml"),
            "listeners:\n  - { name: public, addr: \"127.0.0.1:0\" }\n\
             backends:\n  plain: { url: \"http://127.0.0.1:1\" }\n  based: { url: \"http://127.0.0.1:2/v2\" }\n  \
             named: { url: \"http://127.0.0.1:3\", host_header: internal.example }\n\
             routes:\n  - name: api\n    match: { path_prefix: /api/ }\n    backends:\n      plain: {}\n      \
             based: { rewrite: { prefix: /api/, to: /new/ } }\n      named: {}\n"
                .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn targets_are_passed_on_as_sent_unless_something_changes_them() {
        let config = config();
        let route = &config.routes[0];
        let (plain, based) = (&route.backends[0], &route.backends[1]);
        let target = |backend: &RouteBackend, path: &str, sent: &str| {
            upstream_target(&backend.spec, backend.rewrite.as_ref(), path, &sent.parse::<Uri>().unwrap())
                .unwrap()
                .to_string()
        };
        assert_eq!(target(plain, "/api/a", "/api/a?x=1&y"), "/api/a?x=1&y");
        assert_eq!(target(plain, "/api/a", "http://example.test/api/a?x=1"), "/api/a?x=1");
        // Normalised: the normal path, with the query as sent.
        assert_eq!(target(plain, "/api/a", "/api/b/../a?x=1"), "/api/a?x=1");
        // Base path and rewrite.
        assert_eq!(target(based, "/api/a", "/api/a?x=1"), "/v2/new/a?x=1");
    }

    /// The client's head as the proxy prepares it for any backend.
    fn head(uri: &str, host: Option<&'static str>) -> Parts {
        let mut req = Request::get(uri).version(Version::HTTP_2);
        if let Some(host) = host {
            req = req.header(header::HOST, host);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn each_backend_gets_its_own_target_host_and_http_1_1_from_the_same_head() {
        let config = config();
        let backends = &config.routes[0].backends;
        let client_host = HeaderValue::from_static("shop.example");
        let target = Target {
            normalised: Some("/api/a"),
            client_host: Some(&client_host),
            host_in_headers: true,
        };
        let sent = |to: usize, head: Parts, target: Target<'_>| {
            let mut req = Request::from_parts(head, RequestBody::full(Bytes::new()));
            request_for(&backends[to], &mut req, target).unwrap();
            let host = req.headers().get_all(header::HOST).iter().cloned().collect::<Vec<_>>();
            (req.uri().to_string(), host, req.version())
        };
        let as_sent = || head("/api/./a?q=1", Some("shop.example"));
        assert_eq!(
            sent(0, as_sent(), target),
            ("/api/a?q=1".into(), vec![client_host.clone()], Version::HTTP_11)
        );
        assert_eq!(
            sent(1, as_sent(), target),
            ("/v2/new/a?q=1".into(), vec![client_host.clone()], Version::HTTP_11)
        );
        assert_eq!(
            sent(2, as_sent(), target),
            (
                "/api/a?q=1".into(),
                vec![HeaderValue::from_static("internal.example")],
                Version::HTTP_11
            )
        );
        // An absolute-form target names the host: it replaces the header.
        let absolute = Target {
            host_in_headers: false,
            ..target
        };
        let absolute = Target {
            normalised: None,
            ..absolute
        };
        assert_eq!(
            sent(0, head("http://shop.example/api/a", Some("other.example")), absolute),
            ("/api/a".into(), vec![client_host.clone()], Version::HTTP_11)
        );
        // No host at all (HTTP/1.0): the backend's own authority.
        let hostless = Target {
            client_host: None,
            host_in_headers: false,
            ..target
        };
        assert_eq!(
            sent(0, head("/api/a", None), hostless),
            ("/api/a".into(), vec![HeaderValue::from_static("127.0.0.1:1")], Version::HTTP_11)
        );
    }
}
