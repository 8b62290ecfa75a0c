//! `cutover import-nginx`: the nginx parser, the conversion of realistic
//! configs, the command line, and an equivalence test against the real nginx.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::{HeaderMap, Method};

use common::*;
use cutover::config::{Config, Weights};
use cutover::import::nginx::{self, ParseError};
use cutover::import::{self, Import, ImportError, NotConverted};
use cutover::routing::RequestView;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nginx").join(name)
}

/// Imports a fixture and checks that both files pass what `cutover check` runs.
fn import_fixture(name: &str) -> (Import, Config) {
    let imported = import::import_file(&fixture(name)).unwrap_or_else(|e| panic!("import {name}: {e}"));
    let config = validate(&imported);
    (imported, config)
}

fn validate(imported: &Import) -> Config {
    let dir = Path::new("/nonexistent-cutover-import");
    let config = Config::parse(&dir.join("cutover.yaml"), imported.config.clone())
        .unwrap_or_else(|e| panic!("generated config does not validate: {e}\n{}", imported.config));
    Weights::parse(&dir.join("weights.yaml"), &imported.weights, &config)
        .unwrap_or_else(|e| panic!("generated weights do not validate: {e}\n{}", imported.weights));
    config
}

/// The not-converted entry for `directive` at `file:line`, if it is listed.
fn entry<'a>(imported: &'a Import, file: &str, line: usize, directive: &str) -> Option<&'a NotConverted> {
    imported
        .not_converted
        .iter()
        .find(|n| n.at.line == line && n.directive == directive && n.at.file.ends_with(file))
}

/// Whether `directive` at `file:line` is in the not-converted list.
fn listed(imported: &Import, file: &str, line: usize, directive: &str) -> bool {
    entry(imported, file, line, directive).is_some()
}

fn assert_listed(imported: &Import, file: &str, line: usize, directive: &str) {
    assert!(
        listed(imported, file, line, directive),
        "{directive} at {file}:{line} is not listed as not converted:\n{}",
        imported.report()
    );
}

/// None of `lines` is listed as not converted (they were converted).
fn assert_converted(imported: &Import, lines: &[usize]) {
    for &line in lines {
        assert!(
            !imported.not_converted.iter().any(|n| n.at.line == line),
            "line {line} listed:\n{}",
            imported.report()
        );
    }
}

/// Some note mentions every one of `words`.
fn assert_note(imported: &Import, words: &[&str]) {
    assert!(
        imported.notes.iter().any(|n| words.iter().all(|w| n.contains(w))),
        "no note mentions {words:?}: {:?}",
        imported.notes
    );
}

/// The route the compiled config picks for a (normalised) path and host.
fn route_for(config: &Config, path: &str, host: Option<&str>) -> Option<String> {
    let headers = HeaderMap::new();
    let view = RequestView {
        path,
        host,
        method: &Method::GET,
        headers: &headers,
    };
    config.routes.iter().find(|r| r.matcher.matches(&view)).map(|r| r.name.to_string())
}

fn backends_of(config: &Config, route: &str) -> Vec<String> {
    let r = &config.routes[config.route_index(route).unwrap_or_else(|| panic!("no route {route}"))];
    r.backends.iter().map(|b| b.spec.name.to_string()).collect()
}

fn backend<'a>(config: &'a Config, name: &str) -> &'a cutover::config::BackendSpec {
    config
        .backends
        .iter()
        .find(|b| &*b.name == name)
        .unwrap_or_else(|| panic!("no backend {name}"))
}

// ---------------------------------------------------------------- the parser

fn parse(text: &str) -> Result<nginx::Parsed, ParseError> {
    nginx::parse_str(Path::new("test.conf"), text)
}

#[test]
fn parser_reads_blocks_with_file_and_line() {
    let parsed = parse("events {}\n\nhttp {\n    server {\n        listen 80;\n    }\n}\n").unwrap();
    let http = &parsed.directives[1];
    assert_eq!(http.name, "http");
    assert_eq!(http.at.line, 3);
    let server = &http.children()[0];
    assert_eq!((server.name.as_str(), server.at.line), ("server", 4));
    let listen = &server.children()[0];
    assert_eq!(
        (listen.name.as_str(), listen.arg_texts(), listen.at.line),
        ("listen", vec!["80"], 5)
    );
    assert_eq!(listen.at.to_string(), "test.conf:5");
    assert!(parsed.directives[0].block.as_ref().is_some_and(Vec::is_empty));
}

#[test]
fn parser_handles_quotes_escapes_comments_and_variables() {
    let text = r#"# a comment line
add_header X-Text "a \"quoted\" value; with {braces} # not a comment" always; # trailing
add_header X-Single 'it\'s' ;
return 200 "tab\there\nnext";
location ~ \.php$ { }
set $x ${host}suffix;
rewrite ^/a#b /c;
proxy_pass http://$backend$request_uri;
multi
  line
  directive;
"#;
    let parsed = parse(text).unwrap();
    let d = &parsed.directives;
    assert_eq!(
        d[0].arg_texts(),
        vec!["X-Text", "a \"quoted\" value; with {braces} # not a comment", "always"]
    );
    assert!(d[0].args[1].quoted && !d[0].args[0].quoted);
    assert_eq!(d[0].at.line, 2);
    // 'it''s' is two adjacent quoted strings, which nginx refuses.
    assert!(matches!(
        parse("add_header X 'it''s';"),
        Err(ParseError::Unexpected { found: '\'', .. })
    ));
    assert_eq!(d[1].arg_texts(), vec!["X-Single", "it's"]);
    assert_eq!(d[2].arg_texts(), vec!["200", "tab\there\nnext"]);
    assert_eq!(d[3].arg_texts(), vec!["~", r"\.php$"], "unknown escapes keep their backslash");
    assert_eq!(d[4].arg_texts(), vec!["$x", "${host}suffix"], "${{var}} does not open a block");
    assert_eq!(d[5].arg_texts(), vec!["^/a#b", "/c"], "# inside a word is not a comment");
    assert_eq!(d[6].arg_texts(), vec!["http://$backend$request_uri"]);
    assert_eq!(
        (d[7].name.as_str(), d[7].arg_texts(), d[7].at.line),
        ("multi", vec!["line", "directive"], 9)
    );
    assert_eq!(d.len(), 8);
}

