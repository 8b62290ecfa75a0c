//! `cutover demo`: two built-in backends — a "legacy" Django-style API and
//! a "new" Flask-style rewrite with deliberate differences — and the proxy
//! in front of them, so every feature can be tried on a fresh machine.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

pub const CONFIG: &str = include_str!("../config/demo.yaml");
pub const WEIGHTS: &str = include_str!("../config/demo-weights.yaml");

const CONFIG_LISTEN: &str = "127.0.0.1:8080";
const CONFIG_ADMIN: &str = "127.0.0.1:9901";
const CONFIG_LEGACY: &str = "127.0.0.1:18000";
const CONFIG_NEW: &str = "127.0.0.1:19000";

/// Where the demo's parts listen.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub legacy: SocketAddr,
    pub new: SocketAddr,
}

impl Default for Addresses {
    fn default() -> Self {
        Addresses {
            listen: CONFIG_LISTEN.parse().expect("valid"),
            admin: CONFIG_ADMIN.parse().expect("valid"),
            legacy: CONFIG_LEGACY.parse().expect("valid"),
            new: CONFIG_NEW.parse().expect("valid"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    Legacy,
    New,
}

impl App {
    fn name(self) -> &'static str {
        match self {
            App::Legacy => "legacy",
            App::New => "new",
        }
    }
}

/// Starts a demo backend; returns its bound address.
pub async fn start_app(app: App, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(move |req| serve(app, req)))
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok(bound)
}

/// Writes the demo config into `dir`, pointing at the given addresses.
pub fn write_config(dir: &Path, addrs: &Addresses) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let text = CONFIG
        .replace(CONFIG_LISTEN, &addrs.listen.to_string())
        .replace(CONFIG_ADMIN, &addrs.admin.to_string())
        .replace(CONFIG_LEGACY, &addrs.legacy.to_string())
        .replace(CONFIG_NEW, &addrs.new.to_string());
    let path = dir.join("cutover.yaml");
    std::fs::write(&path, text)?;
    std::fs::write(dir.join("demo-weights.yaml"), WEIGHTS)?;
    Ok(path)
}

struct User {
    id: u32,
    username: &'static str,
    email: &'static str,
    joined: &'static str,
}

const USERS: [User; 3] = [
    User {
        id: 1,
        username: "ada",
        email: "ada@example.com",
        joined: "2019-03-01T10:00:00Z",
    },
    User {
        id: 2,
        username: "grace",
        email: "grace@example.com",
        joined: "2020-07-14T08:30:00Z",
    },
    User {
        id: 3,
        username: "linus",
        email: "linus@example.com",
        joined: "2021-01-05T17:45:00Z",
    },
];

/// Legacy (Django REST Framework style): integer ids, `date_joined`,
/// paginated lists. New (Flask style): string ids, `joined` as a date, bare lists.
fn user_json(app: App, u: &User) -> serde_json::Value {
    match app {
        App::Legacy => {
            json!({"id": u.id, "username": u.username, "email": u.email, "date_joined": u.joined})
        }
        App::New => {
            json!({"id": u.id.to_string(), "username": u.username, "email": u.email, "joined": &u.joined[..10]})
        }
    }
}

async fn serve(app: App, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let login_path = match app {
        App::Legacy => "/api/auth/login/",
        App::New => "/auth/login/",
    };
    let (status, body) = match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => (StatusCode::OK, json!({"status": "ok"})),
        (&Method::GET, "/api/users/") => {
            let users: Vec<_> = USERS.iter().map(|u| user_json(app, u)).collect();
            match app {
                App::Legacy => (
                    StatusCode::OK,
                    json!({"count": users.len(), "next": null, "previous": null, "results": users}),
                ),
                App::New => (StatusCode::OK, json!(users)),
            }
        }
        (&Method::GET, p) if p.starts_with("/api/users/") => {
            let id = p.trim_start_matches("/api/users/").trim_end_matches('/');
            match USERS.iter().find(|u| u.id.to_string() == id) {
                Some(u) => (StatusCode::OK, user_json(app, u)),
                None => (StatusCode::NOT_FOUND, json!({"detail": "Not found."})),
            }
        }
        (&Method::POST, p) if p == login_path => {
            let token = format!("{}-{:016x}", app.name(), rand::random::<u64>());
            (StatusCode::OK, json!({"token": token, "user_id": 1}))
        }
        (_, p) => (
            StatusCode::OK,
            json!({"app": app.name(), "path": p, "message": format!("hello from the {} app", app.name())}),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string() + "\n")));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    resp.headers_mut()
        .insert("x-demo-backend", header::HeaderValue::from_static(app.name()));
    // The path as the app received it, so a rewrite by the proxy can be seen.
    if let Ok(value) = header::HeaderValue::from_str(&path) {
        resp.headers_mut().insert("x-demo-path", value);
    }
    Ok(resp)
}
