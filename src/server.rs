//! Listeners, connection lifecycle and graceful shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::IntGauge;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::config::{ConfigError, ServerSettings};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::proxy::{ConnInfo, Proxy};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    #[error("TLS: {0}")]
    Tls(crate::tls::TlsError),
    #[error("cannot start a serving thread: {0}")]
    Thread(std::io::Error),
}

/// A running proxy: its bound addresses and the means to stop it.
pub struct Running {
    pub listeners: Vec<(String, SocketAddr)>,
    pub admin_addr: SocketAddr,
    pub live: Arc<Live>,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting and drains in-flight requests (up to the drain deadline).
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Resolves once every listener has stopped and draining has finished.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Loads `config_path`, binds every listener and the admin listener, and serves.
pub async fn start(config_path: &Path) -> Result<Running, StartError> {
    let (config, weights) = Live::read_files(config_path)?;
    let metrics = Arc::new(Metrics::new());
    let access_log = AccessLog::start(&config.access_log, metrics.clone())
        .map_err(StartError::AccessLog)?
        .map(Arc::new);
    let settings = config.server;

    let tls_sources: std::collections::HashMap<String, Option<Vec<crate::tls::CertSource>>> =
        config.listeners.iter().map(|l| (l.name.clone(), l.tls.clone())).collect();
    let workers = settings.workers;
    let mut bound = Vec::new();
    for l in &config.listeners {
        let sockets = bind_group(&format!("listener {}", l.name), l.addr, workers)?;
        bound.push((l.name.clone(), sockets));
    }
    let admin_listener = bind("admin", config.admin.addr).await?;
    let admin_addr = admin_listener.local_addr().expect("bound socket has an address");

    crate::proxy::pool::set_serving_threads(settings.workers);
    let live = Arc::new(Live::new(config, weights, metrics.clone()));
    let proxy = Arc::new(Proxy {
        live: live.clone(),
        access_log: access_log.clone(),
    });
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let builder = Arc::new(connection_builder(&settings));

    // Each serving thread runs its own single-threaded runtime and accepts
    // on its own socket of every listener (SO_REUSEPORT: the kernel spreads
    // connections over them). A connection, its requests and the backend
    // connections they use then stay on one thread: no wake-up crosses to
    // another core, and no task is stolen.
    let mut listeners = Vec::new();
    let mut per_thread: Vec<Vec<ThreadListener>> = (0..workers).map(|_| Vec::new()).collect();
    for (name, sockets) in bound {
        let addr = sockets[0].local_addr().expect("bound socket has an address");
        tracing::info!(listener = %name, %addr, threads = workers, "listening");
        listeners.push((name.clone(), addr));
        let gauge = metrics.active_connections.with_label_values(&[&name]);
        let tls = match tls_sources.get(&name).cloned().flatten() {
            Some(sources) => {
                let resolver = crate::tls::CertResolver::new(sources).map_err(StartError::Tls)?;
                crate::tls::spawn_cert_reloader(resolver.clone(), shutdown.clone());
                Some(TlsAcceptor::from(crate::tls::server_config(resolver)))
            }
            None => None,
        };
        for (thread, socket) in per_thread.iter_mut().zip(sockets) {
            thread.push(ThreadListener {
                socket,
                tls: tls.clone(),
                gauge: gauge.clone(),
            });
        }
    }
    let stopped = CancellationToken::new();
    for (index, sockets) in per_thread.into_iter().enumerate() {
        let serving = Serving {
            timeouts: ConnTimeouts {
                handshake: settings.header_read_timeout,
                idle: settings.idle_timeout,
            },
            proxy: proxy.clone(),
            builder: builder.clone(),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            stopped: stopped.clone(),
        };
        std::thread::Builder::new()
            .name(format!("serve-{index}"))
            .spawn(move || serving.run(index, sockets))
            .map_err(StartError::Thread)?;
    }
    tracing::info!(addr = %admin_addr, "admin listening");
    let admin_task = tokio::spawn(admin_loop(admin_listener, live.clone()));
    if let Err(e) = crate::reload::spawn(live.clone(), shutdown.clone()) {
        tracing::warn!(error = %e, "cannot watch the config folders; reload with SIGHUP");
    }
    tokio::spawn(sample_rates(live.clone(), shutdown.clone()));
    live.start_health_checks();
    tokio::spawn(publish_health(live.clone(), shutdown.clone()));
    tokio::spawn(run_guard(live.clone(), shutdown.clone()));
    live.set_ready(true);

    let done = {
        let live = live.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            live.set_ready(false);
            tracker.close();
            let deadline = live.load().config.server.drain_timeout;
            tracing::info!(in_flight_connections = tracker.len(), deadline = ?deadline, "draining");
            if tokio::time::timeout(deadline, tracker.wait()).await.is_err() {
                tracing::warn!(
                    remaining = tracker.len(),
                    "drain deadline passed; closing the remaining connections"
                );
            }
            admin_task.abort();
            stopped.cancel();
            if let Some(log) = &access_log {
                log.flush();
            }
            tracing::info!("stopped");
        })
    };
    Ok(Running {
        listeners,
        admin_addr,
        live,
        shutdown,
        done,
    })
}

