//! Following the fleet table: every revision the watch reports is checked
//! against this replica's config like a weight file and, when it fits,
//! applied through [`Live::apply`] (which also caches it in the weight
//! file); when it does not, it is kept out whole and reported as config
//! skew. Runs in a task of its own: requests never wait on it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::change::{Change, ChangeError};
use crate::fleet::{Fleet, FleetTable, Rejected, WatchEvent};
use crate::live::Live;

/// Follows the fleet table until `shutdown`.
pub(crate) async fn follow(fleet: Arc<Fleet>, live: Arc<Live>, shutdown: CancellationToken) {
    // `None`: the current table comes first, whatever the weight file holds.
    let mut watch = fleet.store.watch(None);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = fleet.wake_follower.notified() => {
                if let Some(table) = fleet.rejected_table() {
                    apply(&fleet, &live, table).await;
                }
                continue;
            }
            event = watch.next() => event,
        };
        match event {
            WatchEvent::Connected => {
                fleet.set_connected(true, None);
                fleet.wake_writer.notify_one();
                match fleet.store.read_state().await {
                    Ok(state) => {
                        if state.table.is_none() {
                            fleet.set_unseeded();
                        }
                        fleet.set_last_change(state.history.last().cloned());
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot read the fleet table"),
                }
            }
            WatchEvent::Disconnected(e) => fleet.set_connected(false, Some(e.to_string())),
            WatchEvent::Table(table) => apply(&fleet, &live, table).await,
            WatchEvent::Removed { revision } => {
                tracing::warn!(revision, "the fleet table was deleted from etcd: serving the last applied table");
                fleet.set_unseeded();
            }
            WatchEvent::Unreadable { revision, error } => fleet.reject(Rejected {
                revision,
                reason: "unreadable",
                error: error.to_string(),
                text: None,
            }),
        }
    }
}

/// Applies one fleet table, or reports why it was kept out.
async fn apply(fleet: &Arc<Fleet>, live: &Arc<Live>, table: FleetTable) {
    let revision = table.revision;
    let change = Change::fleet_table(table.text.clone(), revision);
    let applying = live.clone();
    match tokio::task::spawn_blocking(move || applying.apply(change)).await {
        Ok(Ok(changed)) => {
            if changed.installed {
                tracing::debug!(revision, "fleet table applied");
            }
            match fleet.store.history().await {
                Ok(history) => fleet.set_last_change(history.last().cloned()),
                Err(e) => tracing::debug!(error = %e, "cannot read the fleet's history"),
            }
        }
        Ok(Err(ChangeError::Skew { revision, error })) => fleet.reject(Rejected {
            revision,
            reason: "skew",
            error: error.to_string(),
            text: Some(table.text),
        }),
        Ok(Err(e)) => tracing::error!(revision, error = %e, "cannot apply the fleet table"),
        Err(e) => tracing::error!(revision, error = %e, "applying the fleet table failed"),
    }
}
