//! Choosing: the route for a request, then its backend — the one a trusted
//! client forces, else the split's pick for the request's bucket (sticky by
//! cookie, header or pin, else random), moved off a backend that is down.

use std::net::IpAddr;

use http::header::HeaderMap;

use super::headers::cookie;
use crate::config::FORCE_TOKEN;
use crate::config::{ForceHeader, RouteSpec, Sticky};
use crate::routing::RequestView;
use crate::split::{self, BUCKETS};
use crate::table::{LiveRoute, Table};

/// Where a request goes and whether the response must pin the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Index of the route in the table.
    pub route: usize,
    /// Index of the backend in the route.
    pub backend: usize,
    pub bucket: u16,
    /// The bucket to pin the client to with the route's pin cookie.
    pub set_pin: Option<u16>,
    /// A trusted client named the backend with the route's force header.
    pub forced: bool,
}

impl Choice {
    /// Whether the exchange counts in the route guard's windows: a tester's
    /// forced requests say nothing about how users fare, unless the force
    /// header says they do.
    pub fn feeds_guard(&self, route: &RouteSpec) -> bool {
        !self.forced || route.force_header.as_ref().is_some_and(|f| f.guard)
    }
}

/// The route and backend for the request `view` describes; `None` when no
/// route matches. `client` names the client; it is only asked when a force
/// header is present.
pub fn choose(table: &Table, view: &RequestView<'_>, client: impl FnOnce() -> Option<IpAddr>) -> Option<Choice> {
    let route = table.config.route_for(view)?;
    let choice = choose_backend(&table.config.routes[route], &table.routes[route], view.headers, client);
    Some(Choice { route, ..choice })
}

/// The backend for a request: the one a trusted client forces, else the
/// split's pick for its bucket (moved off an unhealthy backend). `client`
/// names the client; it is only asked when a force header is present.
fn choose_backend(route: &RouteSpec, live: &LiveRoute, headers: &HeaderMap, client: impl FnOnce() -> Option<IpAddr>) -> Choice {
    if let Some(force) = &route.force_header
        && let Some(wanted) = headers.get(&force.name).and_then(|v| v.to_str().ok())
        && let Some(backend) = route.backend_index(wanted.trim())
    {
        let client = client();
        if may_force(force, headers, client) {
            return Choice {
                route: 0,
                backend,
                bucket: 0,
                set_pin: None,
                forced: true,
            };
        }
        tracing::debug!(route = %route.name, header = %force.name, client = ?client, "force header ignored: client network or token not accepted");
    }
    let (bucket, set_pin) = match &route.sticky {
        Sticky::None => (split::random_bucket(), None),
        Sticky::Cookie(name) => (
            cookie(headers, name).map_or_else(split::random_bucket, |v| split::sticky_bucket(v.as_bytes())),
            None,
        ),
        Sticky::Header(name) => (
            headers
                .get(name)
                .map_or_else(split::random_bucket, |v| split::sticky_bucket(v.as_bytes())),
            None,
        ),
        Sticky::Pin(name) => match cookie(headers, name).and_then(|v| v.parse::<u16>().ok()).filter(|b| *b < BUCKETS) {
            Some(bucket) => (bucket, None),
            None => {
                let bucket = split::random_bucket();
                (bucket, Some(bucket))
            }
        },
    };
    let picked = live.split.pick(bucket);
    let backend = if live.backends[picked].health.is_healthy() {
        picked
    } else {
        match live.split.failover(bucket, picked, |i| live.backends[i].health.is_healthy()) {
            Some(other) => {
                // The guard counts it against the backend that is down.
                if let Some(guard) = &live.guard {
                    guard.record_diverted(picked);
                }
                other
            }
            None => picked,
        }
    };
    Choice {
        route: 0,
        backend,
        bucket,
        set_pin,
        forced: false,
    }
}

