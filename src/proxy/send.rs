//! Sending, with a retry: a request that got no answer is sent once more, to
//! another healthy backend of its route (or the same one when it is the
//! only one, or the request was forced to it), when its method allows it
//! and its body was kept whole.
//!
//! The policy is a `tower::retry::Policy`: it keeps a copy of the request
//! ([`Policy::clone_request`]) and, given an attempt's result, says whether
//! and where to send it again ([`Policy::retry`]). [`send`] drives it by hand
//! instead of through tower's `Retry` service: that service's future holds
//! its inner service's future by name, and the future of hyper's
//! `try_send_request` can only be named boxed — one allocation per request
//! on the hot path, plus a clone of the service per call. Here the attempt
//! is polled in place, and the second attempt reuses the first one's slot.

use std::future::{Ready, ready};

use http::Request;
use http::{HeaderMap, Method, Response};
use tower::retry::Policy;

use super::record::RequestRecord;
use crate::config::RouteSpec;
use crate::table::LiveRoute;
use crate::upstream::{Failure, RequestBody, Target, UpstreamBody, Verdict, request_for};

/// Largest request body kept whole so a request can be retried.
pub const RETRY_BODY_LIMIT: u64 = 64 * 1024;

/// One try at a backend: which one, and the request as any backend is sent
/// it (pointed at the backend in place, by `request_for`).
pub struct Attempt {
    pub backend: usize,
    pub request: Request<RequestBody>,
}

impl Attempt {
    /// A copy to send again, when the body was kept whole. The head's
    /// extensions stay with the first attempt: nothing in them is for a backend.
    fn try_clone(&self) -> Option<Attempt> {
        let mut request = Request::new(self.request.body().try_clone()?);
        *request.method_mut() = self.request.method().clone();
        *request.uri_mut() = self.request.uri().clone();
        *request.version_mut() = self.request.version();
        *request.headers_mut() = self.request.headers().clone();
        Some(Attempt {
            backend: self.backend,
            request,
        })
    }
}

/// When and where a request is sent again.
pub struct RetryPolicy<'a> {
    live: &'a LiveRoute,
    /// The request's bucket: a failover keeps it where the split would.
    /// None for a forced request: it is retried only on the backend it
    /// names, so a tester never gets another backend's answer.
    bucket: Option<u16>,
    /// Retries left: one for a request that may be retried, else none.
    left: u8,
}

impl<'a> RetryPolicy<'a> {
    /// The policy for a request to `route` with `method` and `headers`:
    /// retried if its method is idempotent (or the route opts in), it is
    /// not a protocol switch, and its body is empty or small enough to keep.
    pub fn new(
        route: &RouteSpec,
        live: &'a LiveRoute,
        bucket: Option<u16>,
        method: &Method,
        headers: &HeaderMap,
        empty_body: bool,
        upgrade: bool,
    ) -> Self {
        let small = empty_body || super::checks::content_length(headers).is_some_and(|n| n <= RETRY_BODY_LIMIT);
        let allowed = !upgrade && route.retry.allows(method) && small;
        RetryPolicy {
            live,
            bucket,
            left: u8::from(allowed),
        }
    }

    /// Whether the body must be read whole before the first attempt.
    pub fn keeps_body(&self) -> bool {
        self.left > 0
    }
}

