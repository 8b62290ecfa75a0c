//! One client connection: protocol detection, HTTP/1.1 keep-alive with idle
//! connections parked, HTTP/2, the idle timeout and graceful shutdown.
//!
//! An HTTP/1.1 connection waiting for its next request holds no HTTP state:
//! as soon as a response is sent and nothing more is arriving, hyper's
//! connection (its read and write buffers, parser state and timers) is
//! taken apart and only the socket is kept, waiting to become readable.
//! When the next request's bytes arrive, a new hyper connection picks the
//! socket up. Idle keep-alive connections then cost little more than the
//! kernel's socket, as in nginx.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

mod framing;
mod send_watch;
mod stream_watch;

use crate::BoxError;
use crate::config::ServerSettings;
use crate::proxy::body::ResponseBody;
use crate::proxy::{ConnInfo, Proxy};
use framing::FramingCheck;
use send_watch::SendWatch;
use stream_watch::StreamExecutor;

/// How long an HTTP/1.1 connection waits for its next request before it is
/// parked. Keep-alive clients under load send their next request well
/// within this and keep their hyper connection; an idle one gives its
/// buffers back.
const PARK_AFTER: Duration = Duration::from_millis(100);

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Deadlines of a client connection.
#[derive(Clone, Copy)]
pub(super) struct ConnTimeouts {
    /// For the TLS handshake and the first bytes.
    pub handshake: Duration,
    /// With no request under way for this long, the connection is closed.
    pub idle: Duration,
    /// A response the client takes none of for this long ends the
    /// connection (HTTP/1.1); zero: never.
    pub send: Duration,
}

/// How client connections are served, for both protocols.
pub(super) struct ConnBuilders {
    /// Client connections: their head deadline is [`drive_http1`]'s.
    http1: http1::Builder,
    /// The admin listener's connections: hyper's own head deadline.
    admin_http1: http1::Builder,
    http2: http2::Builder<StreamExecutor>,
    /// `server.max_headers`: hyper applies it to HTTP/1.1 heads only.
    max_headers: usize,
    /// `server.max_header_bytes`, for the framing check.
    max_header_bytes: usize,
}

impl ConnBuilders {
    pub(super) fn new(settings: &ServerSettings) -> ConnBuilders {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            // hyper would arm a timer for every request head, allocated and
            // registered as it starts waiting for the head; the deadline is
            // kept by `drive_http1` instead, armed only for a head that does
            // not arrive whole.
            .header_read_timeout(None)
            .max_buf_size(settings.max_header_bytes)
            .max_headers(settings.max_headers)
            .keep_alive(true);
        let mut admin_http1 = http1.clone();
        // Without a timer hyper ignores header_read_timeout, and slow
        // clients would hold admin connections forever.
        admin_http1.header_read_timeout(settings.header_read_timeout);
        let mut http2 = http2::Builder::new(StreamExecutor {
            limit: settings.send_timeout,
        });
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256);
        ConnBuilders {
            http1,
            admin_http1,
            http2,
            max_headers: settings.max_headers,
            max_header_bytes: settings.max_header_bytes,
        }
    }

    /// The HTTP/1.1 settings of the admin listener.
    pub(super) fn admin_http1(&self) -> &http1::Builder {
        &self.admin_http1
    }
}

/// A client stream that can wait for bytes without reading them.
pub(super) trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready once the socket has bytes (or an end) to read.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// The TCP socket underneath.
    fn socket(&self) -> &TcpStream;
}

impl ClientStream for TcpStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }

    fn socket(&self) -> &TcpStream {
        self
    }
}

impl ClientStream for Box<TlsStream<TcpStream>> {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A parked connection's last read came back empty, so rustls holds
        // no plaintext: new bytes can only come from the socket.
        self.get_ref().0.poll_read_ready(cx)
    }

    fn socket(&self) -> &TcpStream {
        self.get_ref().0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Http1,
    Http2,
}

