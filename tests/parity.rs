//! Parity on answers as real applications send them: compressed bodies
//! (decoded for comparison only, bounded on the decoded size), endpoints
//! grouped by path template, and the examples behind each difference.

mod common;

use std::io::Write;

use common::*;
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A user as legacy renders it; new renamed `email` to `email_address`.
fn user(id: u64, new: bool) -> Value {
    let email = format!("user{id}@example.com");
    if new {
        json!({"id": id, "email_address": email, "name": format!("user {id}")})
    } else {
        json!({"id": id, "email": email, "name": format!("user {id}")})
    }
}

/// The body a backend sends for `path`, and whether it gzips it (new does
/// when the client accepts gzip, as Django's GZipMiddleware would).
fn answer(req: &Request<hyper::body::Incoming>, new: bool) -> Response<Body> {
    let path = req.uri().path().to_string();
    let accepts_gzip = req
        .headers()
        .get("accept-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let mut builder = Response::builder()
        .header(
            "content-type",
            if new {
                "application/json"
            } else {
                "application/json; charset=utf-8"
            },
        )
        .header("x-upstream", if new { "new" } else { "legacy" });
    let body: Vec<u8> = match path.as_str() {
        // Says gzip, is not.
        "/broken/" if new => {
            builder = builder.header("content-encoding", "gzip");
            b"{\"id\": 1}".to_vec()
        }
        // 8 MiB of spaces inside 8 KiB of gzip: past the 1 MiB compare limit once decoded.
        "/bomb/" if new => {
            builder = builder.header("content-encoding", "gzip");
            gzip(&vec![b' '; 8 * 1024 * 1024])
        }
        p => {
            let id = p.trim_start_matches("/api/users/").trim_end_matches('/').parse().unwrap_or(0);
            let json = user(id, new).to_string().into_bytes();
            if new && accepts_gzip {
                builder = builder.header("content-encoding", "gzip").header("vary", "Accept-Encoding");
                gzip(&json)
            } else {
                json
            }
        }
    };
    builder.body(full(body)).unwrap()
}

async fn pair() -> (Upstream, Upstream) {
    let legacy = Upstream::with("legacy", |req| async move { answer(&req, false) }).await;
    let new = Upstream::with("new", |req| async move { answer(&req, true) }).await;
    (legacy, new)
}

fn config(legacy: &Upstream, new: &Upstream, compare: &str) -> String {
    format!(
        "{}backends:\n  legacy: {{ url: \"{}\" }}\n  new: {{ url: \"{}\" }}\n\
         routes:\n  - name: api\n    match: {{ path_prefix: / }}\n    stable: legacy\n    backends: {{ legacy: {{}}, new: {{}} }}\n\
         \x20   force_header: X-Cutover-Backend\n\
         \x20   mirror:\n      to: new\n      compare: {compare}\n",
        config_head("{ path: \"off\" }"),
        legacy.url(),
        new.url()
    )
}

fn row<'a>(rows: &'a Value, kind: &str, path: &str) -> Option<&'a Value> {
    rows.as_array()?.iter().find(|p| p["kind"] == kind && p["path"] == path)
}

