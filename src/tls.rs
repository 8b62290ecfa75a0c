//! TLS: termination on listeners (rustls, SNI among several certificates,
//! ALPN h2 and http/1.1, certificates reloaded when their files change) and
//! verification of `https://` backends.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use arc_swap::ArcSwap;
// The one place the crypto library is chosen.
use rustls::crypto::aws_lc_rs as crypto;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Installs the process-wide crypto provider once, so that every rustls
/// configuration built without naming one (backends, etcd) uses aws-lc-rs.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = crypto::default_provider().install_default();
    });
}

/// A certificate chain and its key, as files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertSource {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A loaded certificate: the key for rustls and the parsed leaf for SNI matching.
#[derive(Debug)]
struct LoadedCert {
    key: Arc<CertifiedKey>,
}

impl LoadedCert {
    fn serves(&self, name: &ServerName<'_>) -> bool {
        let Some(leaf) = self.key.cert.first() else {
            return false;
        };
        webpki::EndEntityCert::try_from(leaf).is_ok_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
    }
}

/// Loads and checks a PEM certificate chain (RSA, ECDSA or Ed25519 key in
/// PKCS#8, PKCS#1 or SEC1 form).
pub fn load(source: &CertSource) -> Result<CertifiedKey, TlsError> {
    install_crypto_provider();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&source.cert)
        .map_err(|e| file_error(&source.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&source.cert, e))?;
    if chain.is_empty() {
        return Err(file_error(&source.cert, "no certificate found"));
    }
    let key = load_key(&source.key)?;
    let signing = crypto::sign::any_supported_type(&key).map_err(|e| file_error(&source.key, e))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| file_error(&source.key, format!("does not match {}: {e}", source.cert.display())))?;
    Ok(certified)
}

/// Reads a private key, naming what is wrong with a file that holds none
/// cutover can use: a passphrase-protected key is the usual one at 3 a.m.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_error(path, e))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| file_error(path, key_problem(&pem, e)))
}

fn key_problem(pem: &[u8], error: rustls_pki_types::pem::Error) -> String {
    let text = String::from_utf8_lossy(pem);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return "the private key is encrypted with a passphrase, which cutover cannot ask for: \
                write it out unencrypted (`openssl pkey -in KEY -out PLAIN.key`) and keep that file readable by cutover alone"
            .to_string();
    }
    match error {
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no private key found: expected a PEM block BEGIN PRIVATE KEY, BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE KEY".to_string()
        }
        other => other.to_string(),
    }
}

/// Picks a certificate by SNI; the first is the default. Reloadable.
#[derive(Debug)]
pub struct CertResolver {
    sources: Vec<CertSource>,
    certs: ArcSwap<Vec<LoadedCert>>,
    fingerprint: std::sync::Mutex<u64>,
}

impl CertResolver {
    pub fn new(sources: Vec<CertSource>) -> Result<Arc<CertResolver>, TlsError> {
        let certs = sources
            .iter()
            .map(|s| load(s).map(|k| LoadedCert { key: Arc::new(k) }))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(CertResolver {
            fingerprint: std::sync::Mutex::new(fingerprint(&sources)),
            sources,
            certs: ArcSwap::from_pointee(certs),
        }))
    }

    /// Reloads when any file changed; a bad set keeps the old certificates.
    pub fn reload_if_changed(&self) {
        let now = fingerprint(&self.sources);
        let mut last = self.fingerprint.lock().unwrap_or_else(|e| e.into_inner());
        if *last == now {
            return;
        }
        *last = now;
        match self
            .sources
            .iter()
            .map(|s| load(s).map(|k| LoadedCert { key: Arc::new(k) }))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(certs) => {
                self.certs.store(Arc::new(certs));
                tracing::info!("TLS certificates reloaded");
            }
            Err(e) => tracing::error!("TLS certificates not reloaded, the previous ones keep serving: {e}"),
        }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        if let Some(name) = hello.server_name().and_then(|n| ServerName::try_from(n).ok())
            && let Some(cert) = certs.iter().find(|c| c.serves(&name))
        {
            return Some(cert.key.clone());
        }
        certs.first().map(|c| c.key.clone())
    }
}

/// A hash of the files' contents (a rename or a copy both change it).
fn fingerprint(sources: &[CertSource]) -> u64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new();
    for s in sources {
        for p in [&s.cert, &s.key] {
            h.write(&std::fs::read(p).unwrap_or_default());
            h.write_u8(0);
        }
    }
    h.finish()
}

/// How often certificate files are looked at.
pub const CERT_POLL: Duration = Duration::from_secs(2);

/// Watches the certificate files until `shutdown`.
pub fn spawn_cert_reloader(resolver: Arc<CertResolver>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(CERT_POLL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {
                    let r = resolver.clone();
                    let _ = tokio::task::spawn_blocking(move || r.reload_if_changed()).await;
                }
            }
        }
    });
}

