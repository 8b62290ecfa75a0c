//! Keep-alive connections to one backend, on hyper's HTTP/1 client connection.
//!
//! Idle connections wait on a stack: the most recently used is the warmest
//! and is taken first, and the ones left at the bottom age out. A connection
//! goes back on the stack when its response body has been read to the end —
//! HTTP/1 cannot carry the next request before then — straight from the body
//! that saw the end, with no task spawned per request. A request that a
//! pooled connection never wrote (the backend closed it while it sat idle,
//! hyper issue 2136) is sent again on another connection.
//!
//! Each serving thread keeps its own stack (a shard): a connection made on
//! a thread is driven by that thread's runtime, and handing it to another
//! thread would turn every request into two cross-core wake-ups.

use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use super::body::RequestBody;
use super::failure::{Failure, FailureKind, classify};
use super::files::FileBody;
use super::resolve::Addresses;
use crate::config::BackendUrl;

/// Where and how connections are made.
pub struct Connector {
    /// The backend's name, for messages.
    backend: Arc<str>,
    endpoint: Endpoint,
    connect_timeout: Duration,
    /// For `https://` backends: the client configuration and the name sent in SNI.
    tls: Option<(tokio_rustls::TlsConnector, rustls_pki_types::ServerName<'static>)>,
}

/// Where a backend listens.
enum Endpoint {
    Tcp(Addresses),
    Unix(PathBuf),
}

impl Connector {
    pub fn new(
        backend: Arc<str>,
        url: &BackendUrl,
        connect_timeout: Duration,
        tls: Option<(tokio_rustls::TlsConnector, rustls_pki_types::ServerName<'static>)>,
    ) -> Connector {
        let endpoint = match &url.socket {
            Some(path) => Endpoint::Unix(path.clone()),
            None => {
                let default_port = if url.scheme == http::uri::Scheme::HTTPS { 443 } else { 80 };
                let port = url.authority.port_u16().unwrap_or(default_port);
                Endpoint::Tcp(Addresses::new(backend.clone(), bare_host(&url.authority), port))
            }
        };
        Connector {
            backend,
            endpoint,
            connect_timeout,
            tls,
        }
    }

    async fn connect(&self) -> Result<SendRequest<RequestBody>, Failure> {
        let addresses = match &self.endpoint {
            Endpoint::Tcp(addresses) => addresses,
            Endpoint::Unix(path) => return handshake(self.connect_unix(path).await?).await,
        };
        let tcp = self.connect_tcp(addresses).await?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await,
            Some((tls, name)) => {
                let stream = tokio::time::timeout(self.connect_timeout, tls.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| CONNECT)?
                    .map_err(|e| {
                        tracing::debug!(error = %e, "backend TLS handshake failed");
                        CONNECT
                    })?;
                handshake(stream).await
            }
        }
    }

    /// A TCP connection to the first of the host's addresses that takes
    /// one, all within the connect timeout.
    async fn connect_tcp(&self, addresses: &Addresses) -> Result<TcpStream, Failure> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let attempt = async {
            let addrs = addresses.to_connect().await?;
            let mut last = io::Error::other("no addresses");
            for (tried, addr) in addrs.iter().enumerate() {
                // Each address gets an equal share of the time left: one
                // that drops connects (a stale record) cannot use it all up.
                let left = u32::try_from(addrs.len() - tried).unwrap_or(u32::MAX);
                let share = deadline.saturating_duration_since(tokio::time::Instant::now()) / left;
                match tokio::time::timeout(share, TcpStream::connect(addr)).await {
                    Ok(Ok(tcp)) => return Ok(tcp),
                    Ok(Err(e)) => last = e,
                    Err(_) => last = io::ErrorKind::TimedOut.into(),
                }
            }
            Err(last)
        };
        let failure = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) => connect_failure(&e, &self.backend),
            Err(_) => CONNECT,
        };
        if failure == CONNECT {
            addresses.all_failed();
        }
        Err(failure)
    }

    /// A connection to the backend's Unix socket. A missing socket (the
    /// app server is down) or a full listen queue fails at once.
    async fn connect_unix(&self, path: &Path) -> Result<UnixStream, Failure> {
        match tokio::time::timeout(self.connect_timeout, UnixStream::connect(path)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) if e.kind() == io::ErrorKind::PermissionDenied => {
                // Not the backend's fault and not passing: the operator must hear of it.
                static LAST_WARNED: AtomicU64 = AtomicU64::new(0);
                if first_this_second(&LAST_WARNED) {
                    tracing::warn!(backend = %self.backend, socket = %path.display(), "cannot connect to the backend's socket: permission denied (make it writable by cutover's user)");
                }
                Err(CONNECT)
            }
            Ok(Err(e)) => {
                tracing::debug!(backend = %self.backend, socket = %path.display(), error = %e, "cannot connect to the backend's socket");
                Err(connect_failure(&e, &self.backend))
            }
            Err(_) => Err(CONNECT),
        }
    }
}

