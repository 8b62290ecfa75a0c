//! A backend that answers from a directory (`url: file:/srv/app/static`),
//! as nginx's `root` does: the static files a Django or Flask deployment
//! has nginx serve, beside the proxied application.
//!
//! tower-http's `ServeDir` does the serving: `GET` and `HEAD` only (405
//! otherwise), content types from the file name, `Last-Modified` and
//! conditional requests, ranges, `index.html` for a directory, and no path
//! that leaves the directory.

use std::io;
use std::path::Path;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Empty;
use hyper::Request;
use tower_http::services::ServeDir;
use tower_http::services::fs::ServeFileSystemResponseBody;

use super::body::RequestBody;
use super::pool::UpstreamBody;

/// The body of a file backend's answer.
pub type FileBody = ServeFileSystemResponseBody;

/// Serves the files under one directory.
pub struct Files {
    serve: ServeDir,
}

impl Files {
    pub fn new(directory: &Path) -> Files {
        let serve = ServeDir::new(directory)
            .append_index_html_on_directories(true)
            // A redirect would name the path as the backend sees it, which a
            // route's `rewrite` may have changed: `/dir` serves `/dir/index.html`.
            .redirect_to_trailing_slash(false);
        Files { serve }
    }

    /// The answer to `req`, whose path is looked up under the directory.
    /// What the file system refuses is answered as nginx does: 404 for a
    /// path that is not there, 403 for a file cutover may not read, 500
    /// (logged) for anything else.
    pub async fn send(&self, req: Request<RequestBody>) -> Response<UpstreamBody> {
        let (parts, _) = req.into_parts();
        let req = Request::from_parts(parts, Empty::<Bytes>::new());
        match self.serve.clone().try_call(req).await {
            Ok(resp) => resp.map(UpstreamBody::file),
            Err(e) => {
                let status = match e.kind() {
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => StatusCode::NOT_FOUND,
                    io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
                    _ => {
                        tracing::warn!(error = %e, "a file backend could not answer");
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                };
                let mut resp = Response::new(UpstreamBody::empty());
                *resp.status_mut() = status;
                resp
            }
        }
    }
}
