//! The forwarding path: one request in, one backend chosen, one response out.
//!
//! [`Proxy::serve`] runs a request through its phases, each in a file of its own:
//!
//! 1. [`checks`]: one valid host, a path that normalises (else a [`Refusal`]);
//! 2. [`choose`]: the route, then the backend (force header, sticky bucket,
//!    split, failover off a backend that is down);
//! 3. [`outbound`]: the request as every backend of the route is sent it,
//!    its body streamed with limits or kept whole for a retry; then the
//!    mirror's one admission call, [`mirror::shadow`];
//! 4. [`send`]: to the backend, and once more elsewhere when it got no
//!    answer; each attempt's target and `Host` come from
//!    [`request_for`](crate::upstream::request_for);
//! 5. [`response`]: the backend's answer as the client gets it, and the
//!    [`tunnel`] of a protocol switch.
//!
//! [`record`] counts the exchange as its response body ends, from the one
//! [`Verdict`](crate::upstream::Verdict); [`refusal`] holds every answer the
//! proxy gives itself.

pub mod body;
pub mod checks;
pub mod choose;
pub mod compress;
pub mod conn;
pub mod headers;
pub mod outbound;
pub mod record;
pub mod refusal;
pub mod response;
pub mod send;
pub mod tunnel;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::header;
use http::{Request, Response, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use crate::access_log::{AccessLog, LogRecord};
use crate::live::Live;
use crate::mirror::{self, ShadowRequest};
use crate::routing::{RequestView, host_without_port};
use crate::table::Table;
use crate::upstream::{Tap, UpstreamBody};
use body::ResponseBody;
pub use conn::{ActiveRequest, ConnInfo};
use headers::{client_address, is_upgrade_request};
use outbound::Preparing;
use record::RequestRecord;
use refusal::Refusal;
use response::Finishing;
use send::{Attempt, RetryPolicy};

pub struct Proxy {
    pub live: Arc<Live>,
    pub access_log: Option<Arc<AccessLog>>,
}

impl Proxy {
    /// Serves one client request. Never fails: problems become responses.
    /// `conn` stays in flight until the response's last byte is sent.
    pub async fn serve(self: Arc<Self>, conn: ActiveRequest, req: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
        let started = Instant::now();
        let table = self.live.load();
        let log = self.access_log.as_ref().map(|log| (log.clone(), capture(&conn, &req)));
        let mut record = Box::new(RequestRecord::new(started, table.clone(), log));
        let had_body = !req.body().is_end_stream();
        let response = match self.forward(&table, &conn, req, &mut record).await {
            Ok(Answer { resp, tap, gzip }) => {
                record.hold(conn);
                let (parts, body) = resp.into_parts();
                record.answered(parts.status.as_u16());
                let body_timeout = record.body_timeout();
                Response::from_parts(parts, ResponseBody::upstream(body, record, tap, gzip, body_timeout))
            }
            Err(refusal) => {
                let closes = refusal.ends_connection(had_body);
                if closes {
                    conn.closes_after_response();
                }
                record.hold(conn);
                refusal.respond(record, closes)
            }
        };
        Ok(response)
    }

    /// The phases from the request to the backend's response head.
    async fn forward(
        &self,
        table: &Arc<Table>,
        conn: &ActiveRequest,
        mut req: Request<Incoming>,
        record: &mut RequestRecord,
    ) -> Result<Answer, Refusal> {
        let config = &table.config;
        let checked = checks::check(&req, &config.server)?;
        let target = checked.target(req.uri());
        let view = RequestView {
            path: target.path(req.uri()),
            host: checked.client_host.as_ref().and_then(|h| h.to_str().ok()).map(host_without_port),
            method: req.method(),
            headers: req.headers(),
        };
        // Certificates are issued over plain HTTP: ACME's challenges are routed.
        if let Some(port) = conn.redirect_https
            && !view.path.starts_with(ACME_CHALLENGE)
        {
            return Err(Refusal::to_https(port, view.host, view.method, req.uri()));
        }
        let client = || client_address(req.headers(), conn.peer.ip(), &config.trusted_proxies);
        let choice = choose::choose(table, &view, client).ok_or(Refusal::NoRoute)?;
        let (route, live) = (&config.routes[choice.route], &table.routes[choice.route]);
        if !route.admits(client) {
            return Err(Refusal::Forbidden);
        }
        record.chose(choice.route, choice.backend, choice.feeds_guard(route));
        let refuse = |failure, backend: usize| Refusal::Failed {
            failure,
            backend: route.backends[backend].spec.name.clone(),
        };
        checks::body_size(req.headers(), &config.server).map_err(|f| refuse(f, choice.backend))?;

        let upgrade = req.version() == Version::HTTP_11 && is_upgrade_request(req.headers());
        let empty_body = req.body().is_end_stream();
        let failover = (!choice.forced).then_some(choice.bucket);
        let gzip = config
            .compression
            .as_ref()
            .filter(|_| req.method() != http::Method::HEAD && compress::accepts_gzip(req.headers()));
        let policy = RetryPolicy::new(route, live, failover, req.method(), req.headers(), empty_body, upgrade);
        let (request_id, client_upgrade) = outbound::prepare(
            &mut req,
            conn,
            Preparing {
                trusted_proxies: &config.trusted_proxies,
                client_host: checked.client_host.as_ref(),
                upgrade,
            },
        );
        record.request_id(&request_id);
        let (head, body) = req.into_parts();
        let body = outbound::body(body, policy.keeps_body(), &config.server, conn)
            .await
            .map_err(|f| refuse(f, choice.backend))?;
        // A protocol switch becomes a tunnel: nothing to compare.
        let (body, mirrored) = match upgrade {
            true => (body, None),
            false => mirror::shadow(
                &ShadowRequest {
                    table,
                    parity: &self.live.parity,
                    route: choice.route,
                    primary: choice.backend,
                    feeds_guard: record.feeds_guard(),
                    head: &head,
                    target,
                    request_id: &request_id,
                },
                body,
            ),
        };

        let attempt = Attempt {
            backend: choice.backend,
            request: Request::from_parts(head, body),
        };
        let sent = send::send(route, live, target, record, attempt, policy).await;
        let mut resp = sent.result.map_err(|f| refuse(f, sent.backend))?;
        // A retried request is not mirrored.
        let tap = mirrored.filter(|_| !sent.retried).map(|m| m.primary_answered(&resp));
        response::finish(
            &mut resp,
            Finishing {
                sticky: &route.sticky,
                set_pin: choice.set_pin,
                request_id,
                client_upgrade,
                conn,
                tunnel_idle_timeout: route.backends[sent.backend].spec.tunnel_idle_timeout,
            },
        );
        let gzip = gzip.and_then(|settings| compress::start(settings, &mut resp));
        Ok(Answer { resp, tap, gzip })
    }
}

/// Where ACME's HTTP challenges are answered, which a `redirect_https`
/// listener still routes.
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// A backend's answer as the client is to get it.
struct Answer {
    resp: Response<UpstreamBody>,
    /// Its copy for the mirror comparison.
    tap: Option<Tap>,
    /// Its compressor, when it is sent gzipped.
    gzip: Option<Box<compress::Gzip>>,
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

/// A table built from `routes` and `weights` over two backends, `legacy`
/// and `new`, for tests of the phases.
#[cfg(test)]
pub(crate) fn test_table(routes: &str, weights: &str) -> Arc<Table> {
    test_table_with(
        "backends:\n  legacy: { url: \"http://127.0.0.1:1\" }\n  new: { url: \"http://127.0.0.1:2\" }\n",
        routes,
        weights,
    )
}

#[cfg(test)]
pub(crate) fn test_table_with(backends: &str, routes: &str, weights: &str) -> Arc<Table> {
    let path = std::path::Path::new("cutover.yaml");
    let text = format!("listeners:\n  - {{ name: public, addr: \"127.0.0.1:0\" }}\n{backends}{routes}");
    let config = crate::config::Config::parse(path, text).unwrap();
    let weights = crate::config::Weights::parse(std::path::Path::new("weights.yaml"), weights, &config).unwrap();
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let health = crate::health::HealthRegistry::default();
    Arc::new(Table::build(
        Arc::new(config),
        weights,
        &mut crate::table::UpstreamCache::default(),
        &metrics,
        &health,
    ))
}
