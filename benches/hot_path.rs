//! Micro-benchmarks of the per-request hot path: route matching, path
//! normalisation, bucket and backend choice, header rewriting, and the
//! parity comparison of mirrored responses.
//!
//! Route tables are compiled through the public config API, so the timed
//! matchers are exactly the ones the proxy runs. Run with
//! `cargo bench --bench hot_path`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::Method;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use cutover::config::Config;
use cutover::proxy::headers::{cookie, ensure_request_id, ip_value, set_forwarded, strip_hop_by_hop};
use cutover::routing::{RequestView, host_without_port, normalize_path};
use cutover::split::{Split, random_bucket, sticky_bucket};

/// Table sizes for route matching.
const SIZES: [usize; 3] = [1, 100, 1_000];

#[derive(Clone, Copy)]
enum Kind {
    Prefix,
    Regex,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Prefix => "prefix",
            Kind::Regex => "regex",
        }
    }
}

/// Config text with `n` routes; only the last one matches `/api/users/42/profile`,
/// so a lookup walks the whole table (the worst case of first-match-wins).
fn config_text(n: usize, kind: Kind) -> String {
    let mut yaml = String::from(
        "listeners:\n  - { name: public, addr: \"127.0.0.1:0\" }\n\
         admin: { addr: \"127.0.0.1:0\" }\n\
         access_log: { path: off }\n\
         backends:\n\
         \x20 legacy: { url: \"http://127.0.0.1:8000\" }\n\
         \x20 new: { url: \"http://127.0.0.1:9000\" }\n\
         routes:\n",
    );
    for i in 0..n - 1 {
        let matcher = match kind {
            Kind::Prefix => format!("path_prefix: /svc{i:04}/"),
            Kind::Regex => format!("path_regex: \"^/svc{i:04}/v[0-9]+/items/[0-9]+$\""),
        };
        yaml.push_str(&format!(
            "  - name: r{i:04}\n    match: {{ {matcher} }}\n    backends: {{ legacy: {{}}, new: {{}} }}\n"
        ));
    }
    let matcher = match kind {
        Kind::Prefix => "path_prefix: /api/",
        Kind::Regex => "path_regex: \"^/api/users/[0-9]+/profile$\"",
    };
    yaml.push_str(&format!(
        "  - name: main\n    match: {{ {matcher} }}\n    backends: {{ legacy: {{}}, new: {{}} }}\n    sticky: {{ cookie: sessionid }}\n"
    ));
    yaml
}

fn compile(n: usize, kind: Kind) -> Config {
    let text = config_text(n, kind);
    let config =
        Config::parse(Path::new("/nonexistent/bench/cutover.yaml"), text).unwrap_or_else(|e| panic!("bench config does not compile: {e}"));
    assert_eq!(config.routes.len(), n);
    config
}

/// The headers a desktop Chrome sends for a page navigation.
fn browser_headers() -> HeaderMap {
    let pairs = [
        ("host", "shop.example.com"),
        ("connection", "keep-alive"),
        ("cache-control", "max-age=0"),
        (
            "sec-ch-ua",
            "\"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"",
        ),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"Linux\""),
        ("upgrade-insecure-requests", "1"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
        ),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-user", "?1"),
        ("sec-fetch-dest", "document"),
        ("referer", "https://shop.example.com/api/users/"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-GB,en;q=0.9,de;q=0.8"),
        (
            "cookie",
            "csrftoken=Qm9vbGVhbkZhbHNlQ3NyZlRva2VuVmFsdWUxMjM0NTY3ODkw; sessionid=k3j5h2g7f9d1s4a6p8o0i2u4y6t8r0e2; _ga=GA1.1.123456789.1700000000",
        ),
    ];
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(HeaderName::from_static(k), HeaderValue::from_str(v).expect("valid header value"));
    }
    h
}

fn bench_route_matching(c: &mut Criterion) {
    let headers = browser_headers();
    let method = Method::GET;
    let raw_path = "/api/users/42/profile";
    let host_header = headers.get("host").cloned();
    for kind in [Kind::Prefix, Kind::Regex] {
        let mut group = c.benchmark_group(format!("route_match/{}", kind.name()));
        for n in SIZES {
            let config = compile(n, kind);
            group.bench_with_input(BenchmarkId::from_parameter(n), &config, |b, config| {
                b.iter(|| {
                    // As the proxy does it: normalise, build the view, first match wins.
                    let path = normalize_path(black_box(raw_path)).expect("valid path");
                    let view = RequestView {
                        path: &path,
                        host: host_header.as_ref().and_then(|h| h.to_str().ok()).map(host_without_port),
                        method: &method,
                        headers: &headers,
                    };
                    config.route_for(&view).expect("the last route matches")
                })
            });
        }
        group.finish();
    }
}

