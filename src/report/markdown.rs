//! The sign-off document: a parity report as Markdown, to attach to a
//! go/no-go decision and read in a code review. Per route (and endpoint,
//! when the report has them): requests compared, clean share against the
//! bar, each real difference with its counts, the accepted ones with their
//! reasons and expiry, the noise, recent examples, and the time window.
//!
//! Everything a backend or a client controls (JSON paths, values, request
//! paths) is written inside code spans, and everything else is escaped, so
//! a hostile value can neither break a table nor inject a link or HTML.

use std::fmt::Write;

use super::{AcceptRow, ParityReport, PathRow, RouteReport};

/// Recent requests shown per route.
const EXAMPLES: usize = 5;

/// Renders `report` as a self-contained Markdown document.
pub fn render(report: &ParityReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Parity sign-off\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    if let Some(source) = &report.source {
        let _ = writeln!(out, "| Traffic | {} |", text(source));
    }
    let window = report.window.clone().unwrap_or_default();
    let _ = writeln!(
        out,
        "| Window | {} to {} |",
        window.from.as_deref().map_or("(unknown)".to_string(), code),
        window.to.as_deref().map_or("(unknown)".to_string(), code)
    );
    let _ = writeln!(
        out,
        "| Written | {} by cutover {} |",
        code(&crate::clock::now_rfc3339()),
        env!("CARGO_PKG_VERSION")
    );
    if let Some(replay) = &report.replay {
        let skipped = &replay.not_replayed;
        let _ = writeln!(
            out,
            "| Replayed | {} requests of {} log lines |\n\
             | Not replayed | {} mutating or unmirrored method, {} not an origin-form path, {} no route, {} route without mirror |\n\
             | Malformed lines | {}{} |",
            replay.replayed,
            replay.lines,
            skipped.method,
            skipped.target,
            skipped.no_route,
            skipped.not_mirrored,
            replay.malformed,
            if replay.malformed_lines.is_empty() {
                String::new()
            } else {
                let first: Vec<String> = replay
                    .malformed_lines
                    .iter()
                    .map(|m| format!("line {}: {}", m.line, text(&m.error)))
                    .collect();
                format!(" (first: {})", first.join("; "))
            }
        );
        if replay.limit_reached {
            let _ = writeln!(out, "| Stopped | at `--limit`, before the end of the log |");
        }
        if replay.interrupted {
            let _ = writeln!(out, "| Stopped | **interrupted**: the counts cover what was compared by then |");
        }
    }
    if report.routes.is_empty() {
        let _ = writeln!(out, "\nNo route mirrors traffic: nothing was compared.");
        return out;
    }
    let _ = writeln!(
        out,
        "\n## Summary\n\n| Route | Compared | Clean | Clean share | Bar | Verdict | Differences |\n|---|--:|--:|--:|--:|---|--:|"
    );
    for r in &report.routes {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            text(&r.route),
            r.compared,
            r.clean,
            r.clean_share.map_or("-".to_string(), pct),
            r.min_clean_share.map_or("-".to_string(), pct),
            verdict(r),
            differing(&r.paths).count()
        );
    }
    for r in &report.routes {
        route(&mut out, r);
    }
    out
}

fn verdict(r: &RouteReport) -> &'static str {
    match (r.clean_share, r.min_clean_share) {
        (None, _) => "nothing compared",
        (Some(share), Some(bar)) if share >= bar => "meets the bar",
        (Some(_), Some(_)) => "**below the bar**",
        (Some(_), None) if differing(&r.paths).next().is_none() => "no differences",
        (Some(_), None) => "differences",
    }
}

fn differing(paths: &[PathRow]) -> impl Iterator<Item = &PathRow> {
    paths.iter().filter(|p| p.verdict == "differs")
}