/// Serves HTTP/1.1 or HTTP/2 on one client connection until it ends, stays
/// idle for `timeouts.idle`, or shutdown asks it to finish its in-flight
/// requests and close.
pub(super) async fn serve<S: ClientStream>(
    mut stream: S,
    conn: Arc<ConnInfo>,
    proxy: Arc<Proxy>,
    builders: &ConnBuilders,
    timeouts: ConnTimeouts,
    shutdown: CancellationToken,
) {
    let peer = conn.peer;
    // The first bytes are due within the handshake deadline whatever ALPN
    // said: hyper's own timers only start once a protocol is chosen.
    // A connection that has sent nothing yet is closed at shutdown: clients
    // open connections they may never use, and one must not hold the drain.
    let Some(first) = shutdown
        .run_until_cancelled(tokio::time::timeout(timeouts.handshake, sniff(&mut stream)))
        .await
    else {
        return;
    };
    let (protocol, first_bytes) = match first {
        Ok(Ok(Some(found))) => found,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "client connection failed before its first request");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no request within header_read_timeout");
            return;
        }
    };
    let framing = (protocol == Protocol::Http1).then(|| FramingCheck::new(builders.max_header_bytes, builders.max_headers));
    let socket = stream.socket().as_raw_fd();
    let io = ClientIo::new(stream, first_bytes, conn.clone(), framing).watching_socket(socket);
    let serve_request = {
        let conn = conn.clone();
        move |req: Request<Incoming>| proxy.clone().serve(conn.begin_request(&req), req)
    };
    match protocol {
        Protocol::Http1 => {
            // Boxed: hyper keeps a slot the size of the request future for
            // the whole life of a connection.
            let service = service_fn(move |req| Box::pin(serve_request(req)));
            serve_http1(io, service, &conn, &builders.http1, timeouts, &shutdown).await;
            // Shutdown closes a tunnel at once: it has no request to finish,
            // and its client reconnects.
            if let Some(tunnel) = conn.take_tunnel() {
                shutdown.run_until_cancelled(tunnel.run()).await;
            }
        }
        Protocol::Http2 => {
            let max_headers = builders.max_headers;
            let service = service_fn(move |req: Request<Incoming>| -> ResponseFuture {
                if header_fields(req.headers()) > max_headers {
                    return Box::pin(std::future::ready(Ok(too_many_headers())));
                }
                Box::pin(serve_request(req))
            });
            Box::pin(async {
                let connection = builders.http2.serve_connection(TokioIo::new(io), service);
                tokio::pin!(connection);
                // hyper has no idle timeout of its own for HTTP/2.
                let idle = timeouts.idle;
                let idle_check = tokio::time::sleep(idle);
                tokio::pin!(idle_check);
                loop {
                    tokio::select! {
                        result = connection.as_mut() => {
                            if let Err(e) = result {
                                tracing::debug!(%peer, error = %e, "client connection ended with an error");
                            }
                            return;
                        }
                        _ = shutdown.cancelled() => break,
                        _ = idle_check.as_mut() => match next_idle_check(&conn, idle) {
                            Some(at) => idle_check.as_mut().reset(at.into()),
                            None => break,
                        },
                    }
                }
                // In-flight streams finish; nothing new starts.
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            })
            .await
        }
    }
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

/// How many fields a request head has as HTTP/1.1 counts them: HTTP/2
/// clients may send each cookie as a field of its own (RFC 9113 §8.2.3),
/// which HTTP/1.1 carries in one.
fn header_fields(headers: &HeaderMap) -> usize {
    let all = headers.len();
    match headers.get_all(header::COOKIE).iter().count() {
        0 => all,
        cookies => all - (cookies - 1),
    }
}

/// What hyper answers an HTTP/1.1 head with more than `max_headers` fields.
fn too_many_headers() -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::local(
        "request header fields too large: more than server.max_headers fields\n",
        None,
    ));
    *resp.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// When an idle check should look again; `None` once the connection has