fn bench_normalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize_path");
    let cases = [
        ("clean", "/api/v1/users/42/orders/2024-06/items"),
        ("dirty", "//api/./v1//users/%34%32/../42/orders/%7Eme/%2e%2e/items/"),
    ];
    for (name, path) in cases {
        group.bench_with_input(BenchmarkId::from_parameter(name), path, |b, path| {
            b.iter(|| normalize_path(black_box(path)).expect("valid path"))
        });
    }
    group.finish();
}

fn bench_split(c: &mut Criterion) {
    let mut group = c.benchmark_group("split");
    let split = Split::from_basis_points(&[9000, 1000]);
    let session = b"k3j5h2g7f9d1s4a6p8o0i2u4y6t8r0e2";
    group.bench_function("sticky_bucket", |b| b.iter(|| sticky_bucket(black_box(session))));
    group.bench_function("random_bucket", |b| b.iter(random_bucket));
    group.bench_function("pick_90_10", |b| b.iter(|| split.pick(black_box(9_421))));
    let headers = browser_headers();
    group.bench_function("cookie_to_backend", |b| {
        // The whole sticky-cookie choice: find the cookie, hash it, pick a backend.
        b.iter(|| {
            let bucket = cookie(black_box(&headers), "sessionid").map_or_else(random_bucket, |v| sticky_bucket(v.as_bytes()));
            split.pick(bucket)
        })
    });
    group.finish();
}

/// Each rewrite runs on a fresh copy of the browser header set, as the proxy
/// runs it on each request's freshly parsed map. The copy (and its drop) is
/// timed too, as `clone_only`: subtract it to get the rewrite alone.
fn bench_headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("headers");
    let template = browser_headers();
    let peer = ip_value("203.0.113.7".parse().expect("valid address"));
    let host = template.get("host").cloned();
    group.bench_function("clone_only", |b| b.iter(|| black_box(&template).clone()));
    group.bench_function("strip_hop_by_hop", |b| {
        b.iter(|| {
            let mut h = black_box(&template).clone();
            strip_hop_by_hop(&mut h, false);
            h
        })
    });
    group.bench_function("set_forwarded", |b| {
        b.iter(|| {
            let mut h = black_box(&template).clone();
            set_forwarded(&mut h, &peer, false, peer.clone(), "http", host.as_ref());
            h
        })
    });
    group.bench_function("ensure_request_id/new", |b| {
        b.iter(|| {
            let mut h = black_box(&template).clone();
            let id = ensure_request_id(&mut h);
            (h, id)
        })
    });
    let mut with_id = template.clone();
    with_id.insert("x-request-id", HeaderValue::from_static("6f1c2a9e0b7d4c3f8a5e1d2c3b4a5f60"));
    group.bench_function("ensure_request_id/kept", |b| {
        b.iter(|| {
            let mut h = black_box(&with_id).clone();
            let id = ensure_request_id(&mut h);
            (h, id)
        })
    });
    group.bench_function("all_three", |b| {
        b.iter(|| {
            let mut h = black_box(&template).clone();
            strip_hop_by_hop(&mut h, false);
            set_forwarded(&mut h, &peer, false, peer.clone(), "http", host.as_ref());
            let id = ensure_request_id(&mut h);
            (h, id)
        })
    });
    group.finish();
}

/// A DRF-style paginated list of `items` objects, about `items * 200` bytes of JSON.
fn paginated(items: usize, renamed: bool) -> serde_json::Value {
    let results: Vec<serde_json::Value> = (0..items)
        .map(|i| {
            let mut item = serde_json::json!({
                "id": i, "title": format!("book {i}"), "price": "10.50", "tags": ["a", "b"],
                "author": {"id": i % 7, "name": "someone", "email": "someone@example.com"},
                "updated_at": "2026-11-22T10:00:00Z",
            });
            if renamed {
                let author = item["author"].take();
                item["writer"] = author;
            }
            item
        })
        .collect();
    serde_json::json!({"count": items, "next": null, "previous": null, "results": results})
}