fn route(out: &mut String, r: &RouteReport) {
    let (left, right) = sides(r);
    let _ = writeln!(out, "\n## Route {}: {} vs {}\n", text(&r.route), text(left), text(right));
    match r.clean_share {
        Some(share) => {
            let _ = write!(
                out,
                "- **{}** requests compared, **{}** clean: clean share **{}**",
                r.compared,
                r.clean,
                pct(share)
            );
            if let Some(bar) = r.min_clean_share {
                let _ = write!(
                    out,
                    " ({} the bar of {})",
                    if share >= bar { "meets" } else { "**below**" },
                    pct(bar)
                );
            }
            out.push_str(".\n");
        }
        None => out.push_str("- Nothing compared yet.\n"),
    }
    let outcomes: Vec<String> = r.outcomes.iter().map(|(k, v)| format!("{} {v}", text(k))).collect();
    let _ = writeln!(
        out,
        "- Requests sent to both: {}.",
        if outcomes.is_empty() {
            "none".to_string()
        } else {
            outcomes.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "- Noise samples: {} (requests asked twice of {}, to learn what differs by itself).",
        r.noise_samples,
        text(left)
    );
    let rates: Vec<String> = r.mismatch_rate.iter().map(|(k, v)| format!("{} {}", text(k), pct(*v))).collect();
    if !rates.is_empty() {
        let _ = writeln!(out, "- Requests with a real difference, by kind: {}.", rates.join(", "));
    }

    let differs: Vec<&PathRow> = differing(&r.paths).collect();
    let _ = writeln!(out, "\n### Differences ({})\n", differs.len());
    if differs.is_empty() {
        out.push_str("None: every difference seen is noise or accepted.\n");
    } else {
        rows(out, &differs, left, right);
        examples(out, &differs);
    }

    accepted(out, r, left, right);

    let noise: Vec<&PathRow> = r.paths.iter().filter(|p| p.verdict == "noise").collect();
    if !noise.is_empty() {
        let _ = writeln!(
            out,
            "\n### Noise ({})\n\nDifferences {} also shows against itself (timestamps, generated ids): not held against parity.\n",
            noise.len(),
            text(left)
        );
        rows(out, &noise, left, right);
    }

    if !r.endpoints.is_empty() {
        let _ = writeln!(
            out,
            "\n### Endpoints ({})\n\n| Endpoint | Compared | Clean | Clean share | Differences |\n|---|--:|--:|--:|--:|",
            r.endpoints.len()
        );
        for e in &r.endpoints {
            let share = if e.compared == 0 {
                "-".to_string()
            } else {
                pct(e.clean as f64 / e.compared as f64)
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {share} | {} |",
                code(&e.endpoint),
                e.compared,
                e.clean,
                differing(&e.paths).count()
            );
        }
        for e in &r.endpoints {
            let differs: Vec<&PathRow> = differing(&e.paths).collect();
            if !differs.is_empty() {
                let _ = writeln!(out, "\n#### {}\n", code(&e.endpoint));
                rows(out, &differs, left, right);
            }
        }
    }

    if !r.samples.is_empty() {
        let _ = writeln!(out, "\n### Recent requests with differences\n");
        for s in r.samples.iter().take(EXAMPLES) {
            let status = |i: usize| s.statuses.get(i).map_or("?".to_string(), u16::to_string);
            let _ = writeln!(
                out,
                "- {} {} {}, request {}: {} {} / {} {}",
                code(&s.time),
                code(&s.method),
                code(&s.path),
                code(&s.request_id),
                text(left),
                status(0),
                text(right),
                status(1)
            );
            for d in &s.differences {
                let _ = writeln!(
                    out,
                    "  - {} {}: {} -> {} ({})",
                    text(&d.kind),
                    path(&d.path),
                    code(&d.left),
                    code(&d.right),
                    text(&d.verdict)
                );
            }
        }
    }
}

fn sides(r: &RouteReport) -> (&str, &str) {
    (
        r.backends.first().map_or("stable", String::as_str),
        r.backends.get(1).map_or("mirror", String::as_str),
    )
}

fn rows(out: &mut String, rows: &[&PathRow], left: &str, right: &str) {
    let _ = writeln!(
        out,
        "| Kind | JSON path | Requests | Rate | Noise rate | {} | {} |\n|---|---|--:|--:|--:|---|---|",
        text(left),
        text(right)
    );
    for p in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            text(&p.kind),
            path(&p.path),
            p.count,
            pct(p.rate),
            pct(p.noise_rate),
            code(&p.left),
            code(&p.right)
        );
    }
}

