//! Automatic rollback: the guard's controller. Once a second it reads the
//! windows each table records ([`crate::table::window`]); once a window
//! holds `min_requests`, a non-stable backend crossing any threshold rolls
//! its route back to the stable backend through [`Live::apply`], exactly
//! like `cutover rollback` — persisted, in the history with the reason,
//! counted — at once or in one-second steps over the route's ramp. The
//! route stays there until an operator shifts it again.
//!
//! Passive ejection and the guard work together: requests diverted from a
//! backend that is down count as its failures (see the recorder), and
//! `max_ejections` ejections within the window roll the route back whatever
//! the traffic, so a broken backend is not left flapping between ejected and
//! failing on a quiet route.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::change::{Change, GUARD, RollbackCause, Routes};
use crate::clock;
use crate::live::Live;
use crate::table::window::breach;

/// How often the guard looks at its windows.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What the guard last did on a route, for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct GuardEvent {
    pub time: String,
    pub backend: String,
    pub reason: String,
    pub ramp_seconds: Option<u64>,
}

/// The guard of every route, over the live table.
pub struct Guard {
    live: Arc<Live>,
    /// The last rollback per route; kept across reloads.
    events: Mutex<HashMap<String, GuardEvent>>,
    /// Routes being ramped back: not judged again until the ramp ends.
    ramping: Mutex<HashSet<String>>,
}

impl Guard {
    pub fn new(live: Arc<Live>) -> Arc<Guard> {
        Arc::new(Guard {
            live,
            events: Mutex::default(),
            ramping: Mutex::default(),
        })
    }

    /// Checks every [`CHECK_EVERY`] until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(CHECK_EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {
                    let guard = self.clone();
                    // Rolling back writes the weight file: off the async workers.
                    let _ = tokio::task::spawn_blocking(move || guard.check()).await;
                }
            }
        }
    }

    /// The guard's last rollback of `route`.
    pub fn last_rollback(&self, route: &str) -> Option<GuardEvent> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).get(route).cloned()
    }

    fn is_ramping(&self, route: &str) -> bool {
        self.ramping.lock().unwrap_or_else(|e| e.into_inner()).contains(route)
    }

    /// One pass over every guarded route. Blocking (a rollback writes the
    /// weight file); a ramp continues on the runtime.
    pub fn check(self: &Arc<Self>) {
        let table = self.live.load();
        for (ri, route) in table.config.routes.iter().enumerate() {
            let Some(windows) = &table.routes[ri].guard else {
                continue;
            };
            if self.is_ramping(&route.name) {
                continue;
            }
            let weights = table.weights.route(ri);
            for (bi, b) in route.backends.iter().enumerate() {
                if bi == route.stable {
                    continue;
                }
                windows.take_ejections(bi, table.routes[ri].backends[bi].health.ejections());
                if weights[bi] == 0 {
                    continue;
                }
                let Some(breach) = breach(&windows.spec, &windows.stats(bi)) else {
                    continue;
                };
                let reason = format!("{GUARD}: backend {} {breach}", b.spec.name);
                tracing::warn!(route = %route.name, backend = %b.spec.name, "{reason}: rolling back to {}", route.backends[route.stable].spec.name);
                self.events.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    route.name.to_string(),
                    GuardEvent {
                        time: clock::now_rfc3339(),
                        backend: b.spec.name.to_string(),
                        reason: reason.clone(),
                        ramp_seconds: windows.spec.ramp.map(|d| d.as_secs()),
                    },
                );
                match windows.spec.ramp {
                    None => {
                        let change = Change::rollback(GUARD, Routes::Named(vec![route.name.to_string()]), RollbackCause::Guard)
                            .because(Some(reason));
                        if let Err(e) = self.live.apply(change) {
                            tracing::error!(route = %route.name, error = %e, "guard rollback failed");
                        }
                    }
                    Some(ramp) => {
                        self.ramping
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(route.name.to_string());
                        tokio::spawn(self.clone().ramp_down(route.name.to_string(), reason, ramp));
                    }
                }
                break;
            }
        }
    }

    /// Moves a route's weight back to its stable backend in one-second steps.
    async fn ramp_down(self: Arc<Self>, route: String, reason: String, ramp: Duration) {
        let steps = ramp.as_secs().max(1);
        let start = {
            let table = self.live.load();
            table.config.route_index(&route).map(|ri| table.weights.route(ri).to_vec())
        };
        if let Some(start) = start {
            for step in 1..=steps {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let live = self.live.clone();
                let change = Change::ramp_step(&route, step, steps, start.clone(), &reason);
                match tokio::task::spawn_blocking(move || live.apply(change)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(route = %route, "guard ramp stopped: {e}");
                        break;
                    }
                    Err(e) => {
                        tracing::error!(route = %route, error = %e, "guard ramp step failed");
                        break;
                    }
                }
            }
        }
        self.ramping.lock().unwrap_or_else(|e| e.into_inner()).remove(&route);
    }
}
