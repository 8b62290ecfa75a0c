//! A real etcd cluster on loopback: members on ephemeral ports with data
//! dirs in a temporary folder (in memory where /dev/shm exists), stopped,
//! killed and restarted at will, all killed on drop; optionally serving
//! clients over TLS with client certificates. Needs `etcd` and `etcdctl`
//! (Debian's etcd-server and etcd-client) on PATH.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct EtcdCluster {
    dir: tempfile::TempDir,
    token: String,
    members: Vec<Member>,
    tls: Option<TlsFiles>,
}

/// PEM files of a cluster that serves clients over TLS: its CA, and a
/// client certificate it accepts.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdCluster {
    /// Starts `size` members and waits until every one is healthy.
    pub async fn start(size: usize) -> EtcdCluster {
        EtcdCluster::launch(size, false).await
    }

    /// Like [`EtcdCluster::start`], clients speaking TLS and showing a
    /// certificate signed by the cluster's own CA ([`EtcdCluster::tls`]).
    pub async fn start_tls(size: usize) -> EtcdCluster {
        EtcdCluster::launch(size, true).await
    }

    /// The CA and client certificate of a TLS cluster.
    pub fn tls(&self) -> &TlsFiles {
        self.tls.as_ref().expect("a cluster started with start_tls")
    }

    async fn launch(size: usize, tls: bool) -> EtcdCluster {
        let dir = match std::fs::metadata("/dev/shm") {
            Ok(m) if m.is_dir() => tempfile::Builder::new().prefix("etcd-test").tempdir_in("/dev/shm"),
            _ => tempfile::Builder::new().prefix("etcd-test").tempdir(),
        }
        .expect("temporary folder for etcd");
        // Held together so the ports are distinct, released just before use.
        let listeners: Vec<TcpListener> = (0..size * 2)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("free port"))
            .collect();
        let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
        drop(listeners);
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let token = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "etcd-test".into());
        let tls = tls.then(|| make_certificates(dir.path()));
        let mut cluster = EtcdCluster { dir, token, members, tls };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster.wait_healthy().await;
        cluster
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    pub fn endpoint(&self, member: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[member].client_port)
    }

    /// The client URLs of the members that run.
    pub fn running_endpoints(&self) -> Vec<String> {
        (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some())
            .map(|i| self.endpoint(i))
            .collect()
    }

    /// SIGKILL: the member dies at once, as in a crash.
    pub fn kill(&mut self, member: usize) {
        if let Some(mut child) = self.members[member].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within 10 s.
    pub fn stop(&mut self, member: usize) {
        let Some(mut child) = self.members[member].child.take() else {
            return;
        };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts a stopped member again on its data dir and waits until the
    /// cluster is healthy.
    pub async fn restart(&mut self, member: usize) {
        assert!(self.members[member].child.is_none(), "member {member} is running");
        self.spawn(member);
        self.wait_healthy().await;
    }

    /// Starts every stopped member again at once (a cluster whose quorum
    /// is down answers only once enough members are back) and waits until
    /// the cluster is healthy.
    pub async fn restart_stopped(&mut self) {
        for member in 0..self.members.len() {
            if self.members[member].child.is_none() {
                self.spawn(member);
            }
        }
        self.wait_healthy().await;
    }

    /// Waits until every running member answers as healthy (30 s at most).
    pub async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let endpoints = self.running_endpoints().join(",");
        loop {
            let (ok, out) = self.etcdctl_at(&endpoints, &["endpoint", "health"]).await;
            if ok {
                return;
            }
            if Instant::now() > deadline {
                panic!("etcd did not become healthy within 30s: {out}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The index of the member that leads, once the running members agree on one.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        let endpoints = self.running_endpoints().join(",");
        loop {
            let (ok, out) = self.etcdctl_at(&endpoints, &["endpoint", "status", "--write-out=json"]).await;
            if ok && let Some(leader) = self.leader_in(&out) {
                return leader;
            }
            if Instant::now() > deadline {
                panic!("no etcd leader within 30s: {out}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn leader_in(&self, status_json: &str) -> Option<usize> {
        let statuses: Value = serde_json::from_str(status_json).ok()?;
        let statuses = statuses.as_array()?;
        let leader_id = statuses.first()?["Status"]["leader"].as_u64()?;
        let agreed = statuses.iter().all(|s| s["Status"]["leader"].as_u64() == Some(leader_id));
        if !agreed || leader_id == 0 {
            return None;
        }
        let leader_url = statuses
            .iter()
            .find(|s| s["Status"]["header"]["member_id"].as_u64() == Some(leader_id))?["Endpoint"]
            .as_str()?
            .to_string();
        (0..self.members.len()).find(|&i| self.endpoint(i) == leader_url)
    }

    /// Runs etcdctl against the running members; panics if it fails.
    pub async fn etcdctl(&self, args: &[&str]) -> String {
        let (ok, out) = self.etcdctl_at(&self.running_endpoints().join(","), args).await;
        assert!(ok, "etcdctl {args:?} failed: {out}");
        out
    }

    /// Runs etcdctl against the given endpoints: (succeeded, stdout and stderr).
    pub async fn etcdctl_at(&self, endpoints: &str, args: &[&str]) -> (bool, String) {
        let mut command = tokio::process::Command::new("etcdctl");
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cacert={}", tls.ca.display()))
                .arg(format!("--cert={}", tls.client_cert.display()))
                .arg(format!("--key={}", tls.client_key.display()));
        }
        let out = command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(["--dial-timeout=2s", "--command-timeout=3s"])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .expect("run etcdctl (Debian package etcd-client)");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// The members' logs, for failure messages.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                let log = std::fs::read_to_string(self.log_path(&m.name)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                format!("--- {}\n{}", m.name, tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn spawn(&mut self, member: usize) {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let client_url = self.endpoint(member);
        let m = &self.members[member];
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(&m.name))
            .expect("etcd log file");
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", self.dir.path().join(&m.name).display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg(format!("--initial-cluster-token={}", self.token))
            .arg("--initial-cluster-state=new")
            // A loaded test machine misses 100 ms heartbeats now and then.
            .args(["--heartbeat-interval=200", "--election-timeout=2000"])
            .args(["--logger=zap", "--log-outputs=stderr", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian package etcd-server)");
        self.members[member].child = Some(child);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// PEM files in `dir`.
fn make_certificates(dir: &std::path::Path) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "etcd test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf = |names: &[&str], cn: &str| {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        (params.signed_by(&key, &issuer).unwrap().pem(), key.serialize_pem())
    };
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client-key.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
    };
    let (server_cert, server_key) = leaf(&["127.0.0.1", "localhost"], "etcd");
    let (client_cert, client_key) = leaf(&[], "cutover");
    for (path, pem) in [
        (&files.ca, ca_pem),
        (&files.server_cert, server_cert),
        (&files.server_key, server_key),
        (&files.client_cert, client_cert),
        (&files.client_key, client_key),
    ] {
        std::fs::write(path, pem).unwrap();
    }
    files
}