#[tokio::test]
async fn a_gzipped_answer_is_compared_decoded_and_grouped_by_endpoint_with_examples() {
    within(60, async {
        let (legacy, new) = pair().await;
        let compare = "{ mode: values, noise: { sample: 0 }, redact: [name] }";
        let proxy = Proxy::start(&config(&legacy, &new, compare), "api: { legacy: 100, new: 0 }\n").await;
        let client = client();
        let browser = [("accept-encoding", "gzip, deflate, br")];
        for n in 1..=20 {
            let url = proxy.url(&format!("/api/users/{n}/?page=2&access_token=tok{n}"));
            let resp = send_on(&client, request(Method::GET, &url, &browser)).await;
            assert_eq!(resp.status, StatusCode::OK);
            assert_eq!(resp.json(), user(n, false), "legacy serves the client");
        }
        // A client served by new gets new's gzip bytes, untouched.
        let forced = [("accept-encoding", "gzip"), ("x-cutover-backend", "new")];
        let resp = send_on(&client, request(Method::GET, &proxy.url("/api/users/5/"), &forced)).await;
        assert_eq!(resp.header("content-encoding"), Some("gzip"));
        assert_eq!(&resp.body[..], &gzip(user(5, true).to_string().as_bytes())[..]);

        let report = wait_outcomes(&proxy, 21).await;
        assert_eq!(report["compared"], 21, "{report:#}");
        assert_eq!(report["outcomes"], json!({"compared": 21}));
        // The renamed key inside the compressed body, found at its JSON path;
        // no `json -> not json`, and `charset=utf-8` on JSON is no difference.
        let paths = &report["paths"];
        assert_eq!(row(paths, "shape", "/email").unwrap()["right"], "absent", "{report:#}");
        assert_eq!(row(paths, "shape", "/email_address").unwrap()["left"], "absent");
        assert!(
            row(paths, "shape", "").is_none() && row(paths, "header", "content-type").is_none(),
            "{report:#}"
        );
        assert_eq!(paths.as_array().unwrap().len(), 2, "{report:#}");

        // Twenty /api/users/N/ requests (and the forced one) form one endpoint.
        let endpoints = report["endpoints"].as_array().unwrap();
        assert_eq!(endpoints.len(), 1, "{report:#}");
        let users = &endpoints[0];
        assert_eq!(users["endpoint"], "GET /api/users/{id}/");
        assert_eq!((users["compared"].as_u64(), users["clean"].as_u64()), (Some(21), Some(0)));
        let email = row(&users["paths"], "shape", "/email").unwrap();
        assert_eq!((email["rate"].as_f64(), email["verdict"].as_str()), (Some(1.0), Some("differs")));
        // The last three requests that showed it, with the values, query secrets redacted.
        let examples = email["examples"].as_array().unwrap();
        assert_eq!(examples.len(), 3, "{email:#}");
        let last = examples
            .iter()
            .find(|x| x["path"].as_str().unwrap().starts_with("/api/users/20/"))
            .expect("the 20th request");
        assert_eq!(last["path"], "/api/users/20/?page=2&access_token=[redacted]");
        assert_eq!(
            (last["left"].as_str(), last["right"].as_str()),
            (Some("\"user20@example.com\""), Some("absent"))
        );
        assert_eq!(last["method"], "GET");
        assert!(!last["request_id"].as_str().unwrap().is_empty() && !last["time"].as_str().unwrap().is_empty());
        assert!(!report.to_string().contains("tok20"), "{report:#}");

        // `cutover parity api --examples` shows the endpoint and its examples.
        let out = std::process::Command::new(BIN)
            .args(["parity", "api", "--examples", "--admin", &proxy.admin.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("GET /api/users/{id}/"), "{text}");
        assert!(text.contains("/api/users/20/?page=2&access_token=[redacted]"), "{text}");
        assert!(
            text.contains("legacy: \"user20@example.com\"") && text.contains("new: absent"),
            "{text}"
        );

        // Metrics carry the endpoint, and the exposition passes promtool.
        let metrics = proxy.metrics().await;
        let labels = [("route", "api"), ("endpoint", "GET /api/users/{id}/")];
        assert_eq!(
            metric_value(&metrics, "cutover_parity_endpoint_mismatches_total", &labels),
            Some(21.0)
        );
        promtool_check(&metrics);
    })
    .await;
}

#[tokio::test]
async fn a_decompression_bomb_is_skipped_and_a_false_gzip_is_reported_undecodable() {
    within(60, async {
        let (legacy, new) = pair().await;
        let proxy = Proxy::start(&config(&legacy, &new, "{ noise: { sample: 0 } }"), "api: { legacy: 100, new: 0 }\n").await;
        let client = client();
        for _ in 0..3 {
            let resp = send_on(&client, request(Method::GET, &proxy.url("/bomb/"), &[])).await;
            assert_eq!(resp.status, StatusCode::OK, "the client is served by legacy");
        }
        let report = wait_outcomes(&proxy, 3).await;
        assert_eq!(report["outcomes"], json!({"skipped": 3}), "{report:#}");
        assert_eq!(report["compared"], 0);

        send_on(&client, request(Method::GET, &proxy.url("/broken/"), &[])).await;
        let report = wait_outcomes(&proxy, 4).await;
        let broken = row(&report["paths"], "undecodable", "").unwrap_or_else(|| panic!("{report:#}"));
        assert_eq!(broken["left"], "not encoded");
        assert!(broken["right"].as_str().unwrap().starts_with("undecodable: gzip: "), "{broken}");
        assert_eq!(report["mismatch_rate"]["undecodable"], 1.0);
        assert_eq!(report["endpoints"][0]["endpoint"], "GET /broken/");
    })
    .await;
}

#[test]
fn endpoint_templates_and_number_normalisation_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let write = |compare: &str| {
        let path = dir.path().join("cutover.yaml");
        let text = format!(
            "{}backends:\n  legacy: {{ url: \"http://127.0.0.1:9\" }}\n  new: {{ url: \"http://127.0.0.1:9\" }}\n\
             routes:\n  - name: api\n    match: {{ path_prefix: / }}\n    backends: {{ legacy: {{}}, new: {{}} }}\n\
             \x20   mirror:\n      to: new\n      compare: {compare}\n",
            config_head("{ path: \"off\" }")
        );
        std::fs::write(&path, text).unwrap();
        std::fs::write(dir.path().join("weights.yaml"), "api: { legacy: 100, new: 0 }\n").unwrap();
        check(&path)
    };
    let (ok, _, err) = write("{ normalize: { numbers: true }, endpoints: [\"/api/users/{id}/orders/\", \"/api/users/{id}/\"] }");
    assert!(ok, "{err}");
    let (ok, out, err) = write("{ endpoints: [\"/api/users/{id}/\", \"/api/user-{id}/\"] }");
    assert!(!ok);
    let text = format!("{out}{err}");
    assert!(
        text.contains("cutover.yaml:17:") && text.contains("\"/api/user-{id}/\": a placeholder is a whole segment"),
        "{text}"
    );
    let (ok, out, err) = write("{ normalize: { numbers: yes please } }");
    assert!(!ok, "{out}{err}");
}
