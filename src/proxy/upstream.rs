//! A backend's client: its connection pool, TLS settings and head timeout.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::{Request, Response};
use rustls_pki_types::ServerName;

use super::body::RequestBody;
use super::pool::{Connector, Pool, UpstreamBody, bare_host};

use crate::config::BackendSpec;

/// Why an exchange with a backend failed; the label of `cutover_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No connection could be made.
    Connect,
    /// No response head within the backend's `timeout`.
    Timeout,
    /// The connection closed or reset before a response head arrived.
    Reset,
    /// The backend sent something that is not a valid HTTP response.
    Protocol,
    /// The response body failed after the head was sent.
    Body,
}

impl FailureKind {
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Reset => "reset",
            FailureKind::Protocol => "protocol",
            FailureKind::Body => "body",
        }
    }
}

pub struct Upstream {
    pub spec: Arc<BackendSpec>,
    pool: Arc<Pool>,
}

impl Upstream {
    pub fn new(spec: Arc<BackendSpec>) -> Upstream {
        let https = spec.url.scheme == http::uri::Scheme::HTTPS;
        let tls = https.then(|| backend_tls(&spec));
        let connector = Connector::new(&spec.url.authority, if https { 443 } else { 80 }, spec.connect_timeout, tls);
        let pool = Pool::new(connector, spec.pool_max_idle, spec.pool_idle_timeout);
        Upstream { spec, pool }
    }

    /// Sends `req` (origin-form URI, headers prepared) and waits for the
    /// response head, within the backend's `timeout`.
    pub async fn send(&self, req: Request<RequestBody>) -> Result<Response<UpstreamBody>, FailureKind> {
        let exchange = pin!(self.pool.send(req));
        within(self.spec.timeout, exchange).await.unwrap_or(Err(FailureKind::Timeout))
    }

    /// Closes idle keep-alive connections past `pool_idle_timeout`.
    pub fn close_expired_idle(&self) {
        self.pool.close_expired();
    }

    /// Idle keep-alive connections to this backend.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_count()
    }
}

/// Polls `exchange` until it is done, or `None` once `limit` has passed.
///
/// Unlike `tokio::time::timeout`, it takes the future pinned where it was
/// made instead of by value: an exchange future is most of a kilobyte, and
/// moving it into a wrapper copies it once more per request.
pub async fn within<F: Future>(limit: Duration, mut exchange: Pin<&mut F>) -> Option<F::Output> {
    let mut deadline = pin!(tokio::time::sleep(limit));
    poll_fn(|cx| {
        if let Poll::Ready(done) = exchange.as_mut().poll(cx) {
            return Poll::Ready(Some(done));
        }
        deadline.as_mut().poll(cx).map(|()| None)
    })
    .await
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
