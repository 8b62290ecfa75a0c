//! Replaying a log: each line read (on a thread of its own: a log may be a
//! pipe), each request checked and routed as the proxy would
//! ([`checks::check`], [`Config::route_for`]), paced to `--rate`, at most
//! `--concurrency` in flight, and compared by the mirror.

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Uri, Version};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::log::{Entry, Line, LineError, LineReader, parse_line};
use super::{MALFORMED_SHOWN, MalformedLine, ReplaySummary};
use crate::config::{Config, RouteBackend, Weights};
use crate::health::HealthRegistry;
use crate::metrics::{Metrics, ShadowOutcome};
use crate::mirror::parity::Parity;
use crate::mirror::{Replayed, compare_backends};
use crate::proxy::checks::{self, Checked};
use crate::proxy::headers::X_REQUEST_ID;
use crate::proxy::refusal::Refusal;
use crate::report::{Window, route_reports};
use crate::routing::{RequestView, host_without_port};
use crate::table::{Table, UpstreamCache};

/// Lines parsed ahead of the requests being sent.
const READ_AHEAD: usize = 256;

/// How a replay is bounded and what it adds.
#[derive(Debug, Clone)]
pub struct Options {
    /// Requests replayed at most.
    pub limit: Option<u64>,
    /// Requests started per second at most; `None`: as fast as `concurrency` allows.
    pub rate: Option<f64>,
    /// Requests in flight at most (each asks two or three backend requests).
    pub concurrency: usize,
    /// Added to every replayed request (an access log carries no credentials).
    pub headers: HeaderMap,
    /// Compare each route's stable backend with this backend of the config
    /// instead of the route's mirror target.
    pub against: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no backend {0:?} in the config's backends")]
    UnknownBackend(String),
    #[error("{backend:?} is the stable backend of route {route:?}: there is nothing to compare it with")]
    AgainstStable { backend: String, route: String },
    #[error("no route mirrors traffic: add `mirror:` (with its compare rules) to the routes to compare")]
    NothingMirrored,
    #[error("the added headers would make every request invalid: {0}")]
    Headers(&'static str),
    #[error("cannot read the log: {0}")]
    Read(#[from] std::io::Error),
}

/// A replay's config, table and running counts.
pub struct Replay {
    table: Arc<Table>,
    parity: Arc<Parity>,
    options: Options,
    state: Arc<Mutex<State>>,
    bytes: Arc<AtomicU64>,
}

#[derive(Default)]
struct State {
    summary: ReplaySummary,
    /// Times of the first and last replayed requests, as logged.
    first: Option<OffsetDateTime>,
    last: Option<OffsetDateTime>,
    finished: u64,
    errors: u64,
}

/// Where a replay stands, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the log read.
    pub bytes: u64,
    pub lines: u64,
    pub replayed: u64,
    /// Replayed requests whose comparison is over.
    pub finished: u64,
    /// Of those, the ones a backend did not answer in time or at all.
    pub errors: u64,
}

/// A line of the log as the reading thread hands it over.
enum Read {
    Line(u64, Result<Entry, LineError>),
    Failed(std::io::Error),
}

/// A request to send, and where.
struct Dispatch {
    route: usize,
    head: Parts,
    checked: Checked,
    request_id: String,
    time: Option<OffsetDateTime>,
}

/// Why a request of the log is not sent.
enum Skip {
    Method,
    Target,
    NoRoute,
    NotMirrored,
}

impl Replay {
    /// Compiles the table the replay routes and compares with: `config`'s
    /// own routes, each mirrored route's target replaced by `--against`.
    pub fn new(mut config: Config, mut options: Options) -> Result<Replay, ReplayError> {
        crate::tls::install_crypto_provider();
        if let Some(against) = &options.against {
            compare_against(&mut config, against)?;
        }
        if config.routes.iter().all(|r| r.mirror.is_none()) {
            return Err(ReplayError::NothingMirrored);
        }
        if !options.headers.contains_key(header::USER_AGENT) {
            let agent = concat!("cutover-replay/", env!("CARGO_PKG_VERSION"));
            options.headers.insert(header::USER_AGENT, HeaderValue::from_static(agent));
        }
        options.concurrency = options.concurrency.max(1);
        if let Err(Refusal::BadRequest(why)) = checks::check(&request(&options.headers, Uri::from_static("/")), &config.server) {
            return Err(ReplayError::Headers(why));
        }
        let weights = Weights::all_stable(&config);
        let metrics = Arc::new(Metrics::new());
        let table = Table::build(
            Arc::new(config),
            weights,
            &mut UpstreamCache::default(),
            &metrics,
            &HealthRegistry::default(),
        );
        Ok(Replay {
            table: Arc::new(table),
            parity: Arc::default(),
            options,
            state: Arc::default(),
            bytes: Arc::default(),
        })
    }

