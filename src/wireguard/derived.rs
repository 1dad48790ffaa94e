//! Derived (attenuated) credentials, issue 16: a WireGuard token or an API key narrowed offline by
//! its holder, and verified by the server with a public key only.
//!
//! The design is biscuit's (a chain of Ed25519-signed blocks, each naming the key of the next, and
//! the last key's secret carried as the proof), cut down to what sixpn needs: restrictions are a
//! few typed caveats, not Datalog. The signatures are ed25519-dalek's; nothing here is new
//! cryptography.
//!
//! - The parent's **root key pair** is derived from the parent secret:
//!   `seed = SHA-256("sixpn derived-credential root key v1\0" ‖ kind ‖ secret)`. The holder can
//!   compute it offline; the server stores only the public half ([`root_public_hex`]), so a
//!   database dump cannot forge a derived credential.
//! - A credential is `sixpn_dt_` (WireGuard token) or `sixpn_dk_` (API key), then unpadded
//!   base64url of: version (1), kind, the parent's SHA-256 (the hash the store already keys by:
//!   not a secret), block count, the blocks, and the proof. Each block is its caveats, the next
//!   public key, and an Ed25519 signature by the previous key (the root key for the first) over a
//!   domain tag, the kind, the parent hash, the previous block's signature, the caveats and the
//!   next key. The proof is the secret of the last block's next key: whoever holds a derived
//!   credential can append a block (narrow it further) but cannot remove one.
//! - Every caveat of every block holds at once: narrowing only ever narrows.
//!
//! Parsing ([`Derived::parse`]) is bounded ([`MAX_LEN`], [`MAX_BLOCKS`]) and total: any input is
//! either a [`Derived`] or a [`DerivedError`], never a panic (fuzzed by
//! `tests/fuzz/fuzz_targets/derived_token.rs`). `Debug` never shows the proof.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Prefix of a derived WireGuard token.
pub const DERIVED_TOKEN_PREFIX: &str = "sixpn_dt_";
/// Prefix of a derived API key.
pub const DERIVED_KEY_PREFIX: &str = "sixpn_dk_";
/// The longest derived credential read; a longer one is refused before decoding.
pub const MAX_LEN: usize = 2048;
/// The most blocks (successive narrowings) a credential may carry.
pub const MAX_BLOCKS: usize = 4;
/// The most caveat bytes in one block.
const MAX_CAVEATS: usize = 256;
const VERSION: u8 = 1;
const ROOT_DOMAIN: &[u8] = b"sixpn derived-credential root key v1\0";
const SIGN_DOMAIN: &[u8] = b"sixpn derived-credential block v1\0";

const TAG_PEER: u8 = 1;
const TAG_GROUP: u8 = 2;
const TAG_EXPIRES: u8 = 3;
const TAG_ORG: u8 = 4;
const TAG_ROLE: u8 = 5;

/// What a derived credential narrows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A WireGuard token (`sixpn_wg_` → `sixpn_dt_`).
    Token,
    /// An API key (`sixpn_ak_` → `sixpn_dk_`).
    ApiKey,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Token => 1,
            Kind::ApiKey => 2,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Kind::Token => DERIVED_TOKEN_PREFIX,
            Kind::ApiKey => DERIVED_KEY_PREFIX,
        }
    }
}

/// One restriction. Strings are checked by the server against its own types (a peer name that
/// is no DNS label simply matches nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caveat {
    /// Only this peer name (WireGuard tokens).
    Peer(String),
    /// Only this group (WireGuard tokens).
    Group(String),
    /// Not at or after this time, unix seconds.
    Expires(i64),
    /// Only this org (API keys).
    Org(String),
    /// At most this role (API keys): 0 viewer, 1 operator, 2 owner.
    Role(u8),
}

/// Why a derived credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DerivedError {
    /// Not a derived credential of the expected kind, too long, or not well formed.
    #[error("malformed derived credential")]
    Malformed,
    /// A signature does not verify, or the proof does not match: tampered with.
    #[error("derived credential does not verify")]
    BadSignature,
}

/// The parent's public root key, hex, as the store keeps it.
pub fn root_public_hex(kind: Kind, parent_secret: &str) -> String {
    hex(root_key(kind, parent_secret).verifying_key().as_bytes())
}

