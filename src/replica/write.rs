//! Writing rollbacks held while etcd did not take them.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::fleet::Fleet;
use crate::live::Live;

/// Pauses between attempts to write held rollbacks grow from this...
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// ...to this.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Writes held rollbacks in the background until none is left: at once
/// when woken (a rollback was held, etcd came back), else retrying with
/// growing pauses.
pub(crate) async fn keep_writing(fleet: Arc<Fleet>, live: Arc<Live>, shutdown: CancellationToken) {
    let mut failures = 0u32;
    loop {
        let pause = if fleet.unwritten() == 0 {
            Duration::from_secs(3600)
        } else {
            retry_pause(failures)
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = fleet.wake_writer.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
        if fleet.unwritten() == 0 {
            failures = 0;
            continue;
        }
        let config = live.load().config.clone();
        let written = {
            let _writing = fleet.write_lock.lock().await;
            fleet.write_held(&config).await
        };
        match written {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::error!(
                        held = fleet.unwritten(),
                        error = %e,
                        "rollbacks live on this replica are NOT yet in the fleet table; retrying until etcd takes them"
                    );
                }
            }
        }
    }
}

fn retry_pause(failures: u32) -> Duration {
    (RETRY_FIRST * 2u32.pow(failures.min(5))).min(RETRY_MAX)
}
