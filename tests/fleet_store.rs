//! The fleet store against a real 3-member etcd cluster on loopback.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use common::within;
use cutover::config::fleet::ClientIdentity;
use cutover::config::weight_file::{HISTORY_LEN, HistoryEntry};
use cutover::fleet::{
    EtcdAuth, EtcdTls, FleetSettings, FleetStore, FleetTable, FleetWatch, HistoryEdit, ReplicaInfo, SeedError, WatchEvent, WriteError,
};

const PREFIX: &str = "/cutover/test";

fn settings(endpoints: Vec<String>, replica: &str) -> FleetSettings {
    FleetSettings::new(endpoints, PREFIX, replica)
}

fn store(endpoints: Vec<String>) -> FleetStore {
    FleetStore::new(&settings(endpoints, "r1"))
}

/// A weight table whose `new` share says which write it is.
fn table(n: u32) -> String {
    format!("api: {{ legacy: {}, new: {n} }}\n", 100 - n)
}

fn table_number(text: &str) -> u32 {
    let start = text.find("new: ").expect("a table from `table`") + 5;
    text[start..]
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .expect("a number")
}

fn entry(who: &str) -> HistoryEntry {
    HistoryEntry {
        time: "2026-01-01T00:00:00Z".into(),
        who: who.into(),
        why: format!("change by {who}"),
        before: Default::default(),
        after: Default::default(),
    }
}

fn whos(history: &[HistoryEntry]) -> Vec<String> {
    history.iter().map(|e| e.who.clone()).collect()
}

fn replica(id: &str) -> ReplicaInfo {
    ReplicaInfo {
        id: id.into(),
        admin_addr: "127.0.0.1:9901".into(),
        version: "test".into(),
        applied_revision: None,
        details: Default::default(),
    }
}