fn root_key(kind: Kind, parent_secret: &str) -> SigningKey {
    let mut h = Sha256::new();
    h.update(ROOT_DOMAIN);
    h.update([kind.byte()]);
    h.update(parent_secret.as_bytes());
    SigningKey::from_bytes(&h.finalize().into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits (a stored key or hash).
pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

struct Block {
    caveats: Vec<u8>,
    next: [u8; 32],
    signature: [u8; 64],
}

/// A parsed derived credential: not yet verified (see [`Derived::verify`]).
pub struct Derived {
    kind: Kind,
    parent: [u8; 32],
    blocks: Vec<Block>,
    proof: [u8; 32],
}

impl fmt::Debug for Derived {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Derived")
            .field("kind", &self.kind)
            .field("blocks", &self.blocks.len())
            .field("proof", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn message(kind: Kind, parent: &[u8; 32], previous: &[u8; 64], block: &Block) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGN_DOMAIN.len() + 1 + 32 + 64 + 2 + block.caveats.len() + 32);
    m.extend_from_slice(SIGN_DOMAIN);
    m.push(kind.byte());
    m.extend_from_slice(parent);
    m.extend_from_slice(previous);
    m.extend_from_slice(&(block.caveats.len() as u16).to_be_bytes());
    m.extend_from_slice(&block.caveats);
    m.extend_from_slice(&block.next);
    m
}

fn encode_caveats(caveats: &[Caveat]) -> Result<Vec<u8>, DerivedError> {
    let mut out = Vec::new();
    for caveat in caveats {
        let (tag, value): (u8, Vec<u8>) = match caveat {
            Caveat::Peer(s) => (TAG_PEER, s.as_bytes().to_vec()),
            Caveat::Group(s) => (TAG_GROUP, s.as_bytes().to_vec()),
            Caveat::Org(s) => (TAG_ORG, s.as_bytes().to_vec()),
            Caveat::Expires(t) => (TAG_EXPIRES, t.to_be_bytes().to_vec()),
            Caveat::Role(r) => (TAG_ROLE, vec![*r]),
        };
        if value.len() > 255 {
            return Err(DerivedError::Malformed);
        }
        out.push(tag);
        out.push(value.len() as u8);
        out.extend_from_slice(&value);
    }
    if out.len() > MAX_CAVEATS {
        return Err(DerivedError::Malformed);
    }
    Ok(out)
}

fn decode_caveats(kind: Kind, mut bytes: &[u8], out: &mut Vec<Caveat>) -> Result<(), DerivedError> {
    while let [tag, len, rest @ ..] = bytes {
        let len = usize::from(*len);
        if rest.len() < len {
            return Err(DerivedError::Malformed);
        }
        let (value, tail) = rest.split_at(len);
        bytes = tail;
        let text = || {
            std::str::from_utf8(value)
                .map(str::to_owned)
                .map_err(|_| DerivedError::Malformed)
        };
        let caveat = match (kind, *tag) {
            (Kind::Token, TAG_PEER) => Caveat::Peer(text()?),
            (Kind::Token, TAG_GROUP) => Caveat::Group(text()?),
            (Kind::ApiKey, TAG_ORG) => Caveat::Org(text()?),
            (Kind::ApiKey, TAG_ROLE) => match value {
                [r @ 0..=2] => Caveat::Role(*r),
                _ => return Err(DerivedError::Malformed),
            },
            (_, TAG_EXPIRES) => Caveat::Expires(i64::from_be_bytes(
                value.try_into().map_err(|_| DerivedError::Malformed)?,
            )),
            // An unknown caveat fails closed.
            _ => return Err(DerivedError::Malformed),
        };
        out.push(caveat);
    }
    if bytes.is_empty() {
        Ok(())
    } else {
        Err(DerivedError::Malformed)
    }
}

/// Whether `text` looks like a derived credential of `kind` (by prefix only).
pub fn is_derived(kind: Kind, text: &str) -> bool {
    text.starts_with(kind.prefix())
}

/// Narrows `parent` (a `sixpn_wg_`/`sixpn_ak_` secret, or a derived credential of the same kind)
/// with `caveats`, offline. `ephemeral_seed` is 32 fresh random bytes (the next block's key).
///
/// # Errors
/// [`DerivedError::Malformed`] when the parent is a malformed derived credential or the caveats
/// are too long.
pub fn attenuate(
    kind: Kind,
    parent: &str,
    caveats: &[Caveat],
    ephemeral_seed: [u8; 32],
) -> Result<String, DerivedError> {
    let caveats = encode_caveats(caveats)?;
    let next = SigningKey::from_bytes(&ephemeral_seed);
    let mut derived = if is_derived(kind, parent) {
        Derived::parse(kind, parent)?
    } else {
        Derived {
            kind,
            parent: Sha256::digest(parent.as_bytes()).into(),
            blocks: Vec::new(),
            proof: root_key(kind, parent).to_bytes(),
        }
    };
    if derived.blocks.len() >= MAX_BLOCKS {
        return Err(DerivedError::Malformed);
    }
    let signer = SigningKey::from_bytes(&derived.proof);
    let previous = derived.blocks.last().map_or([0u8; 64], |b| b.signature);
    let mut block = Block {
        caveats,
        next: next.verifying_key().to_bytes(),
        signature: [0u8; 64],
    };
    block.signature = signer
        .sign(&message(kind, &derived.parent, &previous, &block))
        .to_bytes();
    derived.blocks.push(block);
    derived.proof = next.to_bytes();
    Ok(derived.encode())
}

impl Derived {
    /// Parses `text` (bounded; never panics). Nothing is verified yet.
    ///
    /// # Errors
    /// [`DerivedError::Malformed`].
    pub fn parse(kind: Kind, text: &str) -> Result<Derived, DerivedError> {
        if text.len() > MAX_LEN {
            return Err(DerivedError::Malformed);
        }
        let body = text
            .strip_prefix(kind.prefix())
            .ok_or(DerivedError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| DerivedError::Malformed)?;
        let mut r = Reader(&bytes);
        if r.byte()? != VERSION || r.byte()? != kind.byte() {
            return Err(DerivedError::Malformed);
        }
        let parent = r.array::<32>()?;
        let n = usize::from(r.byte()?);
        if n == 0 || n > MAX_BLOCKS {
            return Err(DerivedError::Malformed);
        }
        let mut blocks = Vec::with_capacity(n);
        for _ in 0..n {
            let len = usize::from(u16::from_be_bytes(r.array::<2>()?));
            if len > MAX_CAVEATS {
                return Err(DerivedError::Malformed);
            }
            let caveats = r.take(len)?.to_vec();
            let next = r.array::<32>()?;
            let signature = r.array::<64>()?;
            blocks.push(Block {
                caveats,
                next,
                signature,
            });
        }
        let proof = r.array::<32>()?;
        if !r.0.is_empty() {
            return Err(DerivedError::Malformed);
        }
        let derived = Derived {
            kind,
            parent,
            blocks,
            proof,
        };
        // Re-encoding must give back the same text: one credential, one spelling.
        if derived.encode() != text {
            return Err(DerivedError::Malformed);
        }
        Ok(derived)
    }

    /// The parent's SHA-256, hex: the `secret_hash` the store looks it up by.
    pub fn parent_hash_hex(&self) -> String {
        hex(&self.parent)
    }

    /// Verifies the chain against the parent's public root key and returns every caveat.
    ///
    /// # Errors
    /// [`DerivedError::BadSignature`]; [`DerivedError::Malformed`] for caveats it cannot read.
    pub fn verify(&self, root_public: &[u8; 32]) -> Result<Vec<Caveat>, DerivedError> {
        let mut key =
            VerifyingKey::from_bytes(root_public).map_err(|_| DerivedError::BadSignature)?;
        let mut previous = [0u8; 64];
        let mut caveats = Vec::new();
        for block in &self.blocks {
            let signature = Signature::from_bytes(&block.signature);
            key.verify_strict(
                &message(self.kind, &self.parent, &previous, block),
                &signature,
            )
            .map_err(|_| DerivedError::BadSignature)?;
            decode_caveats(self.kind, &block.caveats, &mut caveats)?;
            key = VerifyingKey::from_bytes(&block.next).map_err(|_| DerivedError::BadSignature)?;
            previous = block.signature;
        }
        // The proof must be the secret of the last key: nobody dropped the last block.
        let proof = SigningKey::from_bytes(&self.proof).verifying_key();
        let matches: bool =
            subtle::ConstantTimeEq::ct_eq(&proof.as_bytes()[..], &key.as_bytes()[..]).into();
        if !matches {
            return Err(DerivedError::BadSignature);
        }
        Ok(caveats)
    }

    fn encode(&self) -> String {
        let mut out = vec![VERSION, self.kind.byte()];
        out.extend_from_slice(&self.parent);
        out.push(self.blocks.len() as u8);
        for block in &self.blocks {
            out.extend_from_slice(&(block.caveats.len() as u16).to_be_bytes());
            out.extend_from_slice(&block.caveats);
            out.extend_from_slice(&block.next);
            out.extend_from_slice(&block.signature);
        }
        out.extend_from_slice(&self.proof);
        format!("{}{}", self.kind.prefix(), URL_SAFE_NO_PAD.encode(out))
    }
}

/// A bounded memo of credentials that verified: SHA-256(root public key ‖ credential text) →
/// caveats. Verification is a pure function of those two inputs, so a hit is as good as
/// verifying again (the parent's row — deleted, expired — and the caveats' expiry are still
/// checked on every request by the caller). Only successes are kept; at [`VerifyCache::CAP`]
/// entries it starts over.
#[derive(Default)]
pub struct VerifyCache {
    map: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::sync::Arc<Vec<Caveat>>>>,
}

impl fmt::Debug for VerifyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VerifyCache(..)")
    }
}