/// The authority's host, without the brackets of an IPv6 address.
pub fn bare_host(authority: &http::uri::Authority) -> &str {
    let host = authority.host();
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

const CONNECT: Failure = Failure::Backend(FailureKind::Connect);

/// Whose fault a failed connect is. Out of local ports (every one in use
/// or in TIME_WAIT towards this backend) or file descriptors, the host is
/// at fault, not the backend; said at most once a second, since it then
/// fails every new connection.
fn connect_failure(error: &std::io::Error, backend: &str) -> Failure {
    if !matches!(
        error.raw_os_error(),
        Some(libc::EADDRNOTAVAIL | libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    ) {
        return CONNECT;
    }
    static LAST_WARNED: AtomicU64 = AtomicU64::new(0);
    if first_this_second(&LAST_WARNED) {
        tracing::warn!(
            backend,
            %error,
            "cannot open a backend connection: this host is out of local ports or file descriptors \
             (widen net.ipv4.ip_local_port_range, raise the open-file limit, or keep more idle connections with pool_max_idle)"
        );
    }
    Failure::Local
}

/// Whether this is the first call this second for `last` (a warning said
/// at most once a second, when it would otherwise come with every request).
fn first_this_second(last: &AtomicU64) -> bool {
    let now = crate::clock::now_secs();
    last.swap(now, Ordering::Relaxed) != now
}

async fn handshake<T>(io: T) -> Result<SendRequest<RequestBody>, Failure>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        // Most requests to a backend are a head alone: written as one flat
        // buffer, hyper skips its queue of buffers and the vectored write.
        .writev(false)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|_| CONNECT)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "backend connection ended");
        }
    });
    Ok(sender)
}

/// At most 64 serving threads, plus shard 0.
const MAX_SHARDS: usize = 65;

thread_local! {
    /// Shard 0 serves threads outside the serving threads (health checks);
    /// serving thread `i` uses shard `i + 1`.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Makes the calling thread use pool shard `shard` from now on.
pub fn set_shard(shard: usize) {
    SHARD.with(|s| s.set(shard));
}

static SHARDS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Sets how many serving threads there are (once, before the first pool).
pub fn set_serving_threads(threads: usize) {
    let _ = SHARDS.set(threads.min(MAX_SHARDS - 1) + 1);
}

fn shard_count() -> usize {
    *SHARDS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_SHARDS - 1) + 1)
}

struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

/// The idle connections of one backend.
pub struct Pool {
    shards: Box<[Mutex<Vec<Idle>>]>,
    /// Per shard.
    max_idle: usize,
    idle_timeout: Duration,
    connector: Connector,
}

impl Pool {
    pub fn new(connector: Connector, max_idle: usize, idle_timeout: Duration) -> Arc<Pool> {
        let shards = shard_count();
        Arc::new(Pool {
            shards: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            max_idle: max_idle.div_ceil(shards),
            idle_timeout,
            connector,
        })
    }

    /// Sends `req` (origin-form URI, headers prepared) and returns the response
    /// head; the body hands the connection back when it has been read.
    pub async fn send(self: &Arc<Self>, mut req: Request<RequestBody>) -> Result<Response<UpstreamBody>, Failure> {
        loop {
            let (mut sender, pooled) = match self.checkout() {
                Some(sender) => (sender, true),
                // Boxed: connecting (TLS included) is rare next to reuse, and
                // inline it would size every request's future for it.
                None => (Box::pin(self.connector.connect()).await?, false),
            };
            match sender.try_send_request(req).await {
                // A response framed by both Content-Length and
                // Transfer-Encoding is ambiguous, and hyper would keep the
                // stale length (hyper PR 4181): the connection is dropped.
                Ok(resp) if resp.headers().contains_key(TRANSFER_ENCODING) && resp.headers().contains_key(CONTENT_LENGTH) => {
                    return Err(Failure::Backend(FailureKind::Protocol));
                }
                Ok(resp) => return Ok(self.hand_back_after(resp, sender)),
                Err(mut err) => match err.take_message() {
                    // Never written: the idle connection had closed under it.
                    Some(unsent) if pooled => req = unsent,
                    _ => return Err(classify(err.error())),
                },
            }
        }
    }

    /// The calling thread's idle connections.
    fn shard(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        let shard = SHARD.with(Cell::get) % self.shards.len();
        self.shards[shard].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The warmest idle connection that can take a request now. Closed and
    /// expired ones are dropped; one still finishing its last exchange stays.
    fn checkout(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.shard();
        let now = Instant::now();
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let entry = &idle[i];
            if entry.sender.is_closed() || now.duration_since(entry.since) >= self.idle_timeout {
                idle.remove(i);
            } else if entry.sender.is_ready() {
                return Some(idle.remove(i).sender);
            }
        }
        None
    }

    /// Keeps a connection that has just finished an exchange. Beyond
    /// `max_idle` it is kept too, until the next [`Pool::trim_idle`]:
    /// closed at once, each would be opened again by the burst's next
    /// requests, and that churn leaves a closed socket in TIME_WAIT per
    /// connection until the local ports run out.
    fn checkin(&self, sender: SendRequest<RequestBody>) {
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = self.shard();
        let expired = self.expired(&idle, now);
        idle.drain(..expired);
        idle.push(Idle { sender, since: now });
    }

