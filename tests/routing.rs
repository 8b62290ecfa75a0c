//! Route matching, path normalisation and path rewriting, end to end.

mod common;

use common::*;
use http::{Method, StatusCode};

/// Each route goes to its own echo upstream named after the route, so the
/// upstream that answers tells which route matched.
const ROUTES: &[(&str, &str)] = &[
    ("exact", "{ path: /exact }"),
    ("regex", "{ path_regex: \"^/items/[0-9]+$\" }"),
    ("host-exact", "{ host: api.example.com, path_prefix: /h/ }"),
    ("host-wild", "{ host: \"*.example.com\", path_prefix: /h/ }"),
    ("methods", "{ path_prefix: /m/, methods: [POST, put] }"),
    ("hdr-exact", "{ path_prefix: /hd/, headers: { X-Beta: \"yes\" } }"),
    (
        "hdr-regex",
        "{ path_prefix: /hd/, headers: { X-Client: { regex: \"^ios-[0-9]+$\" } } }",
    ),
    ("hdr-present", "{ path_prefix: /hd/, headers: { X-Debug: { present: true } } }"),
    ("hdr-absent", "{ path_prefix: /anon/, headers: { Cookie: { present: false } } }"),
    ("first", "{ path_prefix: /first/ }"),
    ("shadowed", "{ path_prefix: /first/deeper/ }"),
    ("prefix", "{ path_prefix: /p/ }"),
];

async fn matcher_proxy() -> (Proxy, Vec<Upstream>) {
    let mut upstreams = Vec::new();
    let mut config = config_head("{ path: off }");
    config.push_str("backends:\n");
    for (name, _) in ROUTES {
        let up = Upstream::echo(name).await;
        config.push_str(&format!("  {name}:\n    url: \"{}\"\n", up.url()));
        upstreams.push(up);
    }
    config.push_str("routes:\n");
    for (name, matcher) in ROUTES {
        config.push_str(&format!(
            "  - name: {name}\n    match: {matcher}\n    backends: {{ {name}: {{}} }}\n"
        ));
    }
    (Proxy::start(&config, "").await, upstreams)
}

/// (method, path, request headers, the route expected to answer or the status).
type Case<'a> = (Method, &'a str, &'a [(&'a str, &'a str)], &'a str);

