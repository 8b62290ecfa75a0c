//! A backend's client: its connection pool, TLS settings and head timeout,
//! or the directory it serves files from.

use std::pin::pin;
use std::sync::Arc;

use hyper::{Request, Response};
use rustls_pki_types::ServerName;

use super::body::RequestBody;
use super::deadline::within;
use super::failure::{Failure, FailureKind};
use super::files::Files;
use super::pool::{Connector, Pool, UpstreamBody, bare_host};
use crate::config::BackendSpec;

/// Sends requests to one backend over its pool of keep-alive connections.
pub struct BackendClient {
    pub spec: Arc<BackendSpec>,
    transport: Transport,
}

enum Transport {
    Pool(Arc<Pool>),
    Files(Files),
}

impl BackendClient {
    pub fn new(spec: Arc<BackendSpec>) -> BackendClient {
        if let Some(directory) = &spec.url.directory {
            let transport = Transport::Files(Files::new(directory));
            return BackendClient { spec, transport };
        }
        let https = spec.url.scheme == http::uri::Scheme::HTTPS;
        let tls = https.then(|| backend_tls(&spec));
        let connector = Connector::new(spec.name.clone(), &spec.url, spec.connect_timeout, tls);
        let pool = Pool::new(connector, spec.pool_max_idle, spec.pool_idle_timeout);
        BackendClient {
            spec,
            transport: Transport::Pool(pool),
        }
    }

    /// Sends `req` (origin-form URI, headers prepared) and waits for the
    /// response head, within the backend's `timeout`.
    pub async fn send(&self, req: Request<RequestBody>) -> Result<Response<UpstreamBody>, Failure> {
        let answered = match &self.transport {
            Transport::Pool(pool) => within(self.spec.timeout, pin!(pool.send(req))).await,
            // Boxed: rare next to forwarding, and inline it would size every
            // request's future for it.
            Transport::Files(files) => within(self.spec.timeout, Box::pin(async { Ok(files.send(req).await) }).as_mut()).await,
        };
        answered.unwrap_or(Err(Failure::Backend(FailureKind::Timeout)))
    }

    /// Closes idle keep-alive connections past `pool_idle_timeout`, and the oldest beyond `pool_max_idle`.
    pub fn trim_idle(&self) {
        if let Transport::Pool(pool) = &self.transport {
            pool.trim_idle();
        }
    }

    /// Idle keep-alive connections to this backend.
    pub fn idle_connections(&self) -> usize {
        match &self.transport {
            Transport::Pool(pool) => pool.idle_count(),
            Transport::Files(_) => 0,
        }
    }
}

/// The TLS client for an `https://` backend and the name it sends in SNI.
fn backend_tls(spec: &BackendSpec) -> (tokio_rustls::TlsConnector, ServerName<'static>) {
    let mut config = crate::tls::client_config(spec.tls.as_ref()).unwrap_or_else(|e| {
        // Checked when the config was loaded; if the CA file has gone since,
        // trust nothing rather than something else.
        tracing::error!(backend = %spec.name, "cannot load the backend's TLS settings, its requests will fail: {e}");
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    });
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let host = bare_host(&spec.url.authority);
    let name = spec
        .tls
        .as_ref()
        .and_then(|t| t.server_name.clone())
        .and_then(|n| ServerName::try_from(n).ok())
        .or_else(|| ServerName::try_from(host.to_string()).ok())
        .unwrap_or_else(|| ServerName::try_from("invalid.invalid").expect("a valid DNS name"));
    (tokio_rustls::TlsConnector::from(Arc::new(config)), name)
}
