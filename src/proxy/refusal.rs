//! Refusals: every answer the proxy gives itself instead of a backend's, in
//! one place (status, text, and whether the connection closes after it).

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode, Uri};

use super::body::ResponseBody;
use super::record::RequestRecord;
use crate::upstream::{ClientFault, Failure, FailureKind, Fault};

/// Why the proxy answered a request itself.
#[derive(Debug)]
pub enum Refusal {
    /// The request is malformed; found before it was routed.
    BadRequest(&'static str),
    NoRoute,
    /// The route does not answer the client's address (`allow_from`).
    Forbidden,
    /// The listener sends every request to `https://` (`redirect_https`).
    ToHttps {
        location: HeaderValue,
        /// 301, or 308 for methods a 301 would turn into `GET`.
        status: StatusCode,
    },
    /// The exchange with backend `backend` failed, on either side.
    Failed {
        failure: Failure,
        backend: Arc<str>,
    },
}

impl Refusal {
    /// Whether the client connection must close after this answer: after a
    /// malformed request, or with part of a request body possibly unread,
    /// the next bytes cannot be trusted to start a request (nginx closes
    /// too).
    pub fn ends_connection(&self, had_body: bool) -> bool {
        match self {
            Refusal::BadRequest(_) => true,
            Refusal::Failed { failure, .. } => failure.fault() == Fault::Client || had_body,
            Refusal::NoRoute | Refusal::Forbidden | Refusal::ToHttps { .. } => false,
        }
    }

    /// The redirect of a request for `uri` on `host` to the same on `https://`
    /// at `port`; a request without a host cannot be redirected.
    pub fn to_https(port: u16, host: Option<&str>, method: &Method, uri: &Uri) -> Refusal {
        let Some(host) = host else {
            return Refusal::BadRequest("a redirect to https needs a Host header");
        };
        let port = if port == 443 { String::new() } else { format!(":{port}") };
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        match HeaderValue::from_str(&format!("https://{host}{port}{target}")) {
            Ok(location) => Refusal::ToHttps {
                location,
                status: match *method {
                    Method::GET | Method::HEAD => StatusCode::MOVED_PERMANENTLY,
                    _ => StatusCode::PERMANENT_REDIRECT,
                },
            },
            Err(_) => Refusal::BadRequest("malformed request path"),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::NoRoute => StatusCode::NOT_FOUND,
            Refusal::Forbidden => StatusCode::FORBIDDEN,
            Refusal::ToHttps { status, .. } => *status,
            Refusal::Failed { failure, .. } => failure.status(),
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::BadRequest(why) => format!("bad request: {why}\n"),
            Refusal::NoRoute => "no route matches this request\n".into(),
            Refusal::Forbidden => "forbidden: this route does not answer your address\n".into(),
            Refusal::ToHttps { location, .. } => format!("moved to {}\n", location.to_str().unwrap_or_default()),
            Refusal::Failed { failure, backend } => match failure {
                Failure::Client(ClientFault::BodyTooLarge) => "payload too large: the request body exceeds server.max_body_bytes\n".into(),
                Failure::Client(ClientFault::BodyStalled) => "request timeout: the request body stalled\n".into(),
                Failure::Client(ClientFault::BodyBroken) => "bad request: the request body could not be read\n".into(),
                Failure::Client(ClientFault::BadTarget) => "bad request: malformed request path\n".into(),
                Failure::Backend(FailureKind::Connect) => format!("bad gateway: cannot connect to backend {backend}\n"),
                Failure::Backend(FailureKind::Timeout) => {
                    format!("gateway timeout: backend {backend} sent no response in time\n")
                }
                Failure::Backend(FailureKind::Reset) => format!("bad gateway: backend {backend} closed the connection\n"),
                Failure::Backend(FailureKind::Protocol | FailureKind::Body) => {
                    format!("bad gateway: backend {backend} sent an invalid response\n")
                }
                Failure::Local => format!("service unavailable: no local port or file descriptor free to connect to backend {backend}\n"),
            },
        }
    }

    /// The answer to the client, carrying the request's record; `closes`
    /// says the connection closes after it ([`Refusal::ends_connection`]).
    pub fn respond(self, mut record: Box<RequestRecord>, closes: bool) -> Response<ResponseBody> {
        let status = self.status();
        let failure = match &self {
            Refusal::Failed { failure, .. } => Some(*failure),
            Refusal::BadRequest(_) | Refusal::NoRoute | Refusal::Forbidden | Refusal::ToHttps { .. } => None,
        };
        record.refused(status.as_u16(), failure);
        let mut resp = Response::new(ResponseBody::local(self.message(), Some(record)));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if closes {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Refusal::ToHttps { location, .. } = self {
            resp.headers_mut().insert(header::LOCATION, location);
        }
        resp
    }
}
