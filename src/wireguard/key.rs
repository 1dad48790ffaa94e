//! Curve25519 keys in WireGuard's text form (standard base64 with padding, 44 characters).

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Why a string is not a usable WireGuard public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 44 characters of padded base64, or not 32 bytes once decoded.
    #[error("a WireGuard key is 32 bytes in standard base64: 44 characters ending in '='")]
    Length,
    /// Not valid standard base64.
    #[error("a WireGuard key must be standard base64 (A-Z a-z 0-9 + /) ending in '='")]
    Base64,
    /// A small-order point: every handshake with it would fail.
    #[error(
        "the key is a low-order point (all-zero shared secret); generate one with `wg genkey | wg pubkey`"
    )]
    LowOrder,
}

/// A WireGuard public key (a Curve25519 point), checked on parse.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parses WireGuard's text form and rejects low-order points.
    ///
    /// # Errors
    /// [`KeyError`] says which check failed.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let out = decode_key(s)?;
        // For a fixed clamped scalar, x25519(k, u) is all zeros exactly when u is small-order.
        if x25519_dalek::x25519([0x42; 32], out) == [0u8; 32] {
            return Err(KeyError::LowOrder);
        }
        Ok(PublicKey(out))
    }

    /// Decodes a key that was checked by [`PublicKey::parse`] before it was stored (a row or a
    /// change-log entry read back from the store): base64 only, no curve arithmetic, so loading a
    /// million rows costs a million decodes, not a million scalar multiplications.
    ///
    /// Never use it for input from a client: that goes through [`PublicKey::parse`].
    ///
    /// # Errors
    /// [`KeyError::Length`] or [`KeyError::Base64`] (a row edited by hand).
    pub fn from_trusted_base64(s: &str) -> Result<Self, KeyError> {
        decode_key(s).map(PublicKey)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key in WireGuard's text form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The key as lowercase hex, the form WireGuard's UAPI uses.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PublicKey::parse(s)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PublicKey::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Decodes WireGuard's text form of a 32-byte key: 44 characters of padded standard base64.
fn decode_key(s: &str) -> Result<[u8; 32], KeyError> {
    if s.len() != 44 || !s.ends_with('=') || s.ends_with("==") {
        return Err(KeyError::Length);
    }
    let mut out = [0u8; 32];
    let n = STANDARD
        .decode_slice(s, &mut out)
        .map_err(|_| KeyError::Base64)?;
    if n != 32 {
        return Err(KeyError::Length);
    }
    Ok(out)
}

/// A WireGuard private key. Its `Debug` is redacted; it has no `Display` or `Serialize`.
#[derive(Clone)]
pub struct PrivateKey(x25519_dalek::StaticSecret);

impl PrivateKey {
    /// Generates a key from the operating system's secure random source.
    ///
    /// # Errors
    /// Fails only if the OS random source is unavailable.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self::from_bytes(bytes))
    }

    /// A key from raw bytes (clamped as X25519 requires when used).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PrivateKey(x25519_dalek::StaticSecret::from(bytes))
    }

    /// Parses WireGuard's text form (`wg genkey` output).
    ///
    /// # Errors
    /// [`KeyError::Length`] or [`KeyError::Base64`].
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        decode_key(s.trim()).map(Self::from_bytes)
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// The key in WireGuard's text form. Only for writing the owner's own config or key file.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    /// The key as lowercase hex, the form WireGuard's UAPI uses.
    pub fn to_hex(&self) -> String {
        self.0
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A key pair from `wg genkey | tee /dev/stderr | wg pubkey`.
    const PRIV: &str = "uIifE+ZJ/igbATs1pzLUTJyEVWp5xL1lpTBiPpVcpHw=";
    const PUB: &str = "s6k35vSpDrtq5ERd7XHOL4udSAJZaA6kXIK+kw6c9C0=";

    #[test]
    fn known_vector() {
        let k = PrivateKey::parse(PRIV).unwrap();
        assert_eq!(k.public_key().to_base64(), PUB);
        assert_eq!(PublicKey::parse(PUB).unwrap().to_base64(), PUB);
    }

    #[test]
    fn rejects_bad_keys() {
        let zero = STANDARD.encode([0u8; 32]);
        assert_eq!(PublicKey::parse(&zero), Err(KeyError::LowOrder));
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(
            PublicKey::parse(&STANDARD.encode(one)),
            Err(KeyError::LowOrder)
        );
        assert_eq!(PublicKey::parse("abc"), Err(KeyError::Length));
        assert_eq!(PublicKey::parse(&PUB[..43]), Err(KeyError::Length));
        let url_safe = PUB.replace('+', "-").replace('/', "_");
        if url_safe != PUB {
            assert_eq!(PublicKey::parse(&url_safe), Err(KeyError::Base64));
        }
        // Non-canonical trailing bits in the last data character.
        let mut bad = PUB.to_string();
        bad.replace_range(42..43, "x");
        assert_eq!(PublicKey::parse(&bad), Err(KeyError::Base64));
    }

    #[test]
    fn trusted_decoding_skips_only_the_curve_check() {
        let p = PublicKey::parse(PUB).unwrap();
        assert_eq!(PublicKey::from_trusted_base64(PUB), Ok(p));
        // The store only holds keys that passed `parse`; a trusted read does not redo the check.
        let zero = STANDARD.encode([0u8; 32]);
        assert!(PublicKey::from_trusted_base64(&zero).is_ok());
        assert_eq!(PublicKey::from_trusted_base64("abc"), Err(KeyError::Length));
        let mut bad = PUB.to_string();
        bad.replace_range(42..43, "x");
        assert_eq!(PublicKey::from_trusted_base64(&bad), Err(KeyError::Base64));
    }

    #[test]
    fn generated_keys_round_trip() {
        let k = PrivateKey::generate().unwrap();
        let p = k.public_key();
        assert_eq!(PublicKey::parse(&p.to_base64()).unwrap(), p);
        assert_eq!(format!("{k:?}"), "PrivateKey(<redacted>)");
    }
}
