//! This process as a member of a fleet: the tasks that drive `Live` from
//! the fleet table in etcd and report back to it. They sit above `Live`
//! and the guard; the fleet's state and store (`crate::fleet`) sit below.

mod follow;
pub mod report;
mod write;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::guard::Guard;
use crate::live::Live;

/// Starts fleet mode's tasks for a running replica (when its config has a
/// `fleet:` section): following the fleet table, writing held rollbacks,
/// and keeping the replica registered. The returned task ends once the
/// replica has left the fleet after `shutdown`.
pub fn spawn(live: &Arc<Live>, guard: &Arc<Guard>, admin: SocketAddr, shutdown: &CancellationToken) -> Option<JoinHandle<()>> {
    let fleet = live.fleet()?.clone();
    tokio::spawn(follow::follow(fleet.clone(), live.clone(), shutdown.clone()));
    tokio::spawn(write::keep_writing(fleet.clone(), live.clone(), shutdown.clone()));
    Some(tokio::spawn(report::keep_reporting(
        fleet,
        live.clone(),
        guard.clone(),
        admin,
        shutdown.clone(),
    )))
}