async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind {
        what: what.to_string(),
        addr,
        source,
    })
}

/// `count` listening sockets sharing `addr` through SO_REUSEPORT.
fn bind_group(what: &str, addr: SocketAddr, count: usize) -> Result<Vec<std::net::TcpListener>, StartError> {
    let error = |source| StartError::Bind {
        what: what.to_string(),
        addr,
        source,
    };
    // SO_REUSEPORT would let this share a port another process of the same
    // user already serves: claim it alone first, so a clash is an error.
    if addr.port() != 0 {
        drop(std::net::TcpListener::bind(addr).map_err(error)?);
    }
    let first = reuseport_socket(addr).map_err(error)?;
    let addr = first.local_addr().map_err(error)?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(reuseport_socket(addr).map_err(error)?);
    }
    Ok(sockets)
}

fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// One thread's socket of a listener.
struct ThreadListener {
    socket: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    gauge: IntGauge,
}

/// What a serving thread needs.
struct Serving {
    timeouts: ConnTimeouts,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Cancelled once draining is over: the thread's runtime, and any
    /// connection still on it, then goes.
    stopped: CancellationToken,
}

impl Serving {
    fn run(self, index: usize, sockets: Vec<ThreadListener>) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a serving runtime");
                return;
            }
        };
        crate::proxy::pool::set_shard(index + 1);
        runtime.block_on(async move {
            for l in sockets {
                match TcpListener::from_std(l.socket) {
                    Ok(listener) => {
                        tokio::spawn(accept_loop(
                            listener,
                            l.tls,
                            self.timeouts,
                            self.proxy.clone(),
                            self.builder.clone(),
                            l.gauge,
                            self.shutdown.clone(),
                            self.tracker.clone(),
                        ));
                    }
                    Err(e) => tracing::error!(error = %e, "cannot register a listening socket"),
                }
            }
            self.stopped.cancelled().await;
        });
    }
}

fn connection_builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Without a timer hyper ignores header_read_timeout, and slow clients hold connections forever.
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes)
        .max_headers(settings.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    builder
}

async fn sample_rates(live: Arc<Live>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(crate::rates::SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => live.rates.sample(&live.load()),
        }
    }
}

async fn publish_health(live: Arc<Live>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(crate::health::PUBLISH_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => live.health.publish(&live.metrics),
        }
    }
}

async fn run_guard(live: Arc<Live>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(crate::guard::CHECK_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {
                let live = live.clone();
                // Rolling back writes the weight file: off the async workers.
                let _ = tokio::task::spawn_blocking(move || crate::guard::check(&live)).await;
            }
        }
    }
}

