//! The forwarding path: one request in, one backend chosen, one response out.

pub mod body;
pub mod headers;
pub mod pool;
pub mod upstream;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::access_log::{AccessLog, LogRecord};
use crate::config::{BackendSpec, ForceHeader, Rewrite, RouteSpec, Sticky};
use crate::live::Live;
use crate::mirror::{self, Admission, ShadowJob, Tap};
use crate::routing::{PathError, RequestView, host_without_port, normalize_path_with};
use crate::split::{self, BUCKETS};
use crate::table::{LiveRoute, Table};
use body::{BodyProblem, BodyVerdict, ClientBody, Exchange, RequestBody, ResponseBody};
use headers::{
    FORCE_TOKEN, X_REQUEST_ID, client_address, cookie, ensure_request_id, is_upgrade_request, set_forwarded, strip_hop_by_hop,
    strip_request_headers,
};
use pool::UpstreamBody;
use tokio::sync::oneshot;
use upstream::FailureKind;

/// The client connection a request arrived on.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// The peer's address as a header value, for `X-Forwarded-For`.
    pub peer_value: HeaderValue,
    /// When the connection was accepted.
    pub accepted: Instant,
    /// When a request last ended, in milliseconds after `accepted` (only
    /// read while none is in flight).
    last_active_ms: AtomicU64,
    /// Requests begun and not yet answered in full.
    in_flight: AtomicU32,
    /// The latest request's body is not known to be read to its end, or
    /// the connection is to close after it: it is not simply waiting for
    /// the next request.
    unsettled: AtomicBool,
    /// Bytes of a request not yet begun have arrived.
    next_started: AtomicBool,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, proto: &'static str) -> ConnInfo {
        ConnInfo {
            peer,
            proto,
            peer_value: headers::ip_value(peer.ip()),
            accepted: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            unsettled: AtomicBool::new(false),
            next_started: AtomicBool::new(false),
        }
    }

    /// Marks `req` as begun; it stays in flight until the returned guard is
    /// dropped (with the last byte of its response, or with the request if
    /// it is abandoned).
    pub fn begin_request<B: http_body::Body>(self: &Arc<Self>, req: &Request<B>) -> ActiveRequest {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let settled = req.body().is_end_stream() && !headers::ends_keep_alive(req.version(), req.headers());
        self.unsettled.store(!settled, Ordering::Relaxed);
        self.next_started.store(false, Ordering::Relaxed);
        ActiveRequest(self.clone())
    }

    /// Bytes arrived from the client. With no request under way they are
    /// the start of the next one.
    pub fn bytes_received(&self) {
        if self.is_quiet() {
            self.next_started.store(true, Ordering::Relaxed);
        }
    }

    /// The request body was read to its end.
    pub fn body_read(&self) {
        self.unsettled.store(false, Ordering::Relaxed);
    }

    /// The connection closes after the current response.
    fn closes_after_response(&self) {
        self.unsettled.store(true, Ordering::Relaxed);
    }

    fn touch(&self) {
        let ms = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    /// When a request last ended (the accept time before the first).
    pub fn last_active(&self) -> Instant {
        self.accepted + std::time::Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed))
    }

    /// No request is being received or answered.
    pub fn is_quiet(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Quiet, with the last request read in full, nothing asking the
    /// connection to close and no byte of another request received: it is
    /// waiting for the next request.
    pub fn is_between_requests(&self) -> bool {
        self.is_quiet() && !self.unsettled.load(Ordering::Relaxed) && !self.next_started.load(Ordering::Relaxed)
    }
}

/// A request in flight on its connection; see [`ConnInfo::begin_request`].
#[derive(Debug)]
pub struct ActiveRequest(Arc<ConnInfo>);

impl ActiveRequest {
    pub fn conn(&self) -> &Arc<ConnInfo> {
        &self.0
    }
}

impl std::ops::Deref for ActiveRequest {
    type Target = ConnInfo;

