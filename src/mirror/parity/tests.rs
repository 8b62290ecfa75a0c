//! The parity statistics' own tests: judging, bounds, redaction, endpoints.

use super::*;

#[test]
fn diffys_rule() {
    assert!(significant(0.5, 0.0));
    assert!(!significant(0.5, 0.5), "as noisy as the primary itself");
    assert!(!significant(0.5, 0.45), "within 20% of the noise");
    assert!(significant(1.0, 0.5));
    assert!(!significant(0.0002, 0.0), "too rare to matter");
}

#[test]
fn counts_halve_every_half_life() {
    let t0 = Instant::now();
    let mut d = Decaying::new(t0);
    d.add(8.0, t0);
    assert!((d.get(t0 + HALF_LIFE) - 4.0).abs() < 1e-9);
    assert!((d.get(t0 + HALF_LIFE * 3) - 1.0).abs() < 1e-9);
}

fn spec() -> MirrorSpec {
    MirrorSpec {
        to: 1,
        share: 1.0,
        methods: vec![http::Method::GET],
        max_body_bytes: 1024,
        max_in_flight: 1,
        timeout: Duration::from_secs(1),
        rules: Default::default(),
        noise_sample: 0.0,
        accept: Vec::new(),
        redact: Redactor::default(),
        compare_max_bytes: 1024,
        endpoints: Default::default(),
        min_clean_share: None,
    }
}

fn exchange<'a>(path: &'a str, request_id: &'a str) -> Exchange<'a> {
    Exchange {
        method: "GET",
        path,
        request_id,
        backends: ["legacy", "new"],
        statuses: [200, 200],
        served_by: "legacy",
    }
}

fn absent(path: String) -> Difference {
    Difference::new(Kind::Shape, path, "number".into(), "absent".into())
}

fn tracked(parity: &Parity, route: &str) -> usize {
    parity.routes.lock().unwrap()[route].paths.len()
}

#[test]
fn a_comparison_with_more_paths_than_are_tracked_is_judged_whole() {
    let parity = Parity::default();
    let diffs: Vec<Difference> = (0..MAX_PATHS + 500).map(|i| absent(format!("/k{i}"))).collect();
    let judgement = parity.record("api", &spec(), &exchange("/x", "1"), diffs);
    assert_eq!(judgement.mismatched, [Kind::Shape]);
    assert!(tracked(&parity, "api") <= MAX_PATHS);
    let report = parity.report("api", 5);
    assert_eq!(report["samples"][0]["differences"].as_array().unwrap().len(), MAX_PATHS + 500);
}

#[test]
fn new_paths_push_out_the_least_seen_ones() {
    let parity = Parity::default();
    let spec = spec();
    for round in 0..40 {
        let mut diffs: Vec<Difference> = (0..100).map(|i| absent(format!("/round{round}/k{i}"))).collect();
        diffs.push(absent("/always".into()));
        parity.record("api", &spec, &exchange("/x", "1"), diffs);
        assert!(tracked(&parity, "api") <= MAX_PATHS, "round {round}");
    }
    let report = parity.report("api", 1);
    assert_eq!(report["paths"][0]["path"], "/always");
    assert_eq!(report["paths"][0]["count"], 40);
}

#[test]
fn what_is_kept_is_redacted_and_bounded() {
    let parity = Parity::default();
    let long_key = "k".repeat(5000);
    let diffs = vec![
        Difference::new(
            Kind::Value,
            "/user/password_hash/value",
            "\"pbkdf2_sha256$1\"".into(),
            "\"pbkdf2_sha256$2\"".into(),
        ),
        Difference::new(Kind::Header, "x-note", "v".repeat(5000), "bearer abc123def456".into()),
        absent(format!("/{long_key}")),
    ];
    let request_path = format!("/reset/sk_live_4eC39HqLyjWDarjtT1zdp7dc/{long_key}");
    parity.record("api", &spec(), &exchange(&request_path, &"r".repeat(5000)), diffs);
    let report = parity.report("api", 10);
    let text = report.to_string();
    for secret in ["pbkdf2", "abc123def456", "sk_live_4eC39"] {
        assert!(!text.contains(secret), "{secret} in {report:#}");
    }
    let sample = &report["samples"][0];
    assert!(sample["path"].as_str().unwrap().starts_with("/reset/[redacted]/kkk"));
    for text in [&sample["path"], &sample["request_id"]] {
        assert!(text.as_str().unwrap().chars().count() <= MAX_PATH_CHARS + 1, "{text}");
    }
    for d in sample["differences"].as_array().unwrap() {
        assert!(d["path"].as_str().unwrap().chars().count() <= MAX_PATH_CHARS + 1);
        assert!(d["left"].as_str().unwrap().chars().count() <= MAX_VALUE_CHARS + 1);
    }
}

