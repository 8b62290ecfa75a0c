//! Replicas announce themselves under `{prefix}/replicas/{id}`, bound to a
//! lease they keep alive: a replica that crashes disappears within the
//! lease's time to live.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use etcd_client::{GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::FleetError;
use super::store::FleetStore;

/// What a replica tells the fleet about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    pub id: String,
    /// Where its admin API listens.
    pub admin_addr: String,
    /// cutover's version.
    pub version: String,
    /// Revision of the fleet table it serves; `None` before it applied one.
    #[serde(default)]
    pub applied_revision: Option<i64>,
    /// Everything else it reports (health, guard, parity), kept as given,
    /// so replicas of different versions read each other.
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// A live registration. Dropping it stops the keep-alives, and the entry
/// expires with its lease; [`Registration::deregister`] removes it at once.
pub struct Registration {
    info: watch::Sender<ReplicaInfo>,
    lease: Arc<AtomicI64>,
    task: JoinHandle<()>,
    store: FleetStore,
}

impl FleetStore {
    /// Registers this replica (under the settings' `replica_id`, whatever
    /// `info.id` says) and keeps the registration alive from a task of its
    /// own, registering again whenever its lease is lost.
    pub fn register(&self, mut info: ReplicaInfo) -> Registration {
        info.id = self.replica_id().to_string();
        let (tx, rx) = watch::channel(info);
        let lease = Arc::new(AtomicI64::new(0));
        let task = tokio::spawn(keep_registered(self.clone(), rx, lease.clone()));
        Registration {
            info: tx,
            lease,
            task,
            store: self.clone(),
        }
    }

    /// Every replica registered now, by id.
    pub async fn replicas(&self) -> Result<Vec<ReplicaInfo>, FleetError> {
        let prefix = self.keys().replicas.clone();
        let resp = self
            .call("list replicas", |mut c| async move {
                c.get(prefix, Some(GetOptions::new().with_prefix())).await
            })
            .await?;
        let mut replicas = Vec::new();
        for kv in resp.kvs() {
            match serde_json::from_slice::<ReplicaInfo>(kv.value()) {
                Ok(info) => replicas.push(info),
                Err(e) => tracing::warn!(key = %String::from_utf8_lossy(kv.key()), error = %e, "unreadable replica registration skipped"),
            }
        }
        Ok(replicas)
    }
}

impl Registration {
    /// Replaces what the registration says (written on the next chance).
    pub fn update(&self, info: ReplicaInfo) {
        self.info.send_modify(|current| {
            let id = std::mem::take(&mut current.id);
            *current = info;
            current.id = id;
        });
    }

    /// Whether the entry is in etcd under a live lease, as far as this replica knows.
    pub fn is_registered(&self) -> bool {
        self.lease.load(Ordering::Relaxed) != 0
    }

