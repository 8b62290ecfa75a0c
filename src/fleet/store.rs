//! The fleet's keys in etcd: reading the table and its history, writing them
//! together with compare-and-swap, seeding.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Certificate, Client, Compare, CompareOp, ConnectOptions, Identity, KeyValue, TlsOptions, Txn, TxnOp, TxnOpResponse};

use super::{FleetError, FleetTable, Keys, SeedError, WriteError};
use crate::config::fleet::FleetSettings;
use crate::config::weight_file::{HISTORY_LEN, HistoryEntry};

/// How many times a write is tried again when only the history moved under it.
const WRITE_ATTEMPTS: usize = 3;

/// A handle on one fleet's keys in etcd; cheap to clone. Connects lazily,
/// so it can be made while etcd is unreachable; every call is bounded by the
/// settings' `request_timeout`, connecting included.
#[derive(Clone)]
pub struct FleetStore {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    /// Holds the password: never printed.
    options: ConnectOptions,
    keys: Keys,
    replica_id: String,
    timeout: Duration,
    lease_ttl: Duration,
    /// The connected client and its generation, dropped after a transport
    /// failure so that the next call connects afresh.
    client: Mutex<Option<(u64, Client)>>,
    generations: AtomicU64,
}

impl fmt::Debug for FleetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetStore")
            .field("endpoints", &self.inner.endpoints)
            .field("keys", &self.inner.keys)
            .field("replica_id", &self.inner.replica_id)
            .finish_non_exhaustive()
    }
}

/// What etcd holds for the fleet, read at one revision.
#[derive(Debug, Clone)]
pub struct FleetState {
    pub table: Option<FleetTable>,
    /// Oldest first.
    pub history: Vec<HistoryEntry>,
    /// The store's revision the state was read at.
    pub revision: i64,
}

/// The table and history keys as etcd holds them.
struct Stored {
    weights: Option<KeyValue>,
    history: Option<KeyValue>,
    revision: i64,
}

impl Stored {
    fn history(&self) -> Vec<HistoryEntry> {
        self.history.as_ref().map(|kv| parse_history(kv.value())).unwrap_or_default()
    }
}

/// What a write does to the history, in the same transaction.
#[derive(Debug, Clone)]
pub enum HistoryEdit {
    /// Records a change (capped at [`HISTORY_LEN`] entries).
    Push(HistoryEntry),
    /// Leaves it alone (the later steps of a guard's ramp).
    Keep,
    /// Drops the newest entry (an undo).
    PopNewest,
}

impl FleetStore {
    pub fn new(settings: &FleetSettings) -> FleetStore {
        crate::tls::install_crypto_provider();
        // HTTP/2 pings find a dead member under a watch or lease stream. etcd
        // refuses pings more often than every 5 s, and pings on idle
        // connections, with GOAWAY.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(settings.request_timeout)
            .with_keep_alive(Duration::from_secs(10), settings.request_timeout)
            .with_keep_alive_while_idle(false)
            // A member cut off from the others answers nothing stale: it
            // cancels its watches and fails reads instead.
            .with_require_leader(true);
        if let Some(tls) = &settings.tls {
            let mut config = TlsOptions::new();
            config = match &tls.ca_pem {
                Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
                None => config.with_native_roots(),
            };
            if let Some(id) = &tls.identity {
                config = config.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
            }
            options = options.with_tls(config);
        }
        if let Some(auth) = &settings.auth {
            options = options
                .with_user(auth.username.clone(), auth.password.clone())
                .with_auto_token_refresh(true);
        }
        FleetStore {
            inner: Arc::new(Inner {
                endpoints: settings.endpoints.clone(),
                options,
                keys: Keys::new(&settings.prefix),
                replica_id: settings.replica_id.clone(),
                timeout: settings.request_timeout,
                lease_ttl: settings.lease_ttl,
                client: Mutex::new(None),
                generations: AtomicU64::new(0),
            }),
        }
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub fn replica_id(&self) -> &str {
        &self.inner.replica_id
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    pub(crate) fn lease_ttl(&self) -> Duration {
        self.inner.lease_ttl
    }

    /// The current table, if the fleet has one.
    pub async fn read(&self) -> Result<Option<FleetTable>, FleetError> {
        let key = self.inner.keys.weights.clone();
        let resp = self.call("read", |mut c| async move { c.get(key, None).await }).await?;
        resp.kvs().first().map(table).transpose()
    }

    /// The table and its history, read together at one revision.
    pub async fn read_state(&self) -> Result<FleetState, FleetError> {
        let stored = self.read_stored().await?;
        Ok(FleetState {
            table: stored.weights.as_ref().map(table).transpose()?,
            history: stored.history(),
            revision: stored.revision,
        })
    }

    /// Both keys as stored, whatever their values.
    async fn read_stored(&self) -> Result<Stored, FleetError> {
        let keys = &self.inner.keys;
        let txn = Txn::new().and_then([TxnOp::get(keys.weights.clone(), None), TxnOp::get(keys.history.clone(), None)]);
        let resp = self.call("read", |mut c| async move { c.txn(txn).await }).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut found = resp.op_responses().into_iter().map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().cloned(),
            _ => None,
        });
        let (weights, history) = (found.next().flatten(), found.next().flatten());
        Ok(Stored {
            weights,
            history,
            revision,
        })
    }

