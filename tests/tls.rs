//! TLS termination (SNI, ALPN, TLS 1.2 and 1.3, certificate reload) and
//! verified `https://` backends, with generated certificates and real clients.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "cutover test CA");
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { params, key, pem }
    }

    /// An ECDSA leaf for `names` (PKCS#8 key): (cert PEM, key PEM, cert DER).
    fn leaf(&self, names: &[&str], cn: &str) -> (String, String, Vec<u8>) {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (format!("{}{}", cert.pem(), self.pem), key.serialize_pem(), cert.der().to_vec())
    }
}

/// An RSA leaf with a PKCS#1 key, made by the openssl command line and signed by `ca`.
fn rsa_leaf(dir: &Path, ca: &Ca, name: &str) -> Vec<u8> {
    std::fs::write(dir.join("ca.crt"), &ca.pem).unwrap();
    std::fs::write(dir.join("ca.key"), ca.key.serialize_pem()).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["genrsa", "-traditional", "-out", "rsa.key", "2048"]);
    run(&["req", "-new", "-key", "rsa.key", "-subj", &format!("/CN={name}"), "-out", "rsa.csr"]);
    std::fs::write(dir.join("ext.cnf"), format!("subjectAltName=DNS:{name}\n")).unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "rsa.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "rsa.crt",
    ]);
    let key = std::fs::read_to_string(dir.join("rsa.key")).unwrap();
    assert!(key.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "a PKCS#1 key");
    let pem = std::fs::read(dir.join("rsa.crt")).unwrap();
    CertificateDer::pem_slice_iter(&pem).next().unwrap().unwrap().to_vec()
}

use rustls_pki_types::pem::PemObject;

