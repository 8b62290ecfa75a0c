//! A backend host's addresses, looked up off the request path.
//!
//! A name is looked up when first needed and kept. It is looked up again in
//! the background once the addresses are older than [`REFRESH`], or a
//! second after a connect to every one of them failed (the backend may have
//! moved). A failed lookup keeps the addresses known before it: a resolver
//! outage changes nothing for backends already found. One lookup per
//! backend runs at a time, so a resolver that hangs holds one thread, not
//! one per request. Connects start at the next address in turn, so a name
//! with several (a scaled service) spreads the connections over them.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How long looked-up addresses are used before they are looked up again.
pub const REFRESH: Duration = Duration::from_secs(5);
/// How soon a failed lookup, or addresses that all failed to connect, are
/// looked up again.
const RETRY: Duration = Duration::from_secs(1);

type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;
/// Looks up a host and port: the system resolver, or a scripted one in tests.
type Lookup = Arc<dyn Fn(&str, u16) -> LookupFuture + Send + Sync>;

/// Where a backend's connections go.
pub struct Addresses(Source);

enum Source {
    /// An IP address in the URL: nothing to look up.
    Fixed([SocketAddr; 1]),
    Named(Arc<Named>),
}

struct Named {
    /// The backend's name, for messages.
    backend: Arc<str>,
    host: Box<str>,
    port: u16,
    lookup: Lookup,
    known: watch::Sender<Known>,
    looking_up: AtomicBool,
    /// Every address failed to connect since the last lookup.
    suspect: AtomicBool,
    next: AtomicUsize,
}

#[derive(Clone, Default)]
struct Known {
    addrs: Arc<[SocketAddr]>,
    /// When the last lookup ended; `None` before the first.
    at: Option<Instant>,
    /// Why the last lookup failed.
    error: Option<Arc<str>>,
}

impl Addresses {
    /// The addresses of `host` (an IP address or a name, IPv6 without brackets) and `port`.
    pub fn new(backend: Arc<str>, host: &str, port: u16) -> Addresses {
        Addresses::with_lookup(backend, host, port, Arc::new(system_lookup))
    }

    fn with_lookup(backend: Arc<str>, host: &str, port: u16, lookup: Lookup) -> Addresses {
        match host.parse::<IpAddr>() {
            Ok(ip) => Addresses(Source::Fixed([SocketAddr::new(ip, port)])),
            Err(_) => Addresses(Source::Named(Arc::new(Named {
                backend,
                host: host.into(),
                port,
                lookup,
                known: watch::Sender::new(Known::default()),
                looking_up: AtomicBool::new(false),
                suspect: AtomicBool::new(false),
                next: AtomicUsize::new(0),
            }))),
        }
    }

    /// `addrs`, as though a name resolved to them.
    #[cfg(test)]
    pub(super) fn scripted(addrs: Vec<SocketAddr>) -> Addresses {
        let lookup: Lookup = Arc::new(move |_, _| {
            let addrs = addrs.clone();
            Box::pin(async move { Ok(addrs) })
        });
        Addresses::with_lookup("new".into(), "backend.internal", 80, lookup)
    }

    /// The addresses to try, in order; waits only for a first lookup (or
    /// the next one after a failed first lookup).
    pub async fn to_connect(&self) -> io::Result<Vec<SocketAddr>> {
        match &self.0 {
            Source::Fixed(addr) => Ok(addr.to_vec()),
            Source::Named(named) => {
                let addrs = named.current().await?;
                let start = named.next.fetch_add(1, Ordering::Relaxed) % addrs.len();
                Ok(addrs[start..].iter().chain(&addrs[..start]).copied().collect())
            }
        }
    }

    /// A connect to every address failed: they may be out of date.
    pub fn all_failed(&self) {
        if let Source::Named(named) = &self.0 {
            named.suspect.store(true, Ordering::Relaxed);
        }
    }
}

impl Named {
    async fn current(self: &Arc<Self>) -> io::Result<Arc<[SocketAddr]>> {
        let mut known = self.known.subscribe();
        loop {
            let (addrs, error, due) = {
                let k = known.borrow_and_update();
                (k.addrs.clone(), k.error.clone(), self.due(&k, Instant::now()))
            };
            if due {
                self.look_up_in_background();
            }
            if !addrs.is_empty() {
                return Ok(addrs);
            }
            if let Some(error) = error
                && !due
            {
                return Err(io::Error::other(error.to_string()));
            }
            // The sender lives as long as `self`: this cannot fail.
            let _ = known.changed().await;
        }
    }