/// Writes table `n` on top of `base`, like an operator would: a write whose
/// outcome is unknown (etcd unreachable, a timeout) is read back to tell.
async fn write_next(store: &FleetStore, base: i64, n: u32) -> i64 {
    loop {
        match store.write_if(Some(base), &table(n), HistoryEdit::Keep).await {
            Ok(revision) => return revision,
            Err(WriteError::Conflict { current: Some(t) }) if t.text == table(n) => return t.revision,
            Err(WriteError::Conflict { current }) => panic!("unexpected conflict writing {n} on {base}: {current:?}"),
            Err(WriteError::Store(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Ok(Some(t)) = store.read().await
                    && t.text == table(n)
                {
                    return t.revision;
                }
            }
        }
    }
}

/// Polls `check` every 50 ms until it holds; fails after 30 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 30s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next event (within 30 s) other than a connection change.
async fn next_event(watch: &mut FleetWatch) -> WatchEvent {
    let next = async {
        loop {
            match watch.next().await {
                WatchEvent::Connected | WatchEvent::Disconnected(_) => {}
                other => return other,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), next)
        .await
        .expect("the watch reported nothing within 30s")
}

/// The next table the watch reports (within 30 s).
async fn next_table(watch: &mut FleetWatch) -> FleetTable {
    match next_event(watch).await {
        WatchEvent::Table(t) => t,
        other => panic!("expected a table, got {other:?}"),
    }
}

#[tokio::test]
async fn a_write_from_a_stale_revision_gets_a_conflict_with_the_current_table() {
    within(90, async {
        let cluster = EtcdCluster::start(3).await;
        let store = store(cluster.endpoints());
        assert_eq!(store.read().await.unwrap(), None);

        let first = store.write_if(None, &table(10), HistoryEdit::Push(entry("a"))).await.unwrap();
        let current = FleetTable {
            text: table(10),
            revision: first,
        };
        assert_eq!(store.read().await.unwrap(), Some(current.clone()));
        match store.write_if(None, &table(20), HistoryEdit::Push(entry("x"))).await {
            Err(WriteError::Conflict { current: Some(t) }) => assert_eq!(t, current),
            other => panic!("creating over an existing table: {other:?}"),
        }

        let second = store
            .write_if(Some(first), &table(20), HistoryEdit::Push(entry("b")))
            .await
            .unwrap();
        assert!(second > first);
        match store.write_if(Some(first), &table(30), HistoryEdit::Push(entry("x"))).await {
            Err(WriteError::Conflict { current: Some(t) }) => {
                assert_eq!(t.text, table(20));
                assert_eq!(t.revision, second);
            }
            other => panic!("a write from a stale revision: {other:?}"),
        }
        assert_eq!(store.read().await.unwrap().unwrap().text, table(20));

        // The history moves with the table, in the same transaction, and
        // refused writes leave no trace in it.
        let state = store.read_state().await.unwrap();
        assert_eq!(state.table.unwrap().revision, second);
        assert_eq!(whos(&state.history), ["a", "b"]);
        let third = store.write_if(Some(second), &table(25), HistoryEdit::Keep).await.unwrap();
        assert_eq!(whos(&store.history().await.unwrap()), ["a", "b"]);
        let fourth = store.write_if(Some(third), &table(10), HistoryEdit::PopNewest).await.unwrap();
        assert_eq!(whos(&store.history().await.unwrap()), ["a"]);

        let mut base = fourth;
        for i in 0..HISTORY_LEN + 3 {
            base = store
                .write_if(Some(base), &table(i as u32 % 100), HistoryEdit::Push(entry(&format!("w{i}"))))
                .await
                .unwrap();
        }
        let history = store.history().await.unwrap();
        assert_eq!(history.len(), HISTORY_LEN);
        assert_eq!(history.last().unwrap().who, format!("w{}", HISTORY_LEN + 2));
        assert_eq!(history[0].who, "w3");
        // `etcdctl get` shows the table as the YAML a person wrote.
        let shown = cluster.etcdctl(&["get", "--print-value-only", &format!("{PREFIX}/weights")]).await;
        assert_eq!(shown.trim_end(), table((HISTORY_LEN as u32 + 2) % 100).trim_end());
    })
    .await;
}

#[tokio::test]
async fn of_concurrent_writers_from_one_revision_exactly_one_wins() {
    within(90, async {
        let cluster = EtcdCluster::start(3).await;
        // Each writer has its own connection, as separate replicas would.
        let writers: Vec<FleetStore> = (0..6).map(|_| store(cluster.endpoints())).collect();
        let mut base = writers[0].write_if(None, &table(0), HistoryEdit::Keep).await.unwrap();
        let mut recorded = 0;
        for round in 1..=6u32 {
            // Recorded changes and unrecorded ones (a guard's ramp steps) alike.
            let record = round % 2 == 1;
            let attempts = writers.iter().enumerate().map(|(w, s)| {
                let text = table(round * 10 + w as u32);
                let edit = if record {
                    HistoryEdit::Push(entry(&format!("w{w}")))
                } else {
                    HistoryEdit::Keep
                };
                let s = s.clone();
                async move { (text.clone(), s.write_if(Some(base), &text, edit).await) }
            });
            let results = futures_util::future::join_all(attempts).await;
            let winners: Vec<(String, i64)> = results
                .iter()
                .filter_map(|(text, r)| r.as_ref().ok().map(|rev| (text.clone(), *rev)))
                .collect();
            assert_eq!(winners.len(), 1, "round {round}: {results:?}");
            let (won_text, won_revision) = winners[0].clone();
            for (_, result) in &results {
                match result {
                    Ok(_) => {}
                    Err(WriteError::Conflict { current: Some(t) }) => {
                        assert_eq!((t.text.as_str(), t.revision), (won_text.as_str(), won_revision));
                    }
                    Err(e) => panic!("round {round}: a loser got {e} instead of a conflict"),
                }
            }
            let now = writers[0].read_state().await.unwrap();
            assert_eq!(now.table.unwrap().text, won_text);
            // The losers wrote nothing to the history either.
            recorded += usize::from(record);
            assert_eq!(now.history.len(), recorded);
            base = won_revision;
        }
    })
    .await;
}

#[tokio::test]
async fn seed_refuses_to_overwrite_a_fleet_table_without_force() {
    within(90, async {
        let cluster = EtcdCluster::start(3).await;
        let store = store(cluster.endpoints());
        let seeded = store.seed(&table(0), false, Some(entry("seed"))).await.unwrap();
        match store.seed(&table(50), false, Some(entry("again"))).await {
            Err(SeedError::AlreadySeeded { current }) => {
                assert_eq!(
                    current,
                    FleetTable {
                        text: table(0),
                        revision: seeded
                    }
                );
            }
            other => panic!("a second seed without force: {other:?}"),
        }
        assert_eq!(store.read().await.unwrap().unwrap().text, table(0));
        let forced = store.seed(&table(50), true, Some(entry("forced"))).await.unwrap();
        assert!(forced > seeded);
        let state = store.read_state().await.unwrap();
        assert_eq!(state.table.unwrap().text, table(50));
        assert_eq!(whos(&state.history), ["seed", "forced"]);
    })
    .await;
}

#[tokio::test]
async fn the_watch_reports_every_write_in_order() {
    within(90, async {
        let cluster = EtcdCluster::start(3).await;
        let writer = store(cluster.endpoints());
        let reader = store(cluster.endpoints());

        // Without a revision, the watch starts with the current table.
        let mut base = writer.write_if(None, &table(0), HistoryEdit::Keep).await.unwrap();
        let mut watch = reader.watch(None);
        assert_eq!(next_table(&mut watch).await.revision, base);

        let mut written = Vec::new();
        for n in 1..=30 {
            base = writer.write_if(Some(base), &table(n), HistoryEdit::Keep).await.unwrap();
            written.push((n, base));
        }
        let mut seen = Vec::new();
        while seen.len() < written.len() {
            let t = next_table(&mut watch).await;
            seen.push((table_number(&t.text), t.revision));
        }
        assert_eq!(seen, written);

        // From a known revision it reports only what came after it.
        let mut from_middle = reader.watch(Some(written[19].1));
        assert_eq!(next_table(&mut from_middle).await.revision, written[20].1);
    })
    .await;
}

#[tokio::test]
async fn a_table_that_is_not_text_is_reported_and_a_forced_seed_replaces_it() {
    within(90, async {
        let cluster = EtcdCluster::start(3).await;
        let store = store(cluster.endpoints());
        let first = store.seed(&table(10), false, None).await.unwrap();
        let mut watch = store.watch(Some(first));

        // Someone writes bytes that are not text over the table.
        let mut raw = etcd_client::Client::connect(cluster.endpoints(), None).await.unwrap();
        let garbage = raw.put(format!("{PREFIX}/weights"), vec![0xff, 0xfe, b'\n'], None).await.unwrap();
        let garbage = garbage.header().unwrap().revision();
        let unreadable = |event: WatchEvent| match event {
            WatchEvent::Unreadable { revision, .. } => revision,
            other => panic!("expected an unreadable table, got {other:?}"),
        };
        assert_eq!(unreadable(next_event(&mut watch).await), garbage);
        // A watch that starts by reading the table reports it too, and goes on.
        let mut fresh = store.watch(None);
        assert_eq!(unreadable(next_event(&mut fresh).await), garbage);

        assert!(store.read().await.is_err());
        assert!(matches!(store.seed(&table(20), false, None).await, Err(SeedError::Store(_))));
        let fixed = store.seed(&table(20), true, Some(entry("fix"))).await.unwrap();
        for w in [&mut watch, &mut fresh] {
            let t = next_table(w).await;
            assert_eq!((t.text.as_str(), t.revision), (table(20).as_str(), fixed));
        }
        assert_eq!(store.read().await.unwrap().unwrap().text, table(20));
    })
    .await;
}

#[tokio::test]
async fn the_watch_survives_the_leader_being_killed_without_losing_or_reordering_a_revision() {
    within(180, async {
        let mut cluster = EtcdCluster::start(3).await;
        let writer = store(cluster.endpoints());
        let mut base = writer.write_if(None, &table(0), HistoryEdit::Keep).await.unwrap();
        let leader = cluster.leader().await;

        // One watch may reconnect to any member; the other watches the
        // leader alone and must resume where it was once the leader is back.
        // What each watch reported, kept where a failing check can show it.
        type Seen = Arc<Mutex<(Vec<(u32, i64)>, usize)>>;
        let collect = |mut watch: FleetWatch| {
            let seen: Seen = Arc::default();
            let into = seen.clone();
            let task = tokio::spawn(async move {
                loop {
                    let event = watch.next().await;
                    let mut seen = into.lock().unwrap();
                    match event {
                        WatchEvent::Table(t) => seen.0.push((table_number(&t.text), t.revision)),
                        WatchEvent::Disconnected(_) => seen.1 += 1,
                        WatchEvent::Connected => {}
                        other => panic!("unexpected watch event {other:?}"),
                    }
                }
            });
            (seen, task)
        };
        // Waits up to 30 s for the watch to report the last write.
        let reported = |seen: Seen, last: (u32, i64)| async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while seen.lock().unwrap().0.last() != Some(&last) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen.lock().unwrap().clone()
        };
        const LAST: u32 = 40;
        let (any_member, any_task) = collect(store(cluster.endpoints()).watch(Some(base)));
        let (leader_only, leader_task) = collect(store(vec![cluster.endpoint(leader)]).watch(Some(base)));

        let mut written = Vec::new();
        for n in 1..=LAST {
            if n == 15 {
                cluster.kill(leader);
            }
            base = write_next(&writer, base, n).await;
            written.push((n, base));
        }
        assert_ne!(cluster.leader().await, leader, "a new leader was elected");
        cluster.restart(leader).await;

        let last = *written.last().unwrap();
        let (seen, _) = reported(any_member, last).await;
        assert_eq!(seen, written, "the watch on every member");
        let (seen, disconnects) = reported(leader_only, last).await;
        assert_eq!(seen, written, "the watch on the killed leader");
        assert!(disconnects >= 1, "the leader's watch saw its member die");
        any_task.abort();
        leader_task.abort();
    })
    .await;
}

#[tokio::test]
async fn a_watch_behind_compaction_reads_the_current_table_and_follows_on() {
    within(120, async {
        let mut cluster = EtcdCluster::start(3).await;
        let writer = store(cluster.endpoints());
        let first = writer.write_if(None, &table(1), HistoryEdit::Keep).await.unwrap();
        let mut base = first;
        for n in 2..=5 {
            base = writer.write_if(Some(base), &table(n), HistoryEdit::Keep).await.unwrap();
        }
        cluster.etcdctl(&["compact", &base.to_string()]).await;

        // Starting from a compacted revision: the current table, then on.
        let mut watch = store(cluster.endpoints()).watch(Some(first));
        let t = next_table(&mut watch).await;
        assert_eq!((table_number(&t.text), t.revision), (5, base));
        base = writer.write_if(Some(base), &table(6), HistoryEdit::Keep).await.unwrap();
        assert_eq!(next_table(&mut watch).await.revision, base);

        // Resuming after a disconnect across a compaction: a watch on
        // member 0 alone loses it, the others move on and compact.
        let mut watch = store(vec![cluster.endpoint(0)]).watch(Some(base));
        base = writer.write_if(Some(base), &table(7), HistoryEdit::Keep).await.unwrap();
        assert_eq!(next_table(&mut watch).await.revision, base);
        cluster.stop(0);
        let disconnected = async { while !matches!(watch.next().await, WatchEvent::Disconnected(_)) {} };
        tokio::time::timeout(Duration::from_secs(30), disconnected)
            .await
            .expect("the watch reports that its member stopped");
        let others = store(vec![cluster.endpoint(1), cluster.endpoint(2)]);
        let missed = write_next(&others, base, 8).await;
        base = write_next(&others, missed, 9).await;
        cluster.etcdctl(&["compact", &base.to_string()]).await;
        cluster.restart(0).await;
        // Member 0 has applied the compaction before the watch asks it.
        let key = format!("{PREFIX}/weights");
        let old = format!("--rev={missed}");
        let (ok, out) = cluster.etcdctl_at(&cluster.endpoint(0), &["get", &key, &old]).await;
        assert!(!ok && out.contains("compacted"), "{out}");

        let t = next_table(&mut watch).await;
        assert_eq!(
            (table_number(&t.text), t.revision),
            (9, base),
            "the table after the compaction, not an older one"
        );
        base = writer.write_if(Some(base), &table(10), HistoryEdit::Keep).await.unwrap();
        let t = next_table(&mut watch).await;
        assert_eq!((table_number(&t.text), t.revision), (10, base));
    })
    .await;
}

#[tokio::test]
async fn a_registration_expires_when_its_replica_stops_renewing_and_comes_back_when_its_lease_is_lost() {
    within(120, async {
        let cluster = EtcdCluster::start(3).await;
        let ttl = Duration::from_secs(3);
        let mut a = settings(cluster.endpoints(), "replica-a");
        a.lease_ttl = ttl;
        let a = FleetStore::new(&a);
        let observer = store(cluster.endpoints());
        let listed = |id: &'static str| {
            let observer = observer.clone();
            async move { observer.replicas().await.unwrap().into_iter().find(|r| r.id == id) }
        };

        let registration = a.register(replica("ignored"));
        eventually("replica-a is listed", || async { listed("replica-a").await.is_some() }).await;
        let mut info = replica("replica-a");
        info.applied_revision = Some(42);
        info.details.insert("guard".into(), serde_json::json!({"api": "ok"}));
        registration.update(info.clone());
        eventually("replica-a's update is listed", || async {
            listed("replica-a").await.as_ref() == Some(&info)
        })
        .await;
        // It renews: still listed after several lifetimes of its lease.
        tokio::time::sleep(ttl * 2).await;
        assert_eq!(listed("replica-a").await, Some(info.clone()));

        // The lease is lost (revoked behind its back): it registers again.
        let key = format!("{PREFIX}/replicas/replica-a");
        let lease_of = |out: String| -> u64 {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            v["kvs"][0]["lease"].as_u64().unwrap_or(0)
        };
        let lost = lease_of(cluster.etcdctl(&["get", &key, "--write-out=json"]).await);
        cluster.etcdctl(&["lease", "revoke", &format!("{lost:x}")]).await;
        eventually("replica-a is registered under a new lease", || async {
            let now = lease_of(cluster.etcdctl(&["get", &key, "--write-out=json"]).await);
            now != 0 && now != lost
        })
        .await;
        assert_eq!(
            listed("replica-a").await,
            Some(info.clone()),
            "registered again with what it said last"
        );
        assert!(registration.is_registered());

        // A crash: the keep-alives stop, nothing is revoked.
        drop(registration);
        let dropped = Instant::now();
        assert!(listed("replica-a").await.is_some(), "still there until the lease expires");
        eventually("replica-a's registration expires", || async { listed("replica-a").await.is_none() }).await;
        let gone_after = dropped.elapsed();
        assert!(gone_after <= ttl + Duration::from_secs(3), "gone after {gone_after:?}");

        // A clean shutdown removes it at once.
        let mut b = settings(cluster.endpoints(), "replica-b");
        b.lease_ttl = Duration::from_secs(30);
        let b = FleetStore::new(&b).register(replica("replica-b"));
        eventually("replica-b is registered", || async { b.is_registered() }).await;
        b.deregister().await.unwrap();
        assert_eq!(listed("replica-b").await, None);
    })
    .await;
}

