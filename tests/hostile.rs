//! Hostile input from clients and from backends. Requests are written as raw
//! bytes to the real binary; a recording backend keeps every request it
//! parsed and every byte it received, so each case proves both the status
//! the client gets and that nothing was smuggled past the proxy.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_desync_guardian::RequestSafetyTier;
use http_desync_guardian::request_analyzer::HttpRequestData;

/// Sends `raw`, expects `status` and a closed connection, and that the
/// backend received no request at all.
async fn refused(proxy: &Proxy, rec: &Recorder, raw: &[u8], status: u16) {
    let what = String::from_utf8_lossy(raw).into_owned();
    let before = rec.requests().len();
    let reply = exchange(proxy.addr(), raw).await;
    assert_eq!(reply.status(), Some(status), "{what:?} got {:?}", reply.text());
    assert!(reply.closed, "{what:?}: connection left open after a refused request");
    assert_eq!(reply.responses(), 1, "{what:?}: {:?}", reply.text());
    settle().await;
    let after = rec.requests();
    assert_eq!(after.len(), before, "{what:?} reached the backend: {:?}", &after[before..]);
}

/// The request-safety tier an independent desync analyser gives a request head.
fn tier(raw: &[u8]) -> RequestSafetyTier {
    HttpRequestData::analyze_raw_request(raw).tier
}

/// The proxy process is alive (not a zombie) and answers a plain request.
async fn assert_alive(proxy: &Proxy, path: &str) {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", proxy.pid())).expect("proxy process exists");
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next().unwrap()).unwrap();
    assert_ne!(state, 'Z', "the proxy exited:\n{}", proxy.stderr_text());
    let resp = get(&proxy.url(path)).await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
}

/// Config with the given `server:` settings, a host-matched route `other`
/// and a catch-all route `main`.
fn config(server: &str, main: &Recorder, other: &Recorder) -> String {
    let mut c = config_head("{ path: off }");
    c.push_str(&format!("server: {server}\n"));
    c.push_str(&format!(
        "backends:\n  main: {{ url: \"{}\" }}\n  other: {{ url: \"{}\" }}\n\
         routes:\n  - name: other\n    match: {{ host: other.example }}\n    backends: {{ other: {{}} }}\n\
         \x20 - name: main\n    match: {{ path_prefix: / }}\n    backends: {{ main: {{}} }}\n",
        main.url(),
        other.url()
    ));
    c
}

const LIMITS: &str = "{ max_header_bytes: 8192, max_headers: 20, header_read_timeout: 1s, max_body_bytes: 1024, body_read_timeout: 1s }";

async fn start() -> (Proxy, Recorder, Recorder) {
    let main = Recorder::start().await;
    let other = Recorder::start().await;
    let proxy = Proxy::start(&config(LIMITS, &main, &other), "").await;
    (proxy, main, other)
}

// ---------------------------------------------------------------- request smuggling