/// had no request under way for `idle` and is to close.
fn next_idle_check(conn: &ConnInfo, idle: Duration) -> Option<std::time::Instant> {
    let now = std::time::Instant::now();
    if !conn.is_quiet() {
        return Some(now + idle / 4);
    }
    let quiet_until = conn.last_active() + idle;
    if now < quiet_until {
        return Some(quiet_until);
    }
    tracing::debug!(peer = %conn.peer, "closing an idle client connection");
    None
}

/// Reads until the bytes tell the HTTP/2 preface from anything else.
/// Returns the protocol with the bytes read, or `None` if the client closed
/// without sending any.
async fn sniff<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<(Protocol, Bytes)>> {
    let mut seen = [0u8; H2_PREFACE.len()];
    let mut len = 0;
    while len < seen.len() {
        let n = stream.read(&mut seen[len..]).await?;
        if n == 0 {
            return Ok(if len == 0 {
                None
            } else {
                Some((Protocol::Http1, Bytes::copy_from_slice(&seen[..len])))
            });
        }
        len += n;
        if seen[..len] != H2_PREFACE[..len] {
            return Ok(Some((Protocol::Http1, Bytes::copy_from_slice(&seen[..len]))));
        }
    }
    Ok(Some((Protocol::Http2, Bytes::copy_from_slice(&seen))))
}

/// What a parked HTTP/1.1 connection needs of its service, spelled once.
trait RequestService:
    hyper::service::HttpService<
        hyper::body::Incoming,
        Future: Unpin + Send + 'static,
        ResBody: http_body::Body<Error: Into<BoxError>> + 'static,
        Error: Into<BoxError>,
    > + Unpin
{
}

impl<T> RequestService for T where
    T: hyper::service::HttpService<
            hyper::body::Incoming,
            Future: Unpin + Send + 'static,
            ResBody: http_body::Body<Error: Into<BoxError>> + 'static,
            Error: Into<BoxError>,
        > + Unpin
{
}

type Parts<S, Svc> = http1::Parts<TokioIo<ClientIo<S>>, Svc>;

/// Serves HTTP/1.1 requests, parking the connection between them.
async fn serve_http1<S, Svc>(
    mut io: ClientIo<S>,
    mut service: Svc,
    conn: &ConnInfo,
    builder: &http1::Builder,
    timeouts: ConnTimeouts,
    shutdown: &CancellationToken,
) where
    S: ClientStream,
    Svc: RequestService,
{
    let idle = timeouts.idle;
    // Before hyper's head-read timer (running while it waits) could fire.
    let park_after = PARK_AFTER.min(timeouts.handshake / 2);
    // Both live as long as the connection: a request costs no timer
    // registration and no waiter on the shutdown token.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let idle_check = tokio::time::sleep(idle);
    tokio::pin!(idle_check);
    loop {
        // Parked: only the socket is held until the next request's bytes.
        while io.rewound.is_empty() {
            tokio::select! {
                biased;
                _ = cancelled.as_mut() => return,
                _ = idle_check.as_mut() => match next_idle_check(conn, idle) {
                    Some(at) => idle_check.as_mut().reset(at.into()),
                    None => return,
                },
                readable = poll_fn(|cx| io.stream.poll_readable(cx)) => match readable {
                    Ok(()) => break,
                    Err(_) => return,
                },
            }
        }
        let watch = io.watch.clone();
        // Boxed: a parked connection then holds no room for hyper's state.
        let connection = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
        let timers = Http1Timers {
            park_after,
            head: timeouts.handshake,
            send: timeouts.send,
        };
        match Box::pin(drive_http1(connection, conn, &watch, timers, cancelled.as_mut())).await {
            Some(parts) => {
                io = parts.io.into_inner();
                io.rewind(parts.read_buf);
                service = parts.service;
            }
            None => return,
        }
    }
}

