//! One failure model: how an exchange with a backend ended, decided once.
//!
//! [`classify`] turns what hyper reports into a [`Failure`] that says whose
//! fault it was; [`Verdict`] is the outcome of a whole exchange. Every
//! consumer reads the verdict instead of judging status codes itself: the
//! status a refused client gets ([`Failure::status`]), the `code` label of
//! `cutover_requests_total` and the guard's record ([`Verdict::status`]),
//! `cutover_upstream_errors_total{kind}` ([`Verdict::backend_failure`]),
//! passive health ([`Verdict::fault`]) and the retry ([`Failure::retryable`]).

use http::StatusCode;

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

/// Why the client's request could not be passed on to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// The body is larger than `server.max_body_bytes`.
    BodyTooLarge,
    /// The body stalled longer than `server.body_read_timeout`.
    BodyStalled,
    /// The body was malformed (a bad chunk) or cut short.
    BodyBroken,
    /// The request target cannot be written for the backend.
    BadTarget,
}

/// Whose fault a failed exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client,
    Backend,
    /// cutover's own: it ran out of something of its host's.
    Local,
}

/// A failed exchange with a backend, and whose fault it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Backend(FailureKind),
    Client(ClientFault),
    /// No connection could be opened for want of a free local port or file
    /// descriptor. It says nothing of the backend: counted against it, it
    /// would eject a healthy backend and move its share of the split.
    Local,
}

impl Failure {
    pub fn fault(self) -> Fault {
        match self {
            Failure::Backend(_) => Fault::Backend,
            Failure::Client(_) => Fault::Client,
            Failure::Local => Fault::Local,
        }
    }

    /// The status the client is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Failure::Backend(FailureKind::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            Failure::Backend(_) => StatusCode::BAD_GATEWAY,
            Failure::Local => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Client(ClientFault::BodyTooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::Client(ClientFault::BodyStalled) => StatusCode::REQUEST_TIMEOUT,
            Failure::Client(ClientFault::BodyBroken | ClientFault::BadTarget) => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether the request may be sent again: nothing reached the
    /// application (no connection, or one closed before any response byte).
    /// Never after a timeout: the backend may still be working on it.
    pub fn retryable(self) -> bool {
        matches!(self, Failure::Backend(FailureKind::Connect | FailureKind::Reset))
    }
}

/// How an exchange with a backend ended, as every consumer reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The backend answered with this status (and its body, if read, ended well).
    Answered(u16),
    /// It failed, and [`Failure`] says whose fault it was.
    Failed(Failure),
    /// The client went away before the backend answered. Counted as no
    /// answer: a backend too slow for its clients is failing them.
    Abandoned,
}

impl Verdict {
    /// The verdict on an attempt, at its response head.
    pub fn of<B>(attempt: &Result<http::Response<B>, Failure>) -> Verdict {
        match attempt {
            Ok(resp) => Verdict::Answered(resp.status().as_u16()),
            Err(failure) => Verdict::Failed(*failure),
        }
    }

    /// Whose fault it is when the exchange failed; `None` when the backend
    /// answered below 500. A 5xx answer is the backend's fault.
    pub fn fault(self) -> Option<Fault> {
        match self {
            Verdict::Answered(status) => (status >= 500).then_some(Fault::Backend),
            Verdict::Failed(failure) => Some(failure.fault()),
            Verdict::Abandoned => Some(Fault::Backend),
        }
    }

    /// Whether the exchange says anything about the backend: a client's
    /// broken, oversized or stalled request does not, nor cutover running
    /// out of local ports.
    pub fn judges_backend(self) -> bool {
        !matches!(self.fault(), Some(Fault::Client | Fault::Local))
    }

    /// The status the `code` label of `cutover_requests_total` and the
    /// guard's windows count: the backend's, the one cutover refused with
    /// when the fault was the client's or its own, or `None` ("error") when
    /// the backend gave no answer.
    pub fn status(self) -> Option<u16> {
        match self {
            Verdict::Answered(status) => Some(status),
            Verdict::Failed(failure @ (Failure::Client(_) | Failure::Local)) => Some(failure.status().as_u16()),
            Verdict::Failed(Failure::Backend(_)) | Verdict::Abandoned => None,
        }
    }

