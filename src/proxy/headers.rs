//! Header rewriting between client and backend.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// What other proxies say about the client's connection and cutover does not
/// set: from an untrusted peer these can only be claims of the client's own,
/// and backends believe them (Flask's ProxyFix `x_port` and `x_prefix`, a
/// Django `SECURE_PROXY_SSL_HEADER` naming one of them).
static CONNECTION_CLAIMS: [HeaderName; 8] = [
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-ssl"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-forwarded-server"),
    HeaderName::from_static("x-scheme"),
    HeaderName::from_static("x-url-scheme"),
    HeaderName::from_static("front-end-https"),
];
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// Names cutover keeps for itself; clients' headers with it are not forwarded.
const RESERVED_PREFIX: &[u8] = b"x-cutover-";

/// True when the request asks to switch protocols (WebSocket and the like).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has_token(headers, "upgrade")
}

/// True when the connection cannot simply wait for another request after
/// this one: HTTP/1.1 with `Connection: close`, an upgrade, or an older
/// protocol version.
pub fn ends_keep_alive(version: http::Version, headers: &HeaderMap) -> bool {
    version != http::Version::HTTP_11
        || (headers.contains_key(header::CONNECTION) && (connection_has_token(headers, "close") || is_upgrade_request(headers)))
}

fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including every header
/// named in `Connection`. With `upgrade`, `Upgrade` is kept and
/// `Connection: upgrade` re-added so the switch reaches the other side.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    strip(headers, upgrade, false);
}

/// [`strip_hop_by_hop`] for a client's request, which also loses every
/// header named `X-Cutover-*`: those are cutover's to set (a backend skips
/// side effects on `X-Cutover-Shadow`), never a client's.
pub fn strip_request_headers(headers: &mut HeaderMap, upgrade: bool) {
    strip(headers, upgrade, true);
}

fn strip(headers: &mut HeaderMap, upgrade: bool, reserved: bool) {
    // Runs on every request and response, and most carry none of these:
    // one pass over the names, then a hashed removal only for those present.
    let (mut connection, mut others, mut has_reserved) = (false, false, false);
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if is_hop_by_hop(name) {
            others = true;
        } else if reserved && is_reserved(name) {
            has_reserved = true;
        }
    }
    if has_reserved {
        let names: Vec<HeaderName> = headers.keys().filter(|n| is_reserved(n)).cloned().collect();
        for name in names {
            headers.remove(name);
        }
    }
    if connection {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if !(upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    if others {
        for name in [
            &KEEP_ALIVE,
            &PROXY_CONNECTION,
            &header::TE,
            &header::TRAILER,
            &header::TRANSFER_ENCODING,
        ] {
            headers.remove(name);
        }
        if !upgrade {
            headers.remove(header::UPGRADE);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The fixed hop-by-hop names other than `Connection`.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

fn is_reserved(name: &HeaderName) -> bool {
    name.as_str().as_bytes().starts_with(RESERVED_PREFIX)
}

/// The client's address, as nginx's `real_ip` module finds it with
/// `real_ip_recursive on`: the peer, or, when the peer is a trusted proxy,
/// the rightmost `X-Forwarded-For` address that is not one (the leftmost
/// when all are). `None` when an address it would pass through cannot be
/// read: a client that cannot be named is not trusted with anything.
pub fn client_address(headers: &HeaderMap, peer: IpAddr, trusted: &[ipnet::IpNet]) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return Some(client);
    }
    for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        for entry in value.to_str().ok()?.rsplit(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            // An entry may carry a port, as `1.2.3.4:5678` or `[::1]:80`.
            let ip = entry
                .parse::<IpAddr>()
                .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
                .ok()?;
            client = ip.to_canonical();
            if !is_trusted(&client) {
                return Some(client);
            }
        }
    }
    Some(client)
}

/// Sets `X-Forwarded-For/-Proto/-Host` and `X-Real-IP`. Forwarded values
/// from a trusted peer are extended; from anyone else they are replaced,
/// since backends (Django's `SECURE_PROXY_SSL_HEADER`, Flask's ProxyFix)
/// believe them, and the other [`CONNECTION_CLAIMS`] removed. `X-Real-IP`
/// is always `client` ([`client_address`]), as the usual nginx config in
/// front of Django and Flask sets it (`$remote_addr`): a backend that reads
/// it must never get the client's own.
///
/// `peer` is the connection's address as a header value ([`ip_value`]), made
/// once per connection rather than formatted on each request.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: &HeaderValue,
    peer_trusted: bool,
    client: HeaderValue,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    // Which of the names a client may have sent are there, in one pass
    // over the names: a hashed lookup each would cost more on every request.
    let (mut has_proto, mut has_host, mut has_forwarded, mut has_claims) = (false, false, false, false);
    for name in headers.keys() {
        has_proto |= name == X_FORWARDED_PROTO;
        has_host |= name == X_FORWARDED_HOST;
        has_forwarded |= name == header::FORWARDED;
        has_claims |= !peer_trusted && is_connection_claim(name);
    }
    let xff = match peer_trusted.then(|| joined(headers, &X_FORWARDED_FOR)).flatten() {
        Some(prior) => HeaderValue::from_str(&format!("{prior}, {}", peer.to_str().unwrap_or_default())).ok(),
        None => Some(peer.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_REAL_IP.clone(), client);
    if !(peer_trusted && has_proto) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !(peer_trusted && has_host) {
        match host {
            Some(h) => drop(headers.insert(X_FORWARDED_HOST.clone(), h.clone())),
            None if has_host => drop(headers.remove(&X_FORWARDED_HOST)),
            None => {}
        }
    }
    if !peer_trusted && has_forwarded {
        headers.remove(header::FORWARDED);
    }
    if has_claims {
        for name in &CONNECTION_CLAIMS {
            headers.remove(name);
        }
    }
}

/// One of [`CONNECTION_CLAIMS`]; most names are told apart by their first byte.
fn is_connection_claim(name: &HeaderName) -> bool {
    matches!(name.as_str().as_bytes().first(), Some(b'x' | b'f')) && CONNECTION_CLAIMS.contains(name)
}

/// `ip` as a header value; IPv4 (the common case) without going through `fmt`.
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    text[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    text[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                text[len] = b'0' + octet % 10;
                len += 1;
            }
            HeaderValue::from_bytes(&text[..len]).expect("digits and dots")
        }
        IpAddr::V6(_) => HeaderValue::from_str(&ip.to_string()).expect("an IPv6 address is a valid header value"),
    }
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Keeps a sane client-supplied request id, otherwise creates one.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    match headers.entry(&X_REQUEST_ID) {
        header::Entry::Occupied(entry) if is_sane_request_id(entry.get()) => entry.get().clone(),
        header::Entry::Occupied(mut entry) => {
            let id = new_request_id();
            entry.insert(id.clone());
            id
        }
        header::Entry::Vacant(entry) => entry.insert(new_request_id()).clone(),
    }
}