#[tokio::test]
async fn every_call_is_bounded_when_etcd_does_not_answer() {
    within(60, async {
        // Accepts connections and never answers, like a hung member.
        let hung = common::hanging_upstream().await;
        let mut s = settings(vec![format!("http://{hung}")], "r1");
        s.request_timeout = Duration::from_millis(500);
        let store = FleetStore::new(&s);
        let bound = Duration::from_secs(3);

        let started = Instant::now();
        assert!(store.read().await.is_err());
        assert!(matches!(
            store.write_if(None, &table(1), HistoryEdit::Keep).await,
            Err(WriteError::Store(_))
        ));
        assert!(store.replicas().await.is_err());
        assert!(matches!(store.seed(&table(1), false, None).await, Err(SeedError::Store(_))));
        assert!(started.elapsed() < bound * 4, "took {:?}", started.elapsed());

        let mut watch = store.watch(None);
        match tokio::time::timeout(bound, watch.next()).await {
            Ok(WatchEvent::Disconnected(_)) => {}
            other => panic!("a watch on a hung etcd: {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn the_store_speaks_tls_with_a_client_certificate() {
    within(90, async {
        let cluster = EtcdCluster::start_tls(1).await;
        let files = cluster.tls().clone();
        let read = |p: &std::path::Path| std::fs::read(p).unwrap();
        let tls = |ca: Vec<u8>, identity: bool| EtcdTls {
            ca_file: None,
            ca_pem: Some(ca),
            identity: identity.then(|| ClientIdentity {
                cert_file: files.client_cert.clone(),
                cert_pem: read(&files.client_cert),
                key_file: files.client_key.clone(),
                key_pem: read(&files.client_key),
            }),
        };
        let with = |tls: EtcdTls| {
            let mut s = settings(cluster.endpoints(), "r1");
            s.tls = Some(tls);
            FleetStore::new(&s)
        };

        let store = with(tls(read(&files.ca), true));
        let revision = store.write_if(None, &table(10), HistoryEdit::Keep).await.unwrap();
        let mut watch = store.watch(None);
        assert_eq!(next_table(&mut watch).await.revision, revision);

        // Without a client certificate etcd refuses the connection.
        assert!(with(tls(read(&files.ca), false)).read().await.is_err());
        // A server whose certificate another CA signed is not trusted.
        let other_ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        assert!(with(tls(other_ca.cert.pem().into_bytes(), true)).read().await.is_err());
    })
    .await;
}

#[tokio::test]
async fn the_store_logs_in_as_its_etcd_user_and_never_shows_the_password() {
    within(90, async {
        let cluster = EtcdCluster::start(1).await;
        // A user that may touch this fleet's keys only.
        for args in [
            &["user", "add", "root:root-pass"][..],
            &["user", "add", "cutover:s3cret-pass"],
            &["role", "add", "fleet"],
            &[
                "role",
                "grant-permission",
                "fleet",
                "--prefix=true",
                "readwrite",
                &format!("{PREFIX}/"),
            ],
            &["user", "grant-role", "cutover", "fleet"],
            &["auth", "enable"],
        ] {
            cluster.etcdctl(args).await;
        }
        let with = |password: &str| {
            let mut s = settings(cluster.endpoints(), "r1");
            s.auth = Some(EtcdAuth {
                username: "cutover".into(),
                password: password.into(),
            });
            FleetStore::new(&s)
        };

        let fleet = with("s3cret-pass");
        let revision = fleet.write_if(None, &table(10), HistoryEdit::Push(entry("a"))).await.unwrap();
        assert_eq!(fleet.read().await.unwrap().unwrap().revision, revision);
        let registration = fleet.register(replica("r1"));
        eventually("r1 is registered", || async { registration.is_registered() }).await;
        assert!(format!("{fleet:?}").contains("r1") && !format!("{fleet:?}").contains("s3cret"));

        let wrong = with("wrong-pass-123");
        let err = wrong.read().await.unwrap_err();
        let shown = format!("{err} {err:?} {wrong:?}");
        assert!(!shown.contains("wrong-pass-123"), "{shown}");
        // Nobody without a password gets in.
        assert!(store(cluster.endpoints()).read().await.is_err());
    })
    .await;
}