#[test]
fn the_log_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.jsonl");
    let loose = dir.path().join("loose.jsonl");
    std::fs::write(&loose, "").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    for path in [fresh, loose] {
        drop(open_private(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
}

#[test]
fn endpoints_are_bounded_and_keep_the_last_examples_redacted() {
    let parity = Parity::default();
    let spec = spec();
    let email = |n: usize| Difference {
        values: Some(Box::new([format!("\"user{n}@example.com\""), "absent".into()])),
        ..absent("/email".into())
    };
    for n in 0..5 {
        let request_id = format!("r{n}");
        parity.record("api", &spec, &exchange(&format!("/users/{n}/"), &request_id), vec![email(n)]);
    }
    // One endpoint learned above; then 199 more, and the rest are `other`.
    for n in 0..MAX_LEARNED + 20 {
        let path = format!("/e{n}/?page=2&token=abc123");
        let judgement = parity.record("api", &spec, &exchange(&path, "req"), vec![email(n)]);
        let expected = if n < MAX_LEARNED - 1 {
            format!("GET /e{n}/")
        } else {
            OTHER.to_string()
        };
        assert_eq!(judgement.endpoint, expected);
    }
    let configured = MirrorSpec {
        endpoints: crate::compare::endpoint::Endpoints::new(vec![crate::compare::endpoint::Template::parse("/api/users/{user}/").unwrap()]),
        ..self::spec()
    };
    let judgement = parity.record("api", &configured, &exchange("/api/users/1/", "c"), Vec::new());
    assert_eq!(
        judgement.endpoint, "GET /api/users/{user}/",
        "configured endpoints are never `other`"
    );
    let report = parity.report("api", 10);
    assert_eq!(report["endpoints_tracked"], MAX_LEARNED + 2);
    let endpoints = report["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), REPORTED_ENDPOINTS);
    let worst = &endpoints[0];
    assert_eq!(worst["endpoint"], "other", "21 unclean requests: the worst");
    assert_eq!((worst["compared"].as_u64(), worst["clean"].as_u64()), (Some(21), Some(0)));
    let users = endpoints.iter().find(|e| e["endpoint"] == "GET /users/{id}/").unwrap();
    assert_eq!(users["compared"], 5);
    let row = &users["paths"][0];
    assert_eq!(
        (row["kind"].as_str(), row["path"].as_str(), row["count"].as_u64()),
        (Some("shape"), Some("/email"), Some(5))
    );
    let examples = row["examples"].as_array().unwrap();
    let ids: Vec<&str> = examples.iter().map(|e| e["request_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["r4", "r3", "r2"], "the last three, newest first");
    assert_eq!(examples[0]["left"], "\"user4@example.com\"");
    assert_eq!(examples[0]["right"], "absent");
    assert_eq!(examples[0]["path"], "/users/4/");
    // The route-wide row shows the newest examples of any endpoint.
    assert_eq!(report["paths"][0]["examples"].as_array().unwrap().len(), EXAMPLES);
    let other = &endpoints[0]["paths"][0]["examples"][0];
    assert_eq!(other["path"], format!("/e{}/?page=2&token=[redacted]", MAX_LEARNED + 19));
    // With `redact: [email]`, the values are hidden in examples too.
    let redacting = MirrorSpec {
        redact: Redactor::new(&["email".into()]).unwrap(),
        ..spec
    };
    let parity = Parity::default();
    parity.record("api", &redacting, &exchange("/users/1/", "x"), vec![email(1)]);
    let report = parity.report("api", 10);
    assert!(!report.to_string().contains("example.com"), "{report:#}");
    assert_eq!(report["endpoints"][0]["paths"][0]["examples"][0]["left"], "[redacted]");
}

#[test]
fn endpoint_rows_show_their_own_rate_and_route_rows_the_route_wide_one() {
    let parity = Parity::default();
    let spec = spec();
    for _ in 0..10 {
        parity.record("api", &spec, &exchange("/users/1/", "u"), vec![absent("/email".into())]);
        parity.record("api", &spec, &exchange("/status/", "s"), Vec::new());
    }
    let report = parity.report("api", 10);
    assert_eq!(report["paths"][0]["rate"], 0.5);
    let endpoints = report["endpoints"].as_array().unwrap();
    assert_eq!(endpoints[0]["endpoint"], "GET /users/{id}/");
    assert_eq!(endpoints[0]["paths"][0]["rate"], 1.0);
    assert_eq!(endpoints[0]["paths"][0]["verdict"], "differs");
    assert_eq!(endpoints[0]["clean_share"], 0.0);
    assert_eq!(endpoints[1]["endpoint"], "GET /status/");
    assert_eq!(
        (endpoints[1]["clean"].as_u64(), endpoints[1]["clean_share"].as_f64()),
        (Some(10), Some(1.0))
    );
    assert_eq!(endpoints[1]["paths"], serde_json::json!([]));
    assert_eq!(report["samples"][0]["endpoint"], "GET /users/{id}/");
}

#[test]
fn an_endpoint_is_judged_against_its_own_noise_whatever_the_mix_of_traffic() {
    let parity = Parity::default();
    let spec = spec();
    let stamp = || Difference::new(Kind::Value, "/*/generated_at", "\"t1\"".into(), "\"t2\"".into());
    // Nine noise samples of /status/, alike; one of /books/, whose stamp differs from itself.
    for _ in 0..9 {
        parity.record_noise("api", &spec, &exchange("/status/?v=1", "s"), Vec::new());
    }
    parity.record_noise("api", &spec, &exchange("/books/?page=2", "b"), vec![stamp()]);
    // Route-wide, the stamp differs in every comparison and in 1 noise sample of 10.
    for _ in 0..10 {
        let judgement = parity.record("api", &spec, &exchange("/books/", "b"), vec![stamp(), absent("/*/author".into())]);
        assert_eq!(judgement.mismatched, [Kind::Shape], "the stamp is noise, the missing author is not");
    }
    let report = parity.report("api", 10);
    let rows = |rows: &serde_json::Value| -> Vec<(String, String, f64)> {
        let row = |r: &serde_json::Value| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["verdict"].as_str().unwrap().to_string(),
                r["noise_rate"].as_f64().unwrap(),
            )
        };
        rows.as_array().unwrap().iter().map(row).collect()
    };
    let books = report["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == "GET /books/")
        .unwrap();
    assert_eq!(
        rows(&books["paths"]),
        [
            ("/*/author".into(), "differs".into(), 0.0),
            ("/*/generated_at".into(), "noise".into(), 1.0)
        ]
    );
    assert_eq!(
        rows(&report["paths"]),
        [
            ("/*/author".into(), "differs".into(), 0.0),
            ("/*/generated_at".into(), "noise".into(), 0.1)
        ],
        "a route row differs only where an endpoint's does"
    );
    // An endpoint with no noise sample of its own is judged by the route's.
    let judgement = parity.record("api", &spec, &exchange("/authors/", "a"), vec![stamp()]);
    assert_eq!(judgement.mismatched, [Kind::Value]);
    parity.record_noise("api", &spec, &exchange("/authors/", "a"), vec![stamp()]);
    let judgement = parity.record("api", &spec, &exchange("/authors/", "a"), vec![stamp()]);
    assert_eq!(judgement.mismatched, [], "its own sample shows the stamp is noise");
}

#[test]
fn an_endpoint_lacks_noise_until_it_has_its_warm_up_samples() {
    let parity = Parity::default();
    let spec = spec();
    assert!(parity.lacks_noise("api", &spec, "GET", "/books/"), "a route not seen yet");
    for n in 0..WARMUP_NOISE_SAMPLES {
        assert!(parity.lacks_noise("api", &spec, "GET", "/books/"), "after {n} samples");
        parity.record_noise("api", &spec, &exchange("/books/?page=1", "b"), Vec::new());
    }
    assert!(!parity.lacks_noise("api", &spec, "GET", "/books/"));
    assert!(parity.lacks_noise("api", &spec, "GET", "/authors/7/"), "another endpoint");
    assert!(parity.lacks_noise("api", &spec, "POST", "/books/"), "another method");
}
