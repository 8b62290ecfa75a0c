//! The client connection a request arrived on, as the request path and the
//! connection's parking (src/server/connection.rs) share it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::Request;
use http::header::HeaderValue;

use super::headers;
use super::tunnel::Tunnel;
use crate::upstream::BodyReadListener;

/// The client connection a request arrived on.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// The peer's address as a header value, for `X-Forwarded-For`.
    pub peer_value: HeaderValue,
    /// The listener's `redirect_https` port.
    pub redirect_https: Option<u16>,
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
    /// A protocol switch answered on this connection, spliced once hyper
    /// hands the connection over.
    tunnel: Mutex<Option<Tunnel>>,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, proto: &'static str, redirect_https: Option<u16>) -> ConnInfo {
        ConnInfo {
            peer,
            proto,
            peer_value: headers::ip_value(peer.ip()),
            redirect_https,
            accepted: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            unsettled: AtomicBool::new(false),
            next_started: AtomicBool::new(false),
            tunnel: Mutex::new(None),
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
        ActiveRequest {
            conn: self.clone(),
            ended: None,
        }
    }

    /// Bytes arrived from the client. With no request under way they are
    /// the start of the next one.
    pub fn bytes_received(&self) {
        if self.is_quiet() {
            self.next_started.store(true, Ordering::Relaxed);
        }
    }

    /// Bytes of the next request have arrived and it has not begun: its
    /// head is still arriving.
    pub fn is_receiving_head(&self) -> bool {
        self.is_quiet() && self.next_started.load(Ordering::Relaxed)
    }

    /// The request body was read to its end.
    pub fn body_read(&self) {
        self.unsettled.store(false, Ordering::Relaxed);
    }

    /// The connection closes after the current response.
    pub(super) fn closes_after_response(&self) {
        self.unsettled.store(true, Ordering::Relaxed);
    }

    fn touch(&self, now: Instant) {
        let ms = u64::try_from(now.saturating_duration_since(self.accepted).as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    /// When a request last ended (the accept time before the first).
    pub fn last_active(&self) -> Instant {
        self.accepted + std::time::Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed))
    }

    /// The connection switches protocols after this response: `tunnel` is
    /// to be spliced once hyper is done with it.
    pub fn switches_to(&self, tunnel: Tunnel) {
        *self.tunnel.lock().unwrap_or_else(|e| e.into_inner()) = Some(tunnel);
    }

    /// The tunnel the connection switched to, if it did.
    pub fn take_tunnel(&self) -> Option<Tunnel> {
        self.tunnel.lock().unwrap_or_else(|e| e.into_inner()).take()
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
pub struct ActiveRequest {
    conn: Arc<ConnInfo>,
    /// When it ended, if the one who ends it already read the clock.
    ended: Option<Instant>,
}

impl ActiveRequest {
    pub fn conn(&self) -> &Arc<ConnInfo> {
        &self.conn
    }

    /// The request ends, when dropped, at `now` rather than at a second
    /// reading of the clock.
    pub fn ends_at(&mut self, now: Instant) {
        self.ended = Some(now);
    }
}

impl std::ops::Deref for ActiveRequest {
    type Target = ConnInfo;

    fn deref(&self) -> &ConnInfo {
        &self.conn
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.conn.touch(self.ended.unwrap_or_else(Instant::now));
    }
}

impl BodyReadListener for ConnInfo {
    fn body_read(&self) {
        ConnInfo::body_read(self);
    }
}
