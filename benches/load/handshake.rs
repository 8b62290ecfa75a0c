//! A load generator of full TLS handshakes: CONNS connections at a time,
//! each a new TCP connection with a full handshake (rustls, no session
//! resumption, the certificate not checked), one `GET` with
//! `Connection: close`, the whole answer read, then closed; for DURATION
//! seconds. wrk resumes sessions, so it measures resumed handshakes only.
//!
//! Prints wrk's summary line as `benches/load/stats.lua` writes it
//! (`WRKSTATS requests=... p99=...`, latencies in microseconds), so the
//! load scripts read both the same way.
//!
//! Usage: `bench-handshake URL CONNS DURATION_SECONDS [THREADS]`, e.g.
//! `cargo run --release --example bench-handshake -- https://127.0.0.1:19118/small 50 10`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Accepts any certificate: the servers under test use self-signed ones,
/// and checking them is the same work whichever server answers.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

struct Target {
    addr: SocketAddr,
    request: Vec<u8>,
    connector: tokio_rustls::TlsConnector,
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: u64,
    non2xx: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: bench-handshake URL CONNS DURATION_SECONDS [THREADS]");
        std::process::exit(2);
    }
    let url: http::Uri = args[0].parse().expect("a URL");
    let conns: usize = args[1].parse().expect("a connection count");
    let duration = Duration::from_secs_f64(args[2].parse().expect("a duration in seconds"));
    let threads: usize = args.get(3).map_or(2, |t| t.parse().expect("a thread count"));
    let authority = url.authority().expect("URL with host:port");
    let addr: SocketAddr = authority.as_str().parse().expect("an IP:port URL");
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").into_bytes();

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let target = Arc::new(Target {
        addr,
        request,
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    let tallies = runtime.block_on(async {
        let deadline = started + duration;
        let tasks: Vec<_> = (0..conns).map(|_| tokio::spawn(run(target.clone(), deadline))).collect();
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.expect("a load task"));
        }
        all
    });
    let elapsed = started.elapsed();
    let mut latencies: Vec<u64> = tallies.iter().flat_map(|t| t.latencies_us.iter().copied()).collect();
    latencies.sort_unstable();
    let errors: u64 = tallies.iter().map(|t| t.errors).sum();
    let non2xx: u64 = tallies.iter().map(|t| t.non2xx).sum();
    let pct = |p: f64| {
        if latencies.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0 * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1]
    };
    println!(
        "{} requests in {:.2}s, {:.2} requests/sec",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "WRKSTATS requests={} duration_us={} socket_errors={} non2xx={} p50={} p99={} p999={}",
        latencies.len(),
        elapsed.as_micros(),
        errors,
        non2xx,
        pct(50.0),
        pct(99.0),
        pct(99.9)
    );
}

async fn run(target: Arc<Target>, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut answer = Vec::with_capacity(1024);
    while Instant::now() < deadline {
        let began = Instant::now();
        match exchange(&target, &mut answer).await {
            Ok(true) => tally.latencies_us.push(began.elapsed().as_micros() as u64),
            Ok(false) => tally.non2xx += 1,
            Err(_) => tally.errors += 1,
        }
    }
    tally
}

/// One connection: handshake, request, the answer to its end. `Ok(false)`
/// when the status is not 2xx.
async fn exchange(target: &Target, answer: &mut Vec<u8>) -> std::io::Result<bool> {
    let tcp = TcpStream::connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").expect("a DNS name");
    let mut tls = target.connector.connect(name, tcp).await?;
    tls.write_all(&target.request).await?;
    answer.clear();
    // The server closes after its answer (`Connection: close`); a missing
    // close_notify is not an error here.
    match tls.read_to_end(answer).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(answer.starts_with(b"HTTP/1.1 2"))
}
