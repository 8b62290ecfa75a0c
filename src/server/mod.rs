//! Listeners, serving threads and graceful shutdown; each client
//! connection is served by [`connection`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus::IntGauge;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::config::ConfigError;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::proxy::{ConnInfo, Proxy};
use connection::{ConnBuilders, ConnTimeouts};

mod connection;

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
    let builders = Arc::new(ConnBuilders::new(&settings));

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
            builders: builders.clone(),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            stopped: stopped.clone(),
        };
        std::thread::Builder::new()
            .name(format!("serve-{index}"))
            .spawn(move || serving.run(index, sockets))
            .map_err(StartError::Thread)?;
    }
    let admin_task = tokio::spawn(admin_loop(admin_listener, live.clone()));
    if let Err(e) = crate::reload::spawn(live.clone(), shutdown.clone()) {
        tracing::warn!(error = %e, "cannot watch the config folders; reload with SIGHUP");
    }
    tokio::spawn(sample_rates(live.clone(), shutdown.clone()));
    live.start_health_checks();
    tokio::spawn(publish_health(live.clone(), shutdown.clone()));
    tokio::spawn(run_guard(live.clone(), shutdown.clone()));
    tokio::spawn(close_expired_backend_connections(live.clone(), shutdown.clone()));
    live.set_ready(true);
    // Logged once ready: whoever waits for this line (an operator, a
    // supervisor, the tests) may probe `/readyz` and get 200 at once.
    tracing::info!(addr = %admin_addr, "admin listening");

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
    builders: Arc<ConnBuilders>,
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
                            self.builders.clone(),
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

async fn close_expired_backend_connections(live: Arc<Live>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {
                for route in live.load().routes.iter() {
                    for backend in route.backends.iter() {
                        backend.upstream.close_expired_idle();
                    }
                }
            }
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
    builders: Arc<ConnBuilders>,
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
        let builders = builders.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        gauge.inc();
        let guard = GaugeGuard(gauge.clone());
        let fut = async move {
            let _guard = guard;
            match tls {
                None => connection::serve(stream, conn, proxy, &builders, timeouts, shutdown).await,
                // Boxed: a plain connection's task then holds no room for TLS state.
                Some(acceptor) => {
                    Box::pin(async move {
                        // Like a plain connection that has sent nothing, a
                        // handshake still under way does not hold the drain.
                        let accepted = shutdown
                            .run_until_cancelled(tokio::time::timeout(timeouts.handshake, acceptor.accept(stream)))
                            .await;
                        let Some(accepted) = accepted else { return };
                        match accepted {
                            Ok(Ok(stream)) => connection::serve(stream, conn, proxy, &builders, timeouts, shutdown).await,
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    })
                    .await
                }
            }
        };
        tracker.spawn(fut);
    }
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
