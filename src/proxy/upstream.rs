//! Pooled keep-alive clients for backends, and classification of their failures.

use std::error::Error as _;
use std::sync::Arc;

use hyper::body::Incoming;

use super::body::RequestBody;
use hyper::{Request, Response};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

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
    client: Client<HttpsConnector<HttpConnector>, RequestBody>,
}

impl Upstream {
    pub fn new(spec: Arc<BackendSpec>) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(spec.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let tls = crate::tls::client_config(spec.tls.as_ref()).unwrap_or_else(|e| {
            // Checked when the config was loaded; if the CA file has gone since,
            // trust nothing rather than something else.
            tracing::error!(backend = %spec.name, "cannot load the backend's TLS settings, its https requests will fail: {e}");
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
        let builder = HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
        let server_name = spec
            .tls
            .as_ref()
            .and_then(|t| t.server_name.clone())
            .and_then(|n| rustls_pki_types::ServerName::try_from(n).ok());
        let builder = match server_name {
            Some(name) => builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name)),
            None => builder,
        }
        .enable_http1();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(spec.pool_idle_timeout)
            .pool_max_idle_per_host(spec.pool_max_idle)
            .pool_timer(TokioTimer::new())
            .set_host(false)
            .build(builder.wrap_connector(connector));
        Upstream { spec, client }
    }

    /// Sends `req` (absolute URI, headers prepared) and waits for the response head.
    pub async fn send(&self, req: Request<RequestBody>) -> Result<Response<Incoming>, FailureKind> {
        match tokio::time::timeout(self.spec.timeout, self.client.request(req)).await {
            Err(_) => Err(FailureKind::Timeout),
            Ok(Err(e)) => Err(classify(&e)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

fn classify(err: &hyper_util::client::legacy::Error) -> FailureKind {
    if err.is_connect() {
        return FailureKind::Connect;
    }
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
                return FailureKind::Protocol;
            }
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return FailureKind::Reset;
            }
            if h.is_timeout() {
                return FailureKind::Timeout;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof) {
                return FailureKind::Reset;
            }
        }
        source = e.source();
    }
    FailureKind::Reset
}
