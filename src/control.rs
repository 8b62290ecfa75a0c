//! Weight changes: computing them (shift, rollback), persisting the weight
//! file atomically, and the history that `undo` walks back through.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::weights::percent_to_basis_points;
use crate::config::{Config, ConfigError, Weights, format_percent};
use crate::split::BUCKETS;

/// How many past tables the history keeps.
pub const HISTORY_LEN: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("unknown route {0:?}")]
    UnknownRoute(String),
    #[error("route {route:?} has no backend {backend:?} (it has: {known})")]
    UnknownBackend { route: String, backend: String, known: String },
    #[error("{0}")]
    BadWeight(String),
    #[error("weights of route {route:?} sum to {sum}, not 100")]
    Sum { route: String, sum: String },
    #[error("name the routes to roll back, or all of them")]
    NoRoutes,
    #[error("nothing to undo: the history is empty")]
    NothingToUndo,
    #[error("the history entry no longer fits the config: {0}")]
    Stale(ConfigError),
    #[error("{0}")]
    Io(String),
    #[error(
        "route {route:?}: parity is {measured}, below the bar of {bar:.2}% clean set by min_clean_share; \
         fix the differences (see `cutover parity {route}`) or force the shift"
    )]
    ParityBelowBar { route: String, measured: String, bar: f64 },
}

/// A route's weights by backend name, in percent: the form users read and write.
pub type NamedWeights = BTreeMap<String, BTreeMap<String, f64>>;

/// The weight table by names, for routes with more than one backend.
pub fn named(config: &Config, weights: &Weights) -> NamedWeights {
    config
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.backends.len() > 1)
        .map(|(ri, r)| {
            let per_backend = r
                .backends
                .iter()
                .zip(weights.route(ri))
                .map(|(b, &w)| (b.spec.name.to_string(), f64::from(w) / 100.0))
                .collect();
            (r.name.to_string(), per_backend)
        })
        .collect()
}

/// Sets one route's weights. Backends not named get 0, except that naming
/// one backend of a two-backend route gives the rest to the other.
pub fn shift(config: &Config, current: &Weights, route: &str, set: &[(String, f64)]) -> Result<Weights, ControlError> {
    let ri = config.route_index(route).ok_or_else(|| ControlError::UnknownRoute(route.into()))?;
    let spec = &config.routes[ri];
    let mut bp = vec![0u16; spec.backends.len()];
    let mut named = vec![false; spec.backends.len()];
    for (backend, percent) in set {
        let bi = spec.backend_index(backend).ok_or_else(|| ControlError::UnknownBackend {
            route: route.into(),
            backend: backend.clone(),
            known: spec.backends.iter().map(|b| b.spec.name.to_string()).collect::<Vec<_>>().join(", "),
        })?;
        bp[bi] = percent_to_basis_points(*percent).map_err(|e| ControlError::BadWeight(format!("{backend}: {e}")))?;
        named[bi] = true;
    }
    if set.len() == 1 && spec.backends.len() == 2 {
        let other = named.iter().position(|n| !n).expect("one of two is unnamed");
        bp[other] = BUCKETS - bp[1 - other];
    }
    let sum: u32 = bp.iter().map(|&w| u32::from(w)).sum();
    if sum != u32::from(BUCKETS) {
        return Err(ControlError::Sum {
            route: route.into(),
            sum: format_percent(sum.min(u32::from(u16::MAX)) as u16),
        });
    }
    let _ = current.route(ri);
    Ok(current.with_route(ri, bp))
}

/// Parity gates a shift: raising the share of a route's non-stable backends
/// is refused while its measured clean share is below `min_clean_share`.
/// `clean` is (clean share, requests compared) from the mirror, if any.
pub fn check_parity_gate(
    config: &Config,
    current: &Weights,
    next: &Weights,
    route: usize,
    clean: Option<(f64, u64)>,
) -> Result<(), ControlError> {
    let spec = &config.routes[route];
    let Some(bar) = spec.mirror.as_ref().and_then(|m| m.min_clean_share) else {
        return Ok(());
    };
    let moved = |w: &Weights| -> u32 {
        w.route(route)
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != spec.stable)
            .map(|(_, &bp)| u32::from(bp))
            .sum()
    };
    if moved(next) <= moved(current) {
        return Ok(());
    }
    match clean {
        Some((share, _)) if share >= bar => Ok(()),
        Some((share, compared)) => Err(ControlError::ParityBelowBar {
            route: spec.name.to_string(),
            measured: format!("{:.2}% clean over {compared} compared requests", share * 100.0),
            bar: bar * 100.0,
        }),
        None => Err(ControlError::ParityBelowBar {
            route: spec.name.to_string(),
            measured: "not measured yet".into(),
            bar: bar * 100.0,
        }),
    }
}

/// Starts each warning appended to a change's reason in the history.
pub const CHANGE_WARNING: &str = "; WARNING: ";