    fn due(&self, known: &Known, now: Instant) -> bool {
        let Some(at) = known.at else { return true };
        let age = now.saturating_duration_since(at);
        let doubtful = known.error.is_some() || self.suspect.load(Ordering::Relaxed);
        age >= REFRESH || (doubtful && age >= RETRY)
    }

    /// Starts a lookup unless one is running; its task outlives any request
    /// that gives up waiting for it.
    fn look_up_in_background(self: &Arc<Self>) {
        if self.looking_up.swap(true, Ordering::AcqRel) {
            return;
        }
        let named = self.clone();
        tokio::spawn(async move {
            let looked_up = (named.lookup)(&named.host, named.port).await;
            named.suspect.store(false, Ordering::Relaxed);
            named.known.send_modify(|known| named.update(known, looked_up));
            named.looking_up.store(false, Ordering::Release);
        });
    }

    fn update(&self, known: &mut Known, looked_up: io::Result<Vec<SocketAddr>>) {
        let (backend, host) = (&*self.backend, format_args!("{}:{}", self.host, self.port));
        known.at = Some(Instant::now());
        match looked_up {
            Ok(addrs) if !addrs.is_empty() => {
                if known.error.take().is_some() && !known.addrs.is_empty() {
                    tracing::info!(backend, %host, "the backend's host name resolves again");
                }
                if *known.addrs != *addrs {
                    if !known.addrs.is_empty() {
                        tracing::info!(backend, %host, addresses = ?addrs, "the backend's host name resolves to new addresses");
                    }
                    known.addrs = addrs.into();
                }
            }
            failed => {
                let error: Arc<str> = match failed {
                    Err(e) => e.to_string().into(),
                    Ok(_) => "no addresses".into(),
                };
                if known.error.as_deref() != Some(&*error) {
                    if known.addrs.is_empty() {
                        tracing::warn!(backend, %host, %error, "cannot resolve the backend's host name: its connections fail until it resolves");
                    } else {
                        tracing::warn!(backend, %host, %error, addresses = ?known.addrs, "cannot resolve the backend's host name: connecting to the addresses known before");
                    }
                }
                known.error = Some(error);
            }
        }
    }
}

