//! A parser for the Prometheus text exposition, for assertions on `/metrics`.

use std::collections::BTreeMap;

/// One sample of the Prometheus text format.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the samples of a Prometheus text exposition.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i..]),
            None => {
                let (n, r) = line.split_once(' ').unwrap();
                (n, r)
            }
        };
        let mut labels = BTreeMap::new();
        let value_text = if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            let mut end = 0;
            loop {
                // name="value" pairs separated by commas, ending with '}'.
                let mut key = String::new();
                let mut done = false;
                for (i, c) in chars.by_ref() {
                    match c {
                        '=' => break,
                        '}' => {
                            end = i;
                            done = true;
                            break;
                        }
                        ',' | ' ' => {}
                        c => key.push(c),
                    }
                }
                if done {
                    break;
                }
                let mut value = String::new();
                chars.next(); // opening quote
                let mut escaped = false;
                for (_, c) in chars.by_ref() {
                    match (escaped, c) {
                        (true, 'n') => {
                            value.push('\n');
                            escaped = false
                        }
                        (true, c) => {
                            value.push(c);
                            escaped = false
                        }
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        (false, c) => value.push(c),
                    }
                }
                labels.insert(key, value);
            }
            body[end + 1..].trim()
        } else {
            rest.trim()
        };
        let value = value_text
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad sample value in {line:?}"));
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

/// The value of the sample `name` whose labels include all of `labels`
/// (summed when several match).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = parse_metrics(text)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// Fails the test unless `promtool check metrics` accepts `text`. promtool
/// must be present: the check fails rather than skips.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`) must be installed");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
