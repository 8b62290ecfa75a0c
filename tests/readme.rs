//! The README works as written on a fresh clone: its quick start is run,
//! command by command, against the real demo, with real `curl`; the demo's
//! banner keeps its promises; and the config the README lists is the one
//! shipped.
//!
//! The demo runs on free ports rather than its documented defaults (checked
//! to be the README's), so that `cargo test` passes while a reader's demo
//! still holds them; the README's addresses are swapped for the real ones.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{BIN, Proxy, eventually, get, within};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// How the README runs the binary before `cargo install`.
const CARGO_RUN: &str = "cargo run --release --";
/// The demo's default addresses, which the README uses.
const README_PROXY: &str = "127.0.0.1:8080";
const README_ADMIN: &str = "127.0.0.1:9901";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_quick_start_runs_as_written_against_the_demo() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let quick_start = section(&readme, "## Quick start");
    let blocks = code_blocks(quick_start, "sh");
    assert_eq!(
        blocks.len(),
        2,
        "the quick start has its two commands, then the ones to try: {blocks:#?}"
    );
    let setup: Vec<String> = commands(&blocks[0]).into_iter().map(|c| c.command).collect();
    assert_eq!(setup, [format!("{CARGO_RUN} demo"), "cargo test".to_string()]);
    let tries = commands(&blocks[1]);

    // The README's addresses are the demo's defaults.
    let help = std::process::Command::new(BIN).args(["demo", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for default in [README_PROXY, README_ADMIN] {
        assert!(
            help.contains(&format!("[default: {default}]")),
            "{default} is not a demo default:\n{help}"
        );
    }

    within(180, async {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(setup[0].strip_prefix(CARGO_RUN).unwrap().split_whitespace());
        for flag in ["--listen", "--admin", "--legacy", "--new"] {
            cmd.args([flag, "127.0.0.1:0"]);
        }
        cmd.env("TMPDIR", dir.path());
        // Dropping it (also when an assertion fails) kills the demo.
        let demo = Proxy::spawn(cmd, dir, PathBuf::new()).await;
        demo.wait_stdout(|l| l.contains("Press Ctrl-C to stop.")).await;
        let addrs = Addrs {
            proxy: demo.addr(),
            admin: demo.admin,
        };

        let mut api_requests = 0;
        for step in &tries {
            let words: Vec<&str> = step.command.split_whitespace().collect();
            if words.contains(&"parity") && api_requests > 0 {
                // A person types slower than this loop: let the mirror
                // compare what was sent before asking for the report.
                demo.wait_metric_until(
                    "cutover_mirror_requests_total",
                    &[("route", "api"), ("outcome", "compared")],
                    &format!(">= {api_requests}"),
                    |v| v >= f64::from(api_requests),
                )
                .await;
            }
            let before = weights(&demo).await;
            let out = run_shell(&addrs.localize(&step.command)).await;
            match words.as_slice() {
                ["curl", ..] => {
                    let head = curl_ok(&step.command, &out);
                    if step.command.contains("/api/") {
                        api_requests += 1;
                    }
                    if step.command.contains("X-Cutover-Backend: new") {
                        assert!(head.contains("x-demo-backend: new"), "{}: not pinned to new:\n{head}", step.command);
                    }
                }
                ["cargo", "run", "--release", "--", sub, ..] => {
                    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                    let refused = step.comment.starts_with("refused");
                    assert_eq!(
                        out.status.success(),
                        !refused,
                        "{} ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
                        step.command,
                        if refused {
                            "the README says it is refused"
                        } else {
                            "the README says it works"
                        }
                    );
                    let after = weights(&demo).await;
                    let route = positionals(&words[5..]).first().copied().unwrap_or("api");
                    match *sub {
                        "parity" => {
                            for shown in ["route api", "date_joined", "/*/joined", "BELOW the bar"] {
                                assert!(stdout.contains(shown), "{}: no {shown:?} in\n{stdout}", step.command);
                            }
                        }
                        "shift" if refused => {
                            assert!(
                                stderr.contains("min_clean_share"),
                                "{}: refused for another reason:\n{stderr}",
                                step.command
                            );
                            assert_eq!(after, before, "a refused shift changed the weights");
                        }
                        "shift" => {
                            for (backend, percent) in assignments(&words) {
                                assert_eq!(after[route][&backend], percent, "{}: {after:?}", step.command);
                                assert!(stdout.contains(&format!("{backend} {percent}%")), "{}:\n{stdout}", step.command);
                            }
                        }
                        "status" => {
                            assert_eq!(
                                status_weights(&stdout),
                                after,
                                "{}: status shows other weights:\n{stdout}",
                                step.command
                            );
                        }
                        "rollback" => {
                            assert_eq!(after[route], BTreeMap::from([("legacy".into(), 100.0), ("new".into(), 0.0)]));
                            assert!(stdout.contains("rolled back in"), "{stdout}");
                        }
                        other => panic!("no expectation for `{other}` in the README; add one to tests/readme.rs"),
                    }
                    assert_comment_weights(&step.comment, &after[route]);
                }
                _ => panic!(
                    "the README's quick start runs {:?}, which tests/readme.rs does not know",
                    step.command
                ),
            }
        }

        check_banner(&demo, &addrs, &tries).await;
        check_weight_file_edit(&demo).await;
    })
    .await;
}

/// The banner's curl commands show what their comments claim, and its
/// `cutover` commands are the README's.
async fn check_banner(demo: &Proxy, addrs: &Addrs, readme: &[Step]) {
    let banner = demo.stdout_lines();
    let start = banner.iter().position(|l| l.starts_with("Try")).expect("a Try section");
    let readme_commands: Vec<&str> = readme.iter().map(|s| s.command.as_str()).collect();
    let mut curls = 0;
    for line in &banner[start..] {
        let step = split_comment(line.trim());
        if step.command.starts_with("cutover ") {
            let spelled = addrs.to_readme(&step.command.replacen("cutover", CARGO_RUN, 1));
            assert!(
                readme_commands.contains(&spelled.as_str()),
                "the banner's `{}` is not in the README",
                step.command
            );
            continue;
        }
        if !step.command.starts_with("curl ") {
            continue;
        }
        curls += 1;
        let out = run_shell(&step.command).await;
        if step.command.contains("/metrics") {
            assert!(out.status.success(), "{}", step.command);
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("cutover_requests_total{"),
                "{}",
                step.command
            );
            continue;
        }
        let head = curl_ok(&step.command, &out);
        if step.command.contains("/api/auth/login/") {
            // The new app issues tokens only at /auth/login/.
            assert!(head.contains("x-demo-backend: new"), "{head}");
            assert!(head.contains("x-demo-path: /auth/login/"), "not rewritten: {head}");
            assert!(
                String::from_utf8_lossy(&out.stdout).contains(r#""token":"new-"#),
                "{}",
                step.command
            );
        } else if step.command.contains("X-Cutover-Backend: new") {
            assert!(head.contains("x-demo-backend: new"), "{head}");
        } else if step.comment.contains("sticky") {
            let first = backend_of(&head);
            for _ in 0..3 {
                let again = run_shell(&step.command).await;
                assert_eq!(backend_of(&curl_ok(&step.command, &again)), first, "{} moved", step.command);
            }
        }
    }
    assert!(curls >= 4, "the banner lost its curl commands: {banner:#?}");
}

/// The banner says the weight file is watched. An edit that moves users
/// to `new` while parity is below the bar applies, and says so loudly.
async fn check_weight_file_edit(demo: &Proxy) {
    let banner = demo.stdout_lines();
    let line = banner
        .iter()
        .find(|l| l.starts_with("The weight file "))
        .expect("the weight file line");
    let path = line["The weight file ".len()..].split(" is watched").next().unwrap();
    let path = Path::new(path);
    let text = "api: { legacy: 70, new: 30 }\nauth: { legacy: 100, new: 0 }\n";
    let tmp = path.with_extension("edit");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
    eventually(Duration::from_secs(10), Duration::from_millis(20), async || {
        if weights(demo).await["api"]["new"] == 30.0 {
            Ok(())
        } else {
            Err(format!("the edit of {} was not applied", path.display()))
        }
    })
    .await;
    let out = run_shell(&format!("{CARGO_RUN} status --admin {}", demo.admin)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("last change:"));
    let change = lines.next().expect("a last change line");
    assert!(
        change.starts_with("last change: weight file changed at "),
        "the source named twice? {change}"
    );
    let warning = lines.next().unwrap_or_default();
    assert!(
        warning.starts_with("  WARNING: api raised while parity is 0.00% clean over "),
        "{stdout}"
    );
    assert!(warning.ends_with("below the bar of 99.00%"), "{warning}");
    let logged = demo.stderr_text();
    let warning = logged
        .lines()
        .find(|l| l.contains("WARN") && l.contains("min_clean_share"))
        .unwrap_or_else(|| panic!("no warning logged:\n{logged}"));
    for shown in ["route=api", "0.00% clean", "bar=99.00% clean"] {
        assert!(warning.contains(shown), "{shown:?} missing from {warning}");
    }
}

/// The listings of shipped files are lines of those files, in order (`# …`
/// marks what an excerpt leaves out), and the `cutover check` the README
/// runs on them passes.
#[test]
fn readme_listings_are_the_shipped_files_and_pass_check() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let mut listed = Vec::new();
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```yaml\n") {
        let before = &rest[..start];
        let file = before
            .rfind("](config/")
            .map(|i| &before[i + 2..])
            .and_then(|s| s.split(')').next())
            .unwrap_or_else(|| panic!("a yaml block that names no shipped file: {}", &rest[start..]));
        let body = &rest[start + "```yaml\n".len()..];
        let end = body.find("```").unwrap();
        let shipped = std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap();
        let mut lines = shipped.lines();
        for line in body[..end].lines().filter(|l| !l.trim().is_empty() && l.trim() != "# …") {
            assert!(
                lines.any(|l| l == line),
                "README's listing of {file}: {line:?} is not in it (or out of order)"
            );
        }
        listed.push(file.to_string());
        rest = &body[end..];
    }
    assert!(listed.iter().any(|f| f == "config/cutover.yaml"), "{listed:?}");
    assert!(listed.iter().any(|f| f == "config/weights.yaml"), "{listed:?}");

    let mut checked = 0;
    for block in code_blocks(&readme, "sh") {
        for step in commands(&block).into_iter().filter(|s| s.command.starts_with("cutover check")) {
            let args = step.command["cutover ".len()..].split_whitespace();
            let out = std::process::Command::new(BIN).args(args).current_dir(ROOT).output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{}: {}", step.command, String::from_utf8_lossy(&out.stderr));
            assert!(stdout.contains("config ok"), "{stdout}");
            assert!(stdout.contains("api"), "no route table: {stdout}");
            checked += 1;
        }
    }
    assert!(checked > 0, "the README runs `cutover check`");
}

