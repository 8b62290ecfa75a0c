//! What crosses the proxy: headers, bodies (streamed), upgrades, HTTP/2
//! from clients, and limits on what clients may send.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// One route `/` → the given backends, first one taking all traffic.
fn one_route_config(extra: &str, backends: &[(&str, String)]) -> String {
    let mut config = config_head("{ path: off }");
    config.push_str(extra);
    config.push_str("backends:\n");
    for (name, body) in backends {
        config.push_str(&format!("  {name}: {body}\n"));
    }
    let names: Vec<String> = backends.iter().map(|(n, _)| format!("{n}: {{}}")).collect();
    config.push_str(&format!(
        "routes:\n  - name: all\n    match: {{ path_prefix: / }}\n    backends: {{ {} }}\n    force_header: X-Backend\n",
        names.join(", ")
    ));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    within(30, async {
        // The upstream answers with hop-by-hop headers of its own.
        let up = Upstream::with("hop", |req| async move {
            let mut resp = echo_response("hop".into(), req).await;
            let h = resp.headers_mut();
            h.insert("connection", "x-internal".parse().unwrap());
            h.insert("x-internal", "secret".parse().unwrap());
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("proxy-connection", "keep-alive".parse().unwrap());
            h.insert("upgrade", "h2c".parse().unwrap());
            h.insert("x-visible", "yes".parse().unwrap());
            resp
        })
        .await;
        let proxy = Proxy::start(&one_route_config("", &[("hop", format!("{{ url: \"{}\" }}", up.url()))]), "").await;
        let raw = "POST /hop HTTP/1.1\r\n\
                   Host: example.test\r\n\
                   Connection: close, X-Secret, X-Other\r\n\
                   Keep-Alive: timeout=5, max=100\r\n\
                   TE: trailers\r\n\
                   Upgrade: websocket\r\n\
                   Proxy-Connection: keep-alive\r\n\
                   X-Secret: s3cret\r\n\
                   X-Other: 1\r\n\
                   X-Kept: yes\r\n\
                   Transfer-Encoding: chunked\r\n\
                   \r\n\
                   5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let (code, headers, body) = parse_raw_response(&raw_exchange(proxy.addr(), raw.as_bytes()).await);
        assert_eq!(code, 200, "{body}");
        let seen = Seen(serde_json::from_str(&body).unwrap());
        for gone in [
            "connection",
            "keep-alive",
            "te",
            "upgrade",
            "proxy-connection",
            "x-secret",
            "x-other",
        ] {
            assert!(seen.headers(gone).is_empty(), "backend saw {gone}: {:?}", seen.headers(gone));
        }
        // The proxy frames the forwarded body itself: the client's
        // Transfer-Encoding is not copied (at most the proxy's own chunked).
        let te = seen.headers("transfer-encoding");
        assert!(te.is_empty() || te == ["chunked"], "transfer-encoding {te:?}");
        assert_eq!(seen.header("x-kept").as_deref(), Some("yes"));
        assert_eq!(seen.body(), "hello world");
        assert_eq!(seen.method(), "POST");

        // The response's hop-by-hop headers do not reach the client.
        assert_eq!(header_of(&headers, "x-visible"), Some("yes"));
        for gone in ["x-internal", "keep-alive", "proxy-connection", "upgrade"] {
            assert_eq!(header_of(&headers, gone), None, "client saw {gone}: {headers:?}");
        }
        if let Some(conn) = header_of(&headers, "connection") {
            assert!(!conn.contains("x-internal"), "connection: {conn}");
        }
        // ...although the upstream does send them.
        let direct = raw_exchange(up.addr, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").await;
        let (_, direct, _) = parse_raw_response(&direct);
        for sent in ["x-internal", "keep-alive", "proxy-connection", "upgrade"] {
            assert!(header_of(&direct, sent).is_some(), "upstream did not send {sent}: {direct:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_request_id_and_host() {
    within(30, async {
        let plain = Upstream::echo("plain").await;
        let renamed = Upstream::echo("renamed").await;
        let backends = [
            ("plain", format!("{{ url: \"{}\" }}", plain.url())),
            ("renamed", format!("{{ url: \"{}\", host_header: legacy.internal }}", renamed.url())),
        ];
        let untrusted = Proxy::start(&one_route_config("", &backends), "").await;
        let trusted = Proxy::start(&one_route_config("trusted_proxies: [\"127.0.0.1\"]\n", &backends), "").await;
        let c = client();

        // Plain request: X-Forwarded-* set, Host as sent, a request id made up
        // and handed back to the client too.
        let resp = send_on(
            &c,
            request(Method::GET, &untrusted.url("/p?x=1"), &[("host", "shop.example.com:8080")]),
        )
        .await;
        let seen = resp.seen();
        assert_eq!(seen.header("host").as_deref(), Some("shop.example.com:8080"));
        assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(seen.header("x-real-ip").as_deref(), Some("127.0.0.1"));
        assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(seen.header("x-forwarded-host").as_deref(), Some("shop.example.com:8080"));
        let id = seen.header("x-request-id").expect("a request id is generated");
        assert!(id.len() >= 16 && id.bytes().all(|b| b.is_ascii_hexdigit()), "request id {id:?}");
        assert_eq!(resp.header("x-request-id"), Some(id.as_str()));
        let other = send_on(&c, request(Method::GET, &untrusted.url("/p"), &[]))
            .await
            .seen()
            .header("x-request-id")
            .unwrap();
        assert_ne!(other, id, "request ids must differ");

        // Client-sent values from an untrusted peer are replaced; its
        // request id is kept and returned.
        let spoofed: &[(&str, &str)] = &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-real-ip", "6.6.6.7"),
            ("x-forwarded-port", "6666"),
            ("x-forwarded-ssl", "on"),
            ("x-request-id", "req-abc-123"),
            ("host", "shop.example.com"),
        ];
        let resp = send_on(&c, request(Method::GET, &untrusted.url("/p"), spoofed)).await;
        let seen = resp.seen();
        assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            seen.headers("x-real-ip"),
            ["127.0.0.1"],
            "a backend that believes X-Real-IP, as it did behind nginx, sees no spoofed one"
        );
        for claim in ["x-forwarded-port", "x-forwarded-ssl"] {
            assert_eq!(seen.header(claim), None, "{claim} from an untrusted client");
        }
        assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(seen.header("x-forwarded-host").as_deref(), Some("shop.example.com"));
        assert_eq!(seen.header("x-request-id").as_deref(), Some("req-abc-123"));
        assert_eq!(resp.header("x-request-id"), Some("req-abc-123"));

        // From a trusted proxy the chain is extended and its values kept.
        let seen = send_on(&c, request(Method::GET, &trusted.url("/p"), spoofed)).await.seen();
        assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("6.6.6.6, 127.0.0.1"));
        assert_eq!(
            seen.header("x-real-ip").as_deref(),
            Some("6.6.6.6"),
            "the client the proxy forwarded for"
        );
        assert_eq!(seen.header("x-forwarded-port").as_deref(), Some("6666"), "a trusted proxy's claim");
        assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(seen.header("x-forwarded-host").as_deref(), Some("evil.example"));
        // Without a prior value, a trusted peer gets the same treatment as anyone.
        let seen = send_on(&c, request(Method::GET, &trusted.url("/p"), &[])).await.seen();
        assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));

        // A backend with host_header gets that Host; X-Forwarded-Host keeps the client's.
        let seen = send_on(
            &c,
            request(
                Method::GET,
                &untrusted.url("/p"),
                &[("host", "shop.example.com"), ("x-backend", "renamed")],
            ),
        )
        .await
        .seen();
        assert_eq!(seen.backend(), "renamed");
        assert_eq!(seen.header("host").as_deref(), Some("legacy.internal"));
        assert_eq!(seen.header("x-forwarded-host").as_deref(), Some("shop.example.com"));
    })
    .await;
}

