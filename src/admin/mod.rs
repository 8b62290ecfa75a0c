//! The admin listener: metrics, health, and the control API.

mod access;
mod fleet;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::change::{self, Change, ChangeError, RollbackCause, Routes};
use crate::guard::Guard;
use crate::live::Live;

pub use access::Refusal;

pub type AdminResponse = Response<Full<Bytes>>;

/// Largest request body the admin API reads.
const MAX_BODY: usize = 64 * 1024;

/// How long the rest of a body no endpoint wanted may take to arrive
/// before the connection is closed instead of kept for the next request.
const DISCARD_WITHIN: Duration = Duration::from_secs(1);

/// Names the operator behind a change, shown in logs and the history.
pub const ACTOR_HEADER: &str = "x-cutover-actor";
/// Optional free-text reason for a change.
pub const REASON_HEADER: &str = "x-cutover-reason";

/// Serves one admin request. `local` is the address the client reached.
pub async fn handle(
    live: Arc<Live>,
    guard: Arc<Guard>,
    peer: SocketAddr,
    local: SocketAddr,
    req: Request<Incoming>,
) -> Result<AdminResponse, Infallible> {
    let (parts, body) = req.into_parts();
    let mut body = Some(body);
    let mut resp = route(&live, &guard, peer, local, &parts, &mut body).await;
    // A body left unread would be taken for the next request: read it to
    // its end, or close the connection and say so.
    if let Some(unread) = body
        && !discard(unread, &parts).await
    {
        close_after(&mut resp);
    }
    Ok(resp)
}

