//! Hot reload: watches the folders of the config and weight files.
//!
//! Watching the folders rather than the files catches every way a file gets
//! replaced: an editor's write-and-rename, `cp` over it, an in-place rewrite,
//! and Kubernetes' ConfigMap update (a swap of the `..data` symlink, which a
//! watch on the file itself never sees). Bursts of events are debounced, the
//! files must read the same twice in a row before they are acted on (so a
//! file caught mid-write is never loaded), and a slow poll backs the watch up.
//! A file that cannot be read (a FIFO, a device, too large, not UTF-8: see
//! [`crate::config::file`]) is reported like a file that does not compile,
//! once per problem rather than on every poll.

use std::collections::BTreeSet;
use std::hash::Hasher;
use std::mem::Discriminant;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::file::FileProblem;
use crate::config::{ConfigError, FileError, read_text};
use crate::live::{Live, Reloaded};

/// Quiet time after the last event before the files are read.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// Gap between the two reads that must agree.
const SETTLE: Duration = Duration::from_millis(100);
/// How long an empty file must stay empty to be read as meant: `cp`,
/// shell redirects and many editors truncate before they write.
const EMPTY_SETTLE: Duration = Duration::from_secs(1);
/// Longest a stream of events delays a read.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);
/// Backstop poll, for file systems whose events do not arrive.
const POLL: Duration = Duration::from_secs(2);

/// Starts watching; reloads run until `shutdown` is cancelled.
pub fn spawn(live: Arc<Live>, shutdown: CancellationToken) -> notify::Result<()> {
    let (tx, rx) = mpsc::channel::<()>(16);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| may_change_content(&e.kind)) {
            let _ = tx.try_send(());
        }
    })?;
    let mut task = WatchTask {
        live,
        watcher,
        watched: BTreeSet::new(),
        events: rx,
    };
    task.watch_folders()?;
    tokio::spawn(async move { task.run(shutdown).await });
    Ok(())
}

struct WatchTask {
    live: Arc<Live>,
    watcher: notify::RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
    events: mpsc::Receiver<()>,
}

impl WatchTask {
    fn files(&self) -> (PathBuf, PathBuf) {
        let table = self.live.load();
        (table.config.path.clone(), table.config.weights_path.clone())
    }

    /// Watches the folders holding the current files (they can move on reload).
    fn watch_folders(&mut self) -> notify::Result<()> {
        let (config, weights) = self.files();
        let wanted: BTreeSet<PathBuf> = [config, weights].iter().map(|p| folder_of(p)).collect();
        for dir in wanted.difference(&self.watched.clone()) {
            self.watcher.watch(dir, RecursiveMode::NonRecursive)?;
            tracing::debug!(dir = %dir.display(), "watching for config changes");
        }
        for dir in self.watched.difference(&wanted) {
            let _ = self.watcher.unwatch(dir);
        }
        self.watched = wanted;
        Ok(())
    }

    async fn run(mut self, shutdown: CancellationToken) {
        // What was last acted on: the files' hash and the table version it
        // left live. Both must match to skip a read: a shift or rollback
        // changes the live table, and a file edited back to text seen before
        // that change is news again. Nothing is read from disk before the loop:
        // a file replaced between loading the table and this task starting
        // would look already seen.
        let mut last_seen: Option<(u64, String)> = None;
        // The file problem last reported, if it persists.
        let mut reported: Option<(PathBuf, Discriminant<FileProblem>)> = None;
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = self.events.recv() => {
                    if event.is_none() {
                        return;
                    }
                    // Debounce: wait for a quiet spell, but not forever (a
                    // log file written in the same folder is never quiet).
                    let first = tokio::time::Instant::now();
                    while first.elapsed() < MAX_DEBOUNCE
                        && matches!(tokio::time::timeout(DEBOUNCE, self.events.recv()).await, Ok(Some(())))
                    {}
                }
                _ = poll.tick() => {}
            }
            let (config_text, weights_text, hash) = match read_settled(&self.files()).await {
                // Still being written: a later event or poll reads it.
                None => continue,
                // Reported once per problem (not on every poll); the status
                // stays in error until a good read.
                Some(Err(e)) => {
                    if reported.as_ref() != Some(&e.key()) {
                        reported = Some(e.key());
                        self.live.reload_failed(&ConfigError::from(e));
                    }
                    // Whatever comes next is news, even text seen before.
                    last_seen = None;
                    continue;
                }
                Some(Ok(read)) => {
                    reported = None;
                    read
                }
            };
            let seen = (hash, self.live.load().version.clone());
            if last_seen.as_ref() == Some(&seen) {
                continue;
            }
            let live = self.live.clone();
            match tokio::task::spawn_blocking(move || live.reload_texts(config_text, Some(weights_text), false)).await {
                // A newer write is on disk; its own event (or the poll) reads it.
                Ok(Ok(Reloaded::Superseded)) => {}
                // Paired with the version the reload saw, not the one live now:
                // a shift or rollback right after it makes another version live,
                // and a later edit of the file back to this text must not then
                // look already acted on.
                Ok(Ok(Reloaded::Unchanged(version))) => last_seen = Some((hash, version)),
                Ok(Ok(Reloaded::Installed(version))) => {
                    last_seen = Some((hash, version));
                    if let Err(e) = self.watch_folders() {
                        tracing::warn!(error = %e, "cannot watch the config folders");
                    }
                }
                // Rejected (and logged): not retried until the files or the table change.
                Ok(Err(_)) => last_seen = Some(seen),
                Err(e) => tracing::error!(error = %e, "config reload task failed"),
            }
        }
    }
}