/// Sends a request and returns the upstream that served it, or the status
/// when the proxy answered itself.
async fn route_of(c: &HttpClient, proxy: &Proxy, method: Method, path: &str, headers: &[(&str, &str)]) -> String {
    let resp = send_on(c, request(method, &proxy.url(path), headers)).await;
    match resp.header("x-upstream") {
        Some(up) => {
            assert_eq!(resp.status, StatusCode::OK);
            up.to_string()
        }
        None => resp.status.as_str().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_matcher_kind_selects_its_route_and_first_match_wins() {
    within(30, async {
        let (proxy, _ups) = matcher_proxy().await;
        let c = client();
        let cases: &[Case] = &[
            // path (exact)
            (Method::GET, "/exact", &[], "exact"),
            (Method::GET, "/exact/", &[], "404"),
            (Method::GET, "/exactly", &[], "404"),
            // path_regex
            (Method::GET, "/items/42", &[], "regex"),
            (Method::GET, "/items/42/", &[], "404"),
            (Method::GET, "/items/abc", &[], "404"),
            // host exact (case-insensitive, port ignored) before the wildcard
            (Method::GET, "/h/x", &[("host", "api.example.com")], "host-exact"),
            (Method::GET, "/h/x", &[("host", "API.Example.com:8080")], "host-exact"),
            // host wildcard: one or more labels, never the bare domain
            (Method::GET, "/h/x", &[("host", "shop.example.com")], "host-wild"),
            (Method::GET, "/h/x", &[("host", "a.b.example.com")], "host-wild"),
            (Method::GET, "/h/x", &[("host", "example.com")], "404"),
            (Method::GET, "/h/x", &[("host", "badexample.com")], "404"),
            // methods
            (Method::POST, "/m/x", &[], "methods"),
            (Method::PUT, "/m/x", &[], "methods"),
            (Method::GET, "/m/x", &[], "404"),
            (Method::DELETE, "/m/x", &[], "404"),
            // headers: exact value, regex, present (in file order)
            (Method::GET, "/hd/x", &[("x-beta", "yes")], "hdr-exact"),
            (Method::GET, "/hd/x", &[("x-beta", "no")], "404"),
            (Method::GET, "/hd/x", &[("x-client", "ios-17")], "hdr-regex"),
            (Method::GET, "/hd/x", &[("x-client", "android-17")], "404"),
            (Method::GET, "/hd/x", &[("x-debug", "")], "hdr-present"),
            (Method::GET, "/hd/x", &[("x-debug", "1"), ("x-beta", "yes")], "hdr-exact"),
            (Method::GET, "/hd/x", &[], "404"),
            // headers: present: false
            (Method::GET, "/anon/x", &[], "hdr-absent"),
            (Method::GET, "/anon/x", &[("cookie", "a=1")], "404"),
            // first match wins: /first/deeper/ is listed after /first/
            (Method::GET, "/first/deeper/x", &[], "first"),
            (Method::GET, "/first/", &[], "first"),
            // path_prefix is a plain string prefix
            (Method::GET, "/p/x", &[], "prefix"),
            (Method::GET, "/p", &[], "404"),
            // nothing matches
            (Method::GET, "/", &[], "404"),
            (Method::GET, "/nowhere", &[], "404"),
        ];
        let mut wrong = Vec::new();
        for (method, path, headers, want) in cases {
            let got = route_of(&c, &proxy, method.clone(), path, headers).await;
            if got != *want {
                wrong.push(format!("{method} {path} {headers:?}: want {want}, got {got}"));
            }
        }
        assert!(wrong.is_empty(), "misrouted:\n{}", wrong.join("\n"));

        // The proxy's own 404 says why, in plain text.
        let resp = get(&proxy.url("/nowhere")).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND);
        assert_eq!(resp.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(resp.text(), "no route matches this request\n");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_normalisation_blocks_route_bypass() {
    within(30, async {
        let admin = Upstream::echo("admin").await;
        let api = Upstream::echo("api").await;
        let config = format!(
            "{}backends:\n  admin: {{ url: \"{}\" }}\n  api: {{ url: \"{}\" }}\n\
             routes:\n\
             \x20 - name: admin\n    match: {{ path_prefix: /admin/ }}\n    backends: {{ admin: {{}} }}\n\
             \x20 - name: api\n    match: {{ path_prefix: /api/ }}\n    backends: {{ api: {{}} }}\n",
            config_head("{ path: off }"),
            admin.url(),
            api.url()
        );
        let proxy = Proxy::start(&config, "").await;
        // Raw bytes, so no client library cleans the path up first.
        for (target, want_path) in [
            ("/api/../admin/x", "/admin/x"),
            ("/%61dmin/x", "/admin/x"),
            ("/api/%2e%2e/admin/x", "/admin/x"),
            ("/api/%2E%2E/admin/x?q=1", "/admin/x?q=1"),
            ("//admin//x", "/admin/x"),
            ("/api/./../admin/./x", "/admin/x"),
            ("/api/x/../../admin/x", "/admin/x"),
            ("/../../admin/x", "/admin/x"),
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n");
            let (code, headers, body) = parse_raw_response(&raw_exchange(proxy.addr(), raw.as_bytes()).await);
            assert_eq!(code, 200, "{target}: {body}");
            let up = headers.iter().find(|(k, _)| k == "x-upstream").map(|(_, v)| v.as_str());
            assert_eq!(up, Some("admin"), "{target} was routed to {up:?}");
            let seen = Seen(serde_json::from_str(&body).unwrap());
            assert_eq!(seen.uri(), want_path, "{target}");
        }
        // Escapes of reserved characters are kept (hex upper-cased), not decoded.
        let raw = "GET /api/a%3fb HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n";
        let (code, _, body) = parse_raw_response(&raw_exchange(proxy.addr(), raw.as_bytes()).await);
        assert_eq!(code, 200);
        let seen = Seen(serde_json::from_str(&body).unwrap());
        assert_eq!((seen.backend(), seen.uri()), ("api", "/api/a%3Fb"));
        // Malformed escapes are refused, not forwarded.
        let raw = "GET /api/%zz HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n";
        let (code, _, body) = parse_raw_response(&raw_exchange(proxy.addr(), raw.as_bytes()).await);
        assert_eq!(code, 400, "{body}");
        assert_eq!(admin.hits() + api.hits(), 9);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_replaces_the_prefix_for_one_backend_only() {
    within(30, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        let config = format!(
            "{}backends:\n  legacy: {{ url: \"{}\" }}\n  new: {{ url: \"{}/v2\" }}\n\
             routes:\n\
             \x20 - name: auth\n    match: {{ path_prefix: /api/auth/ }}\n\
             \x20   backends:\n      legacy: {{}}\n      new: {{ rewrite: {{ prefix: /api/auth/, to: /auth/ }} }}\n\
             \x20   force_header: X-Cutover-Backend\n",
            config_head("{ path: off }"),
            legacy.url(),
            new.url()
        );
        let proxy = Proxy::start(&config, "auth: { legacy: 0, new: 100 }\n").await;
        let c = client();

        let seen = send_on(&c, request(Method::GET, &proxy.url("/api/auth/login/?q=1"), &[]))
            .await
            .seen();
        // The backend URL's base path comes first, then the rewritten path.
        assert_eq!((seen.backend(), seen.uri()), ("new", "/v2/auth/login/?q=1"));

        let body = send_on(
            &c,
            http::Request::post(proxy.url("/api/auth/login/")).body(full("user=ada")).unwrap(),
        )
        .await
        .seen();
        assert_eq!((body.method(), body.uri(), body.body()), ("POST", "/v2/auth/login/", "user=ada"));

        // The other backend of the route gets the path unchanged.
        let seen = send_on(
            &c,
            request(Method::GET, &proxy.url("/api/auth/login/?q=1"), &[("x-cutover-backend", "legacy")]),
        )
        .await
        .seen();
        assert_eq!((seen.backend(), seen.uri()), ("legacy", "/api/auth/login/?q=1"));
    })
    .await;
}

/// Sends `head` (request line and headers, without the blank line) on a
/// connection from `source`, a loopback address; returns the status and the
/// upstream that answered.
async fn from_source(source: &str, proxy: &Proxy, head: &str) -> (u16, String) {
    let raw = format!("{head}Host: a\r\nConnection: close\r\n\r\n");
    let reply = exchange_from(source, proxy.addr(), raw.as_bytes()).await;
    assert!(reply.closed, "an answer within 5s: {:?}", reply.text());
    let (code, headers, _) = parse_raw_response(&reply.text());
    (code, header_of(&headers, "x-upstream").unwrap_or_default().to_string())
}

/// `legacy` takes everyone; `new` (weight 0) only forced requests.
fn forced_config(legacy: &Upstream, new: &Upstream, head_extra: &str, route_extra: &str) -> String {
    format!(
        "{}{head_extra}backends:\n  legacy: {{ url: \"{}\" }}\n  new: {{ url: \"{}\" }}\n\
         routes:\n  - name: api\n    match: {{ path_prefix: / }}\n    backends: {{ legacy: {{}}, new: {{}} }}\n{route_extra}",
        config_head("{ path: off }"),
        legacy.url(),
        new.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_header_is_honoured_only_from_allowed_clients() {
    within(60, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        let config = forced_config(
            &legacy,
            &new,
            "trusted_proxies: [\"127.0.0.3\"]\n",
            "    force_header: { name: X-Cutover-Backend, from: [\"127.0.0.1/32\"] }\n",
        );
        let proxy = Proxy::start(&config, "api: { legacy: 100, new: 0 }\n").await;
        let force = "GET /f HTTP/1.1\r\nX-Cutover-Backend: new\r\n";
        let xff = |chain: &str| format!("{force}X-Forwarded-For: {chain}\r\n");
        let cases: Vec<(&str, String, &str)> = vec![
            // The peer itself: allowed, even to a backend with weight 0.
            ("127.0.0.1", force.to_string(), "new"),
            ("127.0.0.2", force.to_string(), "legacy"),
            // A peer that is not a trusted proxy is not believed about the client.
            ("127.0.0.2", xff("127.0.0.1"), "legacy"),
            // Behind a trusted proxy: the rightmost address that is not one.
            ("127.0.0.3", xff("127.0.0.2"), "legacy"),
            ("127.0.0.3", xff("127.0.0.2, 127.0.0.1"), "new"),
            ("127.0.0.3", xff("127.0.0.1, 127.0.0.2"), "legacy"),
            ("127.0.0.3", xff("127.0.0.1, 127.0.0.3"), "new"),
            ("127.0.0.3", xff("127.0.0.1:4711"), "new"),
            ("127.0.0.3", xff("127.0.0.1, nonsense"), "legacy"),
            // The trusted proxy itself is not an allowed client.
            ("127.0.0.3", force.to_string(), "legacy"),
        ];
        let mut wrong = Vec::new();
        for (source, head, want) in &cases {
            let (code, got) = from_source(source, &proxy, head).await;
            if (code, got.as_str()) != (200, *want) {
                wrong.push(format!("from {source} {head:?}: want {want}, got {code} {got}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));

        // The short form trusts loopback, any of it.
        let short = forced_config(&legacy, &new, "", "    force_header: X-Cutover-Backend\n");
        let proxy = Proxy::start(&short, "api: { legacy: 100, new: 0 }\n").await;
        for source in ["127.0.0.1", "127.0.0.2"] {
            assert_eq!(from_source(source, &proxy, force).await, (200, "new".to_string()), "from {source}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_token_is_required_when_the_route_has_one() {
    within(60, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        // The token file is found beside the config file.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("force.token"), "s3cret-token\n").unwrap();
        std::fs::write(dir.path().join("weights.yaml"), "api: { legacy: 100, new: 0 }\n").unwrap();
        let config_path = dir.path().join("cutover.yaml");
        std::fs::write(
            &config_path,
            forced_config(
                &legacy,
                &new,
                "",
                "    force_header: { name: X-Cutover-Backend, token_file: force.token }\n",
            ),
        )
        .unwrap();
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("run").arg("-c").arg(&config_path);
        let proxy = Proxy::spawn(cmd, dir, config_path).await;
        let c = client();
        for (token, want) in [
            (None, "legacy"),
            (Some(""), "legacy"),
            (Some("wrong"), "legacy"),
            (Some("s3cret-toke"), "legacy"),
            (Some("s3cret-token2"), "legacy"),
            (Some("s3cret-token"), "new"),
        ] {
            let mut headers = vec![("x-cutover-backend", "new")];
            headers.extend(token.map(|t| ("x-cutover-force-token", t)));
            let seen = send_on(&c, request(Method::GET, &proxy.url("/t"), &headers)).await.seen();
            assert_eq!(seen.backend(), want, "token {token:?}");
            // Neither the token nor the force header reaches a backend.
            assert!(
                !seen.header_names().iter().any(|h| h.starts_with("x-cutover-")),
                "{:?}",
                seen.header_names()
            );
        }
    })
    .await;
}

/// Counts guard rollbacks of route `api`.
async fn guard_rollbacks(proxy: &Proxy) -> f64 {
    proxy
        .metric("cutover_rollbacks_total", &[("route", "api"), ("reason", "guard")])
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_requests_stay_out_of_the_guard_unless_it_asks_for_them() {
    within(60, async {
        let legacy = Upstream::echo("legacy").await;
        let failing = Upstream::with("new", |_req| async {
            http::Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .header("x-upstream", "new")
                .body(full("broken"))
                .unwrap()
        })
        .await;
        let guarded = |force: &str| {
            format!(
                "{}backends:\n  legacy: {{ url: \"{}\" }}\n  new: {{ url: \"{}\", passive_health: {{ consecutive_failures: 0 }} }}\n\
                 routes:\n  - name: api\n    stable: legacy\n    backends: {{ legacy: {{}}, new: {{}} }}\n\
                 \x20   force_header: {force}\n\
                 \x20   guard: {{ max_error_rate: 0.2, window: 30s, min_requests: 10 }}\n",
                config_head("{ path: off }"),
                legacy.url(),
                failing.url()
            )
        };
        let weights = "api: { legacy: 90, new: 10 }\n";
        let quiet = Proxy::start(&guarded("X-Cutover-Backend"), weights).await;
        let counted = Proxy::start(&guarded("{ name: X-Cutover-Backend, guard: true }"), weights).await;
        let c = client();
        for proxy in [&quiet, &counted] {
            for i in 0..60 {
                let resp = send_on(
                    &c,
                    request(Method::GET, &proxy.url(&format!("/x/{i}")), &[("x-cutover-backend", "new")]),
                )
                .await;
                assert_eq!((resp.status, resp.upstream()), (StatusCode::INTERNAL_SERVER_ERROR, "new"));
            }
        }
        // Counted: 60 failures roll the route back.
        counted
            .wait_metric("cutover_rollbacks_total", &[("route", "api"), ("reason", "guard")], 1.0)
            .await;
        // Not counted: the guard has seen nothing, through more than one check.
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        assert_eq!(guard_rollbacks(&quiet).await, 0.0, "{}", quiet.stderr_text());
        let status = get(&format!("http://{}/admin/status", quiet.admin)).await.json();
        assert_eq!(status["routes"][0]["backends"][1]["weight"], 10.0, "{status:#}");
        assert!(status["routes"][0]["guard"]["last_rollback"].is_null(), "{status:#}");
    })
    .await;
}

/// A tester forcing `new` while it is down must see it fail, not get
/// legacy's answer as though `new` had given it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_request_to_a_backend_that_is_down_fails_instead_of_going_elsewhere() {
    within(30, async {
        let legacy = Upstream::echo("legacy").await;
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        let config = format!(
            "{}backends:\n  legacy: {{ url: \"{}\" }}\n  new: {{ url: \"http://{dead}\" }}\n\
             routes:\n  - name: api\n    stable: legacy\n    backends: {{ legacy: {{}}, new: {{}} }}\n\
             \x20   force_header: X-Cutover-Backend\n",
            config_head("{ path: off }"),
            legacy.url(),
        );
        let proxy = Proxy::start(&config, "api: { legacy: 50, new: 50 }\n").await;
        let c = client();
        let forced = send_on(&c, request(Method::GET, &proxy.url("/x"), &[("x-cutover-backend", "new")])).await;
        assert_eq!(forced.status, StatusCode::BAD_GATEWAY, "{}", forced.text());
        // Unforced, the same failure is retried on legacy, as before.
        for i in 0..10 {
            let resp = send_on(&c, request(Method::GET, &proxy.url(&format!("/y/{i}")), &[])).await;
            assert_eq!((resp.status, resp.upstream()), (StatusCode::OK, "legacy"));
        }
    })
    .await;
}

/// `allow_from`: nginx's `allow ...; deny all;` for an admin area. The
/// client is the peer, or what a trusted proxy says it forwarded for; a
/// client's own `X-Forwarded-For` counts for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_open_only_to_some_networks_refuses_everyone_else_with_403() {
    within(30, async {
        let app = Upstream::echo("app").await;
        let config = format!(
            "{}trusted_proxies: [127.0.0.1]\nbackends:\n  app: {{ url: \"{}\" }}\n\
             routes:\n  - name: admin\n    match: {{ path_prefix: /admin/ }}\n    backends: {{ app: {{}} }}\n\
             \x20   allow_from: [10.0.0.0/8, 192.0.2.7]\n\
             \x20 - name: site\n    backends: {{ app: {{}} }}\n",
            config_head("{ path: off }"),
            app.url(),
        );
        let proxy = Proxy::start(&config, "").await;
        // From 127.0.0.1, the trusted load balancer, for several clients.
        for (forwarded_for, status) in [
            (Some("10.1.2.3"), StatusCode::OK),
            (Some("192.0.2.7"), StatusCode::OK),
            (Some("203.0.113.9"), StatusCode::FORBIDDEN),
            (Some("10.1.2.3, 203.0.113.9"), StatusCode::FORBIDDEN),
            (None, StatusCode::FORBIDDEN),
        ] {
            let headers: Vec<(&str, &str)> = forwarded_for.iter().map(|v| ("x-forwarded-for", *v)).collect();
            let resp = send(request(Method::GET, &proxy.url("/admin/users/"), &headers)).await;
            assert_eq!(resp.status, status, "{forwarded_for:?}: {}", resp.text());
        }
        let hits = app.hits();
        assert_eq!(hits, 2, "refused requests reach no backend");
        // From 127.0.0.2, a client of its own: its claim to be 10.1.2.3 is ignored.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let stream = socket.connect(proxy.addr()).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let spoofed = http::Request::get("/admin/users/")
            .header("host", "shop.example")
            .header("x-forwarded-for", "10.1.2.3")
            .body(empty())
            .unwrap();
        assert_eq!(sender.send_request(spoofed).await.unwrap().status(), StatusCode::FORBIDDEN);
        // The rest of the site is open to all.
        sender.ready().await.unwrap();
        let page = http::Request::get("/").header("host", "shop.example").body(empty()).unwrap();
        assert_eq!(sender.send_request(page).await.unwrap().status(), StatusCode::OK);
        assert_eq!(app.hits(), hits + 1);
    })
    .await;
}