/// One README command and the comment after it.
#[derive(Debug)]
struct Step {
    command: String,
    comment: String,
}

fn split_comment(line: &str) -> Step {
    let (command, comment) = line.split_once("  # ").unwrap_or((line, ""));
    Step {
        command: command.trim().to_string(),
        comment: comment.trim().to_string(),
    }
}

fn commands(block: &str) -> Vec<Step> {
    block.lines().filter(|l| !l.trim().is_empty()).map(split_comment).collect()
}

/// The text under `heading`, up to the next heading of that level.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text.find(heading).unwrap_or_else(|| panic!("no {heading:?}")) + heading.len();
    let rest = &text[start..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

fn code_blocks(text: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```").expect("a closed code block");
        blocks.push(body[..end].to_string());
        rest = &body[end + 3..];
    }
    blocks
}

/// Where the demo under test listens.
struct Addrs {
    proxy: SocketAddr,
    admin: SocketAddr,
}

impl Addrs {
    /// A README line, pointed at this demo.
    fn localize(&self, line: &str) -> String {
        line.replace(README_PROXY, &self.proxy.to_string())
            .replace("localhost:8080", &format!("localhost:{}", self.proxy.port()))
            .replace(README_ADMIN, &self.admin.to_string())
    }

    /// A banner line, with the README's addresses.
    fn to_readme(&self, line: &str) -> String {
        line.replace(&self.proxy.to_string(), README_PROXY)
            .replace(&self.admin.to_string(), README_ADMIN)
    }
}

/// Runs a README line with `sh` from the repository root, as a reader
/// would after `cargo build --release`: `cargo run --release --` is the
/// binary under test.
async fn run_shell(line: &str) -> Output {
    let line = line.replace(CARGO_RUN, &format!("'{BIN}'"));
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&line)
        .current_dir(ROOT)
        .env_remove("CUTOVER_ADMIN_TOKEN")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(20), child)
        .await
        .unwrap_or_else(|_| panic!("`{line}` did not finish within 20 s"))
        .unwrap()
}

/// Checks a `curl -si` answered 200 from a demo app; returns the head, lower-cased.
fn curl_ok(command: &str, out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
    let head = text.split("\n\n").next().unwrap_or("").to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{command}:\n{text}");
    assert!(head.contains("x-demo-backend: "), "{command}: no demo app answered:\n{text}");
    head
}

fn backend_of(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("x-demo-backend: "))
        .unwrap_or_default()
        .to_string()
}

type Table = BTreeMap<String, BTreeMap<String, f64>>;

/// The live weight table, from the admin API.
async fn weights(demo: &Proxy) -> Table {
    let resp = get(&format!("http://{}/admin/weights", demo.admin)).await;
    serde_json::from_value(resp.json()).unwrap()
}

/// The arguments of a subcommand that are neither options nor their values.
fn positionals<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut args = args.iter();
    while let Some(&arg) = args.next() {
        match arg {
            "--admin" | "--config" | "-c" | "--token-file" | "--reason" => {
                args.next();
            }
            a if a.starts_with('-') => {}
            a => out.push(a),
        }
    }
    out
}

/// `new=50` arguments of a shift.
fn assignments(words: &[&str]) -> Vec<(String, f64)> {
    words
        .iter()
        .filter_map(|w| w.split_once('='))
        .map(|(b, p)| (b.to_string(), p.parse().unwrap()))
        .collect()
}

/// The weights in `status`'s table, for the routes that split.
fn status_weights(stdout: &str) -> Table {
    let mut table = Table::new();
    let mut route = String::new();
    for line in stdout.lines().skip_while(|l| !l.starts_with("ROUTE")).skip(1) {
        if line.trim().is_empty() {
            break;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let (backend, weight) = if line.starts_with(' ') {
            (words[0], words[1])
        } else {
            route = words[0].to_string();
            (words[1], words[2])
        };
        let weight: f64 = weight.trim_end_matches('%').parse().unwrap();
        table
            .entry(route.clone())
            .or_default()
            .insert(backend.trim_end_matches('*').to_string(), weight);
    }
    table.retain(|_, backends| backends.len() > 1);
    table
}

/// A comment such as "api now legacy 50%, new 50%" states the route's live weights.
fn assert_comment_weights(comment: &str, live: &BTreeMap<String, f64>) {
    let words: Vec<&str> = comment.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    for pair in words.windows(2) {
        if let Some(Ok(percent)) = pair[1].strip_suffix('%').map(str::parse::<f64>)
            && let Some(now) = live.get(pair[0])
        {
            assert_eq!(*now, percent, "the README says {comment:?}; live: {live:?}");
        }
    }
}
