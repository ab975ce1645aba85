//! SVID renewal (`[identity] ca_server`): at half of the SVID's life the node asks the CA
//! service for a new one with a fresh key, authenticating with the current SVID. The
//! renewed files replace those in `[identity] dir`; new handshakes present the new SVID
//! at once, link-state is signed with it from then on, and existing links are kept: the
//! driver sends the new certificate on each (an SVID update, which the peer verifies
//! like a handshake's and which moves the link's expiry), so no message is lost.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use x0tta6bl4_identity::{FederatedBundles, NodeIdentity, SignerHandle};

use crate::transport::LinkTls;

/// Shortest wait between attempts after a failed renewal.
const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between attempts after a failed renewal.
const RETRY_MAX: Duration = Duration::from_secs(60);

pub(crate) struct Renewal {
    /// IP:PORT or HOST:PORT, resolved at each renewal (a recreated CA service pod may
    /// come back with a new address under its Service name).
    pub server: String,
    pub dir: PathBuf,
    pub tls: Arc<LinkTls>,
    pub signer: SignerHandle,
    pub shared: Arc<crate::state::Shared>,
    /// `[identity] federation`, kept across renewals.
    pub federated: FederatedBundles,
}

/// Use `identity` from now on: link-state is signed with it, new handshakes present it
/// (existing links keep the SVID they were opened with). Shared by renewal from the CA
/// service and by the Workload API's updates.
pub(crate) fn install(
    identity: NodeIdentity,
    tls: &LinkTls,
    signer: &SignerHandle,
    shared: &crate::state::Shared,
    source: &str,
) {
    let not_after = humantime(identity.not_after());
    signer.replace(&identity);
    *shared
        .svid_not_after
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = identity.not_after();
    *shared
        .svid_issued
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = issued(&identity);
    tls.replace(identity);
    tracing::info!(%source, %not_after, "SVID renewed: new handshakes use it");
}

/// When `identity` was issued: certificates start CLOCK_SKEW_ALLOWANCE before that
/// (never after their notAfter, for a certificate of another CA's making).
pub(crate) fn issued(identity: &NodeIdentity) -> SystemTime {
    (identity.not_before() + x0tta6bl4_identity::CLOCK_SKEW_ALLOWANCE).min(identity.not_after())
}

impl Renewal {
    /// When the current SVID should be renewed: half-way through its validity.
    fn due(&self) -> SystemTime {
        let identity = self.tls.current();
        let issued = issued(&identity);
        let life = identity
            .not_after()
            .duration_since(issued)
            .unwrap_or_default();
        issued + life / 2
    }

    /// Renew at every half-life until `stop` turns true.
    pub(crate) async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut retry = RETRY_MIN;
        loop {
            let wait = self
                .due()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tracing::debug!(?wait, server = %self.server, "next SVID renewal");
            tokio::select! {
                _ = crate::state::stopped(&mut stop) => return,
                () = tokio::time::sleep(wait) => {}
            }
            let (server, dir) = (self.server.clone(), self.dir.clone());
            let federated = self.federated.clone();
            let renewed = tokio::task::spawn_blocking(move || {
                x0tta6bl4_identity::renew(resolve(&server)?, &dir)?.with_federation(&federated)
            })
            .await;
            match renewed {
                Ok(Ok(identity)) => {
                    retry = RETRY_MIN;
                    let source = format!("CA service {}", self.server);
                    install(identity, &self.tls, &self.signer, &self.shared, &source);
                }
                Ok(Err(error)) => {
                    tracing::warn!(server = %self.server, %error, ?retry, "SVID renewal failed; retrying");
                    retry = self.back_off(retry, &mut stop).await;
                }
                Err(error) => {
                    tracing::error!(%error, "SVID renewal task failed");
                    retry = self.back_off(retry, &mut stop).await;
                }
            }
        }
    }

    /// Wait `retry` (or until stopped); returns the next, doubled, delay.
    async fn back_off(
        &self,
        retry: Duration,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Duration {
        tokio::select! {
            _ = crate::state::stopped(stop) => {}
            () = tokio::time::sleep(retry) => {}
        }
        (retry * 2).min(RETRY_MAX)
    }
}

/// The first address `server` (IP:PORT or HOST:PORT) resolves to now.
fn resolve(server: &str) -> Result<SocketAddr, x0tta6bl4_identity::Error> {
    server
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            x0tta6bl4_identity::Error::Config(format!(
                "CA service {server}: the name does not resolve (check [identity] ca_server \
                 and DNS)"
            ))
        })
}

fn humantime(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!("@{secs}")
}