/// Asserts `reply` carries `statuses` in order, the last a 400 with
/// `Connection: close`, and that the connection was closed.
fn assert_refused_after(reply: &RawReply, statuses: &[u16], what: &str) {
    let text = reply.text();
    // The recording backend's bodies (`seen N`) end without a line break.
    let seen: Vec<u16> = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect();
    assert_eq!(seen, statuses, "{what}: {text:?}");
    let last = &text[text.rfind("HTTP/1.1 400").unwrap_or(0)..];
    assert!(last.to_ascii_lowercase().contains("connection: close"), "{what}: {last:?}");
    assert!(reply.closed, "{what}: connection left open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_refused_before_any_backend() {
    within(60, async {
        let (proxy, rec, _) = start().await;
        let hidden = "GET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n";
        let length = format!("Content-Length: {}", 5 + hidden.len());
        let chunked = "Transfer-Encoding: chunked";

        // CL.TE and TE.CL, in both header orders: a front end trusting one
        // header and a back end trusting the other disagree on where the
        // request ends. hyper would drop the length and go on; nginx ≥ 1.21.1
        // refuses, and so does the proxy, before any backend is asked.
        let mut cases = Vec::new();
        for (first, second) in [(length.as_str(), chunked), (chunked, length.as_str())] {
            cases.push(format!(
                "POST /clte HTTP/1.1\r\nHost: app\r\n{first}\r\n{second}\r\n\r\n0\r\n\r\n{hidden}"
            ));
        }
        for (first, second) in [("Content-Length: 4", chunked), (chunked, "Content-Length: 4")] {
            cases.push(format!(
                "POST /tecl HTTP/1.1\r\nHost: app\r\n{first}\r\n{second}\r\n\r\n{:x}\r\n{hidden}\r\n0\r\n\r\n",
                hidden.len()
            ));
        }
        // A length the proxy could not parse does not make the pair acceptable.
        cases.push(format!(
            "POST /clte HTTP/1.1\r\nHost: app\r\n{chunked}\r\nContent-Length: x\r\n\r\n0\r\n\r\n{hidden}"
        ));
        // Obfuscated or non-final chunked codings, and Transfer-Encoding where it cannot be.
        for te in [
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
            "Transfer-Encoding: chunked, identity",
            "Transfer-Encoding: xchunked",
            "Transfer-Encoding: \x0bchunked",
            "Transfer-Encoding : chunked",
            "X-Pad: 1\r\n Transfer-Encoding: chunked",
        ] {
            cases.push(format!(
                "POST /te HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\n{te}\r\n\r\n0\r\n\r\n{hidden}"
            ));
        }
        cases.push(format!("POST /te10 HTTP/1.0\r\nHost: app\r\n{chunked}\r\n\r\n0\r\n\r\n{hidden}"));
        for raw in &cases {
            assert!(
                tier(raw.as_bytes()) >= RequestSafetyTier::Ambiguous,
                "the analyser sees a desync risk in {raw:?}"
            );
        }
        // Codings other than one `chunked`: framing the analyser accepts, but
        // hyper would decode one chunked layer and pass the rest on as the
        // body (nginx answers 501).
        for te in [
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding: chunked, chunked",
            "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        ] {
            cases.push(format!("POST /te HTTP/1.1\r\nHost: app\r\n{te}\r\n\r\n0\r\n\r\n{hidden}"));
        }
        for raw in &cases {
            let reply = exchange(proxy.addr(), raw.as_bytes()).await;
            assert_refused_after(&reply, &[400], raw);
        }
        settle().await;
        assert!(rec.requests().is_empty(), "{:?}", rec.requests());
        assert!(rec.raw().is_empty(), "backend bytes: {:?}", rec.raw());

        // Behind other requests on the same connection: they are served, the
        // refused one and everything after it are not.
        let both = format!("POST /both HTTP/1.1\r\nHost: app\r\n{length}\r\n{chunked}\r\n\r\n0\r\n\r\n{hidden}");
        let body = "GET /fake HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let pipelined = format!(
            "GET /first HTTP/1.1\r\nHost: app\r\n\r\n\
             POST /second HTTP/1.1\r\nHost: app\r\nContent-Length: {}\r\n\r\n{body}\
             POST /third HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n\
             {both}",
            body.len(),
            body.len()
        );
        let reply = exchange(proxy.addr(), pipelined.as_bytes()).await;
        assert_refused_after(&reply, &[200, 200, 200, 400], "pipelined");
        // The same, with the refused head cut in two and sent a piece at a
        // time, then after the connection was parked between requests.
        let (start, end) = both.split_at(40);
        let reply = exchange_in_pieces(
            proxy.addr(),
            &[b"GET /first HTTP/1.1\r\nHost: app\r\n\r\n", start.as_bytes(), end.as_bytes()],
            Duration::from_millis(50),
        )
        .await;
        assert_refused_after(&reply, &[200, 400], "split head");
        let reply = exchange_in_pieces(
            proxy.addr(),
            &[b"GET /first HTTP/1.1\r\nHost: app\r\n\r\n", both.as_bytes()],
            Duration::from_millis(400),
        )
        .await;
        assert_refused_after(&reply, &[200, 400], "after parking");
        settle().await;
        let seen: Vec<String> = rec.requests().into_iter().map(|r| format!("{} {}", r.method, r.uri)).collect();
        assert_eq!(seen, ["GET /first", "POST /second", "POST /third", "GET /first", "GET /first"]);
        for r in rec.requests() {
            r.assert_framing_unambiguous();
        }
        assert!(!rec.raw().contains("/smuggled") && !rec.raw().contains("/both"), "{:?}", rec.raw());
        assert_alive(&proxy, "/after").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_conflicting_content_length_is_refused() {
    within(60, async {
        let (proxy, rec, _) = start().await;
        for cl in [
            "Content-Length: 1, 2",
            "Content-Length: 5, 5",
            "Content-Length: +5",
            "Content-Length: 0x10",
            "Content-Length: -1",
            "Content-Length: 5 5",
            "Content-Length: 99999999999999999999999",
            "Content-Length: ",
            "Content-Length: 5\r\nContent-Length: 6",
        ] {
            let raw = format!("POST /cl HTTP/1.1\r\nHost: app\r\n{cl}\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n");
            refused(&proxy, &rec, raw.as_bytes(), 400).await;
        }
        // The same length twice is one length (RFC 9110 §8.6); the backend gets it once.
        let raw = "POST /cl2 HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
        let reply = exchange(proxy.addr(), raw.as_bytes()).await;
        assert_eq!(reply.status(), Some(200), "{}", reply.text());
        settle().await;
        let seen = rec.requests();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].body.as_deref(), Ok(&b"hello"[..]));
        seen[0].assert_framing_unambiguous();
        assert!(!rec.raw().contains("/smuggled"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunk_sizes_get_400_and_no_complete_request() {
    within(60, async {
        let (proxy, rec, _) = start().await;
        for chunks in [
            "zz\r\nhello\r\n0\r\n\r\n",
            "-5\r\nhello\r\n0\r\n\r\n",
            "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            "5\r\nhelloXX\r\n0\r\n\r\n",
            "5 5\r\nhello\r\n0\r\n\r\n",
            "0x5\r\nhello\r\n0\r\n\r\n",
        ] {
            let raw = format!("POST /chunks HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}");
            let reply = exchange(proxy.addr(), raw.as_bytes()).await;
            assert_eq!(reply.status(), Some(400), "{chunks:?}: {}", reply.text());
            assert!(reply.closed, "{chunks:?}");
            settle().await;
            // The head may have been forwarded before the bad chunk line was
            // read; the body never completed, so no application acted on it.
            assert!(rec.complete().is_empty(), "{chunks:?}: {:?}", rec.complete());
        }
        // A client's broken body is not the backend's failure.
        let metrics = proxy.metrics().await;
        assert_eq!(
            metric_value(&metrics, "cutover_upstream_errors_total", &[("route", "main")]).unwrap_or(0.0),
            0.0,
            "{metrics}"
        );
        assert_eq!(metric_value(&metrics, "cutover_backend_healthy", &[("backend", "main")]), Some(1.0));
        assert_alive(&proxy, "/after").await;
    })
    .await;
}

// ---------------------------------------------------------------- malformed heads

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_fold_bare_cr_and_control_bytes_are_refused() {
    within(60, async {
        let (proxy, rec, _) = start().await;
        let cases: &[&[u8]] = &[
            // obs-fold (RFC 9112 §5.2): refused, including one hiding a framing header.
            b"GET /fold HTTP/1.1\r\nHost: app\r\nX-A: 1\r\n folded\r\n\r\n",
            b"POST /fold HTTP/1.1\r\nHost: app\r\nX-A: 1\r\n\tTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
            // bare CR as a line ending, or inside a value
            b"GET /cr HTTP/1.1\rHost: app\r\n\r\n",
            b"GET /cr HTTP/1.1\r\nHost: app\rX-A: 1\r\n\r\n",
            b"GET /cr HTTP/1.1\r\nHost: app\r\nX-A: a\rb\r\n\r\n",
            // NUL and other control bytes in names, values and the target
            b"GET /nul HTTP/1.1\r\nHost: app\r\nX-\0A: 1\r\n\r\n",
            b"GET /nul HTTP/1.1\r\nHost: app\r\nX-A: a\0b\r\n\r\n",
            b"GET /ctl HTTP/1.1\r\nHost: app\r\nX-A: a\x01b\r\n\r\n",
            b"GET /ctl HTTP/1.1\r\nHost: app\r\nX-A: a\x7fb\r\n\r\n",
            b"GET /ctl HTTP/1.1\r\nHost: app\r\nX-A: a\x1bb\r\n\r\n",
            b"GET /ctl HTTP/1.1\r\nHost: app\r\nX A: 1\r\n\r\n",
            b"GET /ctl HTTP/1.1\r\nHost: app\r\nX-\xe9: 1\r\n\r\n",
            b"GET /ctl HTTP/1.1\r\nHost: app\r\n: empty-name\r\n\r\n",
            b"GET /a\0b HTTP/1.1\r\nHost: app\r\n\r\n",
            b"GET /a\x7fb HTTP/1.1\r\nHost: app\r\n\r\n",
            b"GET /a b HTTP/1.1\r\nHost: app\r\n\r\n",
            b"GET /ver HTTP/1.1x\r\nHost: app\r\n\r\n",
            b"G\0T / HTTP/1.1\r\nHost: app\r\n\r\n",
        ];
        for raw in cases {
            refused(&proxy, &rec, raw, 400).await;
        }
        assert_alive(&proxy, "/after").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_and_obs_text_reach_the_backend_as_one_clean_request() {
    within(60, async {
        let (proxy, rec, _) = start().await;
        // Bare LF line endings are read leniently (RFC 9112 §2.2 allows it);
        // the backend gets one request, re-framed with CRLF.
        let reply = exchange(
            proxy.addr(),
            b"POST /lf HTTP/1.1\nHost: app\nContent-Length: 3\r\nX-Mixed: 1\nConnection: close\n\nabc",
        )
        .await;
        assert_eq!(reply.status(), Some(200), "{}", reply.text());
        settle().await;
        let seen = rec.requests();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].uri, "/lf");
        assert_eq!(seen[0].header("x-mixed").as_deref(), Some("1"));
        assert_eq!(seen[0].body.as_deref(), Ok(&b"abc"[..]));
        let raw = rec.raw();
        let head = raw.split("\r\n\r\n").next().unwrap();
        assert!(!head.replace("\r\n", "").contains('\n'), "bare LF forwarded: {raw:?}");

        // Tabs and obs-text (bytes ≥ 0x80) are legal in values and pass unchanged.
        rec.clear();
        let reply = exchange(
            proxy.addr(),
            b"GET /text HTTP/1.1\r\nHost: app\r\nX-Latin: caf\xe9\tau lait\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(reply.status(), Some(200), "{}", reply.text());
        settle().await;
        let seen = rec.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].headers("x-latin"), [&b"caf\xe9\tau lait"[..]]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_is_routed_by_its_authority_and_forwarded_in_origin_form() {
    within(60, async {
        let (proxy, main, other) = start().await;
        let reply = exchange(
            proxy.addr(),
            b"GET http://other.example/abs/../x?q=1 HTTP/1.1\r\nHost: wrong.example\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(reply.status(), Some(200), "{}", reply.text());
        settle().await;
        assert!(main.requests().is_empty(), "{:?}", main.requests());
        let seen = other.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].uri, "/x?q=1");
        assert_eq!(seen[0].header("host").as_deref(), Some("other.example"));
        assert!(other.raw().starts_with("GET /x?q=1 HTTP/1.1\r\n"), "{:?}", other.raw());

        // The target's authority wins over Host (RFC 9112 §3.2.2) in the other direction too.
        let reply = exchange(
            proxy.addr(),
            b"GET http://main.example:8080/m HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(reply.status(), Some(200), "{}", reply.text());
        settle().await;
        let seen = main.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].header("host").as_deref(), Some("main.example:8080"));
        assert!(main.raw().starts_with("GET /m HTTP/1.1\r\n"), "{:?}", main.raw());
        assert_eq!(other.requests().len(), 1);

        // Userinfo has no place in a request target's authority.
        refused(
            &proxy,
            &other,
            b"GET http://user:pw@other.example/ HTTP/1.1\r\nHost: other.example\r\n\r\n",
            400,
        )
        .await;
        // Asterisk-form (OPTIONS *) is about the proxy itself, and CONNECT's
        // authority-form asks for a tunnel: neither is forwarded.
        refused(&proxy, &main, b"OPTIONS * HTTP/1.1\r\nHost: app\r\n\r\n", 400).await;
        refused(
            &proxy,
            &other,
            b"CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n",
            400,
        )
        .await;
        let reply = exchange(proxy.addr(), b"OPTIONS * HTTP/1.1\r\nHost: app\r\n\r\n").await;
        assert!(reply.text().contains("asterisk-form"), "{}", reply.text());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_missing_or_repeated_host_gets_400() {
    within(60, async {
        let (proxy, main, other) = start().await;
        for host in [
            "Host: a b",
            "Host: ",
            "Host: exa/mple",
            "Host: user@other.example",
            "Host: other.example@evil.example",
            "Host: app:port",
            "Host: [::1",
            "Host: app\r\nHost: other.example",
            "X-No-Host: 1",
        ] {
            let raw = format!("GET /host HTTP/1.1\r\n{host}\r\n\r\n");
            refused(&proxy, &main, raw.as_bytes(), 400).await;
            assert!(other.requests().is_empty(), "{host:?}");
        }
        assert_alive(&proxy, "/after").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailing_dot_host_takes_its_route_and_reaches_the_backend_as_sent() {
    within(60, async {
        let (proxy, main, other) = start().await;
        for host in ["other.example.", "OTHER.Example.:8080", "other.example"] {
            other.clear();
            let raw = format!("GET /dot HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let reply = exchange(proxy.addr(), raw.as_bytes()).await;
            assert_eq!(reply.status(), Some(200), "{host}: {}", reply.text());
            settle().await;
            let seen = other.requests();
            assert_eq!(seen.len(), 1, "{host} missed the host route: {seen:?}");
            // Matching ignores the dot; the backend's own Host checks see what the client sent.
            assert_eq!(seen[0].header("host").as_deref(), Some(host));
            assert_eq!(seen[0].header("x-forwarded-host").as_deref(), Some(host));
        }
        // In the request target's authority too.
        other.clear();
        let reply = exchange(
            proxy.addr(),
            b"GET http://other.example./abs HTTP/1.1\r\nHost: other.example.\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(reply.status(), Some(200), "{}", reply.text());
        settle().await;
        assert_eq!(other.requests().len(), 1);
        assert!(main.requests().is_empty(), "{:?}", main.requests());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_that_no_dns_name_can_be_get_400() {
    within(60, async {
        let (proxy, main, other) = start().await;
        for host in [
            "Host: a,b",
            "Host: other.example,evil.example",
            "Host: other.example;evil",
            "Host: other.example=1",
            "Host: a!b",
            "Host: a$b",
            "Host: a&b",
            "Host: a'b",
            "Host: a(b)",
            "Host: a*b",
            "Host: a+b",
            "Host: a~b",
            "Host: a%2Fb",
            "Host: .other.example",
            "Host: other..example",
            "Host: other.example..",
        ] {
            let raw = format!("GET /host HTTP/1.1\r\n{host}\r\n\r\n");
            refused(&proxy, &main, raw.as_bytes(), 400).await;
            assert!(other.requests().is_empty(), "{host:?}");
        }
        refused(
            &proxy,
            &other,
            b"GET http://a,other.example/ HTTP/1.1\r\nHost: other.example\r\n\r\n",
            400,
        )
        .await;
        // Over HTTP/2, the :authority is held to the same rule.
        let mut send = h2_connect(proxy.addr()).await;
        let req = Request::get("http://a,b/h2host").body(()).unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), resp).await.unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        settle().await;
        assert!(main.requests().is_empty() && other.requests().is_empty());
        assert_alive(&proxy, "/after").await;
    })
    .await;
}

/// A proxy whose `/internal/` route goes to `internal` and everything else
/// to `public`, with `server.encoded_slashes` set to `slashes` (or left to
/// its default).
async fn slash_proxy(slashes: Option<&str>) -> (Proxy, Recorder, Recorder) {
    let public = Recorder::start().await;
    let internal = Recorder::start().await;
    let mut c = config_head("{ path: off }");
    if let Some(slashes) = slashes {
        c.push_str(&format!("server: {{ encoded_slashes: {slashes} }}\n"));
    }
    c.push_str(&format!(
        "backends:\n  public: {{ url: \"{}\" }}\n  internal: {{ url: \"{}\" }}\n\
         routes:\n  - name: internal\n    match: {{ path_prefix: /internal/ }}\n    backends: {{ internal: {{}} }}\n\
         \x20 - name: public\n    match: {{ path_prefix: / }}\n    backends: {{ public: {{}} }}\n",
        public.url(),
        internal.url()
    ));
    (Proxy::start(&c, "").await, public, internal)
}

/// Sends `target` over HTTP/2 and returns the status.
async fn h2_status(addr: SocketAddr, target: &str) -> StatusCode {
    let mut send = h2_connect(addr).await;
    let (resp, _) = send.send_request(h2_get(target), true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), resp).await.unwrap().unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_slashes_are_refused_by_default() {
    within(60, async {
        let (proxy, public, internal) = slash_proxy(None).await;
        for target in ["/x/..%2Finternal/secret", "/x/..%2finternal/secret", "/a%2Fb", "/%2F"] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: app\r\n\r\n");
            refused(&proxy, &public, raw.as_bytes(), 400).await;
            let raw = format!("GET http://app{target} HTTP/1.1\r\nHost: app\r\n\r\n");
            refused(&proxy, &public, raw.as_bytes(), 400).await;
            assert_eq!(h2_status(proxy.addr(), target).await, StatusCode::BAD_REQUEST, "h2 {target}");
        }
        let reply = exchange(proxy.addr(), b"GET /a%2Fb HTTP/1.1\r\nHost: app\r\n\r\n").await;
        assert!(reply.text().contains("encoded slash"), "{}", reply.text());
        // In the query it is data, not a path.
        let reply = exchange(
            proxy.addr(),
            b"GET /q?next=%2Finternal%2F HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(reply.status(), Some(200), "{}", reply.text());
        settle().await;
        assert_eq!(public.requests().len(), 1);
        assert!(internal.requests().is_empty(), "{:?}", internal.requests());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_nul_in_a_path_gets_400_whatever_the_slash_policy() {
    within(60, async {
        for slashes in [None, Some("decode"), Some("keep")] {
            let (proxy, public, _) = slash_proxy(slashes).await;
            for target in ["/a%00b", "/a/%00/../b"] {
                let raw = format!("GET {target} HTTP/1.1\r\nHost: app\r\n\r\n");
                refused(&proxy, &public, raw.as_bytes(), 400).await;
                assert_eq!(h2_status(proxy.addr(), target).await, StatusCode::BAD_REQUEST, "h2 {target}");
            }
            settle().await;
            assert!(public.requests().is_empty(), "{slashes:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoded_slashes_are_routed_and_forwarded_as_the_path_they_make() {
    within(60, async {
        let (proxy, public, internal) = slash_proxy(Some("decode")).await;
        for target in ["/x/..%2Finternal/secret", "http://app/x/..%2finternal/secret", "/internal%2Fsecret"] {
            internal.clear();
            let raw = format!("GET {target} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
            let reply = exchange(proxy.addr(), raw.as_bytes()).await;
            assert_eq!(reply.status(), Some(200), "{target}: {}", reply.text());
            settle().await;
            let seen = internal.requests();
            assert_eq!(seen.len(), 1, "{target}: {seen:?}");
            assert_eq!(seen[0].uri, "/internal/secret", "{target}");
        }
        internal.clear();
        assert_eq!(h2_status(proxy.addr(), "/x/..%2Finternal/secret?q=%2F").await, StatusCode::OK);
        settle().await;
        let seen = internal.requests();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].uri, "/internal/secret?q=%2F");
        assert!(public.requests().is_empty(), "{:?}", public.requests());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_slashes_are_routed_and_forwarded_as_data() {
    within(60, async {
        let (proxy, public, internal) = slash_proxy(Some("keep")).await;
        let reply = exchange(
            proxy.addr(),
            b"GET /x/..%2finternal/secret HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(reply.status(), Some(200), "{}", reply.text());
        assert_eq!(h2_status(proxy.addr(), "/ids/a%2Fb").await, StatusCode::OK);
        settle().await;
        let uris: Vec<String> = public.requests().into_iter().map(|r| r.uri).collect();
        assert_eq!(uris, ["/x/..%2Finternal/secret", "/ids/a%2Fb"]);
        assert!(internal.requests().is_empty(), "{:?}", internal.requests());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431() {
    within(60, async {
        let (proxy, rec, _) = start().await;
        let big = format!("GET /big HTTP/1.1\r\nHost: app\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
        refused(&proxy, &rec, big.as_bytes(), 431).await;
        let mut many = String::from("GET /many HTTP/1.1\r\nHost: app\r\n");
        for i in 0..25 {
            many.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        many.push_str("\r\n");
        refused(&proxy, &rec, many.as_bytes(), 431).await;
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: app\r\n\r\n", "a".repeat(20_000));
        refused(&proxy, &rec, long_target.as_bytes(), 431).await;
        assert_alive(&proxy, "/after").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_with_content_length_or_chunked() {
    within(60, async {
        let (proxy, rec, _) = start().await;
        // Declared too large: refused before any backend is contacted.
        let raw = format!("POST /cl HTTP/1.1\r\nHost: app\r\nContent-Length: 5000\r\n\r\n{}", "x".repeat(5000));
        refused(&proxy, &rec, raw.as_bytes(), 413).await;
        assert!(rec.raw().is_empty(), "{:?}", rec.raw());
        let raw = "PUT /expect HTTP/1.1\r\nHost: app\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n";
        refused(&proxy, &rec, raw.as_bytes(), 413).await;

        // Chunked: cut off once the limit is passed.
        let chunk = "y".repeat(600);
        let raw = format!("POST /chunked HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n");
        let reply = exchange(proxy.addr(), raw.as_bytes()).await;
        assert_eq!(reply.status(), Some(413), "{}", reply.text());
        settle().await;
        assert!(rec.complete().is_empty(), "{:?}", rec.complete());

        // At the limit is fine.
        let raw = format!("POST /ok HTTP/1.1\r\nHost: app\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n{}", "z".repeat(1024));
        let reply = exchange(proxy.addr(), raw.as_bytes()).await;
        assert_eq!(reply.status(), Some(200), "{}", reply.text());
        settle().await;
        assert_eq!(rec.complete().len(), 1);
    })
    .await;
}

// ---------------------------------------------------------------- slow clients

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_disconnected_after_header_read_timeout() {
    within(60, async {
        let (proxy, rec, _) = start().await;
        let addr = proxy.addr();
        let (slow_head, idle, slow_preface) = tokio::join!(
            // A head that never ends, one byte at a time.
            drip(addr, b"GET /slow HTTP/1.1\r\nHost: app\r\nX-Slow: ", b"abcdefgh"),
            // A connection that says nothing at all.
            drip(addr, b"", b""),
            // The start of the HTTP/2 preface, then nothing more.
            drip(addr, b"PRI * HTTP/2.0\r\n", b""),
        );
        for (what, (closed_after, _)) in [("slow head", &slow_head), ("idle", &idle), ("partial h2 preface", &slow_preface)] {
            let after = closed_after.unwrap_or_else(|| panic!("{what}: still connected after 8 s"));
            assert!(
                after >= Duration::from_millis(900) && after < Duration::from_secs(4),
                "{what}: closed after {after:?} with header_read_timeout 1s"
            );
        }
        settle().await;
        assert!(rec.requests().is_empty(), "{:?}", rec.requests());
        assert_alive(&proxy, "/after").await;
        proxy
            .wait_metric("cutover_active_connections", &[("listener", "public")], 0.0)
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_takes_none_of_a_response_is_cut_off_after_send_timeout_and_a_slow_steady_reader_is_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BODY: usize = 64 << 20;
    within(60, async {
        let big = Upstream::with("big", |_req| async { http::Response::new(full(Bytes::from(vec![b'x'; BODY]))) }).await;
        let mut config = config_head("{ path: off }");
        config.push_str(&format!(
            "server: {{ send_timeout: 1s }}\nbackends:\n  big: {{ url: \"{}\" }}\nroutes:\n  - name: all\n    backends: {{ big: {{}} }}\n",
            big.url()
        ));
        let proxy = Proxy::start(&config, "").await;
        let ask = || async {
            let mut stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
            stream.write_all(b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n").await.unwrap();
            stream
        };
        let mut buf = vec![0u8; 1 << 20];

        // Takes nothing for 4 s, then reads what is left: the end comes far short of the body.
        let mut stalled = ask().await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let (mut got, mut closed) = (0, false);
        while let Ok(read) = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf)).await {
            match read {
                Ok(0) | Err(_) => {
                    closed = true;
                    break;
                }
                Ok(n) => got += n,
            }
        }
        assert!(closed, "a client that took nothing for 4 s is still connected");
        assert!(got < BODY / 2, "{got} bytes of {BODY} before the end");

        // Takes a little every 100 ms for 3 s: never cut off, though the
        // proxy's writes wait that long for megabytes of kernel buffers to drain.
        let mut steady = ask().await;
        let started = Instant::now();
        let mut got = 0;
        while started.elapsed() < Duration::from_secs(3) {
            let n = steady.read(&mut buf[..16 * 1024]).await.unwrap();
            assert!(n > 0, "a client reading steadily was cut off after {:?}", started.elapsed());
            got += n;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(got < BODY, "the reader set the pace");
        // The kernel would go on delivering what it holds of a connection
        // cut off meanwhile: ask the proxy whether it still serves it.
        let open = metric_value(&proxy.metrics().await, "cutover_active_connections", &[("listener", "public")]);
        assert_eq!(open, Some(1.0), "the steady reader's connection was cut off");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_whose_client_takes_none_of_its_response_is_reset_after_send_timeout() {
    use http_body_util::BodyExt;
    const BODY: usize = 64 << 20;
    within(60, async {
        let big = Upstream::with("big", |_req| async { http::Response::new(full(Bytes::from(vec![b'x'; BODY]))) }).await;
        // 4 MB at once (more than the client's window), then a chunk
        // every 1.5 s: the backend is slow, not the client.
        let slow = Upstream::with("slow", |_req| async {
            let ticks = futures_util::stream::unfold(0, |n| async move {
                let chunk = match n {
                    0 => Bytes::from(vec![b'x'; 4 << 20]),
                    1..=3 => {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                        Bytes::from("tick,")
                    }
                    _ => return None,
                };
                Some((Ok::<_, BoxError>(hyper::body::Frame::data(chunk)), n + 1))
            });
            http::Response::new(http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(ticks)))
        })
        .await;
        let mut config = config_head("{ path: off }");
        config.push_str(&format!(
            "server: {{ send_timeout: 1s }}\nbackends:\n  big: {{ url: \"{}\" }}\n  slow: {{ url: \"{}\" }}\n\
             routes:\n  - name: slow\n    match: {{ path_prefix: /slow }}\n    backends: {{ slow: {{}} }}\n\
             \x20 - name: all\n    backends: {{ big: {{}} }}\n",
            big.url(),
            slow.url()
        ));
        let proxy = Proxy::start(&config, "").await;
        let (mut sender, _conn) = h2c(proxy.addr()).await;
        let ask = || {
            Request::get(format!("http://{}/big", proxy.addr()))
                .body(full(Bytes::new()))
                .unwrap()
        };

        // A client that holds back a moment, then takes all there is while
        // the backend is slow: not the client's stall, the answer arrives whole.
        let waiting = sender
            .send_request(
                Request::get(format!("http://{}/slow", proxy.addr()))
                    .body(full(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let whole = waiting
            .into_body()
            .collect()
            .await
            .expect("a stream waiting on its backend was reset");
        assert!(whole.to_bytes().ends_with(b"tick,tick,tick,"));

        // Reads nothing for 3 s: the client's window stays shut, and the stream is reset.
        let stalled = sender.send_request(ask()).await.unwrap();
        assert_eq!(stalled.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rest = tokio::time::timeout(Duration::from_secs(10), stalled.into_body().collect()).await;
        assert!(
            matches!(rest, Ok(Err(_))),
            "a stream whose client took nothing for 3 s was not reset: {:?}",
            rest.map(|r| r.map(|b| b.to_bytes().len()))
        );

        // Reads a little every 100 ms for 3 s, on the same connection: never reset.
        let steady = sender.send_request(ask()).await.unwrap();
        let mut body = steady.into_body();
        let started = Instant::now();
        let mut got = 0;
        while started.elapsed() < Duration::from_secs(3) {
            let frame = body.frame().await.expect("a steady reader's stream ended early");
            got += frame
                .expect("a steady reader's stream was reset")
                .into_data()
                .map_or(0, |d| d.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(got > 0 && got < BODY, "{got}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_after_a_kept_alive_request_is_disconnected_too() {
    within(60, async {
        let (proxy, rec, _) = start().await;
        let addr = proxy.addr();
        let (after_answer, pipelined) = tokio::join!(
            // The next head begins once the first request is answered.
            drip(
                addr,
                b"GET /first HTTP/1.1\r\nHost: app\r\n\r\n",
                b"GET /slow HTTP/1.1\r\nX-Slow: abcdefgh"
            ),
            // It arrives with the first request, then trickles.
            drip(
                addr,
                b"GET /first HTTP/1.1\r\nHost: app\r\n\r\nGET /slow HTTP/1.1\r\nX-",
                b"abcdefgh"
            ),
        );
        for (what, (closed_after, got)) in [("after an answer", &after_answer), ("pipelined", &pipelined)] {
            let text = String::from_utf8_lossy(got);
            assert!(text.starts_with("HTTP/1.1 200"), "{what}: the first request is answered: {text}");
            let after = closed_after.unwrap_or_else(|| panic!("{what}: still connected after 8 s"));
            assert!(
                after >= Duration::from_millis(900) && after < Duration::from_secs(4),
                "{what}: closed after {after:?} with header_read_timeout 1s"
            );
        }
        settle().await;
        let uris: Vec<String> = rec.requests().into_iter().map(|r| r.uri).collect();
        assert_eq!(uris, ["/first", "/first"]);
        assert_alive(&proxy, "/after").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_request_bodies_get_408() {
    within(60, async {
        let (proxy, rec, _) = start().await;
        for (what, head) in [
            (
                "POST, Content-Length",
                "POST /stall HTTP/1.1\r\nHost: app\r\nContent-Length: 100\r\n\r\n0123456789",
            ),
            (
                "POST, chunked",
                "POST /stall HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            ),
            // A small idempotent body is read whole first, so it can be retried.
            (
                "PUT, kept for retry",
                "PUT /stall HTTP/1.1\r\nHost: app\r\nContent-Length: 100\r\n\r\n0123456789",
            ),
        ] {
            let reply = exchange_for(proxy.addr(), head.as_bytes(), Duration::from_secs(6)).await;
            assert_eq!(reply.status(), Some(408), "{what}: {}", reply.text());
            assert!(
                reply.elapsed >= Duration::from_millis(900) && reply.elapsed < Duration::from_secs(4),
                "{what}: answered after {:?} with body_read_timeout 1s",
                reply.elapsed
            );
        }
        settle().await;
        assert!(rec.complete().is_empty(), "{:?}", rec.complete());
        assert_alive(&proxy, "/after").await;
    })
    .await;
}

// ---------------------------------------------------------------- HTTP/2

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_leaves_the_proxy_up_and_bounded() {
    within(60, async {
        let slow = Upstream::slow("slow", Duration::from_millis(200)).await;
        let mut c = config_head("{ path: off }");
        c.push_str(&format!(
            "backends:\n  slow: {{ url: \"{}\" }}\nroutes:\n  - name: all\n    backends: {{ slow: {{}} }}\n",
            slow.url()
        ));
        let proxy = Proxy::start(&c, "").await;
        // Warm up, then measure.
        let mut send = h2_connect(proxy.addr()).await;
        let (resp, _) = send.send_request(h2_get("/warm"), true).unwrap();
        assert_eq!(resp.await.unwrap().status(), StatusCode::OK);
        let base = proxy.rss_kib();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = sample_peak_rss(proxy.pid(), stop.clone());

        let started = Instant::now();
        let (mut opened, mut connections, mut goaways) = (0u32, 1u32, 0u32);
        while opened < 20_000 && started.elapsed() < Duration::from_secs(4) {
            let ready = match send.clone().ready().await {
                Ok(ready) => ready,
                Err(e) => {
                    goaways += u32::from(e.is_go_away());
                    send = h2_connect(proxy.addr()).await;
                    connections += 1;
                    continue;
                }
            };
            send = ready;
            match send.send_request(h2_get(&format!("/reset/{opened}")), false) {
                Ok((resp, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    drop(resp);
                    opened += 1;
                }
                Err(e) => {
                    goaways += u32::from(e.is_go_away());
                    send = h2_connect(proxy.addr()).await;
                    connections += 1;
                }
            }
        }
        let elapsed = started.elapsed();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let peak = sampler.await.unwrap();
        eprintln!(
            "rapid reset: {opened} streams opened and reset over {connections} connections ({goaways} GOAWAYs) in {elapsed:?}; \
             backend saw {} requests; RSS {base} KiB → peak {peak} KiB",
            slow.hits()
        );
        assert!(opened >= 1000, "only {opened} streams opened");
        assert!(peak.saturating_sub(base) < 64 * 1024, "RSS grew from {base} KiB to {peak} KiB");

        // Still up, and serving both protocols.
        assert_alive(&proxy, "/after").await;
        let mut fresh = h2_connect(proxy.addr()).await;
        let (resp, _) = fresh.send_request(h2_get("/after-h2"), true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), resp).await.unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // Reset streams do not leave backend requests running for long.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let settled = proxy.rss_kib();
        assert!(
            settled.saturating_sub(base) < 64 * 1024,
            "RSS {settled} KiB after the attack (base {base} KiB)"
        );
    })
    .await;
}

/// Sends a GET over HTTP/2 with `fields` extra header fields; returns the status.
async fn h2_with_fields(addr: SocketAddr, path: &str, fields: &[(String, String)]) -> StatusCode {
    let mut send = h2_connect(addr).await;
    let mut req = h2_get(path);
    for (name, value) in fields {
        req.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    let (resp, _) = send.send_request(req, true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), resp).await.unwrap().unwrap().status()
}

fn numbered_fields(n: usize) -> Vec<(String, String)> {
    (0..n).map(|i| (format!("x-h{i}"), i.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_heads_with_more_than_max_headers_fields_get_431() {
    within(60, async {
        // The limits HTTP/1.1 heads get 431 for (max_headers: 20).
        let (proxy, rec, _) = start().await;
        assert_eq!(
            h2_with_fields(proxy.addr(), "/many", &numbered_fields(25)).await,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        // At the limit.
        assert_eq!(h2_with_fields(proxy.addr(), "/some", &numbered_fields(20)).await, StatusCode::OK);
        // Cookies sent as one field each count as the one line HTTP/1.1 has.
        let mut crumbs = numbered_fields(10);
        crumbs.extend((0..30).map(|i| ("cookie".to_string(), format!("c{i}={i}"))));
        assert_eq!(h2_with_fields(proxy.addr(), "/crumbs", &crumbs).await, StatusCode::OK);
        settle().await;
        let uris: Vec<String> = rec.requests().into_iter().map(|r| r.uri).collect();
        assert_eq!(uris, ["/some", "/crumbs"]);

        // The reported case: a thousand small fields, well under the byte limit.
        let main = Recorder::start().await;
        let mut c = config_head("{ path: off }");
        c.push_str(&format!(
            "backends:\n  main: {{ url: \"{}\" }}\nroutes:\n  - name: main\n    backends: {{ main: {{}} }}\n",
            main.url()
        ));
        let proxy = Proxy::start(&c, "").await;
        assert_eq!(
            h2_with_fields(proxy.addr(), "/thousand", &numbered_fields(1000)).await,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        settle().await;
        assert!(main.requests().is_empty(), "{} requests forwarded", main.requests().len());
        assert_alive(&proxy, "/after").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_body_longer_than_its_content_length_is_not_forwarded() {
    within(30, async {
        let (proxy, rec, _) = start().await;
        let mut send = h2_connect(proxy.addr()).await;
        // H2.CL: a body that does not match its declared length, carrying a
        // request that an HTTP/1 backend would read as a second request.
        let req = Request::post("http://app/h2cl").header("content-length", "0").body(()).unwrap();
        let (resp, mut body) = send.send_request(req, false).unwrap();
        let _ = body.send_data(Bytes::from_static(b"GET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n"), true);
        let outcome = tokio::time::timeout(Duration::from_secs(5), resp).await.expect("no hang");
        settle().await;
        // The stream is refused, or (when the backend answered the declared
        // empty body before the extra DATA frame arrived) answered from an
        // empty body: either way the extra bytes never reach the backend.
        if outcome.as_ref().is_ok_and(|r| r.status() == StatusCode::OK) {
            let forwarded: Vec<_> = rec.complete().into_iter().filter(|r| r.uri == "/h2cl").collect();
            assert!(forwarded.iter().all(|r| r.body.as_ref().is_ok_and(Vec::is_empty)), "{forwarded:?}");
        }
        assert!(rec.complete().iter().all(|r| r.uri != "/smuggled"));
        assert!(!rec.raw().contains("/smuggled"), "{:?}", rec.raw());
        assert_alive(&proxy, "/after").await;
    })
    .await;
}

// ---------------------------------------------------------------- misbehaving backends

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_backends_give_502_or_a_clean_abort_and_a_counted_error() {
    within(60, async {
        let good = Upstream::echo("good").await;
        let garbage = raw_backend(|_| b"SSH-2.0-OpenSSH_9.2\r\nthis is not HTTP\r\n\r\n".to_vec(), false).await;
        let bad_status = raw_backend(|_| b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(), false).await;
        let mid_body = raw_backend(
            |_| {
                let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
                r.extend_from_slice(&[b'x'; 1000]);
                r
            },
            false,
        )
        .await;
        let mid_chunk = raw_backend(|_| b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\npartial".to_vec(), false).await;
        let big_head = raw_backend(
            |_| format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok", "b".repeat(1 << 20)).into_bytes(),
            true,
        )
        .await;
        let many_headers = raw_backend(
            |_| {
                let mut r = String::from("HTTP/1.1 200 OK\r\n");
                for i in 0..500 {
                    r.push_str(&format!("X-H{i}: {i}\r\n"));
                }
                r.push_str("Content-Length: 2\r\n\r\nok");
                r.into_bytes()
            },
            true,
        )
        .await;
        let cl_te = raw_backend(
            |_| b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned".to_vec(),
            true,
        )
        .await;
        // Answers, then writes a second, unrequested response on the same connection.
        let poison = raw_backend(
            |n| match n {
                0 => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned".to_vec(),
                _ => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nclean".to_vec(),
            },
            true,
        )
        .await;
        let silent = closing_upstream().await;

        let backends = [
            ("garbage", garbage),
            ("bad_status", bad_status),
            ("mid_body", mid_body),
            ("mid_chunk", mid_chunk),
            ("big_head", big_head),
            ("many_headers", many_headers),
            ("cl_te", cl_te),
            ("poison", poison),
            ("silent", silent),
        ];
        let mut c = config_head("{ path: off }");
        c.push_str("backends:\n");
        c.push_str(&format!("  good: {{ url: \"{}\" }}\n", good.url()));
        for (name, addr) in &backends {
            c.push_str(&format!("  {name}: {{ url: \"http://{addr}\", timeout: 3s }}\n"));
        }
        c.push_str("routes:\n");
        for (name, _) in &backends {
            c.push_str(&format!(
                "  - name: {name}\n    match: {{ path_prefix: /{name}/ }}\n    backends: {{ {name}: {{}} }}\n"
            ));
        }
        c.push_str("  - name: good\n    backends: { good: {} }\n");
        let proxy = Proxy::start(&c, "").await;
        let ask = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");

        // No valid response head: 502, counted by kind.
        for (name, kind) in [
            ("garbage", "protocol"),
            ("bad_status", "protocol"),
            ("big_head", "protocol"),
            ("many_headers", "protocol"),
            ("cl_te", "protocol"),
            ("silent", "reset"),
        ] {
            let reply = exchange(proxy.addr(), ask(&format!("/{name}/x")).as_bytes()).await;
            assert!(reply.closed, "{name}: the client was left hanging");
            assert_eq!(reply.status(), Some(502), "{name}: {}", reply.text());
            assert!(!reply.text().contains("poisoned"), "{name}: {}", reply.text());
            proxy
                .wait_metric_until(
                    "cutover_upstream_errors_total",
                    &[("route", name), ("backend", name), ("kind", kind)],
                    ">= 1",
                    |v| v >= 1.0,
                )
                .await;
        }

        // The body breaks after the head went out: the client sees the
        // connection closed short of the promised length, never a hang.
        for name in ["mid_body", "mid_chunk"] {
            let reply = exchange(proxy.addr(), ask(&format!("/{name}/x")).as_bytes()).await;
            assert!(reply.closed, "{name}: the client was left hanging");
            assert_eq!(reply.status(), Some(200), "{name}: {}", reply.text());
            assert!(reply.body().len() < 100_000, "{name}");
            assert!(!reply.text().ends_with("0\r\n\r\n"), "{name}: a truncated body must not look complete");
            proxy
                .wait_metric_until(
                    "cutover_upstream_errors_total",
                    &[("route", name), ("backend", name), ("kind", "body")],
                    ">= 1",
                    |v| v >= 1.0,
                )
                .await;
        }

        // An unrequested response never answers the next request.
        let first = exchange(proxy.addr(), ask("/poison/1").as_bytes()).await;
        assert_eq!(first.status(), Some(200));
        assert!(first.text().ends_with("ok"), "{}", first.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
        for i in 2..5 {
            let next = exchange(proxy.addr(), ask(&format!("/poison/{i}")).as_bytes()).await;
            assert!(!next.text().contains("poisoned"), "response queue poisoned: {}", next.text());
        }

        assert_alive(&proxy, "/fine").await;
    })
    .await;
}