/// The park deadline of [`drive_http1`]'s timer, moved lazily: each request
/// pushes the deadline later, but the timer is only reset once it has
/// fired early (at most once per `park_after` on a busy connection), not
/// after every request, and polled once after each reset. Between the
/// polls its registration holds the task's waker, which never changes:
/// the connection is served by one task from start to end.
#[derive(Default)]
struct ParkTimer {
    /// The timer was polled since its last reset, so its firing wakes the task.
    polled: bool,
}

impl ParkTimer {
    /// Ready once the connection has been quiet until `due`.
    fn poll(&mut self, mut timer: Pin<&mut tokio::time::Sleep>, due: tokio::time::Instant, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if timer.is_elapsed() {
                if timer.deadline() >= due {
                    return Poll::Ready(());
                }
                // It fired for an earlier request's end.
                timer.as_mut().reset(due);
                self.polled = false;
            } else if !self.polled || timer.deadline() > due {
                // Armed for something else (a head's deadline, or the
                // connection's start): from now on it is the park deadline.
                if timer.deadline() != due {
                    timer.as_mut().reset(due);
                }
                self.polled = false;
            }
            if self.polled {
                return Poll::Pending;
            }
            self.polled = true;
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// The shutdown token, as [`drive_http1`] polls it on each wake-up. Each
/// poll of the token takes its lock, so it is polled once to register the
/// task's waker, and again only once [`begin_shutdown`] has said that a
/// shutdown has begun.
struct ShutdownWatch<'a, 'b> {
    cancelled: Pin<&'a mut tokio_util::sync::WaitForCancellationFuture<'b>>,
    polled: bool,
}

impl ShutdownWatch<'_, '_> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.polled && !SHUTDOWN_BEGUN.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        self.polled = true;
        self.cancelled.as_mut().poll(cx)
    }
}

/// Set before any server in the process cancels its shutdown token; never cleared.
static SHUTDOWN_BEGUN: AtomicBool = AtomicBool::new(false);

/// Cancels `token`, the shutdown token of a server's connections. Every
/// cancellation of such a token goes through here: an HTTP/1.1 connection
/// polls its token only once this has been called ([`ShutdownWatch`]).
pub(super) fn begin_shutdown(token: &CancellationToken) {
    SHUTDOWN_BEGUN.store(true, Ordering::Release);
    token.cancel();
}

/// The deadlines [`drive_http1`] keeps.
#[derive(Clone, Copy)]
struct Http1Timers {
    /// Quiet this long between requests, the connection is parked.
    park_after: Duration,
    /// A request head must be whole this long after its first bytes were
    /// seen (`header_read_timeout`).
    head: Duration,
    /// `send_timeout`.
    send: Duration,
}