const HUNDRED_MB: usize = 100 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_stream_both_ways_in_bounded_memory() {
    within(90, async {
        let sink = Upstream::counting("sink").await;
        let source = Upstream::streaming("source", HUNDRED_MB).await;
        let proxy = Proxy::start(
            &one_route_config(
                "",
                &[
                    ("sink", format!("{{ url: \"{}\" }}", sink.url())),
                    ("source", format!("{{ url: \"{}\" }}", source.url())),
                ],
            ),
            "",
        )
        .await;
        let c = client();
        // Warm up pools and lazily allocated state before measuring.
        let warm_up = Request::post(proxy.url("/warm"))
            .header("x-backend", "sink")
            .body(full(vec![0u8; 256 * 1024]))
            .unwrap();
        assert_eq!(send_on(&c, warm_up).await.text(), "262144");
        let warm_down = Request::get(proxy.url("/warm?bytes=262144"))
            .header("x-backend", "source")
            .body(empty())
            .unwrap();
        assert_eq!(send_on(&c, warm_down).await.body.len(), 262144);

        let started = Instant::now();
        let (up_growth, resp) = proxy
            .rss_growth_during(async {
                send_on(
                    &c,
                    Request::post(proxy.url("/upload"))
                        .header("x-backend", "sink")
                        .body(zeros(HUNDRED_MB, 64 * 1024))
                        .unwrap(),
                )
                .await
            })
            .await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.text(), HUNDRED_MB.to_string(), "bytes the backend received");
        assert!(up_growth < 20 * 1024, "proxy RSS grew by {up_growth} KiB during a 100 MB upload");
        let upload_time = started.elapsed();

        let started = Instant::now();
        let (down_growth, received) = proxy
            .rss_growth_during(async {
                let resp = c
                    .request(
                        Request::get(proxy.url("/download"))
                            .header("x-backend", "source")
                            .body(empty())
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                let mut body = resp.into_body();
                let mut n = 0usize;
                while let Some(frame) = body.frame().await {
                    n += frame.unwrap().data_ref().map_or(0, Bytes::len);
                }
                n
            })
            .await;
        assert_eq!(received, HUNDRED_MB, "bytes the client received");
        assert!(
            down_growth < 20 * 1024,
            "proxy RSS grew by {down_growth} KiB during a 100 MB download"
        );
        eprintln!(
            "100 MB upload: {upload_time:?}, RSS +{up_growth} KiB; \
             download: {:?}, RSS +{down_growth} KiB",
            started.elapsed()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_responses_are_streamed_not_buffered() {
    within(30, async {
        // The upstream sends its first chunk, then waits until the test has
        // seen that chunk arrive through the proxy before finishing.
        let (release_tx, release_rx) = tokio::sync::mpsc::channel::<()>(1);
        let release_rx = std::sync::Arc::new(tokio::sync::Mutex::new(release_rx));
        let up = Upstream::with("slow-stream", move |_req| {
            let release_rx = release_rx.clone();
            async move {
                let frames = futures_util::stream::unfold(0u8, move |step| {
                    let release_rx = release_rx.clone();
                    async move {
                        match step {
                            0 => Some((Ok::<_, BoxError>(Frame::data(Bytes::from("first,"))), 1)),
                            1 => {
                                let got = tokio::time::timeout(Duration::from_secs(5), release_rx.lock().await.recv()).await;
                                let last = if matches!(got, Ok(Some(()))) { "second" } else { "timed-out" };
                                Some((Ok(Frame::data(Bytes::from(last))), 2))
                            }
                            _ => None,
                        }
                    }
                });
                Response::new(BodyExt::boxed(StreamBody::new(frames)))
            }
        })
        .await;
        let proxy = Proxy::start(&one_route_config("", &[("s", format!("{{ url: \"{}\" }}", up.url()))]), "").await;
        let resp = client().request(request(Method::GET, &proxy.url("/stream"), &[])).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let first = tokio::time::timeout(Duration::from_secs(3), body.frame())
            .await
            .expect("the first chunk arrives while the backend is still sending")
            .unwrap()
            .unwrap();
        assert_eq!(first.data_ref().unwrap().as_ref(), b"first,");
        release_tx.send(()).await.unwrap();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(rest.as_ref(), b"second");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_that_stalls_is_cut_off_after_body_timeout_and_a_slow_steady_one_is_not() {
    within(30, async {
        // Promises 100,000 bytes, sends 1,000, then neither sends nor closes.
        let stalling = raw_backend(
            |_| {
                let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
                r.extend_from_slice(&[b'x'; 1000]);
                r
            },
            true,
        )
        .await;
        // A chunk every 300 ms for 2.4 s: longer than body_timeout in all, never idle that long.
        let steady = Upstream::with("steady", |_req| async {
            let ticks = futures_util::stream::unfold(0, |n| async move {
                (n < 8).then_some(())?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                Some((Ok::<_, BoxError>(Frame::data(Bytes::from("tick,"))), n + 1))
            });
            Response::new(BodyExt::boxed(StreamBody::new(ticks)))
        })
        .await;
        let proxy = Proxy::start(
            &one_route_config(
                "",
                &[
                    ("stalling", format!("{{ url: \"http://{stalling}\", body_timeout: 1s }}")),
                    ("steady", format!("{{ url: \"{}\", body_timeout: 1s }}", steady.url())),
                ],
            ),
            "",
        )
        .await;
        let ask = |backend: &str| format!("GET /x HTTP/1.1\r\nHost: app\r\nX-Backend: {backend}\r\nConnection: close\r\n\r\n");

        let cut = exchange_for(proxy.addr(), ask("stalling").as_bytes(), Duration::from_secs(10)).await;
        assert!(cut.closed, "the client was left hanging on a stalled body");
        assert_eq!(cut.status(), Some(200));
        assert_eq!(cut.body().len(), 1000, "the body is cut where the backend stopped");
        assert!(
            cut.elapsed >= Duration::from_secs(1) && cut.elapsed < Duration::from_secs(4),
            "cut off after {:?}, body_timeout is 1s",
            cut.elapsed
        );
        let stall = [("route", "all"), ("backend", "stalling"), ("kind", "body")];
        proxy.wait_metric("cutover_upstream_errors_total", &stall, 1.0).await;

        let whole = exchange_for(proxy.addr(), ask("steady").as_bytes(), Duration::from_secs(10)).await;
        assert!(whole.closed);
        assert!(whole.text().ends_with("0\r\n\r\n"), "a steady body ends whole: {}", whole.text());
        assert_eq!(whole.text().matches("tick,").count(), 8, "{}", whole.text());
    })
    .await;
}

/// A WebSocket echo server; reports the request path of each handshake.
async fn websocket_upstream() -> (std::net::SocketAddr, tokio::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (paths_tx, paths_rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let paths_tx = paths_tx.clone();
            tokio::spawn(async move {
                #[allow(clippy::result_large_err)]
                let callback = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                    let _ = paths_tx.try_send(req.uri().to_string());
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() || ((msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err()) {
                        break;
                    }
                }
            });
        }
    });
    (addr, paths_rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_round_trip() {
    within(30, async {
        let (ws_addr, mut paths) = websocket_upstream().await;
        let proxy = Proxy::start(&one_route_config("", &[("ws", format!("{{ url: \"http://{ws_addr}\" }}"))]), "").await;
        let stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(format!("ws://{}/chat/room1?u=ada", proxy.addr()), stream)
            .await
            .expect("WebSocket handshake through the proxy");
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(paths.recv().await.as_deref(), Some("/chat/room1?u=ada"));

        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        let blob: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
        ws.send(Message::binary(blob.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(blob));
        for i in 0..20 {
            ws.send(Message::text(format!("msg {i}"))).await.unwrap();
        }
        for i in 0..20 {
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(format!("msg {i}")));
        }
        ws.close(None).await.unwrap();
    })
    .await;
}

type ClientSocket = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A WebSocket session through the proxy to `path`.
async fn websocket_through(proxy: &Proxy, path: &str) -> ClientSocket {
    let stream = TcpStream::connect(proxy.addr()).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(format!("ws://{}{path}", proxy.addr()), stream)
        .await
        .expect("WebSocket handshake through the proxy");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

async fn echoes(ws: &mut ClientSocket, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_with_nothing_going_either_way_is_closed_after_tunnel_idle_timeout_and_a_chatty_one_is_not() {
    within(30, async {
        let (ws_addr, _paths) = websocket_upstream().await;
        let backend = format!("{{ url: \"http://{ws_addr}\", tunnel_idle_timeout: 1s }}");
        let proxy = Proxy::start(&one_route_config("", &[("ws", backend)]), "").await;
        let mut quiet = websocket_through(&proxy, "/quiet").await;
        let mut chatty = websocket_through(&proxy, "/chatty").await;
        let opened = Instant::now();
        echoes(&mut quiet, "once").await;
        let chat = async {
            for i in 0..12 {
                echoes(&mut chatty, &format!("tick {i}")).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        let closed = async {
            let end = quiet.next().await;
            (opened.elapsed(), end)
        };
        let ((), (after, end)) = tokio::join!(chat, closed);
        assert!(
            matches!(end, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
            "the quiet session ends: {end:?}"
        );
        assert!(
            after >= Duration::from_millis(950) && after < Duration::from_millis(2500),
            "closed {after:?} after it opened, its last message at once"
        );
        echoes(&mut chatty, "still here after 3 s").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_holds_its_client_connection_and_shutdown_closes_it_at_once() {
    within(30, async {
        let (ws_addr, _paths) = websocket_upstream().await;
        let server = "server: { max_connections: 2, workers: 1, drain_timeout: 60s }\n";
        let mut proxy = Proxy::start(&one_route_config(server, &[("ws", format!("{{ url: \"http://{ws_addr}\" }}"))]), "").await;
        let mut first = websocket_through(&proxy, "/a").await;
        let mut second = websocket_through(&proxy, "/b").await;
        echoes(&mut first, "a").await;
        echoes(&mut second, "b").await;
        let public = [("listener", "public")];
        proxy.wait_metric("cutover_active_connections", &public, 2.0).await;
        let mut third = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(
            closed_within(&mut third, Duration::from_secs(5)).await,
            "two WebSockets fill max_connections: 2"
        );
        first.close(None).await.unwrap();
        drop(first);
        proxy.wait_metric("cutover_active_connections", &public, 1.0).await;
        let mut again = websocket_through(&proxy, "/c").await;
        echoes(&mut again, "c").await;

        let stopping = Instant::now();
        proxy.signal("TERM");
        let end = second.next().await;
        assert!(matches!(end, None | Some(Err(_))), "{end:?}");
        assert!(
            proxy.wait_exit(Duration::from_secs(10)).await.is_some(),
            "exits without waiting out drain_timeout"
        );
        assert!(stopping.elapsed() < Duration::from_secs(10));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_streams_reach_the_http1_backend() {
    within(30, async {
        let up = Upstream::echo("h1").await;
        let proxy = Proxy::start(&one_route_config("", &[("h1", format!("{{ url: \"{}\" }}", up.url()))]), "").await;
        let (sender, _conn) = h2c(proxy.addr()).await;

        let mut tasks = Vec::new();
        for i in 0..12 {
            let mut sender = sender.clone();
            let uri = format!("http://app.example.com/h2/{i}?n={i}");
            tasks.push(tokio::spawn(async move {
                let req = if i % 2 == 0 {
                    Request::get(uri)
                        .header("x-stream", i.to_string())
                        .header("cookie", "a=1")
                        .header("cookie", "b=2")
                        .body(empty())
                        .unwrap()
                } else {
                    Request::post(uri)
                        .header("x-stream", i.to_string())
                        .body(full(format!("payload {i}")))
                        .unwrap()
                };
                let resp = sender.send_request(req).await.expect("h2 response");
                assert_eq!(resp.version(), http::Version::HTTP_2);
                let (parts, body) = resp.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                (i, parts, body)
            }));
        }
        for t in tasks {
            let (i, parts, body) = t.await.unwrap();
            assert_eq!(parts.status, StatusCode::OK);
            assert!(parts.headers.contains_key("x-request-id"));
            let seen = Seen(serde_json::from_slice(&body).unwrap());
            assert_eq!(seen.version(), "HTTP/1.1");
            assert_eq!(seen.uri(), format!("/h2/{i}?n={i}"));
            assert_eq!(seen.header("host").as_deref(), Some("app.example.com"));
            assert_eq!(seen.header("x-stream"), Some(i.to_string()));
            if i % 2 == 0 {
                assert_eq!(seen.method(), "GET");
                // HTTP/2 may split cookies; HTTP/1.1 gets one header.
                assert_eq!(seen.headers("cookie"), ["a=1; b=2"]);
            } else {
                assert_eq!(seen.method(), "POST");
                assert_eq!(seen.body(), format!("payload {i}"));
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_and_missing_host_400() {
    within(30, async {
        let up = Upstream::echo("up").await;
        let proxy = Proxy::start(
            &one_route_config(
                "server: { max_header_bytes: 8192, max_headers: 20 }\n",
                &[("up", format!("{{ url: \"{}\" }}", up.url()))],
            ),
            "",
        )
        .await;
        let addr = proxy.addr();
        let status_of = move |raw: String| async move {
            let resp = raw_exchange(addr, raw.as_bytes()).await;
            let line = resp.lines().next().unwrap_or_default().to_string();
            (line, resp)
        };

        // A header block within the limits passes.
        let ok = format!(
            "GET /ok HTTP/1.1\r\nHost: a\r\nX-Fill: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(6000)
        );
        let (line, _) = status_of(ok).await;
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");

        let big = format!(
            "GET /big HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(20_000)
        );
        let (line, resp) = status_of(big).await;
        assert!(line.starts_with("HTTP/1.1 431"), "oversized header block: {resp:?}");

        let mut many = String::from("GET /many HTTP/1.1\r\nHost: a\r\nConnection: close\r\n");
        for i in 0..40 {
            many.push_str(&format!("X-H{i}: {i}\r\n"));
        }
        many.push_str("\r\n");
        let (line, resp) = status_of(many).await;
        assert!(line.starts_with("HTTP/1.1 431"), "too many headers: {resp:?}");

        let (line, resp) = status_of("GET /nohost HTTP/1.1\r\nConnection: close\r\n\r\n".into()).await;
        assert!(line.starts_with("HTTP/1.1 400"), "missing Host: {resp:?}");
        assert!(resp.contains("missing Host header"), "{resp:?}");

        let (line, resp) = status_of("GET /twohosts HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n".into()).await;
        assert!(line.starts_with("HTTP/1.1 400"), "two Hosts: {resp:?}");

        // HTTP/1.0 does not require Host.
        let (line, resp) = status_of("GET /old HTTP/1.0\r\n\r\n".into()).await;
        assert!(line.starts_with("HTTP/1.0 200") || line.starts_with("HTTP/1.1 200"), "{resp:?}");
        // Only the two good requests reached the backend.
        assert_eq!(up.hits(), 2);
    })
    .await;
}

/// A keep-alive backend that closes a connection after `idle` without a
/// request (as gunicorn and Node do); counts the connections it accepted.
async fn idle_closing_upstream(idle: Duration) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                while let Ok(Some(head)) = tokio::time::timeout(idle, read_head(&mut stream)).await {
                    let body = if head.starts_with(b"POST") { "posted" } else { "ok" };
                    let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    if stream.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_connections_are_reused_and_ones_closed_while_idle_cost_no_request() {
    use std::sync::atomic::Ordering;
    within(30, async {
        let (addr, accepted) = idle_closing_upstream(Duration::from_millis(300)).await;
        let proxy = Proxy::start(
            &one_route_config("", &[("app", format!("{{ url: \"http://{addr}\" }}"))]),
            "all: { app: 100 }\n",
        )
        .await;
        // One client connection (served by one thread), requests one after another.
        let stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let mut send = async |method: Method, path: &str, body: &'static str| {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("host", "app.test")
                .body(full(body))
                .unwrap();
            sender.ready().await.unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status();
            (status, resp.into_body().collect().await.unwrap().to_bytes())
        };
        for _ in 0..50 {
            assert_eq!(send(Method::GET, "/items", "").await.0, StatusCode::OK);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "sequential requests share one backend connection"
        );

        // The backend drops the idle connection; a POST (never retried) must
        // not be sent on it.
        for round in 0..3 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (status, body) = send(Method::POST, "/orders", "{}").await;
            assert_eq!(status, StatusCode::OK, "round {round}: {body:?}");
            assert_eq!(body, "posted");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_connections_are_closed_and_busy_ones_kept() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    within(30, async {
        let up = Upstream::echo("app").await;
        let config = one_route_config("server: { idle_timeout: 1s }\n", &[("app", format!("{{ url: \"{}\" }}", up.url()))]);
        let proxy = Proxy::start(&config, "").await;
        let get = |mut sender: hyper::client::conn::http2::SendRequest<Body>| async move {
            let resp = sender.send_request(Request::get("http://app.test/x").body(empty()).unwrap()).await;
            resp.map(|r| r.status())
        };

        // HTTP/2, one request, then nothing: closed after the idle timeout.
        let (idle_sender, idle_conn) = h2c(proxy.addr()).await;
        assert_eq!(get(idle_sender.clone()).await.unwrap(), StatusCode::OK);
        let idle_since = Instant::now();
        // HTTP/2 with a request every 300 ms: kept.
        let (busy_sender, busy_conn) = h2c(proxy.addr()).await;
        // HTTP/1.1, one request, then nothing.
        let mut h1 = TcpStream::connect(proxy.addr()).await.unwrap();
        h1.write_all(b"GET /y HTTP/1.1\r\nHost: app.test\r\n\r\n").await.unwrap();
        assert!(read_head(&mut h1).await.is_some_and(|h| h.starts_with(b"HTTP/1.1 200")));

        while idle_since.elapsed() < Duration::from_millis(2500) {
            assert_eq!(get(busy_sender.clone()).await.unwrap(), StatusCode::OK);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(idle_conn.is_finished(), "the idle HTTP/2 connection is still open");
        assert!(get(idle_sender).await.is_err());
        assert!(!busy_conn.is_finished(), "the busy HTTP/2 connection was closed");
        assert_eq!(get(busy_sender).await.unwrap(), StatusCode::OK);
        // The HTTP/1.1 connection was closed too: the rest of the response,
        // then end of stream.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(1), h1.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(_))), "the idle HTTP/1.1 connection is still open");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_survive_pauses_pipelining_and_split_heads() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    within(30, async {
        let up = Upstream::echo("app").await;
        let config = one_route_config(
            "server: { header_read_timeout: 1s, idle_timeout: 3s }\n",
            &[("app", format!("{{ url: \"{}\" }}", up.url()))],
        );
        let proxy = Proxy::start(&config, "").await;
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut pending = Vec::new();
        let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n");
        let answered = |reply: Option<RawResponse>, path: &str| {
            let reply = reply.unwrap_or_else(|| panic!("{path}: the connection was closed"));
            assert!(reply.head.starts_with("HTTP/1.1 200"), "{path}: {}", reply.head);
            assert!(reply.header("content-length").is_some(), "{path}: {}", reply.head);
            assert!(
                !reply.head.to_ascii_lowercase().contains("connection: close"),
                "{path}: {}",
                reply.head
            );
            assert_eq!(Seen(serde_json::from_str(&reply.body).unwrap()).uri(), path);
        };

        client.write_all(get("/first").as_bytes()).await.unwrap();
        answered(read_response(&mut client, &mut pending).await, "/first");
        // A pause longer than header_read_timeout between requests: that
        // timeout is for a request's head, not for a keep-alive wait.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        client.write_all(get("/after-pause").as_bytes()).await.unwrap();
        answered(read_response(&mut client, &mut pending).await, "/after-pause");

        // Two requests in one write: both answered, in order.
        client.write_all(format!("{}{}", get("/p1"), get("/p2")).as_bytes()).await.unwrap();
        answered(read_response(&mut client, &mut pending).await, "/p1");
        answered(read_response(&mut client, &mut pending).await, "/p2");

        // A head that arrives in two pieces, the first on a connection
        // that has waited long enough to be parked.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let head = get("/split");
        let (a, b) = head.split_at(20);
        client.write_all(a.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        client.write_all(b.as_bytes()).await.unwrap();
        answered(read_response(&mut client, &mut pending).await, "/split");

        // A request with a body, a pause, and the next request.
        client
            .write_all(b"POST /post HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello")
            .await
            .unwrap();
        let posted = read_response(&mut client, &mut pending).await.expect("POST answered");
        assert_eq!(Seen(serde_json::from_str(&posted.body).unwrap()).0["body"], "hello");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        client.write_all(get("/after-post").as_bytes()).await.unwrap();
        answered(read_response(&mut client, &mut pending).await, "/after-post");
        assert_eq!(up.hits(), 7);

        // Quiet for longer than idle_timeout: closed.
        let quiet = Instant::now();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(6), client.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0))), "{read:?} {rest:?}");
        assert!(quiet.elapsed() >= Duration::from_millis(2500), "closed after {:?}", quiet.elapsed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_backend_connections_are_closed_after_pool_idle_timeout_without_further_requests() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;
    within(30, async {
        // A backend that keeps connections open for ever and counts the ones
        // the proxy closes.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let closed = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = closed.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    while read_head(&mut stream).await.is_some() {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        let proxy = Proxy::start(
            &one_route_config("", &[("app", format!("{{ url: \"http://{addr}\", pool_idle_timeout: 300ms }}"))]),
            "all: { app: 100 }\n",
        )
        .await;
        let resp = get(&proxy.url("/once")).await;
        assert_eq!(resp.status, StatusCode::OK);
        // No further request: the pooled connection is closed by the proxy
        // within a second or so of its idle timeout, not kept until the
        // backend's next use.
        eventually(Duration::from_secs(3), Duration::from_millis(50), async || {
            match closed.load(Ordering::SeqCst) {
                0 => Err("the idle backend connection is still open".to_string()),
                _ => Ok(()),
            }
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_above_pool_max_idle_reuses_its_connections_and_the_surplus_is_closed_at_rest() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;
    const BURST: usize = 20;
    within(60, async {
        // A backend slow enough for a burst's requests to be in flight at
        // once, counting the connections it accepts and sees closed.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let closed = std::sync::Arc::new(AtomicUsize::new(0));
        let (accepts, closes) = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                accepts.fetch_add(1, Ordering::SeqCst);
                let closes = closes.clone();
                tokio::spawn(async move {
                    while read_head(&mut stream).await.is_some() {
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                    }
                    closes.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        // One serving thread: with two, each burst would split between their
        // pools at random, and the larger share opens connections anew.
        let proxy = Proxy::start(
            &one_route_config(
                "server: { workers: 1 }\n",
                &[(
                    "app",
                    format!("{{ url: \"http://{addr}\", pool_max_idle: 2, pool_idle_timeout: 30s }}"),
                )],
            ),
            "all: { app: 100 }\n",
        )
        .await;
        // Bursts back to back, each of BURST requests at once: the second and
        // third find the first's connections idle and take them again.
        for _ in 0..3 {
            let burst: Vec<_> = (0..BURST)
                .map(|i| tokio::spawn(get_owned(proxy.url(&format!("/burst/{i}")))))
                .collect();
            for request in burst {
                assert_eq!(request.await.unwrap(), StatusCode::OK);
            }
        }
        let opened = accepted.load(Ordering::SeqCst);
        assert!(
            opened <= BURST + BURST / 2,
            "three bursts of {BURST} opened {opened} backend connections: the pool closed a burst's connections only to open them again"
        );
        // At rest, the surplus over pool_max_idle goes long before the idle timeout.
        eventually(Duration::from_secs(5), Duration::from_millis(100), async || {
            let open = accepted.load(Ordering::SeqCst) - closed.load(Ordering::SeqCst);
            match open {
                // pool_max_idle at most.
                0..=2 => Ok(()),
                _ => Err(format!("{open} idle backend connections are still open, pool_max_idle is 2")),
            }
        })
        .await;
    })
    .await;
}

async fn get_owned(url: String) -> StatusCode {
    get(&url).await.status
}

/// Two backends, legacy serving everyone, with `new` mirrored (and legacy
/// never asked twice to learn noise); `route_extra` is added to the route.
/// A recording backend that answers with the request body, its length in
/// `x-body-length` (a HEAD answer has no body) and `x-upstream: name`.
async fn body_echo(name: &'static str) -> Recorder {
    Recorder::answering(name, move |req, _| {
        let body = req.body.clone().unwrap_or_default();
        Response::builder()
            .header("x-upstream", name)
            .header("x-body-length", body.len())
            .body(full(body))
            .unwrap()
    })
    .await
}

fn mirrored_config(legacy: &Upstream, new: &Upstream, route_extra: &str) -> String {
    format!(
        "{}backends:\n  legacy: {{ url: \"{}\" }}\n  new: {{ url: \"{}\" }}\n\
         routes:\n  - name: api\n    match: {{ path_prefix: / }}\n    stable: legacy\n    backends: {{ legacy: {{}}, new: {{}} }}\n\
         \x20   mirror: {{ to: new, methods: [GET, HEAD], compare: {{ noise: {{ sample: 0 }} }} }}\n{route_extra}",
        config_head("{ path: off }"),
        legacy.url(),
        new.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_head_bodies_of_unknown_length_reach_the_backend() {
    within(60, async {
        let up = body_echo("body").await;
        let backends = [
            ("body", format!("{{ url: \"{}\" }}", up.url())),
            ("dead", format!("{{ url: \"http://{}\" }}", dead_addr())),
        ];
        let proxy = Proxy::start(&one_route_config("", &backends), "").await;
        // Everything to the dead backend first: a request is sent again to the other.
        let retrying = Proxy::start(&one_route_config("", &backends), "all: { body: 0, dead: 100 }\n").await;

        // HTTP/1.1, chunked: streamed on to the backend.
        let cases: &[(&str, &str, &str)] = &[
            ("GET", "Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            ("HEAD", "Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            // With a length: kept whole for a retry, then sent.
            ("GET", "Content-Length: 11\r\n", "hello world"),
            // Split to a dead backend: sent again, body and all, to the other one.
            ("GET", "Content-Length: 11\r\n", "hello world"),
        ];
        for (n, (method, framing, body)) in cases.iter().enumerate() {
            let raw = format!("{method} /b HTTP/1.1\r\nHost: a\r\n{framing}Connection: close\r\n\r\n{body}");
            let to = if n == cases.len() - 1 { &retrying } else { &proxy };
            let (code, headers, _) = parse_raw_response(&raw_exchange(to.addr(), raw.as_bytes()).await);
            assert_eq!(code, 200, "{method} {framing:?}: {headers:?}");
            assert_eq!(header_of(&headers, "x-body-length"), Some("11"), "{method} {framing:?}");
        }
        let all = up.requests();
        assert_eq!(all.len(), cases.len(), "{all:#?}");
        for (req, (method, _, _)) in all.iter().zip(cases) {
            assert_eq!((req.method.as_str(), req.body_text().as_str()), (*method, "hello world"));
        }

        // HTTP/2 (h2c), DATA frames and no content-length.
        up.clear();
        let (mut sender, _conn) = h2c(proxy.addr()).await;
        for method in [Method::GET, Method::HEAD] {
            let frames =
                futures_util::stream::iter(["h2 ", "body"].map(|part| Ok::<_, BoxError>(Frame::data(Bytes::from_static(part.as_bytes())))));
            let req = Request::builder()
                .method(method.clone())
                .uri("http://app.example.com/b")
                .body(BodyExt::boxed(StreamBody::new(frames)))
                .unwrap();
            assert!(!req.headers().contains_key("content-length"));
            let resp = sender.send_request(req).await.expect("h2 response");
            assert_eq!(resp.status(), StatusCode::OK, "{method}");
            assert_eq!(resp.headers().get("x-body-length").unwrap(), "7", "{method}");
        }
        let all = up.requests();
        let bodies: Vec<(&str, String)> = all.iter().map(|r| (r.method.as_str(), r.body_text())).collect();
        assert_eq!(bodies, [("GET", "h2 body".to_string()), ("HEAD", "h2 body".to_string())]);

        // A mirrored GET: the shadow gets the body too.
        let legacy = body_echo("legacy").await;
        let new = body_echo("new").await;
        let mirrored = Proxy::start(
            &mirrored_config(&legacy.upstream, &new.upstream, ""),
            "api: { legacy: 100, new: 0 }\n",
        )
        .await;
        let raw = "GET /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let (code, headers, _) = parse_raw_response(&raw_exchange(mirrored.addr(), raw.as_bytes()).await);
        assert_eq!((code, header_of(&headers, "x-body-length")), (200, Some("5")));
        assert_eq!(legacy.wait_for(1).await[0].body_text(), "hello");
        assert_eq!(new.wait_for(1).await[0].body_text(), "hello", "the shadow's body");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_headers_from_clients_reach_neither_primary_nor_shadow() {
    within(60, async {
        let legacy = body_echo("legacy").await;
        let new = body_echo("new").await;
        let proxy = Proxy::start(
            &mirrored_config(&legacy.upstream, &new.upstream, "    force_header: X-Cutover-Backend\n"),
            "api: { legacy: 100, new: 0 }\n",
        )
        .await;
        let c = client();
        let spoofed = [
            ("x-cutover-shadow", "client"),
            ("X-Cutover-Anything", "a"),
            ("x-cutover-force-token", "t"),
            ("x-cutover-backend", "legacy"),
            ("x-kept", "yes"),
        ];
        let resp = send_on(&c, request(Method::GET, &proxy.url("/r"), &spoofed)).await;
        assert_eq!((resp.status, resp.upstream()), (StatusCode::OK, "legacy"));
        // Over HTTP/1.1 as a raw head, in mixed case and twice over.
        let raw = "GET /r HTTP/1.1\r\nHost: a\r\nX-CUTOVER-SHADOW: 1\r\nX-Cutover-Shadow: 1\r\nx-cutover-x: y\r\nx-kept: yes\r\nConnection: close\r\n\r\n";
        let (code, _, _) = parse_raw_response(&raw_exchange(proxy.addr(), raw.as_bytes()).await);
        assert_eq!(code, 200);

        for primary in legacy.wait_for(2).await {
            assert_eq!(primary.reserved(), Vec::<(String, String)>::new(), "the primary saw {primary:#?}");
            assert_eq!(primary.values("x-kept"), ["yes"]);
        }
        for shadow in new.wait_for(2).await {
            // Only cutover's own mark.
            assert_eq!(
                shadow.reserved(),
                [("x-cutover-shadow".to_string(), "1".to_string())],
                "the shadow saw {shadow:#?}"
            );
            assert_eq!(shadow.values("x-kept"), ["yes"]);
        }

        // A force header named outside X-Cutover-* is the operator's own:
        // it is still forwarded, and the force token never is.
        let own = body_echo("own").await;
        let proxy = Proxy::start(&one_route_config("", &[("own", format!("{{ url: \"{}\" }}", own.url()))]), "").await;
        let resp = send_on(
            &c,
            request(
                Method::GET,
                &proxy.url("/o"),
                &[("x-backend", "own"), ("x-cutover-force-token", "t"), ("x-cutover-shadow", "1")],
            ),
        )
        .await;
        assert_eq!(resp.status, StatusCode::OK);
        let seen = own.wait_for(1).await;
        assert_eq!(seen[0].values("x-backend"), ["own"]);
        assert_eq!(seen[0].reserved(), Vec::<(String, String)>::new());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_interim_responses_are_passed_over_and_its_final_answer_forwarded() {
    within(30, async {
        // Early Hints and an unasked-for 100 Continue before each final answer.
        let backend = raw_backend(
            |n| {
                let body = format!("final {n}");
                format!(
                    "HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n\
                     HTTP/1.1 100 Continue\r\n\r\n\
                     HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Final: yes\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            },
            false,
        )
        .await;
        let proxy = Proxy::start(&one_route_config("", &[("app", format!("{{ url: \"http://{backend}\" }}"))]), "").await;
        for n in 0..3 {
            let resp = get(&proxy.url("/page")).await;
            assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
            assert_eq!(resp.text(), format!("final {n}"));
            assert_eq!(resp.header("x-final"), Some("yes"));
            assert_eq!(resp.header("link"), None, "an interim response's fields are not the answer's");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_unknown_length_reach_the_backend_with_a_length_up_to_the_read_ahead() {
    within(60, async {
        let up = body_echo("body").await;
        let backend = [("body", format!("{{ url: \"{}\" }}", up.url()))];
        let proxy = Proxy::start(&one_route_config("server: { unsized_body_buffer_bytes: 1024 }\n", &backend), "").await;
        let streaming = Proxy::start(&one_route_config("server: { unsized_body_buffer_bytes: 0 }\n", &backend), "").await;
        let chunked = |body: &str| {
            format!(
                "POST /form HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            )
        };
        let framing = |req: &Recorded| {
            let text = |name| req.header(name).unwrap_or_default();
            (text("content-length"), text("transfer-encoding"))
        };

        // Within the read-ahead: sent with a length (Django reads no other way).
        let form = "name=ada&lang=en";
        let (code, _, _) = parse_raw_response(&raw_exchange(proxy.addr(), chunked(form).as_bytes()).await);
        assert_eq!(code, 200);
        let sent = up.wait_for(1).await;
        assert_eq!(sent[0].body_text(), form);
        assert_eq!(framing(&sent[0]), (form.len().to_string(), String::new()));

        // HTTP/2 DATA without content-length: the same.
        up.clear();
        let (mut sender, _conn) = h2c(proxy.addr()).await;
        let frames =
            futures_util::stream::iter(["{\"a\":", "1}"].map(|part| Ok::<_, BoxError>(Frame::data(Bytes::from_static(part.as_bytes())))));
        let req = Request::post("http://app.example.com/api")
            .body(BodyExt::boxed(StreamBody::new(frames)))
            .unwrap();
        assert_eq!(sender.send_request(req).await.expect("h2 response").status(), StatusCode::OK);
        let sent = up.wait_for(1).await;
        assert_eq!(
            (sent[0].body_text().as_str(), framing(&sent[0])),
            ("{\"a\":1}", ("7".to_string(), String::new()))
        );

        // Beyond it: what was read, then the rest, streamed on chunked.
        up.clear();
        let large = "x".repeat(5000);
        let (code, _, _) = parse_raw_response(&raw_exchange(proxy.addr(), chunked(&large).as_bytes()).await);
        assert_eq!(code, 200);
        let sent = up.wait_for(1).await;
        assert_eq!(sent[0].body_text(), large);
        assert_eq!(framing(&sent[0]), (String::new(), "chunked".to_string()));

        // With no read-ahead, streamed from the first byte.
        up.clear();
        let (code, _, _) = parse_raw_response(&raw_exchange(streaming.addr(), chunked(form).as_bytes()).await);
        assert_eq!(code, 200);
        let sent = up.wait_for(1).await;
        assert_eq!(
            (sent[0].body_text().as_str(), framing(&sent[0])),
            (form, (String::new(), "chunked".to_string()))
        );
    })
    .await;
}

/// gunicorn and uWSGI are often bound to a Unix socket, and nginx reaches
/// them there (`proxy_pass http://unix:/run/gunicorn.sock`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_on_a_unix_socket_is_reached_with_its_connection_kept_alive() {
    within(30, async {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("app.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let service =
                    hyper::service::service_fn(
                        |req| async move { Ok::<_, std::convert::Infallible>(echo_response("app".into(), req).await) },
                    );
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        let backend = [("app", format!("{{ url: \"unix:{}\" }}", socket.display()))];
        let proxy = Proxy::start(&one_route_config("", &backend), "").await;
        // nginx's spelling, to a socket nobody listens on.
        let missing = [(
            "gone",
            format!("{{ url: \"http://unix:{}\" }}", dir.path().join("gone.sock").display()),
        )];
        let down = Proxy::start(&one_route_config("", &missing), "").await;

        // One client connection (served by one thread), requests one after another.
        let stream = TcpStream::connect(proxy.addr()).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        for n in 0..3 {
            let path = format!("/api/items/{n}?q=1");
            sender.ready().await.unwrap();
            let req = Request::get(&path).header("host", "shop.example").body(empty()).unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let seen = Seen(serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap());
            assert_eq!((seen.backend(), seen.uri()), ("app", path.as_str()));
            // The client's Host, as for any backend; the socket has no name of its own.
            assert_eq!(seen.header("host").as_deref(), Some("shop.example"));
            assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one keep-alive connection serves all three"
        );

        // No socket (the app server is down): a 502 at once, not a wait.
        let started = Instant::now();
        let resp = send(request(Method::GET, &down.url("/x"), &[])).await;
        assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{}", resp.text());
        assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    })
    .await;
}

/// `compression: { gzip: true }`, as nginx's `gzip on`: text a client
/// accepts gzipped goes gzipped; what is small, compressed already, a range,
/// `no-transform` or refused goes as the backend sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_gzipped_for_clients_that_take_it_and_only_those() {
    use std::io::Read;
    let page = "<p>the same sentence again and again</p>\n".repeat(200);
    let app = {
        let page = page.clone();
        Upstream::with("app", move |req| {
            let page = page.clone();
            async move {
                let answer = |ctype: &str| Response::builder().header("content-type", ctype).header("etag", "\"v1\"");
                let path = req.uri().path().to_string();
                match path.as_str() {
                    "/small" => answer("application/json").body(full("{\"a\": 1}")),
                    "/png" => answer("image/png").body(full(page)),
                    "/br" => answer("text/html").header("content-encoding", "br").body(full(page)),
                    "/fixed" => answer("text/html").header("cache-control", "no-transform").body(full(page)),
                    // Unknown length, in pieces.
                    "/stream" => answer("text/plain; charset=utf-8").body(frames(page, 1000)),
                    _ => answer("text/html; charset=utf-8").header("vary", "Cookie").body(full(page)),
                }
                .unwrap()
            }
        })
        .await
    };
    let backend = [("app", format!("{{ url: \"{}\" }}", app.url()))];
    let proxy = Proxy::start(&one_route_config("compression: { gzip: true }\n", &backend), "").await;
    let plain = Proxy::start(&one_route_config("", &backend), "").await;
    within(30, async {
        let fetch = async |proxy: &Proxy, method: Method, path: &str, accept: &str| {
            let headers: &[(&str, &str)] = if accept.is_empty() { &[] } else { &[("accept-encoding", accept)] };
            send(request(method, &proxy.url(path), headers)).await
        };
        let gunzip = |body: &[u8]| {
            let mut out = String::new();
            flate2::read::GzDecoder::new(body)
                .read_to_string(&mut out)
                .expect("a whole gzip stream");
            out
        };

        for path in ["/page", "/stream"] {
            let resp = fetch(&proxy, Method::GET, path, "gzip, deflate, br").await;
            assert_eq!(resp.status, StatusCode::OK);
            assert_eq!(resp.header("content-encoding"), Some("gzip"), "{path}");
            assert_eq!(resp.header("content-length"), None, "{path}");
            assert!(resp.body.len() < page.len() / 10, "{path}: {} bytes", resp.body.len());
            assert_eq!(gunzip(&resp.body), page, "{path}");
            assert_eq!(resp.header("etag"), Some("W/\"v1\""), "{path}: the bytes are not the backend's");
            let vary: Vec<&str> = resp.headers.get_all("vary").iter().map(|v| v.to_str().unwrap()).collect();
            assert!(vary.contains(&"Accept-Encoding"), "{path}: {vary:?}");
        }
        assert_eq!(
            fetch(&proxy, Method::GET, "/page", "gzip")
                .await
                .headers
                .get_all("vary")
                .iter()
                .count(),
            2
        );

        // Sent as the backend sent it.
        for (proxy, method, path, accept) in [
            (&proxy, Method::GET, "/page", ""),
            (&proxy, Method::GET, "/page", "br, gzip;q=0"),
            (&proxy, Method::HEAD, "/page", "gzip"),
            (&proxy, Method::GET, "/small", "gzip"),
            (&proxy, Method::GET, "/png", "gzip"),
            (&proxy, Method::GET, "/fixed", "gzip"),
            (&plain, Method::GET, "/page", "gzip"),
        ] {
            let resp = fetch(proxy, method.clone(), path, accept).await;
            assert_eq!(resp.status, StatusCode::OK);
            assert_eq!(resp.header("content-encoding"), None, "{method} {path} {accept:?}");
            assert_eq!(resp.header("etag"), Some("\"v1\""), "{method} {path} {accept:?}");
        }
        let br = fetch(&proxy, Method::GET, "/br", "gzip").await;
        assert_eq!((br.header("content-encoding"), br.body.len()), (Some("br"), page.len()));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_backend_serves_its_directory_as_nginx_root_and_alias_do() {
    within(30, async {
        let files = tempfile::tempdir().unwrap();
        let root = files.path().join("static");
        std::fs::create_dir_all(root.join("css")).unwrap();
        std::fs::create_dir_all(root.join("docs")).unwrap();
        let css = "body { color: #333 }\n".repeat(100);
        std::fs::write(root.join("css/site.css"), &css).unwrap();
        std::fs::write(root.join("docs/index.html"), "<h1>docs</h1>").unwrap();
        std::fs::write(files.path().join("secret.txt"), "outside the directory").unwrap();
        let app = Upstream::echo("app").await;
        let config = format!(
            "{}compression: {{ gzip: true }}\n\
             backends:\n  app: {{ url: \"{}\" }}\n  static: {{ url: \"file:{}\" }}\n\
             routes:\n\
             \x20 - name: static\n    match: {{ path_prefix: /static/ }}\n\
             \x20   backends: {{ static: {{ rewrite: {{ prefix: /static/, to: / }} }} }}\n\
             \x20 - name: app\n    match: {{ path_prefix: / }}\n    backends: {{ app: {{}} }}\n",
            config_head("{ path: off }"),
            app.url(),
            root.display()
        );
        let proxy = Proxy::start(&config, "").await;

        let resp = get(&proxy.url("/static/css/site.css")).await;
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(resp.header("content-type"), Some("text/css"));
        assert_eq!(resp.text(), css);
        // What cutover adds to every answer, a file's too.
        assert!(resp.header("x-request-id").is_some());
        let last_modified = resp.header("last-modified").expect("a file's date").to_string();

        // Its answers are compressed like any backend's, and revalidated.
        let gzipped = send(request(
            Method::GET,
            &proxy.url("/static/css/site.css"),
            &[("accept-encoding", "gzip")],
        ))
        .await;
        assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
        let fresh = send(request(
            Method::GET,
            &proxy.url("/static/css/site.css"),
            &[("if-modified-since", &last_modified)],
        ))
        .await;
        assert_eq!(fresh.status, StatusCode::NOT_MODIFIED);
        let head = send(request(Method::HEAD, &proxy.url("/static/css/site.css"), &[])).await;
        assert_eq!((head.status, head.header("content-length")), (StatusCode::OK, Some("2100")));
        assert!(head.body.is_empty());
        let part = send(request(Method::GET, &proxy.url("/static/css/site.css"), &[("range", "bytes=0-3")])).await;
        assert_eq!((part.status, part.text().as_str()), (StatusCode::PARTIAL_CONTENT, "body"));

        // A directory answers with its index.html, with or without the slash.
        for path in ["/static/docs/", "/static/docs"] {
            let resp = get(&proxy.url(path)).await;
            assert_eq!((resp.status, resp.text().as_str()), (StatusCode::OK, "<h1>docs</h1>"), "{path}");
        }
        let missing = get(&proxy.url("/static/css/gone.css")).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        let post = send(with_body(Method::POST, &proxy.url("/static/css/site.css"), &[], full("x"))).await;
        assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);

        // Nothing outside the directory: dot segments are resolved before
        // routing, so such a request leaves the static route for the app's.
        for path in ["/static/../secret.txt", "/static/%2e%2e/secret.txt"] {
            let resp = get(&proxy.url(path)).await;
            assert_eq!((resp.seen().backend(), resp.seen().uri()), ("app", "/secret.txt"), "{path}");
        }
        let encoded = get(&proxy.url("/static/css/..%2f..%2fsecret.txt")).await;
        assert_eq!(encoded.status, StatusCode::BAD_REQUEST);
        // Encoded slashes kept as data reach the directory as one name, which
        // climbs nowhere once decoded.
        let keeping = Proxy::start(
            &config.replace("compression:", "server: { encoded_slashes: keep }\ncompression:"),
            "",
        )
        .await;
        let kept = get(&keeping.url("/static/css/..%2F..%2Fsecret.txt")).await;
        assert_eq!(kept.status, StatusCode::NOT_FOUND, "{}", kept.text());
        proxy
            .wait_metric(
                "cutover_requests_total",
                &[("route", "static"), ("backend", "static"), ("code", "2xx")],
                6.0,
            )
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_https_listener_sends_clients_to_https_but_lets_acme_challenges_through() {
    within(30, async {
        let app = Upstream::echo("app").await;
        let config = format!(
            "listeners:\n  - {{ name: public, addr: \"127.0.0.1:0\" }}\n\
             \x20 - {{ name: http, addr: \"127.0.0.1:0\", redirect_https: true }}\n\
             \x20 - {{ name: http-8443, addr: \"127.0.0.1:0\", redirect_https: 8443 }}\n\
             admin: {{ addr: \"127.0.0.1:0\" }}\nweights_file: weights.yaml\naccess_log: {{ path: off }}\n\
             backends:\n  app: {{ url: \"{}\" }}\nroutes:\n  - {{ name: all, backends: {{ app: {{}} }} }}\n",
            app.url()
        );
        let proxy = Proxy::start(&config, "").await;
        let http = proxy.listener("http");
        let on = |addr: std::net::SocketAddr, path: &str| format!("http://{addr}{path}");

        // The client's host, path and query, on https; no backend asked.
        let resp = send(request(
            Method::GET,
            &on(http, "/account/?next=/cart"),
            &[("host", "shop.example.com")],
        ))
        .await;
        assert_eq!(resp.status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(resp.header("location"), Some("https://shop.example.com/account/?next=/cart"));
        let resp = send(request(
            Method::GET,
            &on(proxy.listener("http-8443"), "/"),
            &[("host", "shop.example.com:80")],
        ))
        .await;
        assert_eq!(resp.header("location"), Some("https://shop.example.com:8443/"));
        // A form posted to http:// keeps its method and body on the way.
        let post = send(with_body(
            Method::POST,
            &on(http, "/login/"),
            &[("host", "shop.example.com")],
            full("u=1"),
        ))
        .await;
        assert_eq!(post.status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(app.hits(), 0, "redirected requests reach no backend");

        // Certificates are renewed over plain HTTP.
        let acme = get(&on(http, "/.well-known/acme-challenge/token-1")).await;
        assert_eq!(
            (acme.status, acme.seen().uri()),
            (StatusCode::OK, "/.well-known/acme-challenge/token-1")
        );
        // Only that folder, not a path that climbs out of it.
        let climbed = get(&on(http, "/.well-known/acme-challenge/../../admin/")).await;
        assert_eq!(climbed.status, StatusCode::MOVED_PERMANENTLY);
        // The other listener serves as before.
        assert_eq!(get(&proxy.url("/account/")).await.seen().uri(), "/account/");
    })
    .await;
}