/// rustls' safe defaults (TLS 1.2 and 1.3), ALPN h2 then http/1.1, with
/// three choices of a server that takes many short connections:
///
/// - the cipher suite is the server's choice, AES-128-GCM first (as Go's
///   crypto/tls and Caddy choose): 128-bit security, and a handshake whose
///   key schedule runs SHA-256, which CPUs accelerate, instead of SHA-384;
/// - resumption by stateless tickets, encrypted under keys rustls rotates
///   every six hours, so any number of clients can resume (the default
///   in-memory cache keeps 256 sessions and is shared by every thread under
///   one lock);
/// - one ticket per connection: a browser resumes one connection with one
///   ticket, and each ticket costs both sides work.
pub fn server_config(resolver: Arc<CertResolver>) -> Arc<rustls::ServerConfig> {
    install_crypto_provider();
    let mut provider = crypto::default_provider();
    provider.cipher_suites.sort_by_key(|suite| is_aes_256(suite.suite()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs' provider supports rustls' default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    config.send_tls13_tickets = 1;
    match crypto::Ticketer::new() {
        Ok(ticketer) => config.ticketer = ticketer,
        Err(e) => tracing::warn!(error = %e, "no TLS session tickets: resuming through the session cache only"),
    }
    Arc::new(config)
}

fn is_aes_256(suite: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite as S;
    matches!(
        suite,
        S::TLS13_AES_256_GCM_SHA384 | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
    )
}

/// TLS settings of an `https://` backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendTls {
    /// Trust only these CAs (PEM) instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// SNI and verified name, instead of the URL's host.
    pub server_name: Option<String>,
}

/// The client TLS config for a backend: system roots, or the CA file.
pub fn client_config(tls: Option<&BackendTls>) -> Result<rustls::ClientConfig, TlsError> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    match tls.and_then(|t| t.ca_file.as_ref()) {
        Some(ca) => {
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| file_error(ca, e))? {
                roots.add(cert.map_err(|e| file_error(ca, e))?).map_err(|e| file_error(ca, e))?;
            }
            if roots.is_empty() {
                return Err(file_error(ca, "no CA certificate found"));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                tracing::warn!("no system root certificates found: https backends without a ca_file will fail to verify");
            }
        }
    }
    Ok(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENCRYPTED_PKCS8: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAi3jTKPUIdfaQICCAAw
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEAQIEEH0QokiEdDf3LtDYdILolWkEgZDU
n2sM+udI1m7IK11PCgAsWB5wNKRM8QHH6mlXt7CxW4Xnu6RD5MOPkiR4XFcP6THJ
OM3ETifhPWEnE0WtCmkv//nj4yOiooWltNQirgH98VyqP5BsQEHxHtJAsJ3iXtUY
SJzDWQ/r6L7qA9QtVSocqQYjwctQ9lZ5tjHdPHfNN/naCCC2g7AqnyySY1mwt28=
-----END ENCRYPTED PRIVATE KEY-----
";
    const ENCRYPTED_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
Proc-Type: 4,ENCRYPTED
DEK-Info: AES-128-CBC,0F9F3A0F3769CA13711635BD5C5B6BD3

2XCuh20DRARSJqduIHSm+dLYgJAgJUsklsr31KaHURGKUajYk5VOIliVSK0JQQmK
nXj91tz3CnGqM8JGqn7D4k6ul2b3lXm/UZqDCAd/R+e4AynPGxoB9Mg5ZUyNWiuE
aj++CCLhPTzIz7Ly64dcJ0Wz2IPUCfr0BhOEgK4UuXw=
-----END EC PRIVATE KEY-----
";

    fn key_error(pem: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.key");
        std::fs::write(&path, pem).unwrap();
        load_key(&path).unwrap_err().to_string()
    }

    #[test]
    fn an_encrypted_key_is_named_as_such() {
        for pem in [ENCRYPTED_PKCS8, ENCRYPTED_SEC1] {
            let error = key_error(pem);
            assert!(error.contains("site.key: the private key is encrypted"), "{error}");
        }
    }

    #[test]
    fn a_file_without_a_key_says_what_was_expected() {
        let certificate_only = rcgen::generate_simple_self_signed(vec!["a.example".to_string()])
            .unwrap()
            .cert
            .pem();
        for pem in ["", "not a key", certificate_only.as_str()] {
            let error = key_error(pem);
            assert!(error.contains("no private key found: expected a PEM block"), "{pem:?}: {error}");
        }
    }

    #[test]
    fn a_plain_key_loads() {
        let key = rcgen::KeyPair::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.key");
        std::fs::write(&path, key.serialize_pem()).unwrap();
        assert!(load_key(&path).is_ok());
    }
}