/// Why the history records a weight-file edit. The edit is applied as
/// written even where the parity gate would refuse a shift (editing the file
/// is a deliberate operator act), but never silently: each route it raises
/// toward a non-stable backend while parity is below `min_clean_share` is
/// logged as a warning and named in the returned reason. `before` is the
/// table the edit replaced; `clean` gives a route's measured parity.
pub fn weight_file_change_reason(
    config: &Config,
    before: &NamedWeights,
    next: &Weights,
    clean: impl Fn(&str) -> Option<(f64, u64)>,
) -> String {
    let mut why = String::from("weight file changed");
    let all_stable = Weights::all_stable(config);
    for (ri, spec) in config.routes.iter().enumerate() {
        // A route the previous table did not split counts as all on stable.
        let prior = match before.get(spec.name.as_ref()) {
            Some(old) => spec
                .backends
                .iter()
                .map(|b| {
                    old.get(b.spec.name.as_ref())
                        .map_or(0, |&p| percent_to_basis_points(p).unwrap_or(0))
                })
                .collect(),
            None => all_stable.route(ri).to_vec(),
        };
        let prior = next.with_route(ri, prior);
        if let Err(ControlError::ParityBelowBar { route, measured, bar }) = check_parity_gate(config, &prior, next, ri, clean(&spec.name)) {
            tracing::warn!(
                route = %route,
                parity = %measured,
                bar = %format!("{bar:.2}% clean"),
                "the weight file moves traffic to a backend whose parity is below min_clean_share; applied as written"
            );
            why.push_str(&format!(
                "{CHANGE_WARNING}{route} raised while parity is {measured}, below the bar of {bar:.2}%"
            ));
        }
    }
    why
}

/// The indexes of the named routes (all routes when `all`).
pub fn select_routes(config: &Config, routes: &[String], all: bool) -> Result<Vec<usize>, ControlError> {
    if all {
        return Ok((0..config.routes.len()).collect());
    }
    if routes.is_empty() {
        return Err(ControlError::NoRoutes);
    }
    routes
        .iter()
        .map(|r| config.route_index(r).ok_or_else(|| ControlError::UnknownRoute(r.clone())))
        .collect()
}

/// Rebuilds a table from its named form, checked against `config`.
pub fn from_named(config: &Config, named: &NamedWeights) -> Result<Weights, ControlError> {
    let text = serde_yaml::to_string(named).map_err(|e| ControlError::Io(e.to_string()))?;
    Weights::parse(&config.weights_path, &text, config).map_err(ControlError::Stale)
}

/// The weight file's new text. Comment lines above a route and a comment at
/// the end of its line are kept, as are the file's leading and trailing comments.
pub fn render(config: &Config, weights: &Weights, previous: Option<&str>) -> String {
    let layout = previous.map(CommentLayout::read).unwrap_or_default();
    let mut out = String::new();
    for line in &layout.header {
        out.push_str(line);
        out.push('\n');
    }
    for (name, per_backend) in named(config, weights) {
        if let Some(above) = layout.above.get(&name) {
            for line in above {
                out.push_str(line);
                out.push('\n');
            }
        }
        let parts: Vec<String> = per_backend.iter().map(|(b, w)| format!("{b}: {w}")).collect();
        out.push_str(&format!("{name}: {{ {} }}", parts.join(", ")));
        if let Some(c) = layout.trailing.get(&name) {
            out.push_str("  ");
            out.push_str(c);
        }
        out.push('\n');
    }
    for line in &layout.footer {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Where the comments of a weight file sit, by route name.
#[derive(Default)]
struct CommentLayout {
    header: Vec<String>,
    above: BTreeMap<String, Vec<String>>,
    trailing: BTreeMap<String, String>,
    footer: Vec<String>,
}

impl CommentLayout {
    fn read(text: &str) -> CommentLayout {
        let mut layout = CommentLayout::default();
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
                    layout.header.extend(pending.drain(..split));
                }
                seen_route = true;
                layout.above.insert(key.clone(), std::mem::take(&mut pending));
                if let Some(pos) = rest.find(" #") {
                    layout.trailing.insert(key, rest[pos + 1..].to_string());
                }
            } else {
                pending.clear();
            }
        }
        if !seen_route {
            layout.header = pending;
        } else {
            layout.footer = pending;
        }
        layout
    }
}

/// Writes `contents` to `path` so that a crash at any moment leaves either
/// the old file or the new one: a temp file in the same folder, fsync,
/// rename over, fsync the folder.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}-{:08x}", std::process::id(), rand::random::<u32>()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            let _ = file.set_permissions(meta.permissions());
        }
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// One change of the weight table.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
        write_atomic(&self.path, text.as_bytes())
    }
}

