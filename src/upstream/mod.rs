//! Talking to backends: the low level that the forwarding path, the shadow
//! requests and the health checks share, and that knows none of them.
//!
//! - [`client`]: [`BackendClient`], one backend's client (pool, TLS, head timeout);
//! - [`pool`]: its keep-alive connections and the response body that returns them;
//! - [`files`]: a backend that answers from a directory instead;
//! - [`resolve`]: the addresses of its host, looked up off the request path;
//! - [`body`]: the bodies sent to a backend, the client's read with limits;
//! - [`tap`]: a bounded copy of a body as it streams, for comparisons;
//! - [`target`]: the request a backend is sent (target, `Host`, framing);
//! - [`failure`]: the one failure model, [`Failure`] and [`Verdict`];
//! - [`deadline`]: [`within`], a deadline on a future pinned in place, and
//!   [`StallWatch`], which notices what sends nothing for too long.

pub mod body;
pub mod client;
pub mod deadline;
pub mod failure;
pub mod files;
pub mod pool;
pub mod resolve;
pub mod tap;
pub mod target;

pub use body::{BodyReadListener, ClientBody, ClientBodyError, RequestBody};
pub use client::BackendClient;
pub use deadline::{LazyTimer, StallWatch, within};
pub use failure::{ClientFault, Failure, FailureKind, Fault, Verdict};
pub use pool::{UpstreamBody, UpstreamBodyError};
pub use tap::Tap;
pub use target::{Target, origin_form, request_for, upstream_host, upstream_uri};