/// Whether `client` (unknown: `None`) may pin a backend with `force`: from an
/// allowed network, and with the token when the route has one.
fn may_force(force: &ForceHeader, headers: &HeaderMap, client: Option<IpAddr>) -> bool {
    client.is_some_and(|ip| force.allows_client(ip))
        && force
            .token
            .as_ref()
            .is_none_or(|token| headers.get(&FORCE_TOKEN).is_some_and(|v| token.matches(v.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::test_table;
    use http::Method;
    use http::header::{HeaderName, HeaderValue};

    const ROUTES: &str = "routes:\n  - name: api\n    match: { path_prefix: /api/ }\n    stable: legacy\n    \
                          backends: { legacy: {}, new: {} }\n    sticky: { pin_cookie: cutover_pin }\n    force_header: X-Backend\n  \
                          - name: web\n    backends: { legacy: {}, new: {} }\n    sticky: { cookie: sessionid }\n";

    fn choice(table: &Table, path: &str, headers: &[(&str, &str)], client: &str) -> Option<Choice> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        let view = RequestView {
            path,
            host: None,
            method: &Method::GET,
            headers: &map,
        };
        choose(table, &view, || client.parse().ok())
    }

    #[test]
    fn the_split_decides_by_bucket_and_a_pin_cookie_is_set_once() {
        let table = test_table(ROUTES, "api: { legacy: 0, new: 100 }\nweb: { legacy: 100, new: 0 }\n");
        let first = choice(&table, "/api/x", &[], "192.0.2.1").unwrap();
        assert_eq!((first.route, first.backend, first.forced), (0, 1, false));
        assert_eq!(first.set_pin, Some(first.bucket), "a client without a pin gets one");
        let pinned = choice(&table, "/api/x", &[("cookie", "cutover_pin=1234")], "192.0.2.1").unwrap();
        assert_eq!((pinned.bucket, pinned.set_pin), (1234, None));
        let out_of_range = choice(&table, "/api/x", &[("cookie", "cutover_pin=10000")], "192.0.2.1").unwrap();
        assert!(out_of_range.set_pin.is_some(), "an impossible pin is replaced");
        let web = choice(&table, "/", &[("cookie", "sessionid=abc")], "192.0.2.1").unwrap();
        assert_eq!((web.route, web.backend), (1, 0));
        assert_eq!(web.bucket, split::sticky_bucket(b"abc"));
        assert_eq!(web.set_pin, None);
    }

    #[test]
    fn only_an_allowed_client_can_force_a_backend() {
        let table = test_table(ROUTES, "api: { legacy: 100, new: 0 }\nweb: { legacy: 100, new: 0 }\n");
        let forced = choice(&table, "/api/x", &[("x-backend", "new")], "127.0.0.1").unwrap();
        assert_eq!((forced.backend, forced.forced, forced.set_pin), (1, true, None));
        let stranger = choice(&table, "/api/x", &[("x-backend", "new")], "192.0.2.1").unwrap();
        assert_eq!((stranger.backend, stranger.forced), (0, false));
        let unknown = choice(&table, "/api/x", &[("x-backend", "nope")], "127.0.0.1").unwrap();
        assert_eq!((unknown.backend, unknown.forced), (0, false));
        assert!(
            !choice(&table, "/web", &[("x-backend", "new")], "127.0.0.1").unwrap().forced,
            "not this route's header"
        );
    }

    #[test]
    fn a_backend_that_is_down_loses_its_users_to_a_healthy_one() {
        let backends = "backends:\n  legacy: { url: \"http://127.0.0.1:1\" }\n  \
                        new: { url: \"http://127.0.0.1:2\", passive_health: { consecutive_failures: 1, cool_off: 60s } }\n";
        let table = crate::proxy::test_table_with(backends, ROUTES, "api: { legacy: 0, new: 100 }\nweb: { legacy: 0, new: 100 }\n");
        assert_eq!(choice(&table, "/api/x", &[], "192.0.2.1").unwrap().backend, 1);
        table.routes[0].backends[1].health.record(false);
        assert_eq!(
            choice(&table, "/api/x", &[], "192.0.2.1").unwrap().backend,
            0,
            "moved off the ejected backend"
        );
        let forced = choice(&table, "/api/x", &[("x-backend", "new")], "127.0.0.1").unwrap();
        assert_eq!(forced.backend, 1, "a forced request goes where it is told");
    }
}
