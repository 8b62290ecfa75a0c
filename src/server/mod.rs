//! Listeners, serving threads and graceful shutdown; each client
//! connection is served by [`connection`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus::{IntCounter, IntGauge};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::config::ConfigError;
use crate::fleet::Fleet;
use crate::guard::Guard;
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
    access_log: Option<Arc<AccessLog>>,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Opens the access and parity log files again by their names (SIGUSR1).
    pub fn reopen_logs(&self) {
        if let Some(log) = &self.access_log {
            log.reopen();
        }
        self.live.parity.reopen_log();
    }

    /// Stops accepting and drains in-flight requests (up to the drain deadline).
    pub fn begin_shutdown(&self) {
        connection::begin_shutdown(&self.shutdown);
    }

    /// Resolves once every listener has stopped and draining has finished.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Loads `config_path`, binds every listener and the admin listener, and serves.
pub async fn start(config_path: &Path) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let config = crate::config::Config::load(config_path)?;
    // Fleet mode: the weight file caches the fleet table (see docs/FLEET.md).
    let fleet = config.fleet.clone().map(|settings| Fleet::new(&settings, &config, &metrics));
    let weights = match &fleet {
        Some(fleet) => fleet.startup_weights(&config)?,
        None => crate::config::Weights::load(&config)?,
    };
    let access_log = AccessLog::start(&config.access_log, metrics.clone())
        .map_err(StartError::AccessLog)?
        .map(Arc::new);
    let settings = config.server;

    let workers = settings.workers;
    let mut bound = Vec::new();
    for l in &config.listeners {
        let sockets = bind_group(&format!("listener {}", l.name), l.addr, workers)?;
        bound.push((l.clone(), sockets));
    }
    let admin_listener = bind(ADMIN_LISTENER, config.admin.addr).await?;
    let admin_addr = admin_listener.local_addr().expect("bound socket has an address");
    check_open_file_limit(config.listeners.len(), settings.max_connections);

    crate::upstream::pool::set_serving_threads(settings.workers);
    let live = Arc::new(match fleet {
        Some(fleet) => Live::with_fleet(config, weights, metrics.clone(), fleet),
        None => Live::new(config, weights, metrics.clone()),
    });
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
    for (listener, sockets) in bound {
        let name = listener.name;
        let addr = sockets[0].local_addr().expect("bound socket has an address");
        tracing::info!(listener = %name, %addr, threads = workers, "listening");
        listeners.push((name.clone(), addr));
        let limit = ConnectionLimit::new(&name, settings.max_connections, &metrics);
        let tls = match listener.tls {
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
                redirect_https: listener.redirect_https,
                limit: limit.clone(),
            });
        }
    }
    let stopped = CancellationToken::new();
    for (index, sockets) in per_thread.into_iter().enumerate() {
        let serving = Serving {
            timeouts: ConnTimeouts {
                handshake: settings.header_read_timeout,
                idle: settings.idle_timeout,
                send: settings.send_timeout,
            },
            proxy: proxy.clone(),
            builders: builders.clone(),
            // A token of its own per thread: every connection polls it on
            // each wake-up, and each poll takes the token's lock; one token
            // shared by all threads would pass that lock between cores.
            shutdown: shutdown.child_token(),
            tracker: tracker.clone(),
            stopped: stopped.clone(),
        };
        std::thread::Builder::new()
            .name(format!("serve-{index}"))
            .spawn(move || serving.run(index, sockets))
            .map_err(StartError::Thread)?;
    }
    let admin_connections = AdminConnections::new(ConnectionLimit::new(
        ADMIN_LISTENER,
        settings.max_connections.min(MAX_ADMIN_CONNECTIONS),
        &metrics,
    ));
    let guard = Guard::new(live.clone());
    let admin_task = tokio::spawn(admin_loop(
        admin_listener,
        live.clone(),
        guard.clone(),
        builders.clone(),
        admin_connections,
    ));
    if let Err(e) = crate::reload::spawn(live.clone(), shutdown.clone()) {
        tracing::warn!(error = %e, "cannot watch the config folders; reload with SIGHUP");
    }
    tokio::spawn(sample_rates(live.clone(), shutdown.clone()));
    live.start_health_checks();
    tokio::spawn(publish_health(live.clone(), shutdown.clone()));
    tokio::spawn(guard.clone().run(shutdown.clone()));
    tokio::spawn(trim_idle_backend_connections(live.clone(), shutdown.clone()));
    let fleet_task = crate::replica::spawn(&live, &guard, admin_addr, &shutdown);
    if let Some(fleet) = live.fleet() {
        // Serve the fleet's table rather than a stale cache when etcd
        // answers at once; when it does not, the cache serves.
        let limit = live.load().config.fleet.as_ref().map_or(Duration::ZERO, |f| f.request_timeout);
        if !fleet.settled_within(limit).await {
            tracing::warn!("the fleet table was not read within {limit:?}: serving the weight file's copy until it is");
        }
    }
    live.set_ready(true);
    // Logged once ready: whoever waits for this line (an operator, a
    // supervisor, the tests) may probe `/readyz` and get 200 at once.
    tracing::info!(addr = %admin_addr, "admin listening");

    let done = {
        let live = live.clone();
        let access_log = access_log.clone();
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
            if let Some(task) = fleet_task {
                let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
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
        access_log,
        shutdown,
        done,
    })
}

