//! The gateway: keeps a WireGuard interface equal to the store for its region.
//! (Being written; [`GatewayHandle`] is the interface the API uses.)

use crate::model::PeerStatus;
use crate::wireguard::PublicKey;

/// A handle to the running gateway, cheap to clone.
#[derive(Debug, Clone)]
pub struct GatewayHandle {}

impl GatewayHandle {
    /// Live status of the peer with this public key on the interface, if it is there.
    pub async fn peer_status(&self, key: &PublicKey) -> Option<PeerStatus> {
        let _ = key;
        None
    }
}