    fn hand_back_after(self: &Arc<Self>, resp: Response<Incoming>, sender: SendRequest<RequestBody>) -> Response<UpstreamBody> {
        // An upgraded connection belongs to the tunnel now.
        let slot = (resp.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| (self.clone(), sender));
        let mut body = UpstreamBody { inner: None, slot };
        resp.map(|inner| {
            body.inner = Some(Source::Http(inner));
            body.hand_back_if_done();
            body
        })
    }

    /// How many of the oldest idle connections are past the idle timeout
    /// (the oldest sit at the bottom).
    fn expired(&self, idle: &[Idle], now: Instant) -> usize {
        idle.iter().take_while(|e| now.duration_since(e.since) >= self.idle_timeout).count()
    }

    /// Closes idle connections past the idle timeout, and the oldest beyond
    /// `max_idle`. Checkout and checkin only look when the backend is used:
    /// without this, the connections of a burst would stay open, and their
    /// buffers allocated, until the next request.
    pub fn trim_idle(&self) {
        let now = Instant::now();
        for shard in &self.shards {
            let mut idle = shard.lock().unwrap_or_else(|e| e.into_inner());
            let expired = self.expired(&idle, now);
            let over = (idle.len() - expired).saturating_sub(self.max_idle);
            idle.drain(..expired + over);
        }
    }

    /// Idle connections, over all shards.
    pub fn idle_count(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }
}

/// A backend's response body: from its connection, which goes back to the
/// pool once the body has been read to its end, or from a file.
pub struct UpstreamBody {
    inner: Option<Source>,
    slot: Option<(Arc<Pool>, SendRequest<RequestBody>)>,
}

enum Source {
    Http(Incoming),
    File(FileBody),
}

/// Why a backend's response body broke off.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamBodyError {
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("reading the file failed: {0}")]
    File(#[source] io::Error),
}

impl UpstreamBody {
    /// No body, from no connection.
    pub fn empty() -> UpstreamBody {
        UpstreamBody { inner: None, slot: None }
    }

    /// The body of a file backend's answer.
    pub fn file(body: FileBody) -> UpstreamBody {
        UpstreamBody {
            inner: Some(Source::File(body)),
            slot: None,
        }
    }

    fn hand_back_if_done(&mut self) {
        if self.is_end_stream()
            && let Some((pool, sender)) = self.slot.take()
        {
            pool.checkin(sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = UpstreamBodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UpstreamBodyError>>> {
        let polled = match self.inner.as_mut() {
            None => return Poll::Ready(None),
            Some(Source::Http(inner)) => Pin::new(inner).poll_frame(cx).map_err(UpstreamBodyError::Http),
            Some(Source::File(inner)) => Pin::new(inner).poll_frame(cx).map_err(UpstreamBodyError::File),
        };
        match &polled {
            Poll::Ready(None) => {
                self.inner = None;
                self.hand_back_if_done();
            }
            // A failed body leaves the connection unusable: it is dropped.
            Poll::Ready(Some(Err(_))) => self.slot = None,
            Poll::Ready(Some(Ok(_))) => self.hand_back_if_done(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            None => true,
            Some(Source::Http(inner)) => inner.is_end_stream(),
            Some(Source::File(inner)) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            None => SizeHint::with_exact(0),
            Some(Source::Http(inner)) => inner.size_hint(),
            Some(Source::File(inner)) => inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// A loopback address that never completes a connect: a listener
    /// whose accept queue is full drops new handshakes.
    fn dropping_connects() -> (socket2::Socket, Vec<std::net::TcpStream>, SocketAddr) {
        let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        while queued.len() < 8 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(stream) => queued.push(stream),
                Err(_) => return (listener, queued, addr),
            }
        }
        panic!("the accept queue of {addr} never filled");
    }

    #[tokio::test]
    async fn an_address_that_drops_connects_leaves_time_for_the_next() {
        let (_listener, _queued, dropping) = dropping_connects();
        let good = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addresses = Addresses::scripted(vec![dropping, good.local_addr().unwrap()]);
        let connector = Connector::new("new".into(), &"http://127.0.0.1:1".parse().unwrap(), Duration::from_secs(2), None);
        // Rotation puts the dropping address first every other time.
        for _ in 0..4 {
            let tcp = connector
                .connect_tcp(&addresses)
                .await
                .expect("the good address takes the connect in the time left");
            assert_eq!(tcp.peer_addr().unwrap(), good.local_addr().unwrap());
        }
    }

    #[test]
    fn running_out_of_local_ports_or_descriptors_is_not_the_backends_failure() {
        for errno in [libc::EADDRNOTAVAIL, libc::EMFILE, libc::ENFILE] {
            let error = std::io::Error::from_raw_os_error(errno);
            assert_eq!(connect_failure(&error, "legacy"), Failure::Local, "{error}");
        }
        for errno in [libc::ECONNREFUSED, libc::ENETUNREACH, libc::EHOSTUNREACH] {
            let error = std::io::Error::from_raw_os_error(errno);
            assert_eq!(connect_failure(&error, "legacy"), CONNECT, "{error}");
        }
    }
}
