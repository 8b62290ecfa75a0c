//! The one writer of weight files: the text (comments kept), the atomic
//! write, and the history of changes kept beside the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::weights::{NamedWeights, route_line};
use super::{Config, Weights};

/// How many past tables the history keeps.
pub const HISTORY_LEN: usize = 50;

/// A weight file on disk.
pub struct WeightFile {
    path: PathBuf,
}

impl WeightFile {
    pub fn new(path: impl Into<PathBuf>) -> WeightFile {
        WeightFile { path: path.into() }
    }

    /// The weight file `config` names.
    pub fn of(config: &Config) -> WeightFile {
        WeightFile::new(&config.weights_path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `weights`, keeping the comments of the text the file holds now.
    pub fn write(&self, config: &Config, weights: &Weights) -> std::io::Result<()> {
        let previous = super::read_text(&self.path).ok();
        let comments = previous.as_deref().map(Comments::read).unwrap_or_default();
        super::file::write_atomic(&self.path, render(config, weights, &comments).as_bytes())
    }

    /// The history of the changes made to this file.
    pub fn history(&self) -> History {
        History::beside(&self.path)
    }
}

/// The text of a weight file for `weights`, one line per route with more
/// than one backend, with `comments` where they belong.
pub fn render(config: &Config, weights: &Weights, comments: &Comments) -> String {
    render_routes(config, weights, comments, |_, _| true)
}

/// Like [`render`], with only the routes for which `keep(route index,
/// route name)` holds.
pub fn render_routes(config: &Config, weights: &Weights, comments: &Comments, keep: impl Fn(usize, &str) -> bool) -> String {
    // Comments stay comments, whatever text a caller hands in.
    fn push_lines(out: &mut String, lines: &[String]) {
        for line in lines.iter().flat_map(|l| l.split(['\n', '\r'])) {
            if !line.trim().is_empty() && !line.trim_start().starts_with('#') {
                out.push_str("# ");
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    let mut out = String::new();
    push_lines(&mut out, &comments.header);
    let mut named = weights.named(config);
    named.retain(|name, _| config.route_index(name).is_some_and(|ri| keep(ri, name)));
    for (name, per_backend) in &named {
        if let Some(above) = comments.above.get(name) {
            push_lines(&mut out, above);
        }
        out.push_str(&route_line(name, per_backend));
        if let Some(c) = comments.trailing.get(name) {
            let c = c.split(['\n', '\r']).next().unwrap_or_default().trim_start();
            out.push_str(if c.starts_with('#') { "  " } else { "  # " });
            out.push_str(c);
        }
        out.push('\n');
    }
    if named.is_empty() {
        // A file of comments alone reads as empty; `{}` says so on purpose.
        out.push_str("{}\n");
    }
    push_lines(&mut out, &comments.footer);
    out
}

/// Where the comments of a weight file sit, by route name. Each comment is
/// a whole line (`# ...`, or blank) except `trailing`, the comment at the
/// end of a route's line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comments {
    /// Before the first route, up to the last blank line above it.
    pub header: Vec<String>,
    /// The lines just above each route.
    pub above: BTreeMap<String, Vec<String>>,
    pub trailing: BTreeMap<String, String>,
    /// After the last route.
    pub footer: Vec<String>,
}

impl Comments {
    /// The comments of weight-file text.
    pub fn read(text: &str) -> Comments {
        let mut comments = Comments::default();
        let mut pending: Vec<String> = Vec::new();
        let mut seen_route = false;
        for line in text.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with('#') || trimmed.is_empty() {
                pending.push(line.to_string());
                continue;
            }
            let top_level = !line.starts_with([' ', '\t']);
            if let (true, Some((key, rest))) = (top_level, line.split_once(':')) {
                let key = key.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
                if !seen_route {
                    // Comments before the first route belong to the file, up to a blank line.
                    let split = pending.iter().rposition(|l| l.trim().is_empty()).map_or(0, |i| i + 1);
                    comments.header.extend(pending.drain(..split));
                }
                seen_route = true;
                comments.above.insert(key.clone(), std::mem::take(&mut pending));
                if let Some(pos) = rest.find(" #") {
                    comments.trailing.insert(key, rest[pos + 1..].to_string());
                }
            } else {
                pending.clear();
            }
        }
        if !seen_route {
            comments.header = pending;
        } else {
            comments.footer = pending;
        }
        comments
    }
}

/// One change of the weight table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// RFC 3339 time of the change.
    pub time: String,
    pub who: String,
    pub why: String,
    /// The table the change replaced; `undo` restores it.
    pub before: NamedWeights,
    pub after: NamedWeights,
}

/// The last [`HISTORY_LEN`] changes, stored as JSON lines beside the weight
/// file (`weights.yaml` → `weights.history.jsonl`).
pub struct History {
    path: PathBuf,
}

impl History {
    pub fn beside(weights_path: &Path) -> History {
        let stem = weights_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "weights".into());
        History {
            path: weights_path.with_file_name(format!("{stem}.history.jsonl")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries, oldest first. Unreadable lines are skipped.
    pub fn entries(&self) -> Vec<HistoryEntry> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The newest entry.
    pub fn last(&self) -> Option<HistoryEntry> {
        self.entries().pop()
    }

    /// Appends an entry, dropping the oldest beyond [`HISTORY_LEN`].
    pub fn push(&self, entry: HistoryEntry) -> std::io::Result<()> {
        let mut entries = self.entries();
        entries.push(entry);
        let skip = entries.len().saturating_sub(HISTORY_LEN);
        self.store(&entries[skip..])
    }

    /// Removes and returns the newest entry.
    pub fn pop(&self) -> std::io::Result<Option<HistoryEntry>> {
        let mut entries = self.entries();
        let last = entries.pop();
        if last.is_some() {
            self.store(&entries)?;
        }
        Ok(last)
    }

    fn store(&self, entries: &[HistoryEntry]) -> std::io::Result<()> {
        let mut text = String::new();
        for e in entries {
            text.push_str(&serde_json::to_string(e).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        super::file::write_atomic(&self.path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        crate::config::test_config()
    }

    #[test]
    fn rendering_keeps_comments_and_round_trips() {
        let c = config();
        let previous = "# Weights for the api migration.\n\n# moved by the on-call\napi: { legacy: 90, new: 10 }  # ticket OPS-1\n# end\n";
        let w = Weights::all_stable(&c).with_route(0, vec![8750, 1250]);
        let text = render(&c, &w, &Comments::read(previous));
        assert_eq!(
            text,
            "# Weights for the api migration.\n\n# moved by the on-call\napi: { legacy: 87.5, new: 12.5 }  # ticket OPS-1\nthree: { legacy: 100, new: 0, third: 0 }\n# end\n"
        );
        assert_eq!(Weights::parse(Path::new("w.yaml"), &text, &c).unwrap(), w);
    }

    #[test]
    fn comments_handed_in_stay_comments() {
        let c = config();
        let w = Weights::all_stable(&c);
        let comments = Comments {
            header: vec!["imported from nginx.conf".into(), "# line one\napi: { legacy: 0, new: 100 }".into()],
            above: [("api".to_string(), vec!["".to_string(), "split_clients".to_string()])].into(),
            trailing: [("api".to_string(), "ticket\nthree: { legacy: 0, new: 0, third: 100 }".to_string())].into(),
            footer: Vec::new(),
        };
        let text = render(&c, &w, &comments);
        assert_eq!(
            text,
            "# imported from nginx.conf\n# line one\n# api: { legacy: 0, new: 100 }\n\n# split_clients\n\
             api: { legacy: 100, new: 0 }  # ticket\nthree: { legacy: 100, new: 0, third: 0 }\n"
        );
        assert_eq!(Weights::parse(Path::new("w.yaml"), &text, &c).unwrap(), w);
    }

    #[test]
    fn a_table_without_splits_is_an_empty_mapping() {
        let text = "listeners: [{name: p, addr: '127.0.0.1:0'}]\n\
                    backends: {legacy: {url: 'http://127.0.0.1:1'}}\n\
                    routes: [{name: default, backends: {legacy: {}}}]\n";
        let c = Config::parse(Path::new("/tmp/cutover.yaml"), text.to_string()).unwrap();
        let comments = Comments::read("# nothing split yet\n");
        let rendered = render(&c, &Weights::all_stable(&c), &comments);
        assert_eq!(rendered, "# nothing split yet\n{}\n");
        assert_eq!(Weights::parse(Path::new("w.yaml"), &rendered, &c).unwrap(), Weights::all_stable(&c));
    }

    #[test]
    fn history_keeps_the_last_entries_and_pops_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let history = WeightFile::new(dir.path().join("weights.yaml")).history();
        for i in 0..(HISTORY_LEN + 5) {
            let entry = HistoryEntry {
                time: crate::clock::now_rfc3339(),
                who: format!("t{i}"),
                why: String::new(),
                before: NamedWeights::new(),
                after: NamedWeights::new(),
            };
            history.push(entry).unwrap();
        }
        assert_eq!(history.entries().len(), HISTORY_LEN);
        assert_eq!(history.last().unwrap().who, format!("t{}", HISTORY_LEN + 4));
        assert_eq!(history.pop().unwrap().unwrap().who, format!("t{}", HISTORY_LEN + 4));
        assert_eq!(history.entries().len(), HISTORY_LEN - 1);
    }
}