fn client_config(ca: &Ca, alpn: &[&[u8]], versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

struct Handshake {
    leaf: Vec<u8>,
    alpn: Option<Vec<u8>>,
    version: rustls::ProtocolVersion,
    kind: Option<rustls::HandshakeKind>,
    suite: Option<rustls::CipherSuite>,
    stream: tokio_rustls::client::TlsStream<TcpStream>,
}

async fn handshake(addr: std::net::SocketAddr, sni: &str, config: Arc<rustls::ClientConfig>) -> Handshake {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = connector
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let (_, conn) = stream.get_ref();
    Handshake {
        leaf: conn.peer_certificates().unwrap()[0].to_vec(),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        version: conn.protocol_version().unwrap(),
        kind: conn.handshake_kind(),
        suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
        stream,
    }
}

/// Sends GET `path` over an established TLS stream, HTTP/2 when ALPN said so.
async fn get_over(h: Handshake, path: &str, authority: &str) -> (StatusCode, String) {
    let req = Request::get(path).header("host", authority).body(Empty::<Bytes>::new()).unwrap();
    let resp = if h.alpn.as_deref() == Some(b"h2") {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(h.stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = req;
        *req.uri_mut() = format!("https://{authority}{path}").parse().unwrap();
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(h.stream)).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn tls_config(backend: &str, extra_backend: &str) -> String {
    format!(
        "listeners:\n  - name: public-tls\n    addr: \"127.0.0.1:0\"\n    tls:\n      certs:\n        - {{ cert: a.crt, key: a.key }}\n        - {{ cert: b.crt, key: b.key }}\n\
         admin:\n  addr: \"127.0.0.1:0\"\nweights_file: weights.yaml\naccess_log: {{ path: \"off\" }}\n\
         backends:\n  app: {{ url: \"{backend}\"{extra_backend} }}\nroutes:\n  - name: all\n    backends: {{ app: {{}} }}\n"
    )
}

async fn start_tls_proxy(ca: &Ca, backend: &str, extra_backend: &str) -> (Proxy, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (a_pem, a_key, a_der) = ca.leaf(&["site-a.example"], "site-a");
    std::fs::write(dir.path().join("a.crt"), a_pem).unwrap();
    std::fs::write(dir.path().join("a.key"), a_key).unwrap();
    let b_der = rsa_leaf(dir.path(), ca, "site-b.example");
    std::fs::copy(dir.path().join("rsa.crt"), dir.path().join("b.crt")).unwrap();
    std::fs::copy(dir.path().join("rsa.key"), dir.path().join("b.key")).unwrap();
    (Proxy::start_in(dir, &tls_config(backend, extra_backend), "").await, a_der, b_der)
}

#[tokio::test]
async fn sni_alpn_versions_and_forwarded_proto() {
    within(60, async {
        let ca = Ca::new();
        let app = Upstream::echo("app").await;
        let (proxy, a_der, b_der) = start_tls_proxy(&ca, &app.url(), "").await;
        let both = [&rustls::version::TLS13, &rustls::version::TLS12];

        let h = handshake(proxy.addr(), "site-a.example", client_config(&ca, &[b"h2", b"http/1.1"], &both)).await;
        assert_eq!(h.leaf, a_der, "SNI site-a gets the ECDSA certificate");
        assert_eq!(h.alpn.as_deref(), Some(&b"h2"[..]));
        let (status, body) = get_over(h, "/hello", "site-a.example").await;
        assert_eq!(status, StatusCode::OK);
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(Seen(seen.clone()).header("x-forwarded-proto").as_deref(), Some("https"), "{seen}");

        let h = handshake(
            proxy.addr(),
            "site-b.example",
            client_config(&ca, &[b"http/1.1"], &[&rustls::version::TLS12]),
        )
        .await;
        assert_eq!(h.leaf, b_der, "SNI site-b gets the RSA certificate");
        assert_eq!(h.version, rustls::ProtocolVersion::TLSv1_2);
        assert_eq!(h.alpn.as_deref(), Some(&b"http/1.1"[..]));
        assert_eq!(get_over(h, "/x", "site-b.example").await.0, StatusCode::OK);

        let h = handshake(proxy.addr(), "site-a.example", client_config(&ca, &[], &[&rustls::version::TLS13])).await;
        assert_eq!(h.version, rustls::ProtocolVersion::TLSv1_3);

        // curl, over HTTP/2, verifying against the CA.
        std::fs::write(proxy.path("ca.pem"), &ca.pem).unwrap();
        let port = proxy.addr().port();
        // (async: the upstream runs on this test's runtime)
        let out = tokio::process::Command::new("curl")
            .args(["-s", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--cacert"])
            .arg(proxy.path("ca.pem"))
            .args([
                "--resolve",
                &format!("site-b.example:{port}:127.0.0.1"),
                &format!("https://site-b.example:{port}/curl"),
            ])
            .output()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "2 200",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
}

#[tokio::test]
async fn sessions_resume_with_tickets_and_aes_128_is_preferred() {
    within(60, async {
        let ca = Ca::new();
        let app = Upstream::echo("app").await;
        let (proxy, _, _) = start_tls_proxy(&ca, &app.url(), "").await;
        // rustls' client lists AES-256-GCM first, as OpenSSL's does.
        let config = client_config(&ca, &[b"http/1.1"], &[&rustls::version::TLS13]);
        let mut kinds = Vec::new();
        for i in 0..3 {
            let h = handshake(proxy.addr(), "site-a.example", config.clone()).await;
            assert_eq!(
                h.suite,
                Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256),
                "the server's order wins"
            );
            kinds.push(h.kind);
            // The ticket arrives after the handshake: reading the answer takes it in.
            assert_eq!(get_over(h, &format!("/resume/{i}"), "site-a.example").await.0, StatusCode::OK);
        }
        use rustls::HandshakeKind::{Full, Resumed};
        assert_eq!(
            kinds,
            [Some(Full), Some(Resumed), Some(Resumed)],
            "each connection's ticket resumes the next"
        );

        let tls12 = client_config(&ca, &[b"http/1.1"], &[&rustls::version::TLS12]);
        let h = handshake(proxy.addr(), "site-a.example", tls12).await;
        assert_eq!(h.suite, Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256));
    })
    .await;
}

#[tokio::test]
async fn certificates_reload_without_dropping_connections() {
    within(60, async {
        let ca = Ca::new();
        let app = Upstream::echo("app").await;
        let (proxy, a_der, _) = start_tls_proxy(&ca, &app.url(), "").await;
        let config = client_config(&ca, &[b"http/1.1"], &[&rustls::version::TLS13]);
        let open = handshake(proxy.addr(), "site-a.example", config.clone()).await;
        assert_eq!(open.leaf, a_der);
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(open.stream)).await.unwrap();
        tokio::spawn(conn);

        let (pem, key, new_der) = ca.leaf(&["site-a.example"], "site-a renewed");
        std::fs::write(proxy.path("a.key.new"), key).unwrap();
        std::fs::write(proxy.path("a.crt.new"), pem).unwrap();
        std::fs::rename(proxy.path("a.key.new"), proxy.path("a.key")).unwrap();
        std::fs::rename(proxy.path("a.crt.new"), proxy.path("a.crt")).unwrap();
        eventually(Duration::from_secs(10), Duration::from_millis(100), async || {
            match handshake(proxy.addr(), "site-a.example", config.clone()).await.leaf == new_der {
                true => Ok(()),
                false => Err("the renewed certificate was never served".to_string()),
            }
        })
        .await;
        // The connection opened before the reload still works.
        let req = Request::get("/still-here")
            .header("host", "site-a.example")
            .body(Empty::<Bytes>::new())
            .unwrap();
        assert_eq!(send.send_request(req).await.unwrap().status(), StatusCode::OK);

        // A broken certificate is not loaded; the current one keeps serving.
        std::fs::write(proxy.path("a.crt"), "not a certificate").unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(handshake(proxy.addr(), "site-a.example", config).await.leaf, new_der);
        assert!(proxy.stderr_text().contains("TLS certificates not reloaded"));
    })
    .await;
}

/// A TLS backend on 127.0.0.1 with a certificate for `backend.internal`.
async fn tls_backend(ca: &Ca) -> std::net::SocketAddr {
    let (pem, key, _) = ca.leaf(&["backend.internal"], "backend");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes()).map(|c| c.unwrap()).collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(echo_response("tls-backend".to_string(), req).await)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_backends_are_verified() {
    within(60, async {
        let ca = Ca::new();
        let backend = tls_backend(&ca).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
        let text = format!(
            "{}backends:\n  trusted: {{ url: \"https://{backend}\", tls: {{ ca_file: ca.pem, server_name: backend.internal }} }}\n\
             \x20 untrusted: {{ url: \"https://{backend}\", tls: {{ server_name: backend.internal }} }}\n\
             routes:\n  - name: t\n    match: {{ path_prefix: /t/ }}\n    backends: {{ trusted: {{}} }}\n  - name: u\n    backends: {{ untrusted: {{}} }}\n",
            config_head("{ path: \"off\" }")
        );
        let proxy = Proxy::start_in(dir, &text, "").await;
        let ok = get(&proxy.url("/t/x")).await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
        assert_eq!(ok.upstream(), "tls-backend");
        // Signed by a CA the system does not trust: refused, 502.
        let refused = get(&proxy.url("/other")).await;
        assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{}", refused.text());
    })
    .await;
}
