//! Rollbacks this replica made that etcd does not hold yet, kept in memory
//! and in a file beside the weight file (`weights.fleet-pending.json`), so
//! that a restart during an etcd outage loses none of them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::weight_file::HistoryEntry;
use crate::config::{Config, NamedWeights};

/// A rollback made on this replica, to be written to the fleet table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingRollback {
    /// The routes sent wholly to their stable backends, by name.
    pub routes: Vec<String>,
    /// Who made it, naming this replica.
    pub who: String,
    pub why: String,
    /// RFC 3339 time it was made (and took effect here).
    pub time: String,
    /// The routes' weights it replaced here: when the fleet table holds
    /// others by the time it is written, the fleet changed them meanwhile.
    pub before: NamedWeights,
    /// The fleet revision this replica served when it was made.
    pub base: Option<i64>,
    /// The revision that wrote it to etcd, once written. Until this replica
    /// applies a table at least that new, older tables arriving from the
    /// watch still get these routes rolled back.
    pub written: Option<i64>,
    /// Whether writing it failed at first: the history then says it was
    /// written late.
    #[serde(default)]
    pub delayed: bool,
}

impl PendingRollback {
    pub fn new(routes: Vec<String>, entry: HistoryEntry, base: Option<i64>) -> PendingRollback {
        let before = entry.before.into_iter().filter(|(route, _)| routes.contains(route)).collect();
        PendingRollback {
            routes,
            who: entry.who,
            why: entry.why,
            time: entry.time,
            before,
            base,
            written: None,
            delayed: false,
        }
    }

    /// Whether the routes stay rolled back over a fleet table of `revision`.
    pub fn holds_over(&self, revision: i64) -> bool {
        self.written.is_none_or(|written| written > revision)
    }
}

/// The file beside the config's weight file.
pub fn path(config: &Config) -> PathBuf {
    let weights = &config.weights_path;
    let stem = weights
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "weights".into());
    weights.with_file_name(format!("{stem}.fleet-pending.json"))
}

/// The rollbacks a previous run left; none when there is no readable file.
pub fn load(config: &Config) -> Vec<PendingRollback> {
    let path = path(config);
    let Ok(text) = crate::config::read_text(&path) else {
        return Vec::new();
    };
    match serde_json::from_str(&text) {
        Ok(pending) => pending,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "unreadable file of pending fleet rollbacks ignored");
            Vec::new()
        }
    }
}

/// Writes the rollbacks, or removes the file when there are none.
pub fn save(config: &Config, pending: &[PendingRollback]) -> std::io::Result<()> {
    let path = path(config);
    if pending.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let text = serde_json::to_string_pretty(pending).map_err(std::io::Error::other)?;
    crate::config::file::write_atomic(&path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollback_holds_until_a_table_as_new_as_its_write() {
        let entry = HistoryEntry {
            time: "T".into(),
            who: "bob on replica b".into(),
            why: "rollback api".into(),
            before: [
                ("api".to_string(), [("new".to_string(), 50.0)].into()),
                ("web".to_string(), [("new".to_string(), 10.0)].into()),
            ]
            .into(),
            after: NamedWeights::new(),
        };
        let mut pending = PendingRollback::new(vec!["api".into()], entry, Some(7));
        assert_eq!(pending.before.keys().collect::<Vec<_>>(), ["api"]);
        assert!(pending.holds_over(100), "unwritten: over any table");
        pending.written = Some(12);
        assert!(pending.holds_over(11));
        assert!(!pending.holds_over(12));
    }

    #[test]
    fn pending_rollbacks_survive_a_restart_and_an_empty_list_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = "listeners: [{name: p, addr: '127.0.0.1:0'}]\nweights_file: w.yaml\n\
                    backends: {legacy: {url: 'http://127.0.0.1:1'}}\nroutes: [{name: all, backends: {legacy: {}}}]\n";
        let config = Config::parse(&dir.path().join("cutover.yaml"), text.to_string()).unwrap();
        assert_eq!(path(&config), dir.path().join("w.fleet-pending.json"));
        let entry = HistoryEntry {
            time: "T".into(),
            who: "guard on replica a".into(),
            why: "guard: backend new down".into(),
            before: NamedWeights::new(),
            after: NamedWeights::new(),
        };
        let pending = vec![PendingRollback::new(vec!["all".into()], entry, None)];
        save(&config, &pending).unwrap();
        assert_eq!(load(&config), pending);
        save(&config, &[]).unwrap();
        assert!(!path(&config).exists());
        assert!(load(&config).is_empty());
    }
}