async fn route(
    live: &Arc<Live>,
    guard: &Guard,
    peer: SocketAddr,
    local: SocketAddr,
    parts: &Parts,
    body: &mut Option<Incoming>,
) -> AdminResponse {
    let path = parts.uri.path();
    let method = &parts.method;
    // Probed by kubelets and scraped by Prometheus, by pod address and
    // without a token: no check applies, and nothing here is secret.
    match (method, path) {
        (&Method::GET, "/metrics") => {
            return respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", live.metrics.render());
        }
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") if live.is_ready() => return text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/readyz") => return text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        (_, "/metrics" | "/healthz" | "/readyz") => return json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => {}
    }
    if let Err(refusal) = access::check(parts, &live.load().config.admin, local) {
        let mut resp = json_error(refusal.status(), &refusal.to_string());
        if refusal == Refusal::Unauthorized {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        } else {
            tracing::debug!(%peer, %method, path, error = %refusal, "admin request refused");
        }
        return resp;
    }
    match (method, path) {
        (&Method::GET | &Method::HEAD, "/") => dashboard(),
        (&Method::GET, "/admin/status") => json_response(StatusCode::OK, &status(live, guard)),
        (&Method::GET, "/admin/weights") => {
            let table = live.load();
            json_response(StatusCode::OK, &json!(table.weights.named(&table.config)))
        }
        (&Method::GET, "/admin/fleet") => fleet::fleet(live).await,
        (&Method::GET, "/admin/parity") if query_param(&parts.uri, "fleet").is_some_and(|v| v == "true" || v == "1") => {
            fleet::parity(live, query_param(&parts.uri, "route").as_deref()).await
        }
        (&Method::GET, "/admin/parity") => {
            let table = live.load();
            let wanted = query_param(&parts.uri, "route");
            let report = crate::report::parity_json(&table.config, &live.parity, wanted.as_deref());
            match wanted {
                Some(w) if report["routes"].as_array().is_none_or(Vec::is_empty) => {
                    json_error(StatusCode::NOT_FOUND, &format!("no mirrored route {w:?}"))
                }
                _ => json_response(StatusCode::OK, &report),
            }
        }
        (&Method::PUT, p) if p.starts_with("/admin/weights/") => {
            let route = p.trim_start_matches("/admin/weights/").to_string();
            let force = query_param(&parts.uri, "force").is_some_and(|v| v == "true" || v == "1");
            mutate(live, peer, parts, body, move |who, why, body| {
                let set: std::collections::BTreeMap<String, f64> =
                    serde_json::from_slice(&body).map_err(|e| bad_body(format!("expected {{\"backend\": percent, ...}}: {e}")))?;
                Ok(Change::shift(who, route, set.into_iter().collect(), force).because(why))
            })
            .await
        }
        (&Method::POST, "/admin/rollback") => {
            mutate(live, peer, parts, body, |who, why, body| {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Body {
                    #[serde(default)]
                    routes: Vec<String>,
                    #[serde(default)]
                    all: bool,
                    reason: Option<String>,
                }
                let b: Body = serde_json::from_slice(&body)
                    .map_err(|e| bad_body(format!("expected {{\"routes\": [...]}} or {{\"all\": true}}: {e}")))?;
                Ok(Change::rollback(who, Routes::new(b.routes, b.all), RollbackCause::Manual).because(b.reason.or(why)))
            })
            .await
        }
        (&Method::POST, "/admin/undo") => mutate(live, peer, parts, body, |who, _why, _body| Ok(Change::undo(who))).await,
        (_, "/" | "/admin/status" | "/admin/weights" | "/admin/rollback" | "/admin/undo" | "/admin/parity" | "/admin/fleet") => {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => json_error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The dashboard: one self-contained page (inline style and script, no
/// outside resources) that reads and drives the admin API from the browser.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Allows exactly the page's one inline `<style>` and one inline `<script>`
/// (by SHA-256 hash) and requests to this listener, nothing else. Editing
/// either block changes its hash: tests/dashboard checks these and prints
/// the right values.
const DASHBOARD_CSP: &str = "default-src 'none'; \
     script-src 'sha256-VeAOSuRSlc6qnLCXbwPx7u+jparsOZD9Znt6PJNT3mk='; \
     style-src 'sha256-iK9sBJhX3Z1J5jTI8qqy2n12dVLXyMNc5Un/OFaKXUs='; \
     connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn dashboard() -> AdminResponse {
    let mut resp = respond(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD);
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DASHBOARD_CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

type Failure = (StatusCode, String);
fn bad_body(message: String) -> Failure {
    (StatusCode::BAD_REQUEST, message)
}

/// The answer to a refused change: the one place its status code is decided.
fn refused(e: &ChangeError) -> AdminResponse {
    let status = match e {
        ChangeError::UnknownRoute(_) => StatusCode::NOT_FOUND,
        ChangeError::UnknownBackend { .. }
        | ChangeError::BadWeight(_)
        | ChangeError::Sum { .. }
        | ChangeError::NoRoutes
        | ChangeError::Stale(_)
        | ChangeError::Config(_) => StatusCode::BAD_REQUEST,
        ChangeError::ParityBelowBar { .. }
        | ChangeError::NothingToUndo
        | ChangeError::ChangedMeanwhile { .. }
        | ChangeError::Conflict { .. }
        | ChangeError::Skew { .. }
        | ChangeError::Superseded => StatusCode::CONFLICT,
        ChangeError::History(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ChangeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut body = json!({ "error": e.to_string() });
    if let ChangeError::Conflict { current } = e {
        // What the store holds, to compute the change again from.
        body["current"] = json!(current);
    }
    json_response(status, &body)
}

/// Reads the body, makes the change of it (`who`, the reason header, the
/// body) and applies it off the async workers (it writes and fsyncs
/// files). Changes take JSON only: a page of another site can send a form
/// or `text/plain` without asking first, but not JSON.
async fn mutate<F>(live: &Arc<Live>, peer: SocketAddr, parts: &Parts, body: &mut Option<Incoming>, make: F) -> AdminResponse
where
    F: FnOnce(String, Option<String>, Bytes) -> Result<Change, Failure>,
{
    if !is_json(parts.headers.get(header::CONTENT_TYPE)) {
        return json_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "changes need Content-Type: application/json");
    }
    let actor = header_text(parts.headers.get(ACTOR_HEADER));
    let why = header_text(parts.headers.get(REASON_HEADER));
    let who = match actor {
        Some(a) => format!("{peer} ({a})"),
        None => peer.to_string(),
    };
    let Some(incoming) = body.take() else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "the request body was already read");
    };
    let deadline = live.load().config.server.body_read_timeout;
    let read = match tokio::time::timeout(deadline, read_body(incoming)).await {
        Ok(read) => read,
        Err(_) => Err((StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time".to_string())),
    };
    let body = match read {
        Ok(body) => body,
        Err((status, message)) => {
            // What is left of the body would be read as the next request.
            let mut resp = json_error(status, &message);
            close_after(&mut resp);
            return resp;
        }
    };
    let change = match make(who, why, body) {
        Ok(change) => change,
        Err((status, message)) => return json_error(status, &message),
    };
    let live = live.clone();
    match tokio::task::spawn_blocking(move || live.apply(change)).await {
        Ok(Ok(changed)) => json_response(StatusCode::OK, &json!(changed)),
        Ok(Err(e)) => refused(&e),
        Err(_) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "the change failed unexpectedly"),
    }
}

/// `application/json`, with or without parameters.
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// A whole request body of up to [`MAX_BODY`] bytes.
async fn read_body(mut body: Incoming) -> Result<Bytes, Failure> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| bad_body(format!("the request body could not be read: {e}")))?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > MAX_BODY {
                return Err((StatusCode::PAYLOAD_TOO_LARGE, format!("request body over {MAX_BODY} bytes")));
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out.freeze())
}

/// Reads and drops a body no endpoint wanted; `false` when it is too big,
/// too slow or broken, or the client waits for `100 Continue` before
/// sending it.
async fn discard(mut body: Incoming, parts: &Parts) -> bool {
    if body.is_end_stream() {
        return true;
    }
    if parts.headers.contains_key(header::EXPECT) {
        return false;
    }
    let drained = async {
        let mut left = MAX_BODY;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            let len = frame.data_ref().map_or(0, Bytes::len);
            if len > left {
                return false;
            }
            left -= len;
        }
        true
    };
    tokio::time::timeout(DISCARD_WITHIN, drained).await.unwrap_or(false)
}