/// Decrements a gauge when dropped.
struct GaugeGuard(IntGauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    timeouts: ConnTimeouts,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    gauge: IntGauge,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(ConnInfo::new(peer, if tls.is_some() { "https" } else { "http" }));
        let proxy = proxy.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        gauge.inc();
        let guard = GaugeGuard(gauge.clone());
        tracker.spawn(async move {
            let _guard = guard;
            match tls {
                None => {
                    let io = FirstBytesDeadline::new(stream, timeouts.handshake);
                    serve_connection(io, conn, proxy, &builder, timeouts.idle, shutdown).await
                }
                Some(acceptor) => match tokio::time::timeout(timeouts.handshake, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let io = FirstBytesDeadline::new(stream, timeouts.handshake);
                        serve_connection(io, conn, proxy, &builder, timeouts.idle, shutdown).await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
            }
        });
    }
}

/// Deadlines of a client connection.
#[derive(Clone, Copy)]
struct ConnTimeouts {
    /// For the TLS handshake and the first bytes.
    handshake: Duration,
    /// With no new request for this long, the connection is closed gracefully.
    idle: Duration,
}

/// Serves HTTP/1.1 and HTTP/2 on one client connection until it ends, goes
/// idle for `idle`, or shutdown asks it to finish its in-flight requests and
/// close.
async fn serve_connection<I>(
    io: I,
    conn: Arc<ConnInfo>,
    proxy: Arc<Proxy>,
    builder: &auto::Builder<TokioExecutor>,
    idle: Duration,
    shutdown: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let info = conn.clone();
    // Boxed: hyper keeps a slot the size of the request future for the
    // whole life of a connection; boxed, an idle keep-alive connection holds
    // a pointer instead of kilobytes.
    let service = service_fn(move |req| Box::pin(proxy.clone().serve(conn.clone(), req)));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    // hyper closes idle HTTP/1.1 connections itself (its head-read timer runs
    // between requests) but keeps an idle HTTP/2 connection forever.
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
            _ = idle_check.as_mut() => {
                let quiet_until = info.last_request() + idle;
                if tokio::time::Instant::now() >= quiet_until.into() {
                    tracing::debug!(%peer, "closing an idle client connection");
                    break;
                }
                idle_check.as_mut().reset(quiet_until.into());
            }
        }
    }
    // In-flight requests and streams finish; nothing new starts.
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// Serves the admin API until aborted: it stays up while the proxy drains,
/// so `/readyz` can tell load balancers to stop sending traffic.
async fn admin_loop(listener: TcpListener, live: Arc<Live>) {
    let builder = hyper::server::conn::http1::Builder::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let live = live.clone();
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| crate::admin::handle(live.clone(), peer, req)),
        );
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

pin_project_lite::pin_project! {
    /// Fails reads with `TimedOut` once `deadline` has passed, until the first
    /// bytes tell HTTP/1.1 from the HTTP/2 preface. hyper's
    /// `header_read_timeout` only starts after that protocol detection, so
    /// without this a client that connects and sends nothing, or a slice of
    /// the preface, would hold its connection forever.
    struct FirstBytesDeadline<I> {
        #[pin]
        io: I,
        seen: usize,
        deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<I> FirstBytesDeadline<I> {
    fn new(io: I, timeout: Duration) -> FirstBytesDeadline<I> {
        FirstBytesDeadline {
            io,
            seen: 0,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<I: tokio::io::AsyncRead> tokio::io::AsyncRead for FirstBytesDeadline<I> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) if this.deadline.is_some() => {
                let fresh = &buf.filled()[before..];
                let expected = &H2_PREFACE[(*this.seen).min(H2_PREFACE.len())..];
                let diverged = fresh.iter().zip(expected).any(|(a, b)| a != b);
                *this.seen += fresh.len();
                if fresh.is_empty() || diverged || *this.seen >= H2_PREFACE.len() {
                    *this.deadline = None;
                }
            }
            Poll::Pending => {
                if let Some(deadline) = this.deadline
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no request head within header_read_timeout",
                    )));
                }
            }
            _ => {}
        }
        polled
    }
}

impl<I: tokio::io::AsyncWrite> tokio::io::AsyncWrite for FirstBytesDeadline<I> {
    fn poll_write(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}