#[test]
fn parser_errors_name_file_and_line() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "http {\n  server {\n    listen 80;\n  }\n",
            5,
            "unexpected end of file, expecting \"}\"",
        ),
        ("events {}\n}\n", 2, "unexpected \"}\""),
        ("http {\n  listen 80\n}\n", 3, "unexpected \"}\""),
        ("server_name a\n", 2, "unexpected end of file, expecting \";\" or \"}\""),
        ("http {\n  ;\n}\n", 2, "unexpected \";\""),
        ("a;\nreturn 200 \"never\n closed;\n", 2, "unterminated quoted string"),
        ("add_header X \"v\"x;\n", 1, "unexpected \"x\""),
        ("include a b;\n", 1, "invalid number of arguments in \"include\" directive"),
    ];
    for (text, line, message) in cases {
        let err = parse(text).expect_err(text);
        assert_eq!(err.to_string(), format!("test.conf:{line}: {message}"), "for {text:?}");
        assert_eq!(err.pos().map(|p| p.line), Some(*line));
    }
    let missing = nginx::parse_file(&fixture("no-such-file.conf")).unwrap_err();
    assert!(matches!(missing, ParseError::Read { .. }), "{missing}");
}

#[test]
fn parser_expands_includes_globs_and_reports_missing_files() {
    let parsed = nginx::parse_file(&fixture("includes/nginx.conf")).unwrap();
    let names: Vec<String> = parsed
        .files
        .iter()
        .map(|f| f.strip_prefix(fixture("includes")).unwrap().display().to_string())
        .collect();
    // conf.d/*.conf in sorted order; `ignored.conf.disabled` does not match.
    assert_eq!(
        names,
        vec![
            "nginx.conf",
            "mime.types",
            "upstreams.conf",
            "conf.d/a-api.conf",
            "snippets/proxy.conf",
            "conf.d/b-www.conf"
        ]
    );
    let http = parsed.directives.iter().find(|d| d.name == "http").unwrap();
    let kinds: Vec<&str> = http.children().iter().map(|d| d.name.as_str()).collect();
    assert_eq!(kinds, vec!["types", "upstream", "server", "server"]);
    // The snippet's directives land inside the location that includes them, with their own file and line.
    let location = &http.children()[2].children()[2];
    let proxy_pass = &location.children()[0];
    assert_eq!(proxy_pass.name, "proxy_pass");
    assert!(proxy_pass.at.file.ends_with("snippets/proxy.conf"));
    assert_eq!(proxy_pass.at.line, 1);
    assert_eq!(http.children()[1].arg_texts(), vec!["legacy"], "quoted upstream name");
    assert_eq!(parsed.missing.len(), 1);
    assert_eq!(parsed.missing[0].at.line, 7);
    assert!(parsed.missing[0].path.ends_with("extra.conf"));
}

#[test]
fn an_include_loop_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("loop.conf"), "events {}\ninclude loop.conf;\n").unwrap();
    let err = nginx::parse_file(&dir.path().join("loop.conf")).unwrap_err();
    assert!(matches!(err, ParseError::IncludeDepth { .. }), "{err}");
    assert!(err.to_string().contains("loop.conf:2:"), "{err}");
}

// ---------------------------------------------------------------- conversion

#[test]
fn django_site_keeps_the_app_routes_and_lists_the_rest() {
    let (imported, config) = import_fixture("django.conf");
    let names: Vec<&str> = config.routes.iter().map(|r| &*r.name).collect();
    assert_eq!(names, vec!["api", "default"]);
    // Static files were served from disk, not here: cutover sends them to the app.
    assert_eq!(route_for(&config, "/static/css/site.css", None).as_deref(), Some("default"));
    assert_eq!(route_for(&config, "/api/orders/", None).as_deref(), Some("api"));
    // Per-location timeouts become backends of the same server.
    let api = backend(&config, &backends_of(&config, "api")[0]);
    let default = backend(&config, &backends_of(&config, "default")[0]);
    assert_eq!(api.url.to_string(), "http://127.0.0.1:8000");
    assert_eq!(default.url.to_string(), "http://127.0.0.1:8000");
    assert_eq!(api.timeout, Duration::from_secs(120));
    assert_eq!(
        api.body_timeout,
        Duration::from_secs(120),
        "nginx's read timeout bounds each read of the body too"
    );
    assert_eq!(api.tunnel_idle_timeout, Duration::from_secs(120), "and a WebSocket's silence");
    assert_eq!(default.connect_timeout, Duration::from_secs(5));
    assert_eq!(api.host_header, None, "proxy_set_header Host $host is cutover's default");
    assert_eq!(config.server.max_body_bytes, Some(20 << 20), "client_max_body_size 20M");
    let gzip = config.compression.as_ref().expect("gzip on");
    assert!(
        gzip.compresses(b"text/html") && !gzip.compresses(b"application/json"),
        "nginx's gzip_types: text/html"
    );
    // Port 80's server only sent everyone to https: so does its listener.
    let redirects: Vec<Option<u16>> = config.listeners.iter().map(|l| l.redirect_https).collect();
    assert_eq!(redirects, [Some(443), None], "{}", imported.config);
    // Listeners: 80 and 443 (plain: TLS is listed); [::]:80 folds into 0.0.0.0:80.
    let addrs: Vec<String> = config.listeners.iter().map(|l| l.addr.to_string()).collect();
    assert_eq!(addrs, vec!["0.0.0.0:80", "0.0.0.0:443"]);
    for (line, directive) in [
        (3, "user"),
        (7, "events"),
        (18, "server"), // max_fails / fail_timeout
        (19, "keepalive"),
        (24, "listen"), // [::]:80
        (30, "listen"), // 443 ssl
        (32, "ssl_certificate"),
        (33, "ssl_certificate_key"),
        (36, "location"), // /static/ alias
        (41, "location"), // /media/ alias
    ] {
        assert_listed(&imported, "django.conf", line, directive);
    }
    // Converted directives are not listed.
    assert_converted(&imported, &[15, 34, 45, 46, 47, 48, 49, 50, 53, 54, 55, 56, 57]);
    assert_note(&imported, &["443", "TLS"]);
    assert_note(&imported, &["X-Real-IP", "trusted_proxies"]);
    assert!(imported.config.contains("django.conf:45 location /api/"), "{}", imported.config);
    let report = imported.report();
    assert!(report.contains("django.conf:32  ssl_certificate /etc/letsencrypt"), "{report}");
}

