//! Protocol upgrades (WebSocket and the like): once the backend has switched
//! protocols, the client and backend connections are spliced together.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Splices the client and backend connections once both have switched protocols.
pub fn tunnel(client: OnUpgrade, backend: OnUpgrade) {
    tokio::spawn(async move {
        match tokio::try_join!(client, backend) {
            Ok((client, backend)) => {
                let mut client = TokioIo::new(client);
                let mut backend = TokioIo::new(backend);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                    tracing::debug!(error = %e, "upgraded connection ended with an error");
                }
            }
            Err(e) => tracing::debug!(error = %e, "protocol upgrade failed"),
        }
    });
}
