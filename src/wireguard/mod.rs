//! WireGuard keys and wg-quick configuration files.
//!
//! This module never sends a private key anywhere: [`PrivateKey`] has no `Serialize` and a
//! redacted `Debug`; only [`PrivateKey::to_base64`] reveals it, for writing the node's own file.

mod conf;
pub mod derived;
mod key;

pub use conf::{
    ConfError, DEFAULT_WIREGUARD_PORT, Endpoint, EndpointError, PERSISTENT_KEEPALIVE,
    WgQuickConfig, is_interface_name,
};
pub use key::{KeyError, PrivateKey, PublicKey};