fn is_sane_request_id(v: &HeaderValue) -> bool {
    !v.is_empty() && v.len() <= 200 && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
}

fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let random = rand::random::<u128>().to_be_bytes();
    let mut text = [0u8; 32];
    // Two digits per byte of the draw.
    for (pair, byte) in text.chunks_exact_mut(2).zip(random) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    // Shared from the start: the id goes to the backend, the response and
    // the log, and cloning a copied `Bytes` would allocate again.
    HeaderValue::from_maybe_shared(Bytes::from_owner(text)).expect("hex is a valid header value")
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v.trim_matches('"'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn upgrades_keep_their_upgrade_header() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade_request(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
    }

    #[test]
    fn peer_addresses_are_written_as_std_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "192.168.100.9",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(ip).to_str().unwrap(), ip.to_string());
        }
    }

    #[test]
    fn generated_request_ids_are_32_lowercase_hex_digits_and_differ() {
        let (a, b) = (new_request_id(), new_request_id());
        for id in [&a, &b] {
            assert_eq!(id.len(), 32);
            assert!(
                id.as_bytes().iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)),
                "{id:?}"
            );
        }
        assert_ne!(a, b);
    }

    #[test]
    fn forwarded_headers_from_untrusted_peers_are_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        let peer = ip_value("10.0.0.1".parse().unwrap());
        set_forwarded(
            &mut h,
            &peer,
            false,
            peer.clone(),
            "http",
            Some(&HeaderValue::from_static("example.com")),
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.1");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "example.com");
        assert!(h.get("forwarded").is_none());
    }

    #[test]
    fn forwarded_headers_from_trusted_peers_are_extended() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "10.0.0.9"),
        ]);
        let client = ip_value("1.2.3.4".parse().unwrap());
        set_forwarded(&mut h, &ip_value("10.0.0.1".parse().unwrap()), true, client, "http", None);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.2.3.4, 10.0.0.1");
        assert_eq!(h.get("x-real-ip").unwrap(), "1.2.3.4", "the client the trusted peer forwarded");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
    }

    #[test]
    fn hop_by_hop_headers_go_without_a_connection_header_too() {
        let mut h = map(&[
            ("te", "trailers"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "gzip"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);

        let mut untouched = map(&[("host", "example.com"), ("accept", "*/*")]);
        strip_hop_by_hop(&mut untouched, false);
        assert_eq!(untouched.len(), 2);
    }

    #[test]
    fn spoofed_forwarded_values_from_untrusted_peers_all_go() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
            ("x-forwarded-host", "evil.example"),
            ("x-real-ip", "6.6.6.6"),
            ("x-real-ip", "7.7.7.7"),
            ("x-forwarded-port", "6666"),
            ("x-forwarded-ssl", "on"),
            ("x-forwarded-prefix", "/evil"),
            ("front-end-https", "on"),
            ("x-kept", "yes"),
        ]);
        let trusted_copy = h.clone();
        let peer = ip_value("10.0.0.1".parse().unwrap());
        set_forwarded(&mut h, &peer, false, peer.clone(), "https", None);
        for claim in ["x-forwarded-port", "x-forwarded-ssl", "x-forwarded-prefix", "front-end-https"] {
            assert!(h.get(claim).is_none(), "{claim} from an untrusted peer");
        }
        assert_eq!(h.get("x-kept").unwrap(), "yes");
        let mut from_trusted = trusted_copy;
        set_forwarded(&mut from_trusted, &peer, true, peer.clone(), "https", None);
        assert_eq!(
            from_trusted.get("x-forwarded-port").unwrap(),
            "6666",
            "a trusted proxy's claims are kept"
        );
        let xff: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["10.0.0.1"]);
        let real: Vec<_> = h.get_all("x-real-ip").iter().collect();
        assert_eq!(real, ["10.0.0.1"]);
        assert!(h.get("x-forwarded-host").is_none());
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
    }

    #[test]
    fn sane_client_request_ids_are_kept_and_others_replaced() {
        let mut h = map(&[("x-request-id", "abc-123")]);
        assert_eq!(ensure_request_id(&mut h), "abc-123");
        assert_eq!(h.get("x-request-id").unwrap(), "abc-123");

        let mut h = map(&[("x-request-id", "has space"), ("x-request-id", "second")]);
        let id = ensure_request_id(&mut h);
        assert_eq!(id.len(), 32);
        let ids: Vec<_> = h.get_all("x-request-id").iter().collect();
        assert_eq!(ids, [&id]);

        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h);
        assert_eq!(h.get("x-request-id"), Some(&id));
    }

    #[test]
    fn new_request_ids_are_32_lower_case_hex_digits_and_differ() {
        let ids: Vec<HeaderValue> = (0..64).map(|_| new_request_id()).collect();
        for id in &ids {
            assert_eq!(id.len(), 32, "{id:?}");
            assert!(
                id.as_bytes().iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)),
                "{id:?}"
            );
        }
        let distinct: std::collections::HashSet<&[u8]> = ids.iter().map(HeaderValue::as_bytes).collect();
        assert_eq!(distinct.len(), ids.len(), "every id is new");
        // Every digit position takes more than one value: no half of the id is constant.
        for pos in 0..32 {
            let digits: std::collections::HashSet<u8> = ids.iter().map(|id| id.as_bytes()[pos]).collect();
            assert!(digits.len() > 1, "digit {pos} never changes");
        }
    }

    #[test]
    fn client_headers_named_x_cutover_go_and_responses_keep_theirs() {
        let pairs = [
            ("x-cutover-shadow", "1"),
            ("X-Cutover-Force-Token", "t"),
            ("x-cutover-", "empty suffix"),
            ("x-cutoverish", "kept"),
            ("x-kept", "yes"),
            ("te", "trailers"),
        ];
        let mut h = map(&pairs);
        strip_request_headers(&mut h, false);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-cutoverish", "x-kept"]);

        let mut resp = map(&pairs);
        strip_hop_by_hop(&mut resp, false);
        assert_eq!(resp.len(), pairs.len() - 1, "only `te` goes from a response");
    }

    #[test]
    fn the_client_is_the_rightmost_forwarded_address_that_is_not_a_trusted_proxy() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let client = |peer: &str, xff: &[&str]| {
            let pairs: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
            client_address(&map(&pairs), ip(peer), &trusted)
        };
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(client("192.0.2.1", &["10.0.0.1"]), Some(ip("192.0.2.1")));
        // A trusted one: walk right to left, across header lines too.
        assert_eq!(client("10.0.0.1", &[]), Some(ip("10.0.0.1")));
        assert_eq!(client("10.0.0.1", &["192.0.2.7, 10.0.0.2"]), Some(ip("192.0.2.7")));
        assert_eq!(client("10.0.0.1", &["6.6.6.6, 192.0.2.7"]), Some(ip("192.0.2.7")));
        assert_eq!(client("10.0.0.1", &["192.0.2.7", "10.0.0.2,"]), Some(ip("192.0.2.7")));
        assert_eq!(client("10.0.0.1", &["10.0.0.3, 10.0.0.2"]), Some(ip("10.0.0.3")));
        assert_eq!(client("10.0.0.1", &["192.0.2.7:4711"]), Some(ip("192.0.2.7")));
        assert_eq!(client("10.0.0.1", &["[2001:db8::1]:80"]), Some(ip("2001:db8::1")));
        assert_eq!(client("10.0.0.1", &["::ffff:192.0.2.7"]), Some(ip("192.0.2.7")));
        assert_eq!(client("::ffff:10.0.0.1", &["192.0.2.7"]), Some(ip("192.0.2.7")));
        // An address that cannot be read leaves the client unknown...
        assert_eq!(client("10.0.0.1", &["192.0.2.7, unknown"]), None);
        // ...unless a client was found before reaching it.
        assert_eq!(client("10.0.0.1", &["unknown, 192.0.2.7"]), Some(ip("192.0.2.7")));
    }

    #[test]
    fn cookies_are_found_across_headers() {
        let h = map(&[("cookie", "a=1; sessionid=abc"), ("cookie", "cutover_pin=42")]);
        assert_eq!(cookie(&h, "sessionid"), Some("abc"));
        assert_eq!(cookie(&h, "cutover_pin"), Some("42"));
        assert_eq!(cookie(&h, "session"), None);
    }
}
