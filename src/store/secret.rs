//! WireGuard token secrets: generated, shown once, stored only as a hash.

use std::fmt;

use sha2::{Digest, Sha256};

/// The recognisable prefix of every token secret.
pub const TOKEN_PREFIX: &str = "sixpn_wg_";

/// A token secret. `Debug` is redacted; there is no `Display` or `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// A new secret: the prefix and 32 random bytes in hex.
    ///
    /// # Panics
    /// Only if the OS random source fails, which leaves nothing safe to do.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source must work to mint a token");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        TokenSecret(format!("{TOKEN_PREFIX}{hex}"))
    }

    /// The secret itself, to show the admin once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// The stored form of a presented secret: SHA-256, hex.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