#[test]
fn two_upstreams_split_api_versions_with_the_uri_rewrite() {
    let (imported, config) = import_fixture("two_upstreams.conf");
    assert!(imported.not_converted.is_empty(), "{}", imported.report());
    assert_eq!(route_for(&config, "/api/v2/users", None).as_deref(), Some("api-v2"));
    assert_eq!(route_for(&config, "/api/v1/users", None).as_deref(), Some("api"));
    assert_eq!(route_for(&config, "/", None).as_deref(), Some("default"));
    let v2 = &config.routes[config.route_index("api-v2").unwrap()];
    assert_eq!(&*v2.backends[0].spec.name, "new");
    // proxy_pass http://new/ replaces the location prefix with "/".
    let rewrite = v2.backends[0].rewrite.as_ref().expect("rewrite");
    assert_eq!(rewrite.apply("/api/v2/users?x=1"), "/users?x=1");
    assert_eq!(backends_of(&config, "api"), vec!["legacy"]);
    assert_eq!(backend(&config, "legacy").host_header, None, "$http_host");
    assert_eq!(config.listeners[0].addr.to_string(), "0.0.0.0:8080");
    assert_note(&imported, &["301"]);
}

#[test]
fn split_clients_become_weights_with_stickiness_from_the_key() {
    let (imported, config) = import_fixture("canary.conf");
    let weights = Weights::parse(Path::new("weights.yaml"), &imported.weights, &config).unwrap();
    let percent = |route: &str| {
        let ri = config.route_index(route).unwrap();
        let names = backends_of(&config, route);
        names
            .into_iter()
            .zip(weights.route(ri).iter().map(|&bp| f64::from(bp) / 100.0))
            .collect::<Vec<_>>()
    };
    assert_eq!(percent("api"), vec![("legacy".to_string(), 90.0), ("new".to_string(), 10.0)]);
    assert_eq!(percent("search"), vec![("legacy".to_string(), 75.5), ("new".to_string(), 24.5)]);
    assert_eq!(percent("beta"), vec![("legacy".to_string(), 50.0), ("new".to_string(), 50.0)]);
    let sticky = |route: &str| config.routes[config.route_index(route).unwrap()].sticky.clone();
    assert_eq!(sticky("api"), cutover::config::Sticky::Cookie("sessionid".into()));
    assert_eq!(
        sticky("search"),
        cutover::config::Sticky::Header(http::HeaderName::from_static("x-user-id"))
    );
    assert_eq!(
        sticky("beta"),
        cutover::config::Sticky::None,
        "a remote_addr key is random in cutover"
    );
    let api = &config.routes[config.route_index("api").unwrap()];
    assert_eq!(&*api.backends[api.stable].spec.name, "legacy", "the larger side is the stable one");
    // A weighted upstream without a balancing method becomes weighted backends; backup gets 0.
    assert_eq!(
        percent("default"),
        vec![("app-1".to_string(), 75.0), ("app-2".to_string(), 25.0), ("app-3".to_string(), 0.0)]
    );
    // ip_hash cannot be kept: the first server stands for the upstream, the rest are listed.
    assert_eq!(backends_of(&config, "reports"), vec!["reports"]);
    assert_eq!(backend(&config, "reports").url.to_string(), "http://10.0.2.1:8000");
    assert_listed(&imported, "canary.conf", 34, "ip_hash");
    assert_listed(&imported, "canary.conf", 36, "server");
    assert_note(&imported, &["MurmurHash2"]);
    assert!(imported.weights.contains("canary.conf:2 split_clients"), "{}", imported.weights);
    assert_eq!(config.server.max_body_bytes, Some(1 << 20), "nginx's default client_max_body_size");
}

#[test]
fn regex_and_prefix_precedence_matches_nginx() {
    let (imported, config) = import_fixture("regex_precedence.conf");
    assert!(imported.not_converted.is_empty(), "{}", imported.report());
    // (path, the location nginx picks, as the route it became)
    let cases = [
        ("/static/robots.txt", "static-robots-txt"), // = wins over everything
        ("/static/app.css", "static"),               // ^~
        ("/static/x.php", "static"),                 // ^~ stops the regex search
        ("/static/logo.png", "static"),
        ("/static/im", "static"),
        ("/static/img/a.png", "regex-png-jpe-g-gif"), // longest prefix is the plain /static/img/: regexes first
        ("/static/img/a.txt", "static-img"),
        ("/static/img/c.php", "regex-php"),
        ("/static/img/raw/a.png", "static-img-raw"), // a longer ^~ inside the plain prefix
        ("/uploads/a.php", "regex-php"),             // regex beats a plain prefix
        ("/uploads/A.JPG", "regex-png-jpe-g-gif"),
        ("/uploads/a.txt", "uploads"),
        ("/index.php", "regex-php"),
        ("/a.GIF", "regex-png-jpe-g-gif"), // ~* is case-insensitive
        ("/a.PHP", "default"),             // ~ is not
        ("/", "default"),
    ];
    for (path, route) in cases {
        assert_eq!(route_for(&config, path, None).as_deref(), Some(route), "{path}");
    }
    let static_route = &config.routes[config.route_index("static").unwrap()];
    assert_eq!(
        static_route.backends[0].rewrite.as_ref().unwrap().apply("/static/app.css"),
        "/app.css"
    );
    assert!(imported.config.contains("except under /static/img/"), "{}", imported.config);
}

#[test]
fn mirror_to_a_split_side_converts_and_to_an_outsider_is_listed() {
    let (imported, config) = import_fixture("mirror.conf");
    let api = &config.routes[config.route_index("api").unwrap()];
    let mirror = api.mirror.as_ref().expect("mirror on api");
    assert_eq!(&*api.backends[mirror.to].spec.name, "new");
    assert!(config.routes[config.route_index("search").unwrap()].mirror.is_none());
    assert_listed(&imported, "mirror.conf", 26, "mirror");
    let entry = imported.not_converted.iter().find(|n| n.at.line == 26).unwrap();
    assert!(entry.reason.contains("not a backend of this route"), "{}", entry.reason);
    assert_listed(&imported, "mirror.conf", 10, "upstream"); // shadow: nothing proxies to it
    // The internal mirror locations are not routes.
    assert_eq!(config.routes.len(), 3);
    assert!(
        imported.config.contains("mirror.conf:16 mirror /_mirror_api"),
        "{}",
        imported.config
    );
}