fn close_after(resp: &mut AdminResponse) {
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// A short printable header value, for logs.
fn header_text(value: Option<&HeaderValue>) -> Option<String> {
    let s = value?.to_str().ok()?.trim();
    (!s.is_empty()).then(|| s.chars().filter(|c| !c.is_control()).take(80).collect())
}

fn status(live: &Live, guard: &Guard) -> Value {
    let table = live.load();
    let rates = live.rates.last_minute(&table);
    let routes: Vec<Value> = table
        .config
        .routes
        .iter()
        .enumerate()
        .map(|(ri, route)| {
            let backends: Vec<Value> = route
                .backends
                .iter()
                .zip(table.weights.route(ri))
                .map(|(b, &w)| {
                    let rate = rates
                        .get(&(route.name.to_string(), b.spec.name.to_string()))
                        .copied()
                        .unwrap_or_default();
                    json!({
                        "name": &*b.spec.name,
                        "weight": f64::from(w) / 100.0,
                        "url": b.spec.url.to_string(),
                        "health": live.health.describe(&b.spec.name),
                        "requests_per_second": rate.requests_per_second,
                        "error_rate": rate.error_rate,
                    })
                })
                .collect();
            let guard = table.routes[ri].guard.as_ref().map(|g| {
                let windows: serde_json::Map<String, Value> = route
                    .backends
                    .iter()
                    .enumerate()
                    .filter(|(bi, _)| *bi != route.stable)
                    .map(|(bi, b)| (b.spec.name.to_string(), json!(g.stats(bi))))
                    .collect();
                json!({
                    "min_requests": g.spec.min_requests,
                    "window_seconds": g.spec.window.as_secs(),
                    "windows": windows,
                    "last_rollback": guard.last_rollback(&route.name),
                })
            });
            json!({
                "name": &*route.name,
                "match": route.matcher.to_string(),
                "stable": &*route.backends[route.stable].spec.name,
                "backends": backends,
                "guard": guard,
            })
        })
        .collect();
    json!({
        "version": table.version,
        "config": table.config.path.display().to_string(),
        "weights_file": table.config.weights_path.display().to_string(),
        "ready": live.is_ready(),
        "last_reload": live.last_reload(),
        "last_change": live.last_change().map(|e| json!({
            "time": e.time,
            "description": change::describe(&e.who, &e.why),
            "who": e.who,
            "why": e.why,
        })),
        "routes": routes,
        "fleet": live.fleet().map(|f| f.view()),
    })
}

fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_string())
    })
}

fn text(status: StatusCode, body: &'static str) -> AdminResponse {
    respond(status, "text/plain; charset=utf-8", body)
}

fn json_response(status: StatusCode, value: &Value) -> AdminResponse {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

fn json_error(status: StatusCode, message: &str) -> AdminResponse {
    json_response(status, &json!({ "error": message }))
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> AdminResponse {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: ChangeError) -> (StatusCode, Value) {
        let resp = refused(&e);
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn refused_changes_map_to_one_status_each_and_a_conflict_shows_the_current_table() {
        let current: crate::config::NamedWeights =
            [("api".to_string(), [("legacy".to_string(), 70.0), ("new".to_string(), 30.0)].into())].into();
        let (status, body) = answer(ChangeError::Conflict { current }).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["current"], json!({"api": {"legacy": 70.0, "new": 30.0}}));
        assert!(body["error"].as_str().unwrap().contains("changed elsewhere"), "{body}");

        assert_eq!(answer(ChangeError::UnknownRoute("x".into())).await.0, StatusCode::NOT_FOUND);
        assert_eq!(answer(ChangeError::NothingToUndo).await.0, StatusCode::CONFLICT);
        assert_eq!(answer(ChangeError::NoRoutes).await.0, StatusCode::BAD_REQUEST);
        let (status, body) = answer(ChangeError::ChangedMeanwhile { route: "api".into() }).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(body.get("current").is_none());
    }
}