fn examples(out: &mut String, rows: &[&PathRow]) {
    for p in rows.iter().filter(|p| !p.examples.is_empty()) {
        let _ = writeln!(out, "\nRequests showing {} {}:\n", text(&p.kind), path(&p.path));
        for e in &p.examples {
            let field = |v: &Option<String>| v.as_deref().map_or("?".to_string(), code);
            let _ = writeln!(
                out,
                "- {} {} {}, request {}: {} -> {}",
                field(&e.time),
                field(&e.method),
                field(&e.path),
                field(&e.request_id),
                field(&e.left),
                field(&e.right)
            );
        }
    }
}

/// The route's accept rules with what each covered, or (from a report
/// without the rules) the rows judged accepted.
fn accepted(out: &mut String, r: &RouteReport, left: &str, right: &str) {
    let rows: Vec<&PathRow> = r.paths.iter().filter(|p| p.verdict == "accepted").collect();
    if r.accept.is_empty() {
        if !rows.is_empty() {
            let _ = writeln!(out, "\n### Accepted differences ({})\n", rows.len());
            rows_with_reason(out, &rows, left, right);
        }
        return;
    }
    let today = crate::clock::today_utc().to_string();
    let _ = writeln!(
        out,
        "\n### Accepted differences ({} {})\n\n| Kind | JSON path | Reason | Until | Requests seen |\n|---|---|---|---|--:|",
        r.accept.len(),
        if r.accept.len() == 1 { "rule" } else { "rules" }
    );
    for a in &r.accept {
        let seen: u64 = rows.iter().filter(|p| covered_by(p, a)).map(|p| p.count).sum();
        let until = match &a.until {
            None => "no end".to_string(),
            // `YYYY-MM-DD` compares as text.
            Some(day) if day.as_str() < today.as_str() => format!("{} (**expired**: counts again)", code(day)),
            Some(day) => code(day),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {until} | {seen} |",
            text(&a.kind),
            path(&a.path),
            text(&a.reason)
        );
    }
    if !rows.is_empty() {
        out.push_str("\nThe differences they covered:\n\n");
        rows_with_reason(out, &rows, left, right);
    }
}

fn covered_by(p: &PathRow, a: &AcceptRow) -> bool {
    p.kind == a.kind && p.accepted_reason.as_deref() == Some(a.reason.as_str())
}

fn rows_with_reason(out: &mut String, rows: &[&PathRow], left: &str, right: &str) {
    let _ = writeln!(
        out,
        "| Kind | JSON path | Requests | {} | {} | Reason |\n|---|---|--:|---|---|---|",
        text(left),
        text(right)
    );
    for p in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            text(&p.kind),
            path(&p.path),
            p.count,
            code(&p.left),
            code(&p.right),
            text(p.accepted_reason.as_deref().unwrap_or(""))
        );
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// A JSON path; the empty path is the whole body.
fn path(p: &str) -> String {
    if p.is_empty() { "(whole body)".to_string() } else { code(p) }
}