    /// The change history, oldest first.
    pub async fn history(&self) -> Result<Vec<HistoryEntry>, FleetError> {
        Ok(self.read_state().await?.history)
    }

    /// Replaces the table if it is still at `expected` (`None`: if there is
    /// none), editing the history in the same transaction. Returns the new
    /// table's revision. A timeout leaves the outcome unknown: read again.
    pub async fn write_if(&self, expected: Option<i64>, text: &str, edit: HistoryEdit) -> Result<i64, WriteError> {
        let keys = &self.inner.keys;
        for _ in 0..WRITE_ATTEMPTS {
            // Read as stored, so that even a table that is not text can be replaced.
            let stored = self.read_stored().await?;
            if stored.weights.as_ref().map(KeyValue::mod_revision) != expected {
                return Err(WriteError::Conflict {
                    current: stored.weights.as_ref().map(table).transpose()?,
                });
            }
            let mut compares = vec![match expected {
                Some(revision) => Compare::mod_revision(keys.weights.clone(), CompareOp::Equal, revision),
                None => Compare::version(keys.weights.clone(), CompareOp::Equal, 0),
            }];
            let mut puts = vec![TxnOp::put(keys.weights.clone(), text, None)];
            if let Some(history) = edit_history(stored.history(), &edit) {
                compares.push(match stored.history.as_ref().map(KeyValue::mod_revision) {
                    Some(revision) => Compare::mod_revision(keys.history.clone(), CompareOp::Equal, revision),
                    None => Compare::version(keys.history.clone(), CompareOp::Equal, 0),
                });
                puts.push(TxnOp::put(keys.history.clone(), encode_history(&history)?, None));
            }
            let txn = Txn::new().when(compares).and_then(puts);
            let resp = self.call("write", |mut c| async move { c.txn(txn).await }).await?;
            if resp.succeeded() {
                return Ok(resp.header().map_or(0, |h| h.revision()));
            }
            // The next read tells a changed table (a conflict) from a
            // history edited on its own, which is simply tried again.
        }
        Err(WriteError::Conflict {
            current: self.read().await?,
        })
    }

    /// Writes the first table of a fleet. An existing table is replaced only
    /// with `force`. Returns the new table's revision.
    pub async fn seed(&self, text: &str, force: bool, entry: Option<HistoryEntry>) -> Result<i64, SeedError> {
        let edit = entry.map_or(HistoryEdit::Keep, HistoryEdit::Push);
        for _ in 0..WRITE_ATTEMPTS {
            let current = self.read_stored().await?.weights;
            if let Some(current) = current.as_ref().filter(|_| !force) {
                return Err(SeedError::AlreadySeeded { current: table(current)? });
            }
            match self.write_if(current.map(|kv| kv.mod_revision()), text, edit.clone()).await {
                Ok(revision) => return Ok(revision),
                Err(WriteError::Conflict { current: Some(current) }) if !force => {
                    return Err(SeedError::AlreadySeeded { current });
                }
                Err(WriteError::Conflict { .. }) => continue,
                Err(WriteError::Store(e)) => return Err(e.into()),
            }
        }
        Err(SeedError::Contended)
    }

