//! Weighted splitting: the ratio of random traffic, stickiness per user,
//! agreement with `cutover::split::sticky_bucket`, and monotone shifts.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use cutover::split::sticky_bucket;
use http::Method;

const CONCURRENCY: usize = 16;

/// A proxy with three 90/10 routes between two echo upstreams:
/// `random` (no sticky), `by-header` (X-User) and `by-cookie` (sessionid).
async fn split_proxy() -> (Proxy, Upstream, Upstream) {
    let legacy = Upstream::echo("legacy").await;
    let new = Upstream::echo("new").await;
    let config = format!(
        "{}backends:\n  legacy: {{ url: \"{}\" }}\n  new: {{ url: \"{}\" }}\n\
         routes:\n\
         \x20 - name: random\n    match: {{ path_prefix: /random/ }}\n    backends: {{ legacy: {{}}, new: {{}} }}\n\
         \x20 - name: by-header\n    match: {{ path_prefix: /header/ }}\n    backends: {{ legacy: {{}}, new: {{}} }}\n\
         \x20   sticky: {{ header: X-User }}\n\
         \x20 - name: by-cookie\n    match: {{ path_prefix: /cookie/ }}\n    backends: {{ legacy: {{}}, new: {{}} }}\n\
         \x20   sticky: {{ cookie: sessionid }}\n",
        config_head("{ path: off }"),
        legacy.url(),
        new.url()
    );
    let weights = "random: { legacy: 90, new: 10 }\n\
                   by-header: { legacy: 90, new: 10 }\n\
                   by-cookie: { legacy: 90, new: 10 }\n";
    (Proxy::start(&config, weights).await, legacy, new)
}

/// Sends one request per item of `jobs` (with `CONCURRENCY` keep-alive
/// connections) and returns the upstream that served each, in order.
async fn fan_out(proxy: &Proxy, jobs: Vec<(String, Vec<(String, String)>)>) -> Vec<String> {
    let c = client();
    let jobs = Arc::new(jobs);
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let c = c.clone();
        let jobs = jobs.clone();
        let base = proxy.url("");
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in (worker..jobs.len()).step_by(CONCURRENCY) {
                let (path, headers) = &jobs[i];
                let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let resp = send_on(&c, request(Method::GET, &format!("{base}{path}"), &headers)).await;
                assert_eq!(resp.status, 200, "{}", resp.text());
                out.push((i, resp.upstream().to_string()));
            }
            out
        }));
    }
    let mut results = vec![String::new(); jobs.len()];
    for t in tasks {
        for (i, up) in t.await.unwrap() {
            results[i] = up;
        }
    }
    results
}

fn expected(bucket: u16, new_from: u16) -> &'static str {
    if bucket < new_from { "legacy" } else { "new" }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_split_90_10() {
    within(90, async {
        let (proxy, legacy, new) = split_proxy().await;
        let jobs = (0..10_000).map(|i| (format!("/random/{i}"), Vec::new())).collect();
        let results = fan_out(&proxy, jobs).await;
        let on_new = results.iter().filter(|u| *u == "new").count();
        let on_legacy = results.iter().filter(|u| *u == "legacy").count();
        assert_eq!(on_new + on_legacy, 10_000);
        let share = on_new as f64 / 100.0;
        assert!(
            (8.0..=12.0).contains(&share),
            "new got {share}% of 10000 random requests, want 10 ± 2"
        );
        assert_eq!((legacy.hits(), new.hits()), (on_legacy, on_new));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_users_stay_put_where_sticky_bucket_says() {
    within(90, async {
        let (proxy, _legacy, _new) = split_proxy().await;
        let users: Vec<String> = (0..1000).map(|i| format!("user-{i:04}-{}", i * 7919)).collect();
        for kind in ["header", "cookie"] {
            // Every user three times, interleaved with the others.
            let mut jobs = Vec::new();
            for round in 0..3 {
                for u in &users {
                    let header = match kind {
                        "header" => ("x-user".to_string(), u.clone()),
                        _ => ("cookie".to_string(), format!("theme=dark; sessionid={u}")),
                    };
                    jobs.push((format!("/{kind}/r{round}"), vec![header]));
                }
            }
            let results = fan_out(&proxy, jobs).await;
            let mut on_new = 0;
            for (i, u) in users.iter().enumerate() {
                let got: Vec<&str> = (0..3).map(|r| results[r * users.len() + i].as_str()).collect();
                let want = expected(sticky_bucket(u.as_bytes()), 9000);
                assert_eq!(
                    got,
                    [want; 3],
                    "{kind}-sticky user {u:?} (bucket {}) moved or landed wrong",
                    sticky_bucket(u.as_bytes())
                );
                on_new += usize::from(want == "new");
            }
            // A sanity check that the users actually exercise both backends.
            assert!((50..=150).contains(&on_new), "{on_new} of 1000 users on new");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifting_weight_to_new_never_moves_a_user_back() {
    within(90, async {
        let (proxy, _legacy, _new) = split_proxy().await;
        let users: Vec<String> = (0..1000).map(|i| format!("Bearer tok-{i}")).collect();
        let jobs = |tag: &str| {
            users
                .iter()
                .map(|u| (format!("/header/{tag}"), vec![("x-user".to_string(), u.clone())]))
                .collect::<Vec<_>>()
        };
        let before = fan_out(&proxy, jobs("before")).await;

        proxy.write_weights(
            "random: { legacy: 90, new: 10 }\n\
             by-header: { legacy: 50, new: 50 }\n\
             by-cookie: { legacy: 90, new: 10 }\n",
        );
        proxy.signal("HUP");
        let weight = &[("route", "by-header"), ("backend", "new")];
        proxy.wait_metric("cutover_backend_weight_percent", weight, 50.0).await;

        let after = fan_out(&proxy, jobs("after")).await;
        let mut moved_back = Vec::new();
        let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, u) in users.iter().enumerate() {
            *counts.entry((&before[i], &after[i])).or_default() += 1;
            if before[i] == "new" && after[i] != "new" {
                moved_back.push(u.as_str());
            }
            let bucket = sticky_bucket(u.as_bytes());
            assert_eq!(before[i], expected(bucket, 9000), "{u} before the shift");
            assert_eq!(after[i], expected(bucket, 5000), "{u} after the shift");
        }
        assert!(moved_back.is_empty(), "moved back to legacy: {moved_back:?}");
        let on_new = after.iter().filter(|u| *u == "new").count();
        assert!(
            (440..=560).contains(&on_new),
            "{on_new} of 1000 users on new at 50%; transitions {counts:?}"
        );
        assert!(counts.get(&("legacy", "new")).copied().unwrap_or(0) > 300);
    })
    .await;
}