#[test]
fn includes_server_names_and_snippets() {
    let (imported, config) = import_fixture("includes/nginx.conf");
    // api.example.com is not the default server of :8080, so its routes match its name.
    assert_eq!(
        route_for(&config, "/api/x", Some("api.example.com")).as_deref(),
        Some("api.example.com-api")
    );
    assert_eq!(route_for(&config, "/api/x", Some("www.example.com")).as_deref(), Some("default"));
    assert_eq!(route_for(&config, "/", Some("api.example.com")).as_deref(), Some("default"));
    let api_backend = backend(&config, &backends_of(&config, "api.example.com-api")[0]);
    assert_eq!(api_backend.host_header.as_ref().unwrap(), "legacy.internal");
    let default_backend = backend(&config, &backends_of(&config, "default")[0]);
    assert_eq!(
        default_backend.host_header.as_ref().unwrap(),
        "legacy",
        "nginx's default Host is $proxy_host"
    );
    assert_listed(&imported, "includes/nginx.conf", 7, "include");
    assert_listed(&imported, "includes/mime.types", 1, "types");
}

#[test]
fn several_server_names_get_a_route_each() {
    let text = "
upstream app { server 127.0.0.1:8000; }
upstream admin { server 127.0.0.1:8001; }
server {
    listen 80 default_server;
    return 444;
}
server {
    listen 80;
    server_name example.com .example.org;
    location / { proxy_pass http://app; }
}
server {
    listen 80;
    server_name admin.example.com ~^adm\\d+\\.example\\.com$;
    location / { proxy_pass http://admin; }
}
";
    let imported = import::import_str(Path::new("sites.conf"), text).unwrap();
    let config = validate(&imported);
    let route = |host: &str| route_for(&config, "/x", Some(host));
    assert_eq!(route("example.com").as_deref(), Some("example.com-default"));
    assert_eq!(route("example.org").as_deref(), Some("example.org-default"));
    assert_eq!(route("www.example.org").as_deref(), Some("any.example.org-default"));
    assert_eq!(route("admin.example.com").as_deref(), Some("admin.example.com-default"));
    // The default server answers unknown names itself (return 444): cutover has no route for them.
    assert_eq!(route("other.net"), None);
    assert_listed(&imported, "sites.conf", 6, "return");
    assert_listed(&imported, "sites.conf", 15, "server_name"); // the regex name
}

#[test]
fn try_files_with_a_named_location_proxies_to_it() {
    let text = "
server {
    listen 8000;
    location / {
        try_files $uri @app;
    }
    location @app {
        proxy_pass http://127.0.0.1:8001;
        proxy_read_timeout 90;
    }
}
";
    let imported = import::import_str(Path::new("site.conf"), text).unwrap();
    let config = validate(&imported);
    assert_eq!(route_for(&config, "/any/page", None).as_deref(), Some("default"));
    let b = backend(&config, &backends_of(&config, "default")[0]);
    assert_eq!(b.url.to_string(), "http://127.0.0.1:8001");
    assert_eq!(b.timeout, Duration::from_secs(90));
    assert_eq!(b.host_header.as_ref().unwrap(), "127.0.0.1:8001");
    assert_listed(&imported, "site.conf", 5, "try_files");
}

#[test]
fn a_server_level_return_hides_its_locations() {
    let text = "
server {
    listen 80;
    return 301 https://$host$request_uri;
    location / { proxy_pass http://127.0.0.1:8000; }
}
server {
    listen 8080;
    location / { proxy_pass http://127.0.0.1:8001$uri$is_args$args; }
}
";
    let imported = import::import_str(Path::new("redirect.conf"), text).unwrap();
    let config = validate(&imported);
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.backends.len(), 1);
    assert_eq!(
        backend(&config, &backends_of(&config, "default")[0]).url.to_string(),
        "http://127.0.0.1:8001"
    );
    assert_listed(&imported, "redirect.conf", 5, "location");
    // The redirect is the whole of port 80's job, and the listener's now.
    let port_80 = config.listeners.iter().find(|l| l.addr.port() == 80).unwrap();
    assert_eq!(port_80.redirect_https, Some(443));
    assert!(!listed(&imported, "redirect.conf", 4, "return"), "{}", imported.report());
}

/// A redirect that shares its port with servers that proxy, or that only
/// changes the host over https, stays nginx's.
#[test]
fn https_redirects_convert_only_for_a_whole_plain_listener() {
    let text = "
server { listen 80; server_name shop.example.com; return 301 https://$server_name:8443$request_uri; }
server { listen 80; server_name api.example.com; location / { proxy_pass http://127.0.0.1:8000; } }
server { listen 8081; return 302 https://$host$request_uri; }
server { listen 8443 ssl; server_name www.example.com; return 301 https://example.com$request_uri; }
";
    let imported = import::import_str(Path::new("mixed.conf"), text).unwrap();
    let config = validate(&imported);
    let redirect = |port: u16| config.listeners.iter().find(|l| l.addr.port() == port).map(|l| l.redirect_https);
    assert_eq!(
        redirect(80),
        Some(None),
        "api.example.com is proxied on port 80: {}",
        imported.config
    );
    assert_note(&imported, &["mixed.conf:2", "other servers on 0.0.0.0:80 proxy"]);
    assert_eq!(redirect(8081), Some(Some(443)));
    assert_listed(&imported, "mixed.conf", 5, "return");
}

#[test]
fn nothing_to_route_is_an_error_with_the_list() {
    let text = "server { listen 80; location / { root /srv/www; } }";
    match import::import_str(Path::new("static.conf"), text) {
        Err(ImportError::NothingToRoute { report }) => assert!(report.contains("static.conf:1  location /"), "{report}"),
        other => panic!("expected NothingToRoute, got {other:?}"),
    }
}

#[test]
fn a_quoted_argument_stays_inside_its_comment() {
    // A location name that breaks lines and reads like a route must stay a path and a comment.
    let text = r#"
server {
    listen 8080;
    location "/a\n  - name: injected\n    match: { path_prefix: / }\n    backends: { 127.0.0.1-8000: {} } #" {
        proxy_pass http://127.0.0.1:8000;
    }
    location /b/ { proxy_pass http://127.0.0.1:8000; }
}
"#;
    let imported = import::import_str(Path::new("names.conf"), text).unwrap();
    let config = validate(&imported);
    let names: Vec<&str> = config.routes.iter().map(|r| &*r.name).collect();
    assert_eq!(names.len(), 2, "{names:?}\n{}", imported.config);
    assert!(!names.contains(&"injected"), "{}", imported.config);
    assert_eq!(route_for(&config, "/x", None), None, "{}", imported.config);
    assert_eq!(route_for(&config, "/b/x", None).as_deref(), Some("b"));
    // The comment quotes the directive on one line, with nginx's escapes.
    assert!(
        imported.config.contains(r#"# names.conf:4 location "/a\n  - name: injected\n"#),
        "{}",
        imported.config
    );
}

#[test]
fn unsupported_targets_leave_the_location_out_with_a_reason() {
    let text = "
upstream app { server 127.0.0.1:8000; }
server {
    listen 80;
    location /tls-sock/ { proxy_pass https://unix:/run/app.sock:/; }
    location /php/ { fastcgi_pass 127.0.0.1:9000; }
    location /vars/ { proxy_pass http://$host$uri; }
    location ~ (?<=a)b { proxy_pass http://app; }
    location / { proxy_pass http://app; }
}
";
    let imported = import::import_str(Path::new("odd.conf"), text).unwrap();
    let config = validate(&imported);
    assert_eq!(config.routes.len(), 1);
    assert_eq!(backend(&config, "app").url.to_string(), "http://127.0.0.1:8000");
    for (line, directive) in [(5, "location"), (6, "location"), (7, "location"), (8, "location")] {
        assert_listed(&imported, "odd.conf", line, directive);
    }
    let lookbehind = imported.not_converted.iter().find(|n| n.at.line == 8).unwrap();
    assert!(lookbehind.reason.contains("regex"), "{}", lookbehind.reason);
    let tls_socket = imported.not_converted.iter().find(|n| n.at.line == 5).unwrap();
    assert!(tls_socket.reason.contains("unix socket"), "{}", tls_socket.reason);
}

/// gunicorn's own nginx example, and the `proxy_params` kind of site most
/// Django deployments run: the app server on a unix socket.
#[test]
fn gunicorn_behind_a_unix_socket_becomes_a_unix_backend() {
    let text = "
upstream app_server { server unix:/tmp/gunicorn.sock fail_timeout=0; }
server {
    listen 80;
    location / {
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Host $http_host;
        proxy_redirect off;
        proxy_pass http://app_server;
    }
    location /api/ { proxy_pass http://unix:/run/gunicorn.sock; }
    location /v2/ { proxy_pass http://unix:/run/api-v2.sock:/v2/; }
    location /legacy/ { include uwsgi_params; uwsgi_pass unix:/run/uwsgi/legacy.sock; }
}
";
    let imported = import::import_str(Path::new("gunicorn.conf"), text).unwrap();
    let config = validate(&imported);
    let app = backend(&config, "app_server");
    assert_eq!(app.url.to_string(), "unix:/tmp/gunicorn.sock", "{}", imported.config);
    assert_eq!(app.host_header, None, "the client's Host goes through: {}", imported.config);
    let api = backend(&config, "gunicorn");
    assert_eq!(api.url.to_string(), "unix:/run/gunicorn.sock", "{}", imported.config);
    // nginx sends `Host: localhost` to a socket unless told otherwise.
    assert_eq!(api.host_header.as_ref().map(|h| h.to_str().unwrap()), Some("localhost"));
    assert_eq!(route_for(&config, "/api/x", None).as_deref(), Some("api"), "{}", imported.config);
    let v2 = backend(&config, "api-v2");
    assert_eq!(v2.url.socket.as_deref(), Some(Path::new("/run/api-v2.sock")), "{}", imported.config);
    // uWSGI's own protocol is not HTTP: the note says how to get HTTP from it.
    let uwsgi = entry(&imported, "gunicorn.conf", 14, "location").expect("the uwsgi location is listed");
    assert!(uwsgi.reason.contains("http-socket"), "{}", uwsgi.reason);
    assert!(
        imported.not_converted.iter().all(|n| !n.reason.contains("unix")),
        "{:?}",
        imported.not_converted
    );
}

#[test]
fn ssl_listeners_with_readable_certificates_become_tls_listeners() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    for name in ["shop.example.com", "api.example.com"] {
        let generated = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        std::fs::write(dir.path().join(format!("tls/{name}.crt")), generated.cert.pem()).unwrap();
        std::fs::write(dir.path().join(format!("tls/{name}.key")), generated.signing_key.serialize_pem()).unwrap();
    }
    // Relative names resolve against the main config's folder, as in nginx.
    let conf = "
http {
    ssl_certificate tls/shop.example.com.crt;
    ssl_certificate_key tls/shop.example.com.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {
        listen 443 ssl default_server;
        server_name shop.example.com;
        location / { proxy_pass http://127.0.0.1:8000; }
    }
    server {
        listen 443 ssl;
        server_name api.example.com;
        ssl_certificate tls/api.example.com.crt;
        ssl_certificate_key tls/api.example.com.key;
        location / { proxy_pass http://127.0.0.1:9000; }
    }
    server {
        listen 8443 ssl;
        ssl_certificate /nonexistent/cutover-test.crt;
        ssl_certificate_key /nonexistent/cutover-test.key;
        location / { proxy_pass http://127.0.0.1:9100; }
    }
}
";
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let imported = import::import_file(&path).unwrap();
    let config = validate(&imported);
    let tls_443 = config.listeners[0].tls.as_ref().expect("443 terminates TLS");
    assert_eq!(config.listeners[0].addr.to_string(), "0.0.0.0:443");
    // The default server's certificate first (the one for clients without SNI), then the other server's.
    let certs: Vec<PathBuf> = tls_443.iter().map(|c| c.cert.clone()).collect();
    let tls_dir = std::path::absolute(dir.path().join("tls")).unwrap();
    assert_eq!(
        certs,
        vec![tls_dir.join("shop.example.com.crt"), tls_dir.join("api.example.com.crt")]
    );
    // A certificate that cannot be read: plain HTTP, listed, noted.
    assert_eq!(config.listeners[1].addr.to_string(), "0.0.0.0:8443");
    assert!(config.listeners[1].tls.is_none());
    for (line, directive) in [
        (5, "ssl_protocols"),
        (19, "listen"),
        (20, "ssl_certificate"),
        (21, "ssl_certificate_key"),
    ] {
        assert_listed(&imported, "nginx.conf", line, directive);
    }
    assert_converted(&imported, &[3, 4, 7, 12, 14, 15]);
    assert_note(&imported, &["8443", "TLS"]);
    // The api server is not the default one on :443, so its routes match its name.
    assert_eq!(
        route_for(&config, "/x", Some("api.example.com")).as_deref(),
        Some("api.example.com-default")
    );
}

#[test]
fn https_backends_keep_their_ca_and_server_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["internal.example.com".to_string()]).unwrap();
    std::fs::write(dir.path().join("internal-ca.pem"), ca.cert.pem()).unwrap();
    let conf = "
server {
    listen 8080;
    location /billing/ {
        proxy_pass https://billing.internal/;
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate internal-ca.pem;
        proxy_ssl_name billing.example.com;
    }
    location / {
        proxy_pass https://10.0.0.7:8443;
    }
}
";
    let path = dir.path().join("site.conf");
    std::fs::write(&path, conf).unwrap();
    let imported = import::import_file(&path).unwrap();
    let config = validate(&imported);
    let billing = backend(&config, &backends_of(&config, "billing")[0]);
    assert_eq!(billing.url.to_string(), "https://billing.internal:443");
    assert_eq!(billing.host_header.as_ref().unwrap(), "billing.internal", "$proxy_host");
    let tls = billing.tls.as_ref().expect("tls settings");
    assert_eq!(
        tls.ca_file.as_deref(),
        Some(std::path::absolute(dir.path().join("internal-ca.pem")).unwrap().as_path())
    );
    assert_eq!(tls.server_name.as_deref(), Some("billing.example.com"));
    let other = backend(&config, &backends_of(&config, "default")[0]);
    assert_eq!(other.url.to_string(), "https://10.0.0.7:8443");
    assert!(imported.not_converted.is_empty(), "{}", imported.report());
    assert_note(&imported, &["proxy_ssl_verify"]);
}

// ---------------------------------------------------------------- the command line

#[test]
fn cli_writes_both_files_refuses_to_overwrite_and_check_accepts_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = |extra: &[&str]| {
        Command::new(BIN)
            .arg("import-nginx")
            .arg(fixture("canary.conf"))
            .arg("-o")
            .arg(&out)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let first = run(&[]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    assert!(first.stdout.is_empty());
    assert!(stderr.contains("canary.conf:34  ip_hash"), "{stderr}");
    let (ok, stdout, err) = check(&out.join("cutover.yaml"));
    assert!(ok, "cutover check: {err}");
    assert!(stdout.contains("api"), "{stdout}");

    let again = run(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert!(run(&["--force"]).status.success());
}

#[test]
fn cli_prints_both_files_with_a_separator_and_fails_on_a_parse_error() {
    let out = Command::new(BIN)
        .arg("import-nginx")
        .arg(fixture("two_upstreams.conf"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (config, weights) = stdout.split_once("# ===== weights.yaml =====\n").expect("separator");
    assert!(config.starts_with("# ===== cutover.yaml =====\n"));
    assert!(config.contains("path_prefix: /api/v2/"));
    assert!(weights.contains("{}"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "http {\n  server {\n    listen 80;\n").unwrap();
    let out = Command::new(BIN)
        .arg("import-nginx")
        .arg(&bad)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.conf:4: unexpected end of file, expecting \"}\""), "{stderr}");
}

// ---------------------------------------------------------------- equivalence with nginx

const NGINX: &str = "/usr/sbin/nginx";

/// nginx in the foreground as a single process, killed on drop.
struct Nginx {
    child: Child,
    stderr: PathBuf,
}

impl Nginx {
    async fn start(prefix: &Path, conf: &Path, port: u16) -> Nginx {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: install Debian's nginx package (.ci/run does)"
        );
        let stderr = prefix.join("nginx.stderr");
        let directives = format!(
            "daemon off; master_process off; pid {}; error_log stderr;",
            prefix.join("nginx.pid").display()
        );
        let mut child = Command::new(NGINX)
            .arg("-e")
            .arg("stderr")
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(conf)
            .arg("-g")
            .arg(directives)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start nginx");
        eventually(Duration::from_secs(10), Duration::from_millis(20), async || {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "nginx exited with {status}: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            Err(format!("nginx did not listen on {port} within 10s"))
        })
        .await;
        Nginx { child, stderr }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Paths sent through both proxies: every location, its neighbours, and the precedence traps.
const PATHS: &[&str] = &[
    "/",
    "/index.html",
    "/about/team",
    "/api/",
    "/api/users",
    "/api/users?page=2",
    "/api/v2/",
    "/api/v2/users",
    "/api/v2/users/7?fields=id,name",
    "/api/v2/x.php",
    "/api/v2/pic.jpeg",
    "/api/x.php",
    "/x.php",
    "/index.php?q=1",
    "/healthz",
    "/healthz?probe=1",
    "/healthz/",
    "/healthzx",
    "/healthz.php",
    "/static/",
    "/static/app.css",
    "/static/x.php",
    "/static/logo.png",
    "/static/im",
    "/static/img/",
    "/static/img/a.png",
    "/static/img/a.txt",
    "/static/img/b.PHP",
    "/static/img/c.php",
    "/staticx/a.css",
    "/staticx/a.png",
    "/photo.JPG",
    "/API/v2/",
    "/apix",
];

/// nginx redirects a proxied prefix location's path without its trailing
/// slash (301 to the slashed path); cutover has no such rule and proxies it.
/// The migration guide documents this difference.
const AUTO_REDIRECTS: &[&str] = &["/api", "/api/v2", "/static", "/static/img"];

/// nginx and cutover running the same config: nginx from `conf`, cutover
/// from what `cutover import-nginx` made of it.
struct SideBySide {
    nginx: Nginx,
    proxy: Proxy,
    port: u16,
    client: HttpClient,
    config: String,
    _work: tempfile::TempDir,
}

impl SideBySide {
    /// `conf` listens on 127.0.0.1:`port`.
    async fn start(conf: &str, port: u16) -> SideBySide {
        let work = tempfile::tempdir().unwrap();
        let conf_path = work.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let nginx = Nginx::start(work.path(), &conf_path, port).await;

        // Import with the real command, then move both addresses to free ports.
        let out = tempfile::tempdir().unwrap();
        let imported = Command::new(BIN)
            .arg("import-nginx")
            .arg(&conf_path)
            .arg("-o")
            .arg(out.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(imported.status.success(), "{}", String::from_utf8_lossy(&imported.stderr));
        let config_path = out.path().join("cutover.yaml");
        let text = std::fs::read_to_string(&config_path).unwrap();
        let listen = format!("addr: 127.0.0.1:{port}\n");
        assert!(text.contains(&listen), "{text}");
        let config = text
            .replace(&listen, "addr: 127.0.0.1:0\n")
            .replace("addr: 127.0.0.1:9901\n", "addr: 127.0.0.1:0\n");
        std::fs::write(&config_path, &config).unwrap();
        let proxy = Proxy::run(out, config_path).await;
        SideBySide {
            nginx,
            proxy,
            port,
            client: client(),
            config,
            _work: work,
        }
    }

    /// GET `path` through both.
    async fn get(&self, path: &str) -> (Resp, Resp) {
        let via_nginx = send_on(
            &self.client,
            request(Method::GET, &format!("http://127.0.0.1:{}{path}", self.port), &[]),
        )
        .await;
        let via_cutover = send_on(&self.client, request(Method::GET, &self.proxy.url(path), &[])).await;
        (via_nginx, via_cutover)
    }

    /// Asserts that the same backend got the same path and Host for each of
    /// `paths`; returns (path, backend, path the backend saw) rows.
    async fn assert_same(&self, paths: &[&str]) -> Vec<(String, String, String)> {
        let mut rows = Vec::new();
        for path in paths {
            let (via_nginx, via_cutover) = self.get(path).await;
            assert_eq!(via_nginx.status, 200, "nginx {path}: {}\n{}", via_nginx.text(), self.nginx.log());
            assert_eq!(
                via_cutover.status,
                200,
                "cutover {path}: {}\n{}",
                via_cutover.text(),
                self.proxy.stderr_text()
            );
            let (a, b) = (via_nginx.seen(), via_cutover.seen());
            assert_eq!(
                (a.backend(), a.uri()),
                (b.backend(), b.uri()),
                "{path}: nginx sent it to {} as {}, cutover to {} as {}\nconfig:\n{}",
                a.backend(),
                a.uri(),
                b.backend(),
                b.uri(),
                self.config
            );
            assert_eq!(a.header("host"), b.header("host"), "{path}: Host sent to the backend");
            rows.push((path.to_string(), a.backend().to_string(), a.uri().to_string()));
        }
        rows
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn same_upstream_and_path_as_the_real_nginx() {
    within(90, async {
        let legacy = Upstream::echo("legacy").await;
        let new = Upstream::echo("new").await;
        let port = free_port();
        let conf = format!(
            r#"events {{ worker_connections 64; }}

http {{
    access_log off;

    upstream legacy {{ server {legacy}; }}
    upstream new {{ server {new}; }}

    server {{
        listen 127.0.0.1:{port};

        location /api/v2/ {{ proxy_pass http://new/v2/; }}
        location /api/ {{ proxy_pass http://legacy; }}
        location = /healthz {{ proxy_pass http://new/health; }}
        location ~ \.php$ {{ proxy_pass http://legacy; }}
        location ^~ /static/ {{ proxy_pass http://new/assets/; }}
        location /static/img/ {{ proxy_pass http://legacy; }}
        location ~* \.(png|jpe?g)$ {{ proxy_pass http://new; }}
        location / {{ proxy_pass http://legacy; }}
    }}
}}
"#,
            legacy = legacy.addr,
            new = new.addr,
        );
        let both = SideBySide::start(&conf, port).await;
        let rows = both.assert_same(PATHS).await;
        // Every location was exercised, with both kinds of rewrite.
        let row = |path: &str| {
            let r = rows.iter().find(|r| r.0 == path).unwrap();
            (r.1.as_str(), r.2.as_str())
        };
        assert_eq!(row("/api/v2/users"), ("new", "/v2/users"));
        assert_eq!(row("/healthz"), ("new", "/health"));
        assert_eq!(row("/static/app.css"), ("new", "/assets/app.css"));
        assert_eq!(row("/static/img/a.png"), ("new", "/static/img/a.png"));
        assert_eq!(row("/static/img/c.php"), ("legacy", "/static/img/c.php"));
        assert!(legacy.hits() > 0 && new.hits() > 0);

        for path in AUTO_REDIRECTS {
            let (via_nginx, via_cutover) = both.get(path).await;
            assert_eq!(via_nginx.status, 301, "nginx {path}");
            assert_eq!(
                via_nginx.header("location"),
                Some(format!("http://127.0.0.1:{port}{path}/").as_str())
            );
            assert_eq!(via_cutover.status, 200, "cutover proxies {path}");
        }
    })
    .await;
}

/// The precedence fixture (exact inside `^~`, a `^~` inside a plain prefix
/// inside a `^~`, regexes before plain prefixes) through both.
#[tokio::test(flavor = "multi_thread")]
async fn precedence_fixture_behaves_as_in_the_real_nginx() {
    within(90, async {
        let mut conf = std::fs::read_to_string(fixture("regex_precedence.conf")).unwrap();
        let mut upstreams = Vec::new();
        for (name, addr) in [
            ("app", "127.0.0.1:8000"),
            ("assets", "127.0.0.1:8100"),
            ("php", "127.0.0.1:9000"),
            ("images", "127.0.0.1:8200"),
        ] {
            let up = Upstream::echo(name).await;
            conf = conf.replace(&format!("server {addr};"), &format!("server {};", up.addr));
            upstreams.push(up);
        }
        let port = free_port();
        conf = conf.replace("listen 127.0.0.1:8080;", &format!("listen 127.0.0.1:{port};"));
        let conf = format!("events {{}}\nhttp {{\naccess_log off;\n{conf}\n}}\n");
        let both = SideBySide::start(&conf, port).await;
        let rows = both
            .assert_same(&[
                "/",
                "/index.html",
                "/static/robots.txt",
                "/static/robots.txt.php",
                "/static/app.css",
                "/static/x.php",
                "/static/logo.png",
                "/static/im",
                "/static/img/",
                "/static/img/a.png",
                "/static/img/a.txt",
                "/static/img/c.php",
                "/static/img/raw/",
                "/static/img/raw/a.png",
                "/static/img/rawx/a.png",
                "/uploads/a.php",
                "/uploads/A.JPG",
                "/uploads/a.txt",
                "/index.php",
                "/a.GIF",
                "/a.PHP",
            ])
            .await;
        let served: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(served.len(), 4, "every upstream was reached: {rows:?}");
    })
    .await;
}

#[test]
fn gzip_becomes_compression_for_every_route_with_the_exceptions_noted() {
    let text = "
http {
    gzip on;
    gzip_types text/css application/json application/javascript;
    gzip_min_length 256;
    gzip_comp_level 5;
    gzip_vary on;
    server {
        listen 80;
        location / { proxy_pass http://127.0.0.1:8000; }
        location /downloads/ { gzip off; proxy_pass http://127.0.0.1:8000; }
    }
}
";
    let imported = import::import_str(Path::new("gzip.conf"), text).unwrap();
    let config = validate(&imported);
    let compression = config.compression.as_ref().expect("gzip on becomes compression");
    assert_eq!((compression.min_bytes, compression.level), (256, flate2::Compression::new(5)));
    // nginx always compresses text/html besides gzip_types.
    for (ctype, gzipped) in [
        ("text/html; charset=utf-8", true),
        ("application/json", true),
        ("text/css", true),
        ("image/png", false),
    ] {
        assert_eq!(compression.compresses(ctype.as_bytes()), gzipped, "{ctype}");
    }
    assert!(imported.config.contains("# gzip.conf:3 gzip on"), "{}", imported.config);
    let notes = imported.notes.join("\n");
    assert!(notes.contains("location /downloads/: nginx does not gzip here"), "{notes}");
    let vary = imported
        .not_converted
        .iter()
        .find(|n| n.directive == "gzip_vary")
        .expect("gzip_vary is listed");
    assert!(vary.reason.contains("Vary: Accept-Encoding"), "{}", vary.reason);

    // Without gzip on, nothing is compressed.
    let plain = import::import_str(
        Path::new("plain.conf"),
        "server { listen 80; location / { proxy_pass http://127.0.0.1:8000; } }",
    )
    .unwrap();
    assert!(validate(&plain).compression.is_none());
}

/// Django's and Flask's static files, which nginx serves from disk beside
/// the app: `alias` and `root` become a file backend where the directory is.
#[test]
fn static_file_locations_become_a_file_backend_where_the_directory_is() {
    let files = tempfile::tempdir().unwrap();
    let static_dir = files.path().join("static");
    std::fs::create_dir_all(&static_dir).unwrap();
    std::fs::write(static_dir.join("icon.ico"), "icon").unwrap();
    let text = format!(
        "
server {{
    listen 80;
    location /static/ {{ alias {dir}/; expires 30d; }}
    location /media/ {{ alias /nonexistent-cutover-import/media/; }}
    location = /robots.txt {{ root {dir}; }}
    location = /favicon.ico {{ alias {dir}/icon.ico; }}
    location / {{ proxy_pass http://127.0.0.1:8000; }}
}}
",
        dir = static_dir.display()
    );
    let imported = import::import_str(Path::new("static.conf"), &text).unwrap();
    let config = validate(&imported);
    let files_backend = backend(&config, "static");
    assert_eq!(
        files_backend.url.directory.as_deref(),
        Some(static_dir.as_path()),
        "{}",
        imported.config
    );
    assert_eq!(files_backend.host_header, None);
    for (path, route, served_as) in [
        ("/static/css/site.css", "static", "/css/site.css"),
        ("/robots.txt", "robots-txt", "/robots.txt"),
        ("/favicon.ico", "favicon-ico", "/icon.ico"),
    ] {
        assert_eq!(
            route_for(&config, path, None).as_deref(),
            Some(route),
            "{path}: {}",
            imported.config
        );
        let r = &config.routes[config.route_index(route).unwrap()];
        assert_eq!(backends_of(&config, route), ["static"]);
        let rewritten = r.backends[0]
            .rewrite
            .as_ref()
            .map_or(path.to_string(), |rw| rw.apply(path).to_string());
        assert_eq!(rewritten, served_as, "{path}");
    }
    // A directory that is not on this machine stays nginx's to serve, and says so.
    assert_eq!(route_for(&config, "/media/a.png", None).as_deref(), Some("default"));
    let media = entry(&imported, "static.conf", 5, "location").expect("the /media/ location is listed");
    assert!(media.reason.contains("not a directory on this machine"), "{}", media.reason);
    assert_listed(&imported, "static.conf", 4, "expires");
    assert!(!listed(&imported, "static.conf", 4, "location"), "{}", imported.report());
}

/// An admin area open to the office only (`allow ...; deny all;`) stays
/// closed to everyone else, its bare prefix too; other mixes of `allow`
/// and `deny` are listed, loudly.
#[test]
fn an_allow_list_becomes_allow_from_and_covers_the_bare_prefix() {
    let text = "
server {
    listen 80;
    location /admin/ { allow 10.0.0.0/8; allow 192.0.2.7; deny all; proxy_pass http://127.0.0.1:8000; }
    location /internal/ { deny 203.0.113.0/24; allow all; proxy_pass http://127.0.0.1:8000; }
    location / { proxy_pass http://127.0.0.1:8000; }
}
";
    let imported = import::import_str(Path::new("acl.conf"), text).unwrap();
    let config = validate(&imported);
    let office: std::net::IpAddr = "10.1.2.3".parse().unwrap();
    let outsider: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    for path in ["/admin/users/", "/admin"] {
        let name = route_for(&config, path, None).unwrap();
        let route = &config.routes[config.route_index(&name).unwrap()];
        assert!(route.admits(|| Some(office)), "{path}: {}", imported.config);
        assert!(!route.admits(|| Some(outsider)), "{path} is open to all: {}", imported.config);
        assert!(route.admits(|| "192.0.2.7".parse().ok()));
    }
    let site = &config.routes[config.route_index("default").unwrap()];
    assert!(site.admits(|| Some(outsider)));
    for directive in ["deny", "allow"] {
        assert_listed(&imported, "acl.conf", 5, directive);
    }
    let deny = imported.not_converted.iter().find(|n| n.directive == "deny").unwrap();
    assert!(deny.reason.contains("ACCESS CONTROL NOT CONVERTED"), "{}", deny.reason);
    assert!(!listed(&imported, "acl.conf", 4, "allow"), "{}", imported.report());
}
