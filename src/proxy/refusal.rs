//! Refusals: every answer the proxy gives itself instead of a backend's, in
//! one place (status, text, and whether the connection closes after it).

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::body::ResponseBody;
use super::record::RequestRecord;
use crate::upstream::{ClientFault, Failure, FailureKind, Fault};

/// Why the proxy answered a request itself.
#[derive(Debug)]
pub enum Refusal {
    /// The request is malformed; found before it was routed.
    BadRequest(&'static str),
    NoRoute,
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
            Refusal::NoRoute => false,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::NoRoute => StatusCode::NOT_FOUND,
            Refusal::Failed { failure, .. } => failure.status(),
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::BadRequest(why) => format!("bad request: {why}\n"),
            Refusal::NoRoute => "no route matches this request\n".into(),
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
            Refusal::BadRequest(_) | Refusal::NoRoute => None,
        };
        record.refused(status.as_u16(), failure);
        let mut resp = Response::new(ResponseBody::local(self.message(), Some(record)));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        if closes {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
