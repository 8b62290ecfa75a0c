//! Following the fleet table: an etcd watch that survives disconnects and
//! compaction, and never goes back in time.

use std::collections::VecDeque;
use std::time::Duration;

use etcd_client::{EventType, KeyValue, WatchOptions, WatchResponse, WatchStream};

use super::store::{FleetStore, table};
use super::{FleetError, FleetTable};

/// Waits between reconnection attempts grow from this...
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// ...to this.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What a [`FleetWatch`] reports.
#[derive(Debug)]
pub enum WatchEvent {
    /// A table newer than every one reported before.
    Table(FleetTable),
    /// The table key was deleted: the fleet is unseeded.
    Removed { revision: i64 },
    /// The table at `revision` is not text; it was skipped.
    Unreadable { revision: i64, error: FleetError },
    /// The watch is live.
    Connected,
    /// The watch was lost; it reconnects on its own.
    Disconnected(FleetError),
}

/// The fleet table's changes, in revision order. After a disconnect it
/// resumes from the revision after the last one seen; when etcd has
/// compacted that revision away it reads the current table instead and
/// follows on from there. A revision at or below one already reported is
/// never reported again.
pub struct FleetWatch {
    store: FleetStore,
    /// The newest revision reported.
    seen: i64,
    /// Whether the caller holds a table (reported, or given at the start).
    holds_table: bool,
    /// Where the next etcd watch starts (inclusive).
    resume: i64,
    /// Read the current table before watching: at the start when the
    /// caller has none, and after etcd compacted past `resume`.
    reread: bool,
    stream: Option<(u64, WatchStream)>,
    pending: VecDeque<WatchEvent>,
    connected: bool,
    failures: u32,
}

impl FleetStore {
    /// Follows the table. `after`: the revision of the table the caller
    /// already has (from [`FleetStore::read`]), whose successors are
    /// reported; `None` reports the current table first.
    pub fn watch(&self, after: Option<i64>) -> FleetWatch {
        FleetWatch {
            store: self.clone(),
            seen: after.unwrap_or(0),
            holds_table: after.is_some(),
            resume: after.map_or(0, |r| r + 1),
            reread: after.is_none(),
            stream: None,
            pending: VecDeque::new(),
            connected: false,
            failures: 0,
        }
    }
}

impl FleetWatch {
    /// The next event; reconnects (with growing pauses) as long as it is
    /// polled. Cancel-safe: dropping the future loses no event.
    pub async fn next(&mut self) -> WatchEvent {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return event;
            }
            let Some((generation, stream)) = self.stream.as_mut() else {
                if self.failures > 0 {
                    tokio::time::sleep(retry_pause(self.failures)).await;
                }
                match self.open().await {
                    Ok(()) => {
                        self.failures = 0;
                        if !self.connected {
                            self.connected = true;
                            self.pending.push_front(WatchEvent::Connected);
                        }
                    }
                    Err(e) => {
                        self.failures = self.failures.saturating_add(1);
                        // Report the loss once, not every attempt.
                        if self.connected || self.failures == 1 {
                            self.connected = false;
                            return WatchEvent::Disconnected(e);
                        }
                    }
                }
                continue;
            };
            let generation = *generation;
            match stream.message().await {
                Ok(Some(resp)) => {
                    if let Err(e) = self.handle(resp) {
                        self.lost(generation, e);
                    }
                }
                Ok(None) => self.lost(generation, FleetError::WatchCanceled("etcd closed the watch stream".into())),
                Err(source) => self.lost(generation, FleetError::Etcd { op: "watch", source }),
            }
        }
    }

    /// The revision of the newest table or removal reported.
    pub fn revision(&self) -> i64 {
        self.seen
    }

    async fn open(&mut self) -> Result<(), FleetError> {
        let key = self.store.keys().weights.clone();
        if self.reread {
            let read = key.clone();
            let resp = self.store.call("read", |mut c| async move { c.get(read, None).await }).await?;
            let revision = resp.header().map_or(0, |h| h.revision());
            match resp.kvs().first() {
                Some(kv) if kv.mod_revision() > self.seen => self.report(kv),
                None if self.holds_table && revision > self.seen => {
                    self.seen = revision;
                    self.holds_table = false;
                    self.pending.push_back(WatchEvent::Removed { revision });
                }
                _ => {}
            }
            self.resume = self.resume.max(revision + 1);
            self.reread = false;
        }
        let options = WatchOptions::new().with_start_revision(self.resume).with_progress_notify();
        // The watch counts as live once etcd acknowledged its creation.
        let (generation, (stream, ack)) = self
            .store
            .call_tracked("watch", |mut c| async move {
                let mut stream = c.watch(key, Some(options)).await?;
                let ack = stream.message().await?;
                Ok((stream, ack))
            })
            .await?;
        let Some(ack) = ack else {
            self.store.forget(generation);
            return Err(FleetError::WatchCanceled("etcd closed the watch stream".into()));
        };
        self.stream = Some((generation, stream));
        self.handle(ack)
    }

    /// Takes in one response; `Err` when etcd canceled the watch for a
    /// reason other than compaction (a member without a leader, say).
    fn handle(&mut self, resp: WatchResponse) -> Result<(), FleetError> {
        if resp.canceled() || resp.compact_revision() > 0 {
            self.stream = None;
            if resp.compact_revision() > 0 {
                // Our revision is gone: read the current table, watch on from it.
                self.reread = true;
                return Ok(());
            }
            return Err(FleetError::WatchCanceled(match resp.cancel_reason() {
                "" => "canceled by etcd".to_string(),
                reason => reason.to_string(),
            }));
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            if revision <= self.seen {
                continue;
            }
            self.resume = revision + 1;
            match event.event_type() {
                EventType::Put => self.report(kv),
                EventType::Delete => {
                    self.seen = revision;
                    self.holds_table = false;
                    self.pending.push_back(WatchEvent::Removed { revision });
                }
            }
        }
        // A progress notification: nothing changed up to its revision.
        if resp.events().is_empty()
            && !resp.created()
            && let Some(header) = resp.header()
        {
            self.resume = self.resume.max(header.revision() + 1);
        }
        Ok(())
    }

    /// Queues the table `kv` holds, newer than any reported.
    fn report(&mut self, kv: &KeyValue) {
        let revision = kv.mod_revision();
        self.seen = revision;
        self.holds_table = true;
        self.pending.push_back(match table(kv) {
            Ok(t) => WatchEvent::Table(t),
            Err(error) => WatchEvent::Unreadable { revision, error },
        });
    }

    fn lost(&mut self, generation: u64, error: FleetError) {
        self.stream = None;
        self.store.forget(generation);
        self.failures = self.failures.saturating_add(1);
        if self.connected {
            self.connected = false;
            self.pending.push_back(WatchEvent::Disconnected(error));
        }
    }
}

fn retry_pause(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(8);
    (RETRY_FIRST * 2u32.pow(exp)).min(RETRY_MAX)
}