fn system_lookup(host: &str, port: u16) -> LookupFuture {
    let host = host.to_owned();
    Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU32;

    /// A resolver that answers what the test says, counting its lookups.
    #[derive(Clone, Default)]
    struct Script {
        answer: Arc<Mutex<Option<io::Result<Vec<SocketAddr>>>>>,
        lookups: Arc<AtomicU32>,
        /// Held by the test to keep lookups from finishing.
        gate: Arc<tokio::sync::Mutex<()>>,
    }

    impl Script {
        fn answer(&self, answer: io::Result<&[&str]>) {
            let answer = answer.map(|a| a.iter().map(|s| s.parse().unwrap()).collect());
            *self.answer.lock().unwrap() = Some(answer);
        }

        fn addresses(&self) -> Addresses {
            let script = self.clone();
            Addresses::with_lookup(
                "new".into(),
                "backend.internal",
                8000,
                Arc::new(move |_, _| {
                    let script = script.clone();
                    Box::pin(async move {
                        script.lookups.fetch_add(1, Ordering::SeqCst);
                        let _open = script.gate.lock().await;
                        match script.answer.lock().unwrap().as_ref().unwrap() {
                            Ok(addrs) => Ok(addrs.clone()),
                            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                        }
                    })
                }),
            )
        }

        fn lookups(&self) -> u32 {
            self.lookups.load(Ordering::SeqCst)
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn failure() -> io::Result<&'static [&'static str]> {
        Err(io::Error::other("Temporary failure in name resolution"))
    }

    /// Lets the background lookup task run to its end.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn an_ip_address_is_used_as_it_is() {
        let v6 = Addresses::new("new".into(), "::1", 8000);
        assert_eq!(v6.to_connect().await.unwrap(), addrs(&["[::1]:8000"]));
        let v4 = Addresses::new("new".into(), "127.0.0.1", 80);
        assert_eq!(v4.to_connect().await.unwrap(), addrs(&["127.0.0.1:80"]));
    }

    #[tokio::test]
    async fn localhost_resolves_through_the_system_resolver() {
        let addresses = Addresses::new("new".into(), "localhost", 8000);
        let found = addresses.to_connect().await.unwrap();
        assert!(
            !found.is_empty() && found.iter().all(|a| a.ip().is_loopback() && a.port() == 8000),
            "{found:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_is_looked_up_once_and_again_only_when_its_addresses_are_old() {
        let script = Script::default();
        script.answer(Ok(&["10.0.0.1:8000"]));
        let addresses = script.addresses();
        for _ in 0..50 {
            assert_eq!(addresses.to_connect().await.unwrap(), addrs(&["10.0.0.1:8000"]));
        }
        assert_eq!(script.lookups(), 1);

        // Old: the old addresses serve while the new lookup runs.
        tokio::time::advance(REFRESH).await;
        script.answer(Ok(&["10.0.0.2:8000"]));
        assert_eq!(addresses.to_connect().await.unwrap(), addrs(&["10.0.0.1:8000"]));
        settle().await;
        assert_eq!(addresses.to_connect().await.unwrap(), addrs(&["10.0.0.2:8000"]));
        assert_eq!(script.lookups(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_lookup_keeps_the_addresses_known_before() {
        let script = Script::default();
        script.answer(Ok(&["10.0.0.1:8000"]));
        let addresses = script.addresses();
        addresses.to_connect().await.unwrap();

        script.answer(failure());
        for _ in 0..3 {
            tokio::time::advance(REFRESH).await;
            assert_eq!(addresses.to_connect().await.unwrap(), addrs(&["10.0.0.1:8000"]));
            settle().await;
            assert_eq!(addresses.to_connect().await.unwrap(), addrs(&["10.0.0.1:8000"]));
        }
        // A failed lookup is tried again after a second, not after five.
        let before = script.lookups();
        script.answer(Ok(&["10.0.0.3:8000"]));
        tokio::time::advance(RETRY).await;
        addresses.to_connect().await.unwrap();
        settle().await;
        assert_eq!(script.lookups(), before + 1);
        assert_eq!(addresses.to_connect().await.unwrap(), addrs(&["10.0.0.3:8000"]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_that_never_resolved_fails_and_is_asked_at_most_once_a_second() {
        let script = Script::default();
        script.answer(failure());
        let addresses = script.addresses();
        for _ in 0..20 {
            let error = addresses.to_connect().await.unwrap_err();
            assert!(error.to_string().contains("Temporary failure in name resolution"), "{error}");
        }
        assert_eq!(script.lookups(), 1);
        tokio::time::advance(RETRY).await;
        script.answer(Ok(&["10.0.0.1:8000"]));
        assert_eq!(addresses.to_connect().await.unwrap(), addrs(&["10.0.0.1:8000"]));
        assert_eq!(script.lookups(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_waiting_for_a_first_lookup_share_it() {
        let script = Script::default();
        script.answer(Ok(&["10.0.0.1:8000"]));
        let addresses = Arc::new(script.addresses());
        let gate = script.gate.lock().await;
        let waiting: Vec<_> = (0..20)
            .map(|_| {
                let addresses = addresses.clone();
                tokio::spawn(async move { addresses.to_connect().await.unwrap() })
            })
            .collect();
        settle().await;
        drop(gate);
        for task in waiting {
            assert_eq!(task.await.unwrap(), addrs(&["10.0.0.1:8000"]));
        }
        assert_eq!(script.lookups(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn addresses_that_all_failed_to_connect_are_looked_up_again_after_a_second() {
        let script = Script::default();
        script.answer(Ok(&["10.0.0.1:8000"]));
        let addresses = script.addresses();
        addresses.to_connect().await.unwrap();
        script.answer(Ok(&["10.0.0.9:8000"]));
        addresses.all_failed();
        tokio::time::advance(RETRY).await;
        addresses.to_connect().await.unwrap();
        settle().await;
        assert_eq!(addresses.to_connect().await.unwrap(), addrs(&["10.0.0.9:8000"]));
        assert_eq!(script.lookups(), 2);
    }

    #[tokio::test]
    async fn connects_start_at_each_address_in_turn() {
        let script = Script::default();
        script.answer(Ok(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]));
        let addresses = script.addresses();
        let mut firsts = Vec::new();
        for _ in 0..6 {
            let to_try = addresses.to_connect().await.unwrap();
            assert_eq!(to_try.len(), 3, "every address is tried: {to_try:?}");
            firsts.push(to_try[0]);
        }
        let (a, b, c) = ("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80");
        assert_eq!(firsts, addrs(&[a, b, c, a, b, c]));
    }
}