/// Raises the soft limit on open files to the hard one, as nginx's
/// `worker_rlimit_nofile` and HAProxy do: every client and backend
/// connection is a file, and the usual soft limit (1024) is far below what
/// a proxy needs. Returns the limit in force.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// Warns when the connection caps allow more client connections than the
/// process may open files: past the limit, accepting fails on every
/// listener alike.
fn check_open_file_limit(listeners: usize, max_connections: usize) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let allowed = listeners
        .saturating_mul(max_connections)
        .saturating_add(max_connections.min(MAX_ADMIN_CONNECTIONS));
    if u64::try_from(allowed).unwrap_or(u64::MAX) > limit.rlim_cur {
        tracing::warn!(
            open_files = limit.rlim_cur,
            client_connections = allowed,
            "the open-file limit is below what server.max_connections allows: raise it (LimitNOFILE=, ulimit -n) or lower server.max_connections"
        );
    }
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
    redirect_https: Option<u16>,
    limit: Arc<ConnectionLimit>,
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
        crate::upstream::pool::set_shard(index + 1);
        runtime.block_on(async move {
            for l in sockets {
                match TcpListener::from_std(l.socket) {
                    Ok(listener) => {
                        tokio::spawn(accept_loop(
                            listener,
                            l.tls,
                            l.redirect_https,
                            self.timeouts,
                            self.proxy.clone(),
                            self.builders.clone(),
                            l.limit,
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

async fn trim_idle_backend_connections(live: Arc<Live>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {
                for route in live.load().routes.iter() {
                    for backend in route.backends.iter() {
                        backend.client.trim_idle();
                    }
                }
            }
        }
    }
}

/// The admin listener's name in logs and metrics.
const ADMIN_LISTENER: &str = "admin";

/// The admin listener's cap on open connections (`server.max_connections`
/// when lower): room for a few dashboards (a browser opens up to six
/// connections to a site), Prometheus, probes and the CLI.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// The first wait before accepting again after accepting failed; it doubles
/// up to [`ACCEPT_BACKOFF_MAX`] while failures last.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// One listener's open connections, held under a cap.
struct ConnectionLimit {
    listener: String,
    max: usize,
    open: AtomicUsize,
    gauge: IntGauge,
    refused_at_limit: IntCounter,
    refused_out_of_files: IntCounter,
    /// Set while connections are refused, so that a run of refusals is
    /// logged once.
    refusing: AtomicBool,
}

impl ConnectionLimit {
    fn new(listener: &str, max: usize, metrics: &Metrics) -> Arc<ConnectionLimit> {
        let refused = |reason: &str| metrics.connections_refused.with_label_values(&[listener, reason]);
        Arc::new(ConnectionLimit {
            listener: listener.to_string(),
            max,
            open: AtomicUsize::new(0),
            gauge: metrics.active_connections.with_label_values(&[listener]),
            refused_at_limit: refused("limit"),
            refused_out_of_files: refused("emfile"),
            refusing: AtomicBool::new(false),
        })
    }

    /// Room for one more connection, or `None` at the cap.
    fn admit(self: &Arc<Self>) -> Option<ConnectionSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()?;
        if self.refusing.swap(false, Ordering::Relaxed) {
            tracing::info!(listener = %self.listener, "below the connection limit again");
        }
        Some(self.slot())
    }

    /// One more connection whatever the count: the admin listener's, once
    /// it has closed an older one to make room.
    fn admit_past_limit(self: &Arc<Self>) -> ConnectionSlot {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.slot()
    }

    fn slot(self: &Arc<Self>) -> ConnectionSlot {
        self.gauge.inc();
        ConnectionSlot(self.clone())
    }

    /// Counts a connection closed because the listener is at its cap.
    fn refuse(&self) {
        self.refused_at_limit.inc();
        if !self.refusing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                listener = %self.listener,
                max_connections = self.max,
                "at the connection limit: closing connections beyond it at once"
            );
        }
    }
}

/// A place under a listener's cap, given back when dropped.
struct ConnectionSlot(Arc<ConnectionLimit>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
    }
}

/// The next connection. When accepting fails (for want of file
/// descriptors above all: the connection then stays in the backlog and an
/// immediate retry fails again) it waits before trying again, 10 ms
/// doubling to 1 s, and logs once per run of failures.
async fn accept(listener: &TcpListener, limit: &ConnectionLimit) -> (TcpStream, SocketAddr) {
    let mut failures = 0u64;
    let mut wait = ACCEPT_BACKOFF_FIRST;
    loop {
        let error = match listener.accept().await {
            Ok(pair) => {
                if failures > 0 {
                    tracing::info!(listener = %limit.listener, failures, "accepting connections again");
                }
                return pair;
            }
            Err(e) => e,
        };
        // A client that gave up before it was accepted: nothing to wait for.
        if matches!(
            error.kind(),
            std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::Interrupted
        ) {
            continue;
        }
        if matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
            limit.refused_out_of_files.inc();
        }
        if failures == 0 {
            tracing::warn!(
                listener = %limit.listener,
                error = %error,
                "cannot accept connections; trying again, less often while this lasts"
            );
        }
        failures += 1;
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(ACCEPT_BACKOFF_MAX);
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    redirect_https: Option<u16>,
    timeouts: ConnTimeouts,
    proxy: Arc<Proxy>,
    builders: Arc<ConnBuilders>,
    limit: Arc<ConnectionLimit>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = accept(&listener, &limit) => accepted,
        };
        // Closed at once rather than left in the backlog, where it would
        // wait unanswered and crowd out clients that come later.
        let Some(slot) = limit.admit() else {
            limit.refuse();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(ConnInfo::new(peer, if tls.is_some() { "https" } else { "http" }, redirect_https));
        let proxy = proxy.clone();
        let builders = builders.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        let fut = async move {
            let _slot = slot;
            match tls {
                None => connection::serve(stream, conn, proxy, &builders, timeouts, shutdown).await,
                // Boxed: a plain connection's task then holds no room for TLS state.
                Some(acceptor) => {
                    Box::pin(async move {
                        // Like a plain connection that has sent nothing, a
                        // handshake still under way does not hold the drain.
                        // Boxed, the handshake's state and then the TLS stream
                        // (rustls' connection is kilobytes): the connection's
                        // task holds pointers, not room for both, and its
                        // phases' copies of the stream cost a pointer each.
                        let handshake = Box::pin(tokio::time::timeout(timeouts.handshake, acceptor.accept(stream)));
                        let accepted = shutdown.run_until_cancelled(handshake).await;
                        let Some(accepted) = accepted else { return };
                        match accepted {
                            Ok(Ok(stream)) => connection::serve(Box::new(stream), conn, proxy, &builders, timeouts, shutdown).await,
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

/// The admin listener's open connections, oldest first. At the cap a new
/// connection closes the oldest one with no request under way: whatever
/// holds connections open, an operator's next call gets in.
struct AdminConnections {
    limit: Arc<ConnectionLimit>,
    open: Mutex<VecDeque<Arc<AdminConnection>>>,
}

struct AdminConnection {
    /// Requests being answered (at most one on HTTP/1.1).
    in_request: AtomicUsize,
    /// When the last request was answered, or the connection opened.
    last_active: Mutex<Instant>,
    closed: AtomicBool,
    evict: CancellationToken,
}

impl AdminConnection {
    fn is_quiet(&self) -> bool {
        self.in_request.load(Ordering::Acquire) == 0
    }

    fn last_active(&self) -> Instant {
        *self.last_active.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Marks a connection's request under way until dropped.
struct InRequest(Arc<AdminConnection>);

impl InRequest {
    fn begin(conn: &Arc<AdminConnection>) -> InRequest {
        conn.in_request.fetch_add(1, Ordering::AcqRel);
        InRequest(conn.clone())
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        *self.0.last_active.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.in_request.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An admin connection's place, given back when dropped.
struct AdminSlot {
    _slot: ConnectionSlot,
    conn: Arc<AdminConnection>,
}

impl Drop for AdminSlot {
    fn drop(&mut self) {
        self.conn.closed.store(true, Ordering::Release);
    }
}

impl AdminConnections {
    fn new(limit: Arc<ConnectionLimit>) -> Arc<AdminConnections> {
        Arc::new(AdminConnections {
            limit,
            open: Mutex::new(VecDeque::new()),
        })
    }

    /// A place for a new connection, made by closing the oldest quiet one
    /// at the cap; `None` when every open connection has a request under way.
    fn admit(&self) -> Option<AdminSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|c| !c.closed.load(Ordering::Acquire));
        let slot = match self.limit.admit() {
            Some(slot) => slot,
            None => {
                self.limit.refuse();
                let oldest_quiet = open.iter().position(|c| c.is_quiet())?;
                if let Some(evicted) = open.remove(oldest_quiet) {
                    evicted.evict.cancel();
                }
                self.limit.admit_past_limit()
            }
        };
        let conn = Arc::new(AdminConnection {
            in_request: AtomicUsize::new(0),
            last_active: Mutex::new(Instant::now()),
            closed: AtomicBool::new(false),
            evict: CancellationToken::new(),
        });
        open.push_back(conn.clone());
        Some(AdminSlot { _slot: slot, conn })
    }
}

/// Serves the admin API until aborted: it stays up while the proxy drains,
/// so `/readyz` can tell load balancers to stop sending traffic.
async fn admin_loop(
    listener: TcpListener,
    live: Arc<Live>,
    guard: Arc<Guard>,
    builders: Arc<ConnBuilders>,
    connections: Arc<AdminConnections>,
) {
    loop {
        let (stream, peer) = accept(&listener, &connections.limit).await;
        let Some(slot) = connections.admit() else {
            drop(stream);
            continue;
        };
        let Ok(local) = stream.local_addr() else { continue };
        let (live, guard) = (live.clone(), guard.clone());
        let builders = builders.clone();
        tokio::spawn(async move { serve_admin(stream, peer, local, live, guard, &builders, slot).await });
    }
}

/// One admin connection, with the client connections' limits: the header
/// read timeout (hyper's, which also runs while a keep-alive connection
/// waits for its next request), header size limits, and the idle timeout.
/// Closed early when a newer connection needs its place.
async fn serve_admin(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    live: Arc<Live>,
    guard: Arc<Guard>,
    builders: &ConnBuilders,
    slot: AdminSlot,
) {
    let conn = slot.conn.clone();
    let idle = live.load().config.server.idle_timeout;
    let service = {
        let conn = conn.clone();
        service_fn(move |req| {
            let in_request = InRequest::begin(&conn);
            let answer = crate::admin::handle(live.clone(), guard.clone(), peer, local, req);
            async move {
                let _in_request = in_request;
                answer.await
            }
        })
    };
    let connection = builders.admin_http1().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let idle_check = tokio::time::sleep(idle);
    tokio::pin!(idle_check);
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "admin connection ended with an error");
                }
                return;
            }
            _ = conn.evict.cancelled() => {
                tracing::debug!(%peer, "closing an admin connection to make room for a newer one");
                break;
            }
            _ = idle_check.as_mut() => {
                let quiet_until = conn.last_active() + idle;
                if conn.is_quiet() && Instant::now() >= quiet_until {
                    break;
                }
                idle_check.as_mut().reset(quiet_until.max(Instant::now() + idle / 4).into());
            }
        }
    }
    // With no request under way, dropping the connection closes it at once
    // (hyper would wait for a head that may never come); a request that
    // has just begun is answered first.
    if !conn.is_quiet() {
        connection.as_mut().graceful_shutdown();
        let _ = connection.await;
    }
}
