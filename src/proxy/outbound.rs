//! The upstream request: the client's request as every backend of its route
//! is sent it — hop-by-hop and reserved headers gone, `X-Forwarded-*` set,
//! a request id — and its body, streamed with limits or kept whole for a
//! retry. A backend's own target and `Host` are added per attempt, by
//! [`request_for`](crate::upstream::request_for).

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http::Version;
use http::header::{self, HeaderMap, HeaderValue};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::conn::ActiveRequest;
use super::headers::{client_address, ensure_request_id, ip_value, set_forwarded, strip_request_headers};
use super::send::RETRY_BODY_LIMIT;
use crate::config::ServerSettings;
use crate::upstream::{BodyReadListener, ClientBody, ClientFault, Failure, RequestBody};

/// How the client's request is prepared.
pub struct Preparing<'a> {
    pub trusted_proxies: &'a [ipnet::IpNet],
    /// The host the client asked for, for `X-Forwarded-Host`.
    pub client_host: Option<&'a HeaderValue>,
    /// The request asks to switch protocols.
    pub upgrade: bool,
}

/// Prepares `req`'s head for the backends, in place: the client's method,
/// URI and version, its headers rewritten. Returns its request id and, for
/// a protocol switch, the client's side of it.
pub fn prepare(req: &mut Request<Incoming>, conn: &ActiveRequest, how: Preparing<'_>) -> (HeaderValue, Option<OnUpgrade>) {
    let client_upgrade = how.upgrade.then(|| hyper::upgrade::on(&mut *req));
    let http2 = req.version() == Version::HTTP_2;
    let headers = req.headers_mut();
    if http2 {
        join_cookies(headers);
    }
    // After choosing: it reads the force header and its token.
    strip_request_headers(headers, how.upgrade);
    let trusted = how.trusted_proxies.iter().any(|net| net.contains(&conn.peer.ip()));
    // Behind a trusted proxy, the client it forwarded for; an unreadable
    // `X-Forwarded-For` names no one, and the peer is taken instead.
    let client = trusted
        .then(|| client_address(headers, conn.peer.ip(), how.trusted_proxies))
        .flatten()
        .map_or_else(|| conn.peer_value.clone(), ip_value);
    set_forwarded(headers, &conn.peer_value, trusted, client, conn.proto, how.client_host);
    let request_id = ensure_request_id(headers);
    (request_id, client_upgrade)
}

/// The body as backends are sent it: kept whole (`keep`, so the request can
/// be sent again), else streamed within `server.max_body_bytes` and
/// `server.body_read_timeout`. Fails only when a body to keep cannot be read.
pub async fn body(body: Incoming, keep: bool, server: &ServerSettings, conn: &ActiveRequest) -> Result<RequestBody, Failure> {
    if keep {
        return kept_body(body, server, conn).await;
    }
    // The connection learns when the body has been read in full.
    let listener = (!body.is_end_stream()).then(|| conn.conn().clone() as Arc<dyn BodyReadListener>);
    let unknown_length = !body.is_end_stream() && body.size_hint().exact().is_none();
    let client = Box::new(ClientBody::new(body, server.max_body_bytes, server.body_read_timeout, listener));
    if unknown_length && server.unsized_body_buffer_bytes > 0 {
        // Boxed: only bodies of unknown length pay for the reading's size.
        return Box::pin(client.read_ahead(server.unsized_body_buffer_bytes))
            .await
            .map_err(|e| Failure::Client(e.fault()));
    }
    Ok(RequestBody::Client(client))
}

/// The body read whole (empty bodies included), within the body read timeout.
async fn kept_body(body: Incoming, server: &ServerSettings, conn: &ActiveRequest) -> Result<RequestBody, Failure> {
    if body.is_end_stream() {
        return Ok(RequestBody::full(Bytes::new()));
    }
    // Boxed: only requests with a body to keep pay for its size.
    let read = Box::pin(tokio::time::timeout(
        server.body_read_timeout,
        Limited::new(body, RETRY_BODY_LIMIT as usize).collect(),
    ));
    match read.await {
        Ok(Ok(collected)) => {
            conn.body_read();
            Ok(RequestBody::full(collected.to_bytes()))
        }
        Ok(Err(_)) => Err(Failure::Client(ClientFault::BodyBroken)),
        Err(_) => Err(Failure::Client(ClientFault::BodyStalled)),
    }
}

/// HTTP/2 may split `Cookie` into several fields; HTTP/1.1 wants one (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let joined: Vec<&str> = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
    if let Ok(v) = HeaderValue::from_str(&joined.join("; ")) {
        headers.insert(header::COOKIE, v);
    }
}