    /// Stops renewing and deletes the entry now (a clean shutdown).
    pub async fn deregister(self) -> Result<(), FleetError> {
        self.task.abort();
        let lease = self.lease.swap(0, Ordering::Relaxed);
        if lease == 0 {
            return Ok(());
        }
        self.store
            .call("revoke lease", |mut c| async move { c.lease_revoke(lease).await })
            .await?;
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Grants a lease, writes the entry bound to it, renews it every third of
/// its time to live; starts over when it is lost.
async fn keep_registered(store: FleetStore, mut info: watch::Receiver<ReplicaInfo>, lease_slot: Arc<AtomicI64>) {
    let ttl = store.lease_ttl();
    let key = store.keys().replica(store.replica_id());
    let mut failures = 0u32;
    let mut previous_lease = None;
    loop {
        let current = info.borrow_and_update().clone();
        let lease = match grant_and_put(&store, &key, &current, ttl, previous_lease).await {
            Ok(lease) => lease,
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(error = %e, "cannot register this replica in etcd; retrying");
                }
                tokio::time::sleep(retry_pause(failures, ttl)).await;
                continue;
            }
        };
        if failures > 0 {
            tracing::info!("replica registered in etcd");
        }
        failures = 0;
        previous_lease = Some(lease);
        lease_slot.store(lease, Ordering::Relaxed);

        let mut keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
        let mut renewed = Instant::now();
        let mut unwritten = false;
        let mut ticks = tokio::time::interval_at(Instant::now() + ttl / 3, ttl / 3);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    match renew(&store, &mut keeper, lease).await {
                        Ok(true) => renewed = Instant::now(),
                        Ok(false) => break,
                        Err(e) => {
                            keeper = None;
                            tracing::debug!(error = %e, "lease keep-alive failed");
                            // Past its time to live the lease is gone even if etcd has not said so.
                            if renewed.elapsed() >= ttl {
                                break;
                            }
                        }
                    }
                    if unwritten {
                        let current = info.borrow().clone();
                        unwritten = put(&store, &key, &current, lease).await.is_err();
                    }
                }
                changed = info.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let current = info.borrow_and_update().clone();
                    unwritten = put(&store, &key, &current, lease).await.is_err();
                }
            }
        }
        lease_slot.store(0, Ordering::Relaxed);
        tracing::warn!("this replica's etcd lease was lost; registering again");
    }
}

async fn grant_and_put(
    store: &FleetStore,
    key: &str,
    info: &ReplicaInfo,
    ttl: Duration,
    previous_lease: Option<i64>,
) -> Result<i64, FleetError> {
    let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let lease = store
        .call("grant lease", |mut c| async move { c.lease_grant(seconds, None).await })
        .await?
        .id();
    let overwritten = put(store, key, info, lease).await?;
    if let Some(other) = overwritten
        && other != 0
        && Some(other) != previous_lease
    {
        tracing::warn!(
            key,
            "replica id already registered under another lease: another replica has the same replica_id, or this one restarted within the lease's time to live"
        );
    }
    Ok(lease)
}

/// Writes the entry bound to `lease`; returns the lease of the entry it replaced.
async fn put(store: &FleetStore, key: &str, info: &ReplicaInfo, lease: i64) -> Result<Option<i64>, FleetError> {
    let value = serde_json::to_vec(info).map_err(|e| FleetError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })?;
    let key = key.to_string();
    let resp = store
        .call("register", |mut c| async move {
            c.put(key, value, Some(PutOptions::new().with_lease(lease).with_prev_key())).await
        })
        .await?;
    Ok(resp.prev_key().map(|kv| kv.lease()))
}

/// Renews the lease once; `Ok(false)` when etcd says it has expired.
async fn renew(store: &FleetStore, keeper: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>, lease: i64) -> Result<bool, FleetError> {
    if let Some((k, stream)) = keeper.as_mut() {
        let answer = tokio::time::timeout(store.timeout(), async {
            k.keep_alive().await?;
            stream.message().await
        })
        .await;
        return match answer {
            Ok(Ok(Some(resp))) => Ok(resp.ttl() > 0),
            Ok(Ok(None)) => Err(FleetError::WatchCanceled("etcd closed the keep-alive stream".into())),
            Ok(Err(source)) => Err(FleetError::Etcd { op: "keep-alive", source }),
            Err(_) => Err(FleetError::Timeout {
                op: "keep-alive",
                timeout: store.timeout(),
            }),
        };
    }
    // Opening the stream renews once; etcd-client reports an expired lease as an error.
    match store
        .call("keep-alive", |mut c| async move { c.lease_keep_alive(lease).await })
        .await
    {
        Ok(opened) => {
            *keeper = Some(opened);
            Ok(true)
        }
        Err(FleetError::Etcd {
            source: etcd_client::Error::LeaseKeepAliveError(message),
            ..
        }) if message == "lease not found" => Ok(false),
        Err(e) => Err(e),
    }
}

fn retry_pause(failures: u32, ttl: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(6);
    (Duration::from_millis(200) * 2u32.pow(exp)).min(ttl)
}