/// `s` as an inline code span that shows it literally, whatever it holds:
/// on one line, fenced by more backticks than it contains in a row, and
/// with `|` escaped (GitHub's tables split cells on it even in code).
fn code(s: &str) -> String {
    let s: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let s = s.replace('|', "\\|");
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') || s.is_empty() {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// `s` as plain text: on one line, with the characters that make Markdown
/// or HTML (emphasis, links, code, tables, tags) escaped.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '#' | '!' | '&' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn report() -> ParityReport {
        serde_json::from_value(json!({
            "source": "replay of the access log access.log",
            "window": {"from": "2026-11-22T01:00:00Z", "to": "2026-11-22T02:00:00Z"},
            "routes": [{
                "route": "api", "backends": ["legacy", "new"], "compared": 40, "clean": 10, "clean_share": 0.25,
                "min_clean_share": 0.99, "noise_samples": 12, "outcomes": {"compared": 40},
                "mismatch_rate": {"shape": 0.75},
                "paths": [
                    {"kind": "shape", "path": "/*/author", "verdict": "differs", "rate": 0.75, "noise_rate": 0.0, "count": 30, "left": "string", "right": "absent"},
                    {"kind": "shape", "path": "/*/id", "verdict": "accepted", "rate": 0.75, "noise_rate": 0.0, "count": 30, "left": "number", "right": "string", "accepted_reason": "ids are strings in v2"},
                    {"kind": "value", "path": "/*/generated_at", "verdict": "noise", "rate": 1.0, "noise_rate": 1.0, "count": 40, "left": "\"a\"", "right": "\"b\""}
                ],
                "accept": [{"kind": "shape", "path": "/*/id", "reason": "ids are strings in v2", "until": "2020-01-01"}],
                "endpoints": [
                    {"endpoint": "GET /api/books/{id}/", "compared": 30, "clean": 0, "paths": [
                        {"kind": "shape", "path": "/*/author", "verdict": "differs", "rate": 1.0, "noise_rate": 0.0, "count": 30, "left": "string", "right": "absent"}
                    ]},
                    {"endpoint": "GET /api/status/", "compared": 10, "clean": 10, "paths": []}
                ],
                "samples": [{"time": "2026-11-22T01:00:01Z", "method": "GET", "path": "/api/books/1/", "request_id": "replay-7",
                             "statuses": [200, 200], "served_by": "legacy",
                             "differences": [{"kind": "shape", "path": "/*/author", "left": "string", "right": "absent", "verdict": "differs"}]}]
            }]
        }))
        .unwrap()
    }

    #[test]
    fn the_document_has_the_summary_the_differences_and_the_endpoints() {
        let doc = render(&report());
        for expected in [
            "| api | 40 | 10 | 25.0% | 99.0% | **below the bar** | 1 |",
            "| Window | `2026-11-22T01:00:00Z` to `2026-11-22T02:00:00Z` |",
            "## Route api: legacy vs new",
            "| shape | `/*/author` | 30 | 75.0% | 0.0% | `string` | `absent` |",
            "| shape | `/*/id` | ids are strings in v2 | `2020-01-01` (**expired**: counts again) | 30 |",
            "### Noise (1)",
            "| `GET /api/books/{id}/` | 30 | 0 | 0.0% | 1 |",
            "| `GET /api/status/` | 10 | 10 | 100.0% | 0 |",
            "#### `GET /api/books/{id}/`",
            "request `replay-7`: legacy 200 / new 200",
        ] {
            assert!(doc.contains(expected), "{expected:?} missing from:\n{doc}");
        }
    }

    #[test]
    fn hostile_values_stay_inside_their_cell() {
        assert_eq!(code("a|b"), "`a\\|b`");
        assert_eq!(code("x ` y"), "``x ` y``");
        assert_eq!(code("`"), "`` ` ``");
        assert_eq!(code("line\nbreak"), "`line break`");
        assert_eq!(
            text("<img src=x onerror=alert(1)> [a](b) *c* | d"),
            "\\<img src=x onerror=alert(1)\\> \\[a\\](b) \\*c\\* \\| d"
        );
        let mut hostile = report();
        hostile.routes[0].paths[0].left = "</td><script>x</script>|\n| injected | row |".to_string();
        let doc = render(&hostile);
        let row = doc.lines().find(|l| l.contains("/*/author") && l.contains("script")).unwrap();
        assert!(row.contains("`</td><script>x</script>\\| \\| injected \\| row \\|`"), "{row}");
        assert!(!doc.lines().any(|l| l.starts_with("| injected")));
    }

    #[test]
    fn an_empty_report_says_nothing_was_compared() {
        let doc = render(&ParityReport::default());
        assert!(doc.contains("No route mirrors traffic"));
        assert!(doc.contains("| Window | (unknown) to (unknown) |"));
    }
}