/// Now, as RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = "listeners: [{name: p, addr: '127.0.0.1:0'}]\n\
                    backends: {legacy: {url: 'http://127.0.0.1:1'}, new: {url: 'http://127.0.0.1:2'}, third: {url: 'http://127.0.0.1:3'}}\n\
                    routes:\n\
                    - {name: api, match: {path_prefix: /api/}, backends: {legacy: {}, new: {}}}\n\
                    - {name: three, match: {path_prefix: /t/}, backends: {legacy: {}, new: {}, third: {}}}\n\
                    - {name: default, backends: {legacy: {}}}\n";
        Config::parse(Path::new("/tmp/cutover.yaml"), text.to_string()).unwrap()
    }

    #[test]
    fn naming_one_of_two_backends_gives_the_rest_to_the_other() {
        let c = config();
        let w = shift(&c, &Weights::all_stable(&c), "api", &[("new".into(), 25.0)]).unwrap();
        assert_eq!(w.route(0), &[7500, 2500]);
    }

    #[test]
    fn bad_shifts_are_refused() {
        let c = config();
        let w = Weights::all_stable(&c);
        assert!(matches!(shift(&c, &w, "nope", &[]), Err(ControlError::UnknownRoute(_))));
        assert!(matches!(
            shift(&c, &w, "api", &[("old".into(), 5.0)]),
            Err(ControlError::UnknownBackend { .. })
        ));
        assert!(matches!(
            shift(&c, &w, "three", &[("new".into(), 50.0)]),
            Err(ControlError::Sum { .. })
        ));
        assert!(matches!(
            shift(&c, &w, "api", &[("new".into(), 100.5)]),
            Err(ControlError::BadWeight(_))
        ));
        let ok = shift(&c, &w, "three", &[("new".into(), 50.0), ("third".into(), 50.0)]).unwrap();
        assert_eq!(ok.route(1), &[0, 5000, 5000]);
    }

    #[test]
    fn rendering_keeps_comments_and_round_trips() {
        let c = config();
        let previous = "# Weights for the api migration.\n\n# moved by the on-call\napi: { legacy: 90, new: 10 }  # ticket OPS-1\n# end\n";
        let w = shift(&c, &Weights::all_stable(&c), "api", &[("new".into(), 12.5)]).unwrap();
        let text = render(&c, &w, Some(previous));
        assert_eq!(
            text,
            "# Weights for the api migration.\n\n# moved by the on-call\napi: { legacy: 87.5, new: 12.5 }  # ticket OPS-1\nthree: { legacy: 100, new: 0, third: 0 }\n# end\n"
        );
        assert_eq!(Weights::parse(Path::new("w.yaml"), &text, &c).unwrap(), w);
    }

    #[test]
    fn weight_file_edits_raising_new_below_the_parity_bar_are_named() {
        let text = "listeners: [{name: p, addr: '127.0.0.1:0'}]\n\
                    backends: {legacy: {url: 'http://127.0.0.1:1'}, new: {url: 'http://127.0.0.1:2'}}\n\
                    routes:\n\
                    - {name: api, match: {path_prefix: /api/}, backends: {legacy: {}, new: {}}, mirror: {to: new, min_clean_share: 0.99}}\n\
                    - {name: web, match: {path_prefix: /}, backends: {legacy: {}, new: {}}}\n";
        let c = Config::parse(Path::new("/tmp/cutover.yaml"), text.to_string()).unwrap();
        let ten = shift(&c, &Weights::all_stable(&c), "api", &[("new".into(), 10.0)]).unwrap();
        let before = named(&c, &ten);
        let raised = shift(&c, &ten, "web", &[("new".into(), 50.0)]).unwrap();
        let raised = shift(&c, &raised, "api", &[("new".into(), 30.0)]).unwrap();
        let lowered = shift(&c, &ten, "api", &[("new".into(), 5.0)]).unwrap();
        let dirty = |_: &str| Some((0.5, 40));

        let why = weight_file_change_reason(&c, &before, &raised, dirty);
        assert_eq!(
            why,
            "weight file changed; WARNING: api raised while parity is 50.00% clean over 40 compared requests, \
             below the bar of 99.00%"
        );
        let why = weight_file_change_reason(&c, &before, &raised, |_| None);
        assert!(
            why.ends_with("api raised while parity is not measured yet, below the bar of 99.00%"),
            "{why}"
        );
        // Clean enough, lowered, or a route without a bar: nothing to say.
        assert_eq!(
            weight_file_change_reason(&c, &before, &raised, |_| Some((0.995, 400))),
            "weight file changed"
        );
        assert_eq!(weight_file_change_reason(&c, &before, &lowered, dirty), "weight file changed");
        // A route the old table did not have counts as all on its stable backend.
        let why = weight_file_change_reason(&c, &NamedWeights::new(), &ten, dirty);
        assert!(why.contains("WARNING: api raised"), "{why}");
    }

    #[test]
    fn history_keeps_the_last_entries_and_pops_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let history = History::beside(&dir.path().join("weights.yaml"));
        for i in 0..(HISTORY_LEN + 5) {
            let entry = HistoryEntry {
                time: now_rfc3339(),
                who: format!("t{i}"),
                why: String::new(),
                before: NamedWeights::new(),
                after: NamedWeights::new(),
            };
            history.push(entry).unwrap();
        }
        assert_eq!(history.entries().len(), HISTORY_LEN);
        assert_eq!(history.pop().unwrap().unwrap().who, format!("t{}", HISTORY_LEN + 4));
        assert_eq!(history.entries().len(), HISTORY_LEN - 1);
    }
}