    /// How the backend failed, for `cutover_upstream_errors_total{kind}`.
    pub fn backend_failure(self) -> Option<FailureKind> {
        match self {
            Verdict::Failed(Failure::Backend(kind)) => Some(kind),
            _ => None,
        }
    }
}

/// The one reading of a failed hyper client exchange. A request body that
/// failed says why itself ([`ClientBodyError`](super::body::ClientBodyError)),
/// through the error hyper hands back: the client is at fault, not the backend.
pub fn classify(err: &hyper::Error) -> Failure {
    if let Some(body) = std::error::Error::source(err).and_then(|e| e.downcast_ref::<super::body::ClientBodyError>()) {
        return Failure::Client(body.fault());
    }
    if err.is_parse() || err.is_parse_status() || err.is_parse_too_large() {
        return Failure::Backend(FailureKind::Protocol);
    }
    if err.is_timeout() {
        return Failure::Backend(FailureKind::Timeout);
    }
    Failure::Backend(FailureKind::Reset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_has_one_status_one_side_and_one_retry_decision() {
        let cases = [
            (Failure::Backend(FailureKind::Connect), 502, Fault::Backend, true),
            (Failure::Backend(FailureKind::Reset), 502, Fault::Backend, true),
            (Failure::Backend(FailureKind::Timeout), 504, Fault::Backend, false),
            (Failure::Backend(FailureKind::Protocol), 502, Fault::Backend, false),
            (Failure::Backend(FailureKind::Body), 502, Fault::Backend, false),
            (Failure::Client(ClientFault::BodyTooLarge), 413, Fault::Client, false),
            (Failure::Client(ClientFault::BodyStalled), 408, Fault::Client, false),
            (Failure::Client(ClientFault::BodyBroken), 400, Fault::Client, false),
            (Failure::Client(ClientFault::BadTarget), 400, Fault::Client, false),
            (Failure::Local, 503, Fault::Local, false),
        ];
        for (failure, status, fault, retryable) in cases {
            assert_eq!(failure.status().as_u16(), status, "{failure:?}");
            assert_eq!(failure.fault(), fault, "{failure:?}");
            assert_eq!(failure.retryable(), retryable, "{failure:?}");
        }
    }

    #[test]
    fn verdicts_say_what_metrics_health_and_the_guard_count() {
        // (verdict, code label status, judges the backend, backend's fault, upstream error kind)
        let cases = [
            (Verdict::Answered(200), Some(200), true, false, None),
            (Verdict::Answered(404), Some(404), true, false, None),
            (Verdict::Answered(503), Some(503), true, true, None),
            (
                Verdict::Failed(Failure::Backend(FailureKind::Connect)),
                None,
                true,
                true,
                Some(FailureKind::Connect),
            ),
            (
                Verdict::Failed(Failure::Backend(FailureKind::Body)),
                None,
                true,
                true,
                Some(FailureKind::Body),
            ),
            (
                Verdict::Failed(Failure::Client(ClientFault::BodyTooLarge)),
                Some(413),
                false,
                false,
                None,
            ),
            (
                Verdict::Failed(Failure::Client(ClientFault::BodyBroken)),
                Some(400),
                false,
                false,
                None,
            ),
            (Verdict::Failed(Failure::Local), Some(503), false, false, None),
            (Verdict::Abandoned, None, true, true, None),
        ];
        for (verdict, status, judges, backends_fault, kind) in cases {
            assert_eq!(verdict.status(), status, "{verdict:?}");
            assert_eq!(verdict.judges_backend(), judges, "{verdict:?}");
            assert_eq!(verdict.fault() == Some(Fault::Backend), backends_fault, "{verdict:?}");
            assert_eq!(verdict.backend_failure(), kind, "{verdict:?}");
        }
    }
}