    /// Runs one etcd call with a connected client, bounded by the timeout.
    pub(crate) async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, FleetError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_tracked(op, f).await.map(|(_, out)| out)
    }

    /// Like [`FleetStore::call`]; also returns the client's generation, for
    /// [`FleetStore::forget`] when a stream it opened fails later.
    pub(crate) async fn call_tracked<T, F, Fut>(&self, op: &'static str, f: F) -> Result<(u64, T), FleetError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut used = None;
        let attempt = async {
            let (generation, client) = self.client().await?;
            used = Some(generation);
            f(client).await.map(|out| (generation, out))
        };
        let outcome = tokio::time::timeout(self.inner.timeout, attempt).await;
        match outcome {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(source)) => {
                if is_transport_failure(&source)
                    && let Some(generation) = used
                {
                    self.forget(generation);
                }
                Err(FleetError::Etcd { op, source })
            }
            Err(_) => {
                if let Some(generation) = used {
                    self.forget(generation);
                }
                Err(FleetError::Timeout {
                    op,
                    timeout: self.inner.timeout,
                })
            }
        }
    }

    async fn client(&self) -> Result<(u64, Client), etcd_client::Error> {
        if let Some((generation, client)) = self.slot().as_ref() {
            return Ok((*generation, client.clone()));
        }
        let client = Client::connect(&self.inner.endpoints, Some(self.inner.options.clone())).await?;
        let mut slot = self.slot();
        if let Some((generation, existing)) = slot.as_ref() {
            return Ok((*generation, existing.clone()));
        }
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        *slot = Some((generation, client.clone()));
        Ok((generation, client))
    }

    /// Drops the client of that generation, so the next call connects anew.
    pub(crate) fn forget(&self, generation: u64) {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            *slot = None;
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<(u64, Client)>> {
        self.inner.client.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Errors after which the connection itself is suspect.
fn is_transport_failure(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled | Code::DeadlineExceeded
        ),
        _ => false,
    }
}

pub(crate) fn table(kv: &KeyValue) -> Result<FleetTable, FleetError> {
    let text = std::str::from_utf8(kv.value()).map_err(|e| FleetError::Corrupt {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        message: format!("not UTF-8 text: {e}"),
    })?;
    Ok(FleetTable {
        text: text.to_string(),
        revision: kv.mod_revision(),
    })
}

/// JSON lines, oldest first; unreadable lines are skipped, as in the file.
fn parse_history(bytes: &[u8]) -> Vec<HistoryEntry> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn encode_history(entries: &[HistoryEntry]) -> Result<String, FleetError> {
    let mut text = String::new();
    for e in entries {
        let line = serde_json::to_string(e).map_err(|e| FleetError::Corrupt {
            key: "history".into(),
            message: e.to_string(),
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    Ok(text)
}

/// The history after `edit`; `None` when it stays as it is.
fn edit_history(mut history: Vec<HistoryEntry>, edit: &HistoryEdit) -> Option<Vec<HistoryEntry>> {
    match edit {
        HistoryEdit::Keep => None,
        HistoryEdit::PopNewest => history.pop().map(|_| history),
        HistoryEdit::Push(entry) => {
            history.push(entry.clone());
            let skip = history.len().saturating_sub(HISTORY_LEN);
            Some(history.split_off(skip))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(who: &str) -> HistoryEntry {
        HistoryEntry {
            time: "2026-01-01T00:00:00Z".into(),
            who: who.into(),
            why: "test".into(),
            before: Default::default(),
            after: Default::default(),
        }
    }

    #[test]
    fn the_history_keeps_the_newest_entries() {
        let mut history = Vec::new();
        for i in 0..HISTORY_LEN + 3 {
            history = edit_history(history, &HistoryEdit::Push(entry(&i.to_string()))).unwrap();
        }
        assert_eq!(history.len(), HISTORY_LEN);
        assert_eq!(history[0].who, "3");
        assert_eq!(history.last().unwrap().who, (HISTORY_LEN + 2).to_string());
        let popped = edit_history(history, &HistoryEdit::PopNewest).unwrap();
        assert_eq!(popped.last().unwrap().who, (HISTORY_LEN + 1).to_string());
        assert!(edit_history(popped, &HistoryEdit::Keep).is_none());
    }

    #[test]
    fn history_round_trips_and_skips_bad_lines() {
        let text = encode_history(&[entry("a"), entry("b")]).unwrap();
        let with_garbage = format!("not json\n{text}");
        let parsed = parse_history(with_garbage.as_bytes());
        assert_eq!(parsed.iter().map(|e| e.who.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }
}