/// Opening or reading a file changes nothing; without this filter every
/// read of the files (the watcher's own, or the admin API's of the history
/// beside them) would set off another read.
fn may_change_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Both files' text and a hash of the pair. Read off the runtime: a file
/// system can stall.
async fn read_both(files: &(PathBuf, PathBuf)) -> Result<(String, String, u64), FileError> {
    let (config, weights) = files.clone();
    let read = tokio::task::spawn_blocking(move || Ok::<_, FileError>((read_text(&config)?, read_text(&weights)?)));
    let (c, w) = match read.await {
        Ok(texts) => texts?,
        Err(e) => {
            return Err(FileError {
                path: files.0.clone(),
                problem: FileProblem::Io(std::io::Error::other(e)),
            });
        }
    };
    let mut h = siphasher::sip::SipHasher13::new();
    h.write(c.as_bytes());
    h.write_u8(0xff);
    h.write(w.as_bytes());
    Ok((c, w, h.finish()))
}

/// Reads both files until two reads `SETTLE` apart agree, on the text or on
/// the problem, and an empty file has stayed empty for `EMPTY_SETTLE`
/// (bounded; `None` while they keep changing).
async fn read_settled(files: &(PathBuf, PathBuf)) -> Option<Result<(String, String, u64), FileError>> {
    let mut previous = read_both(files).await;
    let mut agreed_for = Duration::ZERO;
    for _ in 0..20 {
        tokio::time::sleep(SETTLE).await;
        let current = read_both(files).await;
        let agree = match (&previous, &current) {
            (Ok(a), Ok(b)) => a.2 == b.2,
            (Err(a), Err(b)) => a.key() == b.key(),
            _ => false,
        };
        agreed_for = if agree { agreed_for + SETTLE } else { Duration::ZERO };
        let truncated = matches!(&current, Ok((config, weights, _)) if config.is_empty() || weights.is_empty());
        let needed = if truncated { EMPTY_SETTLE } else { SETTLE };
        if agreed_for >= needed {
            return Some(current);
        }
        previous = current;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A weight file truncated by `cp` and written a moment later is read
    /// once written, never as the empty table it briefly was.
    #[tokio::test]
    async fn a_file_truncated_before_it_is_written_is_read_once_written() {
        let dir = tempfile::tempdir().unwrap();
        let files = (dir.path().join("cutover.yaml"), dir.path().join("weights.yaml"));
        std::fs::write(&files.0, "routes: []\n").unwrap();
        std::fs::write(&files.1, "").unwrap();
        let weights = files.1.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            std::fs::write(weights, "api: { legacy: 50, new: 50 }\n").unwrap();
        });
        let read = read_settled(&files).await.expect("settles").expect("readable");
        writer.await.unwrap();
        assert_eq!(read.1, "api: { legacy: 50, new: 50 }\n");
    }

    /// A file that stays empty is read as it is: emptying it on purpose works.
    #[tokio::test]
    async fn a_file_that_stays_empty_is_read_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let files = (dir.path().join("cutover.yaml"), dir.path().join("weights.yaml"));
        std::fs::write(&files.0, "routes: []\n").unwrap();
        std::fs::write(&files.1, "").unwrap();
        let read = read_settled(&files).await.expect("settles").expect("readable");
        assert_eq!(read.1, "");
    }
}