/// Runs one hyper HTTP/1.1 connection until it ends (`None`) or goes quiet
/// between requests: then it is taken apart and its socket, with any bytes
/// already read, handed back to be parked. A request head that has begun
/// and is not whole within `timers.head` ends the connection.
async fn drive_http1<S, Svc>(
    mut connection: http1::UpgradeableConnection<TokioIo<ClientIo<S>>, Svc>,
    conn: &ConnInfo,
    watch: &IoWatch,
    timers: Http1Timers,
    cancelled: Pin<&mut tokio_util::sync::WaitForCancellationFuture<'_>>,
) -> Option<Parts<S, Svc>>
where
    S: ClientStream,
    Svc: RequestService,
{
    enum Step {
        Ended(hyper::Result<()>),
        Quiet,
        SlowHead,
        SlowReader,
        Shutdown,
    }
    // One timer, for whichever deadline applies: parking when the
    // connection waits between requests, the head's while one arrives.
    let timer = tokio::time::sleep(timers.park_after);
    tokio::pin!(timer);
    let mut park = ParkTimer::default();
    let mut head_armed = false;
    let mut shutdown = ShutdownWatch { cancelled, polled: false };
    let mut send = SendWatch::new(timers.send);
    let step = poll_fn(|cx| {
        if let Poll::Ready(result) = Pin::new(&mut connection).poll(cx) {
            return Poll::Ready(Step::Ended(result));
        }
        if shutdown.poll(cx).is_ready() {
            return Poll::Ready(Step::Shutdown);
        }
        if send.poll(watch, cx).is_ready() {
            return Poll::Ready(Step::SlowReader);
        }
        // A head arriving whole becomes a request within the poll that
        // read it: only one still incomplete is seen here.
        if conn.is_receiving_head() {
            if !head_armed {
                head_armed = true;
                park = ParkTimer::default();
                timer.as_mut().reset(tokio::time::Instant::now() + timers.head);
            }
            return timer.as_mut().poll(cx).map(|()| Step::SlowHead);
        }
        head_armed = false;
        if !(conn.is_between_requests() && watch.waiting_for_request()) {
            return Poll::Pending;
        }
        // Quiet since the last request ended: park once that has lasted
        // `park_after`.
        let due = (conn.last_active() + timers.park_after).into();
        park.poll(timer.as_mut(), due, cx).map(|()| Step::Quiet)
    })
    .await;
    match step {
        Step::Ended(result) => {
            if let Err(e) = result {
                tracing::debug!(peer = %conn.peer, error = %e, "client connection ended with an error");
            }
            None
        }
        Step::SlowHead => {
            tracing::debug!(peer = %conn.peer, "no whole request head within header_read_timeout");
            None
        }
        Step::SlowReader => {
            tracing::debug!(peer = %conn.peer, "the client took none of the response within send_timeout");
            None
        }
        Step::Shutdown => {
            // The request under way finishes; nothing new starts.
            Pin::new(&mut connection).graceful_shutdown();
            let _ = (&mut connection).await;
            None
        }
        Step::Quiet => {
            // Idle, hyper closes the connection at once on a graceful
            // shutdown, touching neither the socket (whose shutdown is
            // skipped while parking) nor anything else.
            watch.parking.store(true, Ordering::Relaxed);
            Pin::new(&mut connection).graceful_shutdown();
            let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut connection).poll(cx))).await;
            watch.parking.store(false, Ordering::Relaxed);
            match polled {
                Poll::Ready(Ok(())) if !watch.touched_while_parking.swap(false, Ordering::Relaxed) => connection.into_parts(),
                // It did something after all: never reuse a connection in a
                // state not known for sure; close it as hyper meant to.
                Poll::Ready(_) => None,
                Poll::Pending => {
                    let _ = (&mut connection).await;
                    None
                }
            }
        }
    }
}

/// What the socket was last asked to do, seen from outside hyper.
#[derive(Default)]
struct IoWatch {
    /// The latest read found nothing to read.
    read_blocked: AtomicBool,
    /// Bytes were written since the last completed flush.
    unflushed: AtomicBool,
    /// The latest write or flush had to wait for the client.
    write_blocked: AtomicBool,
    /// Writes and flushes done, for [`SendWatch`]; only the connection's task writes it.
    writes: AtomicU64,
    /// The client's socket, open while its connection is driven.
    socket: Option<RawFd>,
    /// A quiet connection is being taken apart: its socket must stay open.
    parking: AtomicBool,
    /// The socket was read or written while parking.
    touched_while_parking: AtomicBool,
}

