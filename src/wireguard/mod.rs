//! WireGuard keys and wg-quick configuration files.
//!
//! This module never sends a private key anywhere: [`PrivateKey`] has no `Serialize` and a
//! redacted `Debug`; only [`PrivateKey::to_base64`] reveals it, for writing the node's own file.

mod key;

pub use key::{KeyError, PrivateKey, PublicKey};