    fn deref(&self) -> &ConnInfo {
        &self.0
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

pub struct Proxy {
    pub live: Arc<Live>,
    pub access_log: Option<Arc<AccessLog>>,
}

/// Why the proxy answered a request itself.
#[derive(Debug)]
enum Refusal {
    BadRequest(&'static str),
    BodyTooLarge,
    BodyTimeout,
    NoRoute,
    Upstream { kind: FailureKind, backend: Arc<str> },
}

impl Refusal {
    /// Whether the client connection must close after this answer: after a
    /// malformed request, or with part of a request body possibly unread,
    /// the next bytes cannot be trusted to start a request (nginx closes
    /// too).
    fn ends_connection(&self, had_body: bool) -> bool {
        match self {
            Refusal::BadRequest(_) | Refusal::BodyTooLarge | Refusal::BodyTimeout => true,
            Refusal::Upstream { .. } => had_body,
            Refusal::NoRoute => false,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::NoRoute => StatusCode::NOT_FOUND,
            Refusal::Upstream {
                kind: FailureKind::Timeout,
                ..
            } => StatusCode::GATEWAY_TIMEOUT,
            Refusal::Upstream { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::BadRequest(why) => format!("bad request: {why}\n"),
            Refusal::BodyTooLarge => "payload too large: the request body exceeds server.max_body_bytes\n".into(),
            Refusal::BodyTimeout => "request timeout: the request body stalled\n".into(),
            Refusal::NoRoute => "no route matches this request\n".into(),
            Refusal::Upstream { kind, backend } => match kind {
                FailureKind::Connect => {
                    format!("bad gateway: cannot connect to backend {backend}\n")
                }
                FailureKind::Timeout => {
                    format!("gateway timeout: backend {backend} sent no response in time\n")
                }
                FailureKind::Reset => {
                    format!("bad gateway: backend {backend} closed the connection\n")
                }
                FailureKind::Protocol | FailureKind::Body => {
                    format!("bad gateway: backend {backend} sent an invalid response\n")
                }
            },
        }
    }
}

/// Where a request goes and whether the response must pin the client.
struct Choice {
    backend: usize,
    bucket: u16,
    set_pin: Option<u16>,
    /// A trusted client named the backend with the route's force header.
    forced: bool,
}

impl Proxy {
    /// Serves one client request. Never fails: problems become responses.
    /// `conn` stays in flight until the response's last byte is sent.
    pub async fn serve(self: Arc<Self>, conn: ActiveRequest, req: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
        let started = Instant::now();
        let table = self.live.load();
        let log = self.access_log.as_ref().map(|log| (log.clone(), capture(&conn, &req)));
        let mut exchange = Box::new(Exchange::new(started, table.clone(), log));
        let had_body = !req.body().is_end_stream();
        let forwarded = self.forward(&table, &conn, req, &mut exchange).await;
        let closes = matches!(&forwarded, Err(refusal) if refusal.ends_connection(had_body));
        if closes {
            conn.closes_after_response();
        }
        exchange.hold(conn);
        let response = match forwarded {
            Ok((resp, tap)) => {
                let (parts, body) = resp.into_parts();
                exchange.status = parts.status.as_u16();
                exchange.upstream_status = Some(parts.status.as_u16());
                Response::from_parts(parts, ResponseBody::upstream(body, exchange, tap))
            }
            Err(refusal) => {
                if let Refusal::Upstream { kind, .. } = &refusal {
                    exchange.record_failure(*kind);
                }
                let status = refusal.status();
                exchange.status = status.as_u16();
                let mut resp = Response::new(ResponseBody::local(refusal.message(), Some(exchange)));
                *resp.status_mut() = status;
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
                if closes {
                    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                resp
            }
        };
        Ok(response)
    }

    async fn forward(
        &self,
        table: &Arc<Table>,
        conn: &ActiveRequest,
        mut req: Request<Incoming>,
        exchange: &mut Exchange,
    ) -> Result<(Response<UpstreamBody>, Option<Tap>), Refusal> {
        let client_host = client_host(&req)?;
        let slashes = table.config.server.encoded_slashes;
        let path = normalize_path_with(req.uri().path(), slashes).map_err(|e| match (req.uri().path(), e) {
            ("*", _) => Refusal::BadRequest("asterisk-form targets (OPTIONS *) are not forwarded"),
            ("", _) => Refusal::BadRequest("authority-form targets (CONNECT) are not forwarded"),
            (_, PathError::EncodedSlash) => Refusal::BadRequest("encoded slash (%2F) in the request path"),
            (_, PathError::EncodedNul) => Refusal::BadRequest("encoded NUL (%00) in the request path"),
            _ => Refusal::BadRequest("malformed request path"),
        })?;
        let view = RequestView {
            path: &path,
            host: client_host.as_ref().and_then(|h| h.to_str().ok()).map(host_without_port),
            method: req.method(),
            headers: req.headers(),
        };
        let ri = table.config.route_for(&view).ok_or(Refusal::NoRoute)?;
        let route = &table.config.routes[ri];
        let live_route = &table.routes[ri];
        let trusted_proxies = &table.config.trusted_proxies;
        let choice = choose(route, live_route, req.headers(), || {
            client_address(req.headers(), conn.peer.ip(), trusted_proxies)
        });
        let route_backend = &route.backends[choice.backend];
        let spec = &route_backend.spec;
        exchange.target = Some((ri, choice.backend));
        // A tester's forced requests say nothing about how users fare.
        exchange.feeds_guard = !choice.forced || route.force_header.as_ref().is_some_and(|f| f.guard);
        if let Some(rec) = exchange.log_record() {
            rec.route = Some(route.name.clone());
            rec.backend = Some(spec.name.clone());
        }

        let server = &table.config.server;
        if let (Some(limit), Some(len)) = (server.max_body_bytes, content_length(req.headers()))
            && len > limit
        {
            return Err(Refusal::BodyTooLarge);
        }
        let uri = upstream_target(spec, route_backend.rewrite.as_ref(), &path, req.uri())
            .map_err(|_| Refusal::BadRequest("malformed request path"))?;

        let upgrade = req.version() == Version::HTTP_11 && is_upgrade_request(req.headers());
        // A request that gets no answer may be sent again if it is idempotent
        // (or the route opts in) and its body is empty or small enough to keep.
        let retry = !upgrade
            && route.retry.allows(req.method())
            && (req.body().is_end_stream() || content_length(req.headers()).is_some_and(|n| n <= RETRY_BODY_LIMIT));
        let admission = match &route.mirror {
            Some(m) if !upgrade => mirror::admit(
                m,
                route,
                &live_route.mirror_gate,
                choice.backend,
                req.method(),
                content_length(req.headers()),
            ),
            _ => Admission::No,
        };
        if let Admission::Refused(outcome) = admission {
            mirror::record_outcome(table, &self.live.parity, ri, outcome);
        }
        // Kept for a retry: the target is built again for the other backend.
        let client_uri = retry.then(|| req.uri().clone());
        let mirror_path = matches!(admission, Admission::Yes { .. }).then(|| (path.into_owned(), req.uri().query().map(str::to_string)));
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        if parts.version == Version::HTTP_2 {
            join_cookies(&mut parts.headers);
        }
        // After `choose`: it reads the force header and its token.
        strip_request_headers(&mut parts.headers, upgrade);
        let trusted = trusted_proxies.iter().any(|net| net.contains(&conn.peer.ip()));
        set_forwarded(&mut parts.headers, &conn.peer_value, trusted, conn.proto, client_host.as_ref());
        let request_id = ensure_request_id(&mut parts.headers);
        if let Some(rec) = exchange.log_record() {
            rec.request_id = Some(request_id.clone());
        }
        // A body kept whole for a retry (empty bodies included).
        let verdict = Arc::new(BodyVerdict::default());
        let body = if !retry {
            // The connection learns when the body has been read in full.
            let reader = (!body.is_end_stream()).then(|| conn.conn().clone());
            Outgoing::Stream(ClientBody::new(
                body,
                server.max_body_bytes,
                server.body_read_timeout,
                verdict.clone(),
                reader,
            ))
        } else if body.is_end_stream() {
            Outgoing::Kept(Bytes::new())
        } else {
            match Box::pin(tokio::time::timeout(
                server.body_read_timeout,
                Limited::new(body, RETRY_BODY_LIMIT as usize).collect(),
            ))
            .await
            {
                Ok(Ok(b)) => {
                    conn.body_read();
                    Outgoing::Kept(b.to_bytes())
                }
                Ok(Err(_)) => return Err(Refusal::BadRequest("the request body could not be read")),
                Err(_) => return Err(Refusal::BodyTimeout),
            }
        };
        let kept = match &body {
            Outgoing::Kept(bytes) => Some(bytes.clone()),
            Outgoing::Stream(_) => None,
        };
        let mut mirror_handles = None;
        let body = match (admission, mirror_path) {
            (Admission::Yes { shadow, permit, noise }, Some((path, query))) => {
                let m = route.mirror.as_ref().expect("admitted by the route's mirror");
                let (body, body_copy) = match body {
                    Outgoing::Kept(bytes) if bytes.is_empty() => (RequestBody::full(bytes), None),
                    Outgoing::Kept(bytes) => {
                        let (tx, rx) = oneshot::channel();
                        let _ = tx.send((bytes.len() <= m.max_body_bytes).then(|| bytes.clone()));
                        (RequestBody::full(bytes), Some(rx))
                    }
                    Outgoing::Stream(body) if body.is_end_stream() => (RequestBody::Client(body), None),
                    Outgoing::Stream(body) => {
                        let (tap, copy) = Tap::new(m.max_body_bytes);
                        (RequestBody::Tapped(body, tap), Some(copy))
                    }
                };
                let (head_tx, head_rx) = oneshot::channel();
                let (response_tap, response_copy) = Tap::new(m.compare_max_bytes);
                let job = ShadowJob {
                    table: table.clone(),
                    parity: self.live.parity.clone(),
                    route: ri,
                    primary: choice.backend,
                    feeds_guard: exchange.feeds_guard,
                    shadow,
                    noise,
                    permit,
                    method: parts.method.clone(),
                    headers: parts.headers.clone(),
                    // A copy: the client's value is a slice of its connection's read buffer.
                    client_host: client_host.as_ref().and_then(|h| HeaderValue::from_bytes(h.as_bytes()).ok()),
                    path,
                    query,
                    request_id: request_id
                        .to_str()
                        .map_or_else(|_| String::from_utf8_lossy(request_id.as_bytes()).into_owned(), str::to_owned),
                    body: body_copy,
                    primary_head: Some(head_rx),
                    primary_body: Some(response_copy),
                };
                // Boxed: the task's future is copied into the task and again when
                // it completes, and the job's state is most of a kilobyte.
                tokio::spawn(Box::pin(job.run()));
                mirror_handles = Some((head_tx, response_tap, &m.rules));
                body
            }
            _ => match body {
                Outgoing::Kept(bytes) => RequestBody::full(bytes),
                Outgoing::Stream(body) => RequestBody::Client(body),
            },
        };
        let retry_head = kept.as_ref().map(|_| (parts.method.clone(), parts.headers.clone()));
        // Usually the backend gets the client's own Host: then the header
        // hyper parsed stays as it is, and the map is not touched again.
        let host_as_sent = spec.host_header.is_none() && client_host.is_some() && parts.uri.authority().is_none();
        if !host_as_sent {
            parts.headers.insert(header::HOST, upstream_host(spec, client_host.clone()));
        }
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        // hyper's client takes a GET, HEAD or CONNECT body of unknown length
        // for none and sends nothing; the client's `Transfer-Encoding` went
        // with the hop-by-hop headers, so the framing is said again here.
        // (A body of known length gets its `Content-Length` from hyper.)
        if !body.is_end_stream() && body.size_hint().exact().is_none() {
            parts.headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }

        let live_backend = &live_route.backends[choice.backend];
        let refuse = |kind, backend: usize| Refusal::Upstream {
            kind,
            backend: route.backends[backend].spec.name.clone(),
        };
        let first = live_backend.upstream.send(Request::from_parts(parts, body)).await;
        // A client's oversized or stalled body says nothing about the backend.
        live_backend
            .health
            .record(matches!(&first, Ok(r) if r.status().as_u16() < 500) || verdict.get().is_some());
        let mut resp = match first {
            Ok(resp) => resp,
            Err(kind @ (FailureKind::Connect | FailureKind::Reset)) if kept.is_some() => {
                // No answer at all: send it once more, to another healthy backend if there is one.
                exchange.record_failure(kind);
                table.metrics.retries.with_label_values(&[&route.name, &spec.name]).inc();
                mirror_handles = None;
                let alt = live_route
                    .split
                    .failover(choice.bucket, choice.backend, |i| live_route.backends[i].health.is_healthy())
                    .unwrap_or(choice.backend);
                let (method, headers) = retry_head.expect("kept with the body");
                let client_uri = client_uri.expect("kept for retries");
                let alt_backend = &route.backends[alt];
                let mut req = Request::new(RequestBody::full(kept.unwrap_or_default()));
                *req.method_mut() = method;
                *req.headers_mut() = headers;
                req.headers_mut()
                    .insert(header::HOST, upstream_host(&alt_backend.spec, client_host));
                let path = normalize_path_with(client_uri.path(), slashes).map_err(|_| Refusal::BadRequest("malformed request path"))?;
                *req.uri_mut() = upstream_target(&alt_backend.spec, alt_backend.rewrite.as_ref(), &path, &client_uri)
                    .map_err(|_| Refusal::BadRequest("malformed request path"))?;
                exchange.target = Some((ri, alt));
                if let Some(rec) = exchange.log_record() {
                    rec.backend = Some(alt_backend.spec.name.clone());
                }
                let second = Box::pin(live_route.backends[alt].upstream.send(req)).await;
                live_route.backends[alt]
                    .health
                    .record(matches!(&second, Ok(r) if r.status().as_u16() < 500));
                second.map_err(|kind| refuse(kind, alt))?
            }
            Err(kind) => {
                return Err(match verdict.get() {
                    // The client's body, not the backend, was the problem.
                    Some(BodyProblem::TooLarge) => Refusal::BodyTooLarge,
                    Some(BodyProblem::TooSlow) => Refusal::BodyTimeout,
                    Some(BodyProblem::Broken) => Refusal::BadRequest("the request body could not be read"),
                    None => refuse(kind, choice.backend),
                });
            }
        };
        let served_by = exchange.target.map_or(choice.backend, |(_, b)| b);
        let tap = mirror_handles.map(|(head_tx, tap, rules)| {
            let _ = head_tx.send((resp.status().as_u16(), mirror::compare::compared_headers(resp.headers(), rules)));
            tap
        });

        // A response framed by both Content-Length and Transfer-Encoding is
        // ambiguous; hyper would keep the stale length (hyper PR 4181).
        if resp.headers().contains_key(header::TRANSFER_ENCODING) && resp.headers().contains_key(header::CONTENT_LENGTH) {
            return Err(refuse(FailureKind::Protocol, served_by));
        }
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switching && let Some(client_upgrade) = client_upgrade {
            tunnel(client_upgrade, hyper::upgrade::on(&mut resp));
        }
        strip_hop_by_hop(resp.headers_mut(), switching);
        if let (Some(bucket), Sticky::Pin(name)) = (choice.set_pin, &route.sticky)
            && let Ok(v) = HeaderValue::from_str(&format!("{name}={bucket}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"))
        {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
        resp.headers_mut().entry(&X_REQUEST_ID).or_insert(request_id);
        Ok((resp, tap))
    }
}

/// The origin-form URI to send `client`'s request to on `spec`; `path` is
/// its normalised path. Usually nothing changes the client's path and query,
/// and they are passed on as they came, without copying or checking again.
fn upstream_target(spec: &BackendSpec, rewrite: Option<&Rewrite>, path: &str, client: &Uri) -> Result<Uri, http::Error> {
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
    let mut pq = String::with_capacity(spec.url.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    pq.push_str(&spec.url.base_path);
    pq.push_str(&path);
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

/// Largest request body kept whole so a request can be retried.
const RETRY_BODY_LIMIT: u64 = 64 * 1024;

/// The body on its way to the backend: still streaming from the client, or kept whole.
enum Outgoing {
    Stream(ClientBody),
    Kept(Bytes),
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The host the client asked for: the request target's authority, else `Host`.
/// HTTP/1.1 requires exactly one `Host` (RFC 9112 §3.2).
fn client_host(req: &Request<Incoming>) -> Result<Option<HeaderValue>, Refusal> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(Refusal::BadRequest("more than one Host header"));
    }
    if let Some(h) = &host
        && !h.to_str().is_ok_and(valid_host)
    {
        return Err(Refusal::BadRequest("invalid Host header"));
    }
    if let Some(authority) = req.uri().authority() {
        if !valid_host(authority.as_str()) {
            return Err(Refusal::BadRequest("invalid authority in the request target"));
        }
        return Ok(HeaderValue::from_str(authority.as_str()).ok());
    }
    if host.is_none() && req.version() == Version::HTTP_11 {
        return Err(Refusal::BadRequest("missing Host header"));
    }
    Ok(host)
}

/// `host[:port]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a host name or IPv4
/// address, or an IP literal in brackets, then an optional port of digits.
/// Userinfo (`user@host`) is refused: a backend could read it as another
/// host. A name is what DNS can hold: letters, digits, `-` and `_` in
/// non-empty labels, and at most a final dot. RFC 3986 would also allow
/// `%` escapes and sub-delims (`,;=!$&'()*+`), which no host name has and
/// which split or end values downstream (`a,b` in `X-Forwarded-Host` reads
/// as two hosts); nginx passes them on, we do not. Checked byte by byte: it
/// runs on every request.
fn valid_host(s: &str) -> bool {
    let bytes = s.as_bytes();
    let host_len = if bytes.first() == Some(&b'[') {
        match bytes.iter().position(|&b| b == b']') {
            Some(end) if end > 1 && bytes[1..end].iter().all(|&b| is_ip_literal_byte(b)) => end + 1,
            _ => return false,
        }
    } else {
        let end = bytes.iter().position(|&b| b == b':').unwrap_or(bytes.len());
        // A dot before every label and none after another: no empty label.
        let mut prev = b'.';
        for &b in &bytes[..end] {
            if !is_host_name_byte(b) || (b == b'.' && prev == b'.') {
                return false;
            }
            prev = b;
        }
        if end == 0 {
            return false;
        }
        end
    };
    match &bytes[host_len..] {
        [] => true,
        [b':', port @ ..] => port.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// Letters, digits, `-`, `_` and `.`.
fn is_host_name_byte(b: u8) -> bool {
    HOST_NAME[b as usize]
}

/// Inside `[...]`: IPv6 (with an optional zone) or IPvFuture.
fn is_ip_literal_byte(b: u8) -> bool {
    IP_LITERAL[b as usize]
}

/// Every request's `Host` is checked byte by byte: a table lookup per byte
/// instead of a scan of the punctuation list.
static HOST_NAME: [bool; 256] = byte_class(b"-._");
static IP_LITERAL: [bool; 256] = byte_class(b":.%-_~");

/// ASCII letters and digits, and `extra`.
const fn byte_class(extra: &[u8]) -> [bool; 256] {
    let mut class = [false; 256];
    let mut b = 0;
    while b < 256 {
        class[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        class[extra[i] as usize] = true;
        i += 1;
    }
    class
}

/// The backend for a request: the one a trusted client forces, else the
/// split's pick for its bucket (moved off an unhealthy backend). `client`
/// names the client; it is only asked when a force header is present.
fn choose(route: &RouteSpec, live: &LiveRoute, headers: &HeaderMap, client: impl FnOnce() -> Option<IpAddr>) -> Choice {
    if let Some(force) = &route.force_header
        && let Some(wanted) = headers.get(&force.name).and_then(|v| v.to_str().ok())
        && let Some(backend) = route.backend_index(wanted.trim())
    {
        let client = client();
        if may_force(force, headers, client) {
            return Choice {
                backend,
                bucket: 0,
                set_pin: None,
                forced: true,
            };
        }
        tracing::debug!(route = %route.name, header = %force.name, client = ?client, "force header ignored: client network or token not accepted");
    }
    let (bucket, set_pin) = match &route.sticky {
        Sticky::None => (split::random_bucket(), None),
        Sticky::Cookie(name) => (
            cookie(headers, name).map_or_else(split::random_bucket, |v| split::sticky_bucket(v.as_bytes())),
            None,
        ),
        Sticky::Header(name) => (
            headers
                .get(name)
                .map_or_else(split::random_bucket, |v| split::sticky_bucket(v.as_bytes())),
            None,
        ),
        Sticky::Pin(name) => match cookie(headers, name).and_then(|v| v.parse::<u16>().ok()).filter(|b| *b < BUCKETS) {
            Some(bucket) => (bucket, None),
            None => {
                let bucket = split::random_bucket();
                (bucket, Some(bucket))
            }
        },
    };
    let picked = live.split.pick(bucket);
    let backend = if live.backends[picked].health.is_healthy() {
        picked
    } else {
        match live.split.failover(bucket, picked, |i| live.backends[i].health.is_healthy()) {
            Some(other) => {
                // The guard counts it against the backend that is down.
                if let Some(guard) = &live.guard {
                    guard.record_diverted(picked);
                }
                other
            }
            None => picked,
        }
    };
    Choice {
        backend,
        bucket,
        set_pin,
        forced: false,
    }
}

/// Whether `client` (unknown: `None`) may pin a backend with `force`: from an
/// allowed network, and with the token when the route has one.
fn may_force(force: &ForceHeader, headers: &HeaderMap, client: Option<IpAddr>) -> bool {
    client.is_some_and(|ip| force.allows_client(ip))
        && force
            .token
            .as_ref()
            .is_none_or(|token| headers.get(&FORCE_TOKEN).is_some_and(|v| token.matches(v.as_bytes())))
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

/// Splices the client and backend connections once both have switched protocols.
fn tunnel(client: hyper::upgrade::OnUpgrade, backend: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        match tokio::try_join!(client, backend) {
            Ok((client, backend)) => {
                let mut client = TokioIo::new(client);
                let mut backend = TokioIo::new(backend);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                    tracing::debug!(error = %e, "upgraded connection ended with an error");
                }
            }
            Err(e) => tracing::debug!(error = %e, "protocol upgrade failed"),
        }
    });
}

fn capture(conn: &ConnInfo, req: &Request<Incoming>) -> LogRecord {
    let h = req.headers();
    LogRecord {
        peer: conn.peer.ip(),
        method: req.method().clone(),
        uri: req.uri().clone(),
        version: req.version(),
        authorization: h
            .get(header::AUTHORIZATION)
            .filter(|v| v.as_bytes().starts_with(b"Basic "))
            .cloned(),
        referer: h.get(header::REFERER).cloned(),
        user_agent: h.get(header::USER_AGENT).cloned(),
        request_id: None,
        route: None,
        backend: None,
    }
}

#[cfg(test)]
mod tests {
    use super::{upstream_target, valid_host};
    use crate::config::Config;
    use http::Uri;

    #[test]
    fn targets_are_passed_on_as_sent_unless_something_changes_them() {
        let config = Config::parse(
            std::path::Path::new("cutover.yaml"),
            "listeners:\n  - { name: public, addr: \"127.0.0.1:0\" }\n\
             backends:\n  plain: { url: \"http://127.0.0.1:1\" }\n  based: { url: \"http://127.0.0.1:2/v2\" }\n\
             routes:\n  - name: api\n    match: { path_prefix: /api/ }\n    backends:\n      plain: {}\n      \
             based: { rewrite: { prefix: /api/, to: /new/ } }\n"
                .to_string(),
        )
        .unwrap();
        let route = &config.routes[0];
        let (plain, based) = (&route.backends[0], &route.backends[1]);
        let target = |backend: &crate::config::RouteBackend, path: &str, sent: &str| {
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

    #[test]
    fn hosts_are_names_or_addresses_with_an_optional_numeric_port() {
        for host in [
            "example.com",
            "example.com:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "my_host",
            "xn--bcher-kva.example",
            "[::1]",
            "[::1]:8080",
            "[fe80::1%25eth0]:80",
            "host:",
            "example.com.",
            "example.com.:443",
        ] {
            assert!(valid_host(host), "{host} should be accepted");
        }
        for host in [
            "",
            ":80",
            "user@example.com",
            "example.com:80@evil",
            "example.com:http",
            "example.com:80:90",
            "exa mple.com",
            "example.com/path",
            "example.com?q",
            "::1",
            "[::1",
            "[]",
            "[::1]x",
            "[::1]:8o",
            "ex\"ample",
            "a,b",
            "example.com,evil.example",
            "a;b",
            "a=b",
            "a!b",
            "a$b",
            "a&b",
            "a'b",
            "a(b)",
            "a*b",
            "a+b",
            "a~b",
            "a%2Fb",
            ".example.com",
            "example..com",
            "example.com..",
            ".",
            ".:80",
        ] {
            assert!(!valid_host(host), "{host:?} should be refused");
        }
    }
}