impl IoWatch {
    /// Bytes written to the socket that the client has not yet taken.
    fn unsent(&self) -> Option<u32> {
        let fd = self.socket?;
        let mut queued: libc::c_int = 0;
        // SAFETY: `fd` is the connection's socket, open while the connection
        // is driven (the only time this is asked); TIOCOUTQ writes one int.
        let ok = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) } == 0;
        ok.then(|| u32::try_from(queued).unwrap_or(0))
    }

    /// Records how a write or flush went.
    fn wrote<T>(&self, polled: &Poll<io::Result<T>>) {
        let blocked = polled.is_pending();
        self.write_blocked.store(blocked, Ordering::Relaxed);
        if !blocked {
            self.writes.store(self.writes.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
    }

    /// Everything written has been flushed and the client has sent nothing
    /// more: with no request in flight, the connection waits for the next.
    fn waiting_for_request(&self) -> bool {
        self.read_blocked.load(Ordering::Relaxed) && !self.unflushed.load(Ordering::Relaxed)
    }

    fn touched(&self) {
        if self.parking.load(Ordering::Relaxed) {
            self.touched_while_parking.store(true, Ordering::Relaxed);
        }
    }
}

/// A client stream as hyper sees it: bytes already read are replayed first,
/// HTTP/1 request heads are checked on their way (see [`framing`]), and
/// what hyper does with the socket is watched so that a quiet connection
/// can be parked.
pub(super) struct ClientIo<S> {
    stream: S,
    rewound: Bytes,
    /// `rewound` holds bytes the framing check has not seen: the sniffed
    /// first bytes (a parked connection's were seen when first read).
    rewound_unchecked: bool,
    /// HTTP/1 only.
    framing: Option<FramingCheck>,
    watch: Arc<IoWatch>,
    conn: Arc<ConnInfo>,
}

impl<S> ClientIo<S> {
    fn new(stream: S, first_bytes: Bytes, conn: Arc<ConnInfo>, framing: Option<FramingCheck>) -> ClientIo<S> {
        ClientIo {
            stream,
            rewound: first_bytes,
            rewound_unchecked: true,
            framing,
            watch: Arc::default(),
            conn,
        }
    }

    /// Lets the watch ask the kernel how much of the response the client has
    /// yet to take (`fd` is the stream's socket).
    fn watching_socket(mut self, fd: RawFd) -> ClientIo<S> {
        self.watch = Arc::new(IoWatch {
            socket: Some(fd),
            ..IoWatch::default()
        });
        self
    }

    /// Replays `bytes` (a parked connection's start of its next request)
    /// before reading on. Copied: `bytes` may keep hyper's whole read buffer
    /// alive, even when empty.
    fn rewind(&mut self, bytes: Bytes) {
        debug_assert!(self.rewound.is_empty());
        self.rewound_unchecked = false;
        if !bytes.is_empty() {
            self.rewound = Bytes::copy_from_slice(&bytes);
        }
    }

    /// Checks the client's bytes just put in `buf` after `from`. From a
    /// refused head on they are dropped, and hyper reads instead a head it
    /// refuses (400, `Connection: close`), after the requests before it.
    fn check_framing(&mut self, buf: &mut ReadBuf<'_>, from: usize) {
        let Some(refusal) = self.framing.as_mut().and_then(|check| check.check(&buf.filled()[from..])) else {
            return;
        };
        tracing::debug!(peer = %self.conn.peer, "refused {}", refusal.why.as_str());
        buf.set_filled(from + refusal.at);
        let n = framing::NOT_A_REQUEST.len().min(buf.remaining());
        buf.put_slice(&framing::NOT_A_REQUEST[..n]);
        self.rewound = Bytes::from_static(&framing::NOT_A_REQUEST[n..]);
        self.rewound_unchecked = false;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientIo<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if !this.rewound.is_empty() {
            let n = this.rewound.len().min(buf.remaining());
            buf.put_slice(&this.rewound[..n]);
            this.rewound.advance(n);
            this.conn.bytes_received();
            if this.rewound_unchecked {
                this.check_framing(buf, before);
            }
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.watch.read_blocked.store(polled.is_pending(), Ordering::Relaxed);
        if polled.is_ready() {
            this.watch.touched();
            if buf.filled().len() > before {
                this.conn.bytes_received();
                this.check_framing(buf, before);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientIo<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.watch.unflushed.store(true, Ordering::Relaxed);
        this.watch.touched();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.watch.wrote(&polled);
        polled
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.watch.unflushed.store(true, Ordering::Relaxed);
        this.watch.touched();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.watch.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.watch.wrote(&polled);
        if let Poll::Ready(Ok(())) = polled {
            this.watch.unflushed.store(false, Ordering::Relaxed);
        }
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.watch.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sniffed(chunks: &[&[u8]]) -> Option<(Protocol, Bytes)> {
        let mut builder = tokio_test_io(chunks);
        sniff(&mut builder).await.unwrap()
    }

    fn tokio_test_io(chunks: &[&[u8]]) -> impl AsyncRead + Unpin {
        let joined: Vec<u8> = chunks.concat();
        std::io::Cursor::new(joined)
    }

    #[tokio::test]
    async fn sniffing_tells_the_http2_preface_from_http1() {
        assert_eq!(
            sniffed(&[H2_PREFACE, b"\0\0"]).await,
            Some((Protocol::Http2, Bytes::from_static(H2_PREFACE)))
        );
        let (protocol, bytes) = sniffed(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        assert!(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".starts_with(&bytes));
        // A request that begins like the preface but leaves it: HTTP/1.1.
        let (protocol, bytes) = sniffed(&[b"PRI * HTTP/1.1\r\n\r\n"]).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        assert_eq!(&bytes[..], b"PRI * HTTP/1.1\r\n\r\n");
        assert_eq!(sniffed(&[]).await, None);
        assert_eq!(sniffed(&[b"PRI"]).await, Some((Protocol::Http1, Bytes::from_static(b"PRI"))));
    }

    #[tokio::test]
    async fn rewound_bytes_are_read_before_the_stream() {
        let conn = Arc::new(ConnInfo::new("127.0.0.1:1".parse().unwrap(), "http", None));
        let mut io = ClientIo::new(std::io::Cursor::new(b" world".to_vec()), Bytes::from_static(b"hello"), conn, None);
        let mut all = String::new();
        io.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }

    #[tokio::test]
    async fn a_refused_head_reaches_hyper_as_no_request_at_all() {
        let conn = Arc::new(ConnInfo::new("127.0.0.1:1".parse().unwrap(), "http", None));
        let served = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
        let refused = b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        // In the sniffed first bytes, or in bytes read from the socket. (A
        // head split across reads is cut where the read completing it starts.)
        for (first, rest) in [([&served[..], refused].concat(), Vec::new()), (served.to_vec(), refused.to_vec())] {
            let check = FramingCheck::new(8192, 100);
            let mut io = ClientIo::new(std::io::Cursor::new(rest), Bytes::from(first), conn.clone(), Some(check));
            let (mut all, mut buf) = (Vec::new(), [0u8; 4096]);
            loop {
                match io.read(&mut buf).await.unwrap() {
                    0 => break,
                    n => all.extend_from_slice(&buf[..n]),
                }
            }
            assert_eq!(all, [&served[..], framing::NOT_A_REQUEST].concat());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_parked_once_quiet_for_park_after_since_its_last_request() {
        use tokio::time::{Instant, advance, timeout};
        let park_after = Duration::from_millis(100);
        let timer = tokio::time::sleep(park_after);
        tokio::pin!(timer);
        let mut park = ParkTimer::default();
        // A request ends every 30 ms for 300 ms: the deadline moves on each
        // time, and the timer (first due at 100 ms) fires early and re-arms.
        let mut last_end = Instant::now();
        for _ in 0..10 {
            let due = last_end + park_after;
            let polled = poll_fn(|cx| Poll::Ready(park.poll(timer.as_mut(), due, cx))).await;
            assert!(polled.is_pending(), "parked {:?} after the last request", last_end.elapsed());
            advance(Duration::from_millis(30)).await;
            last_end = Instant::now();
        }
        // Then quiet: woken by the timer, park_after after the last request.
        let due = last_end + park_after;
        timeout(Duration::from_secs(5), poll_fn(|cx| park.poll(timer.as_mut(), due, cx)))
            .await
            .expect("the timer wakes the connection");
        let quiet = last_end.elapsed();
        assert!(quiet >= park_after && quiet <= park_after + Duration::from_millis(2), "{quiet:?}");
    }
}