/// The parity comparison of two JSON documents (parse both, compare shapes),
/// at 10 KB and 1 MB: the work done per mirrored request off the primary path;
/// and of two identical answers, which are not parsed.
fn bench_compare(c: &mut Criterion) {
    use cutover::compare::{Captured, CompareRules, compare};
    let mut group = c.benchmark_group("compare_json");
    for (label, items) in [("10KB", 50usize), ("1MB", 5000)] {
        let left = serde_json::to_vec(&paginated(items, false)).unwrap();
        let right = serde_json::to_vec(&paginated(items, true)).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let side = |body: Vec<u8>| Captured {
            status: 200,
            headers: headers.clone(),
            body: cutover::compare::Body::Bytes(body.into()),
        };
        let (l, r) = (side(left.clone()), side(right));
        group.throughput(criterion::Throughput::Bytes((left.len() * 2) as u64));
        for (mode, values) in [("shape", false), ("values", true)] {
            let rules = CompareRules {
                values,
                ..CompareRules::default()
            };
            group.bench_function(BenchmarkId::new(mode, label), |b| {
                b.iter(|| compare(black_box(&l), black_box(&r), &rules))
            });
        }
        // Both sides answered the same bytes, as they do once parity holds.
        let same = side(left.clone());
        let rules = CompareRules {
            values: true,
            ..CompareRules::default()
        };
        group.bench_function(BenchmarkId::new("identical", label), |b| {
            b.iter(|| compare(black_box(&l), black_box(&same), &rules))
        });
    }
    group.finish();
}

/// The same comparison as the proxy runs it on mirrored answers: each side
/// decoded first ([`Captured::decoded`], a no-op on a plain body), then
/// compared. Both sides plain, then both gzip-compressed, at 10 KB and 1 MB.
fn bench_compare_decoded(c: &mut Criterion) {
    use std::io::Write;

    use cutover::compare::{Body, Captured, CompareRules, compare};
    use flate2::Compression;
    use flate2::write::GzEncoder;

    let gzip = |body: &[u8]| {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(body).expect("writing to a Vec");
        encoder.finish().expect("writing to a Vec")
    };
    let rules = CompareRules::default();
    let limit = rules.max_body_bytes;
    let mut group = c.benchmark_group("compare_decoded");
    for (label, items) in [("10KB", 50usize), ("1MB", 5000)] {
        let left = serde_json::to_vec(&paginated(items, false)).unwrap();
        let right = serde_json::to_vec(&paginated(items, true)).unwrap();
        assert!(left.len().max(right.len()) <= limit, "the {label} pair is within the compare limit");
        group.throughput(criterion::Throughput::Bytes((left.len() + right.len()) as u64));
        for (mode, gzipped) in [("plain", false), ("gzip", true)] {
            let mut headers = HeaderMap::new();
            headers.insert("content-type", HeaderValue::from_static("application/json"));
            if gzipped {
                headers.insert("content-encoding", HeaderValue::from_static("gzip"));
            }
            let side = |body: &[u8]| Captured {
                status: 200,
                headers: headers.clone(),
                body: Body::Bytes(if gzipped { gzip(body) } else { body.to_vec() }.into()),
            };
            let (l, r) = (side(&left), side(&right));
            // The pair decodes and differs at the renamed key, as in the plain case.
            let check = compare(&l.clone().decoded(limit).unwrap(), &r.clone().decoded(limit).unwrap(), &rules);
            assert!(!check.is_empty() && check.iter().all(|d| d.path.contains("author") || d.path.contains("writer")));
            group.bench_function(BenchmarkId::new(mode, label), |b| {
                b.iter(|| {
                    let (Ok(l), Ok(r)) = (black_box(&l).clone().decoded(limit), black_box(&r).clone().decoded(limit)) else {
                        panic!("the pair is within the compare limit");
                    };
                    compare(&l, &r, &rules)
                })
            });
        }
    }
    group.finish();
}

fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = hot_path;
    config = short();
    targets = bench_route_matching, bench_normalize, bench_split, bench_headers, bench_compare, bench_compare_decoded
}
criterion_main!(hot_path);