impl Policy<Attempt, Response<UpstreamBody>, Failure> for RetryPolicy<'_> {
    type Future = Ready<()>;

    /// Sends `attempt` again after a failure that reached no application
    /// ([`Failure::retryable`]), to the backend the split fails its bucket
    /// over to: healthy, or the same one when no other is.
    fn retry(&mut self, attempt: &mut Attempt, result: &mut Result<Response<UpstreamBody>, Failure>) -> Option<Ready<()>> {
        match result {
            Err(failure) if failure.retryable() && self.left > 0 => {
                self.left -= 1;
                let live = self.live;
                if let Some(bucket) = self.bucket {
                    attempt.backend = live
                        .split
                        .failover(bucket, attempt.backend, |i| live.backends[i].health.is_healthy())
                        .unwrap_or(attempt.backend);
                }
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, attempt: &Attempt) -> Option<Attempt> {
        if self.left == 0 {
            return None;
        }
        attempt.try_clone()
    }
}

/// What sending came to: the backend that answered (or failed last).
pub struct Sent {
    pub backend: usize,
    pub retried: bool,
    pub result: Result<Response<UpstreamBody>, Failure>,
}

/// Sends `attempt` to its backend, and again as `policy` says. Each attempt
/// is counted as it ends ([`RequestRecord::attempted`]), a retried one
/// against the backend that failed ([`RequestRecord::retried`]).
pub async fn send(
    route: &RouteSpec,
    live: &LiveRoute,
    target: Target<'_>,
    record: &mut RequestRecord,
    mut attempt: Attempt,
    mut policy: RetryPolicy<'_>,
) -> Sent {
    let mut kept = policy.clone_request(&attempt);
    let mut retried = false;
    loop {
        let backend = attempt.backend;
        let mut result = match request_for(&route.backends[backend], &mut attempt.request, target) {
            Ok(()) => live.backends[backend].client.send(attempt.request).await,
            Err(failure) => Err(failure),
        };
        record.attempted(backend, Verdict::of(&result));
        // The kept copy is moved only for a failure: an answer is matched
        // by reference and moved once, into `Sent`.
        let again = match &result {
            Err(_) => kept.take().and_then(|mut next| policy.retry(&mut next, &mut result).map(|_| next)),
            Ok(_) => None,
        };
        match again {
            Some(next) if let Err(failure) = &result => {
                record.retried(backend, *failure, next.backend);
                kept = policy.clone_request(&next);
                attempt = next;
                retried = true;
            }
            _ => return Sent { backend, retried, result },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::test_table_with;
    use crate::upstream::{ClientFault, FailureKind};
    use bytes::Bytes;

    const BACKENDS: &str = "backends:\n  \
                            legacy: { url: \"http://127.0.0.1:1\", passive_health: { consecutive_failures: 1, cool_off: 60s } }\n  \
                            new: { url: \"http://127.0.0.1:2\", passive_health: { consecutive_failures: 1, cool_off: 60s } }\n  \
                            third: { url: \"http://127.0.0.1:3\", passive_health: { consecutive_failures: 1, cool_off: 60s } }\n";
    const ROUTES: &str = "routes:\n  - name: api\n    stable: legacy\n    backends: { legacy: {}, new: {}, third: {} }\n  \
                          - name: posts\n    stable: legacy\n    backends: { legacy: {}, new: {} }\n    retry: { non_idempotent: true }\n";
    const WEIGHTS: &str = "api: { legacy: 0, new: 100, third: 0 }\nposts: { legacy: 0, new: 100 }\n";

    fn attempt(method: Method, body: RequestBody) -> Attempt {
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = "/x?y".parse().unwrap();
        Attempt { backend: 1, request }
    }

    fn whole(text: &'static str) -> RequestBody {
        RequestBody::full(Bytes::from_static(text.as_bytes()))
    }

    #[test]
    fn who_may_be_retried() {
        let table = test_table_with(BACKENDS, ROUTES, WEIGHTS);
        let (api, posts) = (
            (&table.config.routes[0], &table.routes[0]),
            (&table.config.routes[1], &table.routes[1]),
        );
        let keeps = |(route, live): (&RouteSpec, &LiveRoute), method: Method, length: Option<&str>, empty: bool, upgrade: bool| {
            let mut headers = HeaderMap::new();
            if let Some(n) = length {
                headers.insert(http::header::CONTENT_LENGTH, n.parse().unwrap());
            }
            RetryPolicy::new(route, live, Some(0), &method, &headers, empty, upgrade).keeps_body()
        };
        assert!(keeps(api, Method::GET, None, true, false));
        assert!(keeps(api, Method::PUT, Some("65536"), false, false), "a body up to 64 KiB is kept");
        assert!(!keeps(api, Method::PUT, Some("65537"), false, false));
        assert!(!keeps(api, Method::PUT, None, false, false), "a body of unknown length streams");
        assert!(!keeps(api, Method::POST, None, true, false), "POST only where the route opts in");
        assert!(keeps(posts, Method::POST, Some("2"), false, false));
        assert!(!keeps(api, Method::GET, None, true, true), "a protocol switch is never sent twice");
    }

    #[test]
    fn only_a_request_that_reached_no_application_goes_again_once_to_a_healthy_backend() {
        let table = test_table_with(BACKENDS, ROUTES, WEIGHTS);
        let (route, live) = (&table.config.routes[0], &table.routes[0]);
        let policy = || RetryPolicy::new(route, live, Some(9_999), &Method::GET, &HeaderMap::new(), true, false);
        let first = attempt(Method::GET, whole(""));
        let failed = |kind| Err::<Response<UpstreamBody>, _>(Failure::Backend(kind));

        // Nothing reached the backend's application: once more, elsewhere
        // (the bucket's place among the others: `third` for the last bucket).
        let mut p = policy();
        let mut again = p.clone_request(&first).expect("a kept request is copied");
        assert!(p.retry(&mut again, &mut failed(FailureKind::Connect)).is_some());
        assert_eq!(again.backend, 2, "failed over");
        assert_eq!(
            (again.request.method().clone(), again.request.uri().to_string()),
            (Method::GET, "/x?y".to_string())
        );
        assert!(p.clone_request(&again).is_none(), "one retry only");
        assert!(p.retry(&mut again, &mut failed(FailureKind::Reset)).is_none());

        // The backend may have acted on it, or the client is at fault: never again.
        for failure in [
            Failure::Backend(FailureKind::Timeout),
            Failure::Backend(FailureKind::Protocol),
            Failure::Client(ClientFault::BodyBroken),
        ] {
            let mut p = policy();
            let mut again = p.clone_request(&first).unwrap();
            assert!(p.retry(&mut again, &mut Err(failure)).is_none(), "{failure:?}");
        }

        // A down backend is skipped; with none healthy, the same one is tried.
        let failover = || {
            let mut p = policy();
            let mut again = p.clone_request(&first).unwrap();
            p.retry(&mut again, &mut failed(FailureKind::Reset));
            again.backend
        };
        live.backends[2].health.record(false);
        assert_eq!(failover(), 0);
        live.backends[0].health.record(false);
        assert_eq!(failover(), 1);

        // A forced request goes again only where it was forced.
        let mut forced = RetryPolicy::new(route, live, None, &Method::GET, &HeaderMap::new(), true, false);
        let mut again = forced.clone_request(&first).unwrap();
        assert!(forced.retry(&mut again, &mut failed(FailureKind::Connect)).is_some());
        assert_eq!(again.backend, first.backend);
    }
}
