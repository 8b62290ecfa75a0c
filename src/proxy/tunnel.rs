//! Protocol upgrades (WebSocket and the like): once the backend has switched
//! protocols, the client and backend connections are spliced together.
//!
//! The splice runs in its client connection's task once hyper has handed
//! the connection over ([`ConnInfo::take_tunnel`]), not in a task of its
//! own: it then counts against `server.max_connections` like any client
//! connection, and ends with the serving thread.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::upstream::StallWatch;

/// The two sides of a protocol switch, to be spliced once both have switched.
#[derive(Debug)]
pub struct Tunnel {
    client: OnUpgrade,
    backend: OnUpgrade,
    /// The backend's `tunnel_idle_timeout`: zero is never.
    idle_timeout: Duration,
}

/// How a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum TunnelEnd {
    /// One side closed, and what it sent was passed on.
    Closed,
    /// Nothing went either way for `tunnel_idle_timeout`.
    Idle,
    Failed,
}

impl Tunnel {
    pub fn new(client: OnUpgrade, backend: OnUpgrade, idle_timeout: Duration) -> Tunnel {
        Tunnel {
            client,
            backend,
            idle_timeout,
        }
    }

    /// Passes bytes both ways until either side closes or nothing moves
    /// for the idle timeout.
    pub async fn run(self) -> TunnelEnd {
        let (client, backend) = match tokio::try_join!(self.client, self.backend) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "protocol upgrade failed");
                return TunnelEnd::Failed;
            }
        };
        let moved = AtomicBool::new(false);
        let mut client = Moving::new(TokioIo::new(client), &moved);
        let mut backend = Moving::new(TokioIo::new(backend), &moved);
        let mut copy = std::pin::pin!(tokio::io::copy_bidirectional(&mut client, &mut backend));
        let mut idle = StallWatch::new(self.idle_timeout);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = copy.as_mut().poll(cx) {
                return Poll::Ready(match result {
                    Ok(_) => TunnelEnd::Closed,
                    Err(e) => {
                        tracing::debug!(error = %e, "upgraded connection ended with an error");
                        TunnelEnd::Failed
                    }
                });
            }
            let Some(idle) = &mut idle else { return Poll::Pending };
            if moved.swap(false, Ordering::Relaxed) {
                idle.progressed();
            }
            match idle.stalled(cx) {
                true => {
                    tracing::debug!(limit = ?idle.limit(), "upgraded connection idle: closed (tunnel_idle_timeout)");
                    Poll::Ready(TunnelEnd::Idle)
                }
                false => Poll::Pending,
            }
        })
        .await
    }
}

/// One side of a tunnel, noting when bytes move through it.
struct Moving<'a, T> {
    io: T,
    moved: &'a AtomicBool,
}

impl<'a, T> Moving<'a, T> {
    fn new(io: T, moved: &'a AtomicBool) -> Self {
        Moving { io, moved }
    }

    fn note<R>(&self, polled: &Poll<io::Result<R>>, count: impl FnOnce(&R) -> bool) {
        if let Poll::Ready(Ok(r)) = polled
            && count(r)
        {
            self.moved.store(true, Ordering::Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Moving<'_, T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let grew = buf.filled().len() > before;
        self.note(&polled, |()| grew);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Moving<'_, T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note(&polled, |n| *n > 0);
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
