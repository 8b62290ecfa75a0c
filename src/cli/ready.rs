//! `--ready-file`: where a proxy started on ephemeral ports (`127.0.0.1:0`)
//! tells scripts and tests the addresses it bound, so that nobody has to
//! read them out of the log.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use cutover::server::Running;

/// The file's content: one line of JSON.
#[derive(Serialize)]
struct Announcement<'a> {
    pid: u32,
    /// In config order: the first is the one a single-listener setup serves on.
    listeners: Vec<Listener<'a>>,
    admin: SocketAddr,
}

#[derive(Serialize)]
struct Listener<'a> {
    name: &'a str,
    addr: SocketAddr,
}

/// The ready file of this run: written once the proxy serves, removed once
/// it stops accepting (or exits). A file left by a killed run names that
/// run's pid, so a reader compares `pid` with the process it started.
pub struct ReadyFile {
    path: PathBuf,
    /// What this run wrote, once it has.
    written: Option<Vec<u8>>,
}

impl ReadyFile {
    pub fn new(path: PathBuf) -> ReadyFile {
        ReadyFile { path, written: None }
    }

    /// Writes the bound addresses atomically: a reader sees no file or all of it.
    pub fn announce(&mut self, running: &Running) -> anyhow::Result<()> {
        let announcement = Announcement {
            pid: std::process::id(),
            listeners: running
                .listeners
                .iter()
                .map(|(name, addr)| Listener { name, addr: *addr })
                .collect(),
            admin: running.admin_addr,
        };
        let mut text = serde_json::to_vec(&announcement).context("cannot encode the ready file")?;
        text.push(b'\n');
        cutover::config::file::write_atomic(&self.path, &text)
            .with_context(|| format!("cannot write the ready file {}", self.path.display()))?;
        self.written = Some(text);
        Ok(())
    }
}

impl Drop for ReadyFile {
    fn drop(&mut self) {
        // Only our own announcement: a run that failed to start, or one
        // whose file another run has since replaced, leaves the file alone.
        if let Some(text) = &self.written
            && std::fs::read(&self.path).is_ok_and(|now| now == *text)
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
