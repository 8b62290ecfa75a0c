//! The response phase: the backend's answer as the client gets it — hop-by-hop
//! headers gone, the tunnel spliced for a protocol switch, the pin cookie
//! for a newly pinned client, and the request id.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::upgrade::OnUpgrade;

use super::conn::ConnInfo;
use super::headers::{X_REQUEST_ID, strip_hop_by_hop};
use super::tunnel::Tunnel;
use crate::config::Sticky;
use crate::upstream::UpstreamBody;

/// What the response phase adds to a backend's answer.
pub struct Finishing<'a> {
    pub sticky: &'a Sticky,
    /// The bucket to pin a new client to, with the route's pin cookie.
    pub set_pin: Option<u16>,
    pub request_id: HeaderValue,
    /// The client's side of a protocol switch it asked for.
    pub client_upgrade: Option<OnUpgrade>,
    /// The client's connection, which becomes the tunnel on a switch.
    pub conn: &'a ConnInfo,
    /// The answering backend's `tunnel_idle_timeout`.
    pub tunnel_idle_timeout: std::time::Duration,
}

pub fn finish(resp: &mut Response<UpstreamBody>, how: Finishing<'_>) {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && let Some(client) = how.client_upgrade {
        let backend = hyper::upgrade::on(&mut *resp);
        how.conn.switches_to(Tunnel::new(client, backend, how.tunnel_idle_timeout));
    }
    strip_hop_by_hop(resp.headers_mut(), switching);
    if let (Some(bucket), Sticky::Pin(name)) = (how.set_pin, how.sticky)
        && let Ok(v) = HeaderValue::from_str(&format!("{name}={bucket}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax"))
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp.headers_mut().entry(&X_REQUEST_ID).or_insert(how.request_id);
}