impl VerifyCache {
    /// The most entries kept.
    pub const CAP: usize = 8192;

    /// [`Derived::verify`] of `parsed` (parsed from `text`), remembered.
    ///
    /// # Errors
    /// Those of [`Derived::verify`].
    pub fn verify(
        &self,
        text: &str,
        parsed: &Derived,
        root_public: &[u8; 32],
    ) -> Result<std::sync::Arc<Vec<Caveat>>, DerivedError> {
        let mut h = Sha256::new();
        h.update(root_public);
        h.update(text.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        if let Some(hit) = self.lock().get(&key) {
            return Ok(hit.clone());
        }
        let caveats = std::sync::Arc::new(parsed.verify(root_public)?);
        let mut map = self.lock();
        if map.len() >= Self::CAP {
            map.clear();
        }
        map.insert(key, caveats.clone());
        Ok(caveats)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 32], std::sync::Arc<Vec<Caveat>>>>
    {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DerivedError> {
        if self.0.len() < n {
            return Err(DerivedError::Malformed);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, DerivedError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DerivedError> {
        self.take(N)?
            .try_into()
            .map_err(|_| DerivedError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str =
        "sixpn_wg_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn root() -> [u8; 32] {
        parse_hex32(&root_public_hex(Kind::Token, PARENT)).unwrap()
    }

    #[test]
    fn round_trip_and_chain() {
        let one = attenuate(
            Kind::Token,
            PARENT,
            &[Caveat::Peer("node-1".into()), Caveat::Expires(42)],
            [7; 32],
        )
        .unwrap();
        assert!(one.starts_with(DERIVED_TOKEN_PREFIX));
        assert!(one.bytes().all(|b| b.is_ascii_graphic()));
        let parsed = Derived::parse(Kind::Token, &one).unwrap();
        assert_eq!(
            parsed.parent_hash_hex(),
            hex(&Sha256::digest(PARENT.as_bytes()))
        );
        assert_eq!(
            parsed.verify(&root()).unwrap(),
            vec![Caveat::Peer("node-1".into()), Caveat::Expires(42)]
        );
        assert!(!format!("{parsed:?}").contains("proof: ["));
        // Narrowed again by its holder, offline.
        let two = attenuate(Kind::Token, &one, &[Caveat::Group("web".into())], [8; 32]).unwrap();
        let caveats = Derived::parse(Kind::Token, &two)
            .unwrap()
            .verify(&root())
            .unwrap();
        assert_eq!(caveats.len(), 3);
        // Another parent's key does not verify it; neither does the wrong kind.
        let other = parse_hex32(&root_public_hex(Kind::ApiKey, PARENT)).unwrap();
        assert_eq!(
            parsed.verify(&other).unwrap_err(),
            DerivedError::BadSignature
        );
        assert!(Derived::parse(Kind::ApiKey, &one).is_err());
        // The memo: the same answer twice, and never for another key.
        let cache = VerifyCache::default();
        for _ in 0..2 {
            assert_eq!(cache.verify(&one, &parsed, &root()).unwrap().len(), 2);
        }
        assert!(cache.verify(&one, &parsed, &other).is_err());
    }

    #[test]
    fn dropping_the_last_block_or_flipping_bits_fails() {
        let one = attenuate(Kind::Token, PARENT, &[Caveat::Peer("a".into())], [7; 32]).unwrap();
        let two = attenuate(Kind::Token, &one, &[Caveat::Peer("b".into())], [8; 32]).unwrap();
        let mut d = Derived::parse(Kind::Token, &two).unwrap();
        d.blocks.pop();
        assert!(d.verify(&root()).is_err());
        let bytes = URL_SAFE_NO_PAD
            .decode(&one[DERIVED_TOKEN_PREFIX.len()..])
            .unwrap();
        for i in 0..bytes.len() {
            for bit in [1u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                let text = format!("{DERIVED_TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(&b));
                let ok = Derived::parse(Kind::Token, &text)
                    .and_then(|d| d.verify(&root()))
                    .is_ok();
                assert!(!ok, "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn garbage_is_malformed() {
        for text in [
            "",
            "sixpn_dt_",
            "sixpn_dt_AAAA",
            "sixpn_dt_!!",
            "sixpn_wg_00",
        ] {
            assert!(Derived::parse(Kind::Token, text).is_err(), "{text}");
        }
        let long = format!("sixpn_dt_{}", "A".repeat(MAX_LEN));
        assert_eq!(
            Derived::parse(Kind::Token, &long).unwrap_err(),
            DerivedError::Malformed
        );
    }
}