    pub fn progress(&self) -> Progress {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Progress {
            bytes: self.bytes.load(Ordering::Relaxed),
            lines: state.summary.lines,
            replayed: state.summary.replayed,
            finished: state.finished,
            errors: state.errors,
        }
    }

    /// Replays the log `reader` (named `name` in the report) until its end,
    /// the limit, or `stop`; requests in flight when `stop` fires are
    /// abandoned. Returns what was read, sent and left out.
    pub async fn run(
        &self,
        name: &str,
        reader: impl BufRead + Send + 'static,
        stop: CancellationToken,
    ) -> Result<ReplaySummary, ReplayError> {
        self.with_state(|s| {
            s.summary.log = name.to_string();
            s.summary.started = crate::clock::now_rfc3339();
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let bytes = self.bytes.clone();
        // Not joined: a thread blocked reading a pipe ends with the process.
        std::thread::Builder::new()
            .name("replay-log".into())
            .spawn(move || read_log(reader, &tx, &bytes))?;
        let slots = Arc::new(Semaphore::new(self.options.concurrency));
        let mut tasks = JoinSet::new();
        let started = tokio::time::Instant::now();
        let mut sent = 0u64;
        let mut failure = None;
        loop {
            let read = tokio::select! {
                () = stop.cancelled() => break,
                read = rx.recv() => read,
            };
            while tasks.try_join_next().is_some() {}
            let (line, entry) = match read {
                None => break,
                Some(Read::Failed(e)) => {
                    failure = Some(e);
                    break;
                }
                Some(Read::Line(line, entry)) => (line, entry),
            };
            self.with_state(|s| s.summary.lines = line);
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    self.with_state(|s| {
                        s.summary.malformed += 1;
                        if s.summary.malformed_lines.len() < MALFORMED_SHOWN {
                            s.summary.malformed_lines.push(MalformedLine {
                                line,
                                error: error.to_string(),
                            });
                        }
                    });
                    continue;
                }
            };
            let dispatch = match self.admit(line, entry) {
                Ok(dispatch) => dispatch,
                Err(skip) => {
                    self.with_state(|s| {
                        let counts = &mut s.summary.not_replayed;
                        *match skip {
                            Skip::Method => &mut counts.method,
                            Skip::Target => &mut counts.target,
                            Skip::NoRoute => &mut counts.no_route,
                            Skip::NotMirrored => &mut counts.not_mirrored,
                        } += 1;
                    });
                    continue;
                }
            };
            if self.options.limit.is_some_and(|limit| sent >= limit) {
                self.with_state(|s| s.summary.limit_reached = true);
                break;
            }
            if let Some(rate) = self.options.rate {
                let at = started + Duration::from_secs_f64(sent as f64 / rate);
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            let permit = tokio::select! {
                () = stop.cancelled() => break,
                permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            sent += 1;
            self.with_state(|s| {
                s.summary.replayed += 1;
                s.first = s.first.or(dispatch.time);
                s.last = dispatch.time.or(s.last);
            });
            let (table, parity, state) = (self.table.clone(), self.parity.clone(), self.state.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let replayed = Replayed {
                    route: dispatch.route,
                    head: &dispatch.head,
                    target: dispatch.checked.target(&dispatch.head.uri),
                    request_id: dispatch.request_id.clone(),
                };
                let outcome = compare_backends(&table, &parity, replayed).await;
                let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                state.finished += 1;
                state.errors += u64::from(outcome == ShadowOutcome::Error);
            });
        }
        drop(rx);
        while !tasks.is_empty() && !stop.is_cancelled() {
            tokio::select! {
                () = stop.cancelled() => {}
                _ = tasks.join_next() => {}
            }
        }
        tasks.abort_all();
        self.with_state(|s| {
            s.summary.interrupted = stop.is_cancelled();
            s.summary.finished = crate::clock::now_rfc3339();
        });
        match failure {
            Some(e) => Err(ReplayError::Read(e)),
            None => Ok(self.with_state(|s| s.summary.clone())),
        }
    }

    /// The parity report of the replay, shaped as `/admin/parity`'s, with
    /// the replay's counts. The clean share counts every replayed request
    /// alike: replayed traffic has no "recent" to weigh.
    pub fn report(&self) -> Value {
        let mut routes = route_reports(&self.table.config, &self.parity, None);
        for route in &mut routes {
            let (compared, clean) = (route["compared"].as_u64().unwrap_or(0), route["clean"].as_u64().unwrap_or(0));
            if compared > 0 {
                route["clean_share"] = json!((clean as f64 / compared as f64 * 10_000.0).round() / 10_000.0);
            }
        }
        let (summary, window) = self.with_state(|s| {
            let time = |t: Option<OffsetDateTime>| {
                t.and_then(|t| {
                    t.to_offset(time::UtcOffset::UTC)
                        .format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
            };
            let window = Window {
                from: time(s.first),
                to: time(s.last),
            };
            (s.summary.clone(), window)
        });
        json!({
            "routes": routes,
            "window": (window != Window::default()).then_some(window),
            "source": format!("replay of the access log {}", summary.log),
            "replay": summary,
        })
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Checks and routes a logged request as the proxy would; only the safe
    /// methods the route mirrors pass.
    fn admit(&self, line: u64, entry: Entry) -> Result<Dispatch, Skip> {
        if !matches!(entry.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Err(Skip::Method);
        }
        let uri = entry.origin_form().ok_or(Skip::Target)?;
        let config = &self.table.config;
        let request_id = format!("replay-{line}");
        let mut req = request(&self.options.headers, uri);
        *req.method_mut() = entry.method;
        req.headers_mut()
            .insert(X_REQUEST_ID.clone(), HeaderValue::from_str(&request_id).expect("digits"));
        let checked = checks::check(&req, &config.server).map_err(|_| Skip::Target)?;
        let (head, ()) = req.into_parts();
        let target = checked.target(&head.uri);
        let view = RequestView {
            path: target.path(&head.uri),
            host: checked.client_host.as_ref().and_then(|h| h.to_str().ok()).map(host_without_port),
            method: &head.method,
            headers: &head.headers,
        };
        let route = config.route_for(&view).ok_or(Skip::NoRoute)?;
        let spec = config.routes[route].mirror.as_ref().ok_or(Skip::NotMirrored)?;
        if !spec.methods.contains(&head.method) {
            return Err(Skip::Method);
        }
        Ok(Dispatch {
            route,
            head,
            checked,
            request_id,
            time: entry.time,
        })
    }
}

/// A GET of `uri` with `headers`. A log names no host: without a `Host`
/// among `headers` the request is one that has none (HTTP/1.0), which
/// routes as such, and each backend is sent its own authority as `Host`.
fn request(headers: &HeaderMap, uri: Uri) -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = uri;
    *req.headers_mut() = headers.clone();
    if !headers.contains_key(header::HOST) {
        *req.version_mut() = Version::HTTP_10;
    }
    req
}

/// Points every mirrored route at backend `name` of the config, added to
/// the route (without a rewrite) when the route does not have it.
fn compare_against(config: &mut Config, name: &str) -> Result<(), ReplayError> {
    let spec = config
        .backends
        .iter()
        .find(|b| &*b.name == name)
        .cloned()
        .ok_or_else(|| ReplayError::UnknownBackend(name.to_string()))?;
    for route in &mut config.routes {
        if route.mirror.is_none() {
            continue;
        }
        let to = match route.backend_index(name) {
            Some(i) if i == route.stable => {
                return Err(ReplayError::AgainstStable {
                    backend: name.to_string(),
                    route: route.name.to_string(),
                });
            }
            Some(i) => i,
            None => {
                route.backends.push(RouteBackend {
                    spec: spec.clone(),
                    rewrite: None,
                });
                route.backends.len() - 1
            }
        };
        if let Some(mirror) = &mut route.mirror {
            mirror.to = to;
        }
    }
    Ok(())
}

/// Reads the log line by line into `tx`, until its end or until nobody listens.
fn read_log(reader: impl BufRead, tx: &tokio::sync::mpsc::Sender<Read>, bytes: &AtomicU64) {
    let mut lines = LineReader::new(reader);
    let mut number = 0u64;
    loop {
        let read = match lines.next_line() {
            Ok(None) => return,
            Ok(Some(line)) => {
                number += 1;
                Read::Line(
                    number,
                    match line {
                        Line::Text(text) => parse_line(text),
                        Line::TooLong => Err(LineError::TooLong),
                    },
                )
            }
            Err(e) => Read::Failed(e),
        };
        bytes.store(lines.bytes, Ordering::Relaxed);
        let failed = matches!(read, Read::Failed(_));
        if tx.blocking_send(read).is_err() || failed {
            return;
        }
    }
}
