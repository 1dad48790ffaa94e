//! The derived-credential parser and verifier (`wireguard::derived`, issue 16): what the server
//! runs on a presented `sixpn_dt_`/`sixpn_dk_` credential before any database query.
//!
//! Input: the first byte picks the kind (even: WireGuard token, odd: API key); the rest is taken
//! as the credential text (lossily as UTF-8) and, separately, as the decoded body under the
//! kind's prefix (so the fuzzer reaches the binary layout without having to learn base64).
//!
//! Properties: `Derived::parse` never panics and refuses anything over `MAX_LEN`; whatever
//! parses, `verify` never panics and never accepts with a key it was not signed by (a fixed
//! root key here, whose secret the input cannot know), and `parent_hash_hex` is 64 hex digits.
//! A genuine credential of the fixed parent is also mutated with the input and must then
//! fail verification unless the mutation left it unchanged.

#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use sixpn::wireguard::derived::{self, Caveat, Derived, Kind, MAX_LEN};

const PARENT: &str = "sixpn_wg_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn root(kind: Kind) -> [u8; 32] {
    derived::parse_hex32(&derived::root_public_hex(kind, PARENT)).expect("hex")
}

fn genuine() -> &'static (String, Vec<u8>) {
    static G: OnceLock<(String, Vec<u8>)> = OnceLock::new();
    G.get_or_init(|| {
        let text = derived::attenuate(
            Kind::Token,
            PARENT,
            &[Caveat::Peer("node-1".into()), Caveat::Expires(1 << 40)],
            [9; 32],
        )
        .expect("attenuate");
        let bytes = URL_SAFE_NO_PAD
            .decode(&text[derived::DERIVED_TOKEN_PREFIX.len()..])
            .expect("base64");
        (text, bytes)
    })
}

fn check(kind: Kind, text: &str) {
    match Derived::parse(kind, text) {
        Ok(parsed) => {
            assert!(text.len() <= MAX_LEN);
            let hash = parsed.parent_hash_hex();
            assert!(hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
            let _ = parsed.verify(&root(kind));
            // A key nobody signed with: never accepted (an all-zero key is no valid point).
            assert!(parsed.verify(&[0u8; 32]).is_err());
        }
        Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let kind = if first % 2 == 0 { Kind::Token } else { Kind::ApiKey };
    let prefix = if kind == Kind::Token {
        derived::DERIVED_TOKEN_PREFIX
    } else {
        derived::DERIVED_KEY_PREFIX
    };
    check(kind, &String::from_utf8_lossy(rest));
    check(kind, &format!("{prefix}{}", URL_SAFE_NO_PAD.encode(rest)));

    // Mutate a genuine token: XOR the input into its bytes from the position `first` picks.
    let (text, bytes) = genuine();
    let mut mutated = bytes.clone();
    let start = usize::from(first) % mutated.len();
    for (m, d) in mutated[start..].iter_mut().zip(rest) {
        *m ^= d;
    }
    let candidate = format!("{}{}", derived::DERIVED_TOKEN_PREFIX, URL_SAFE_NO_PAD.encode(&mutated));
    let ok = Derived::parse(Kind::Token, &candidate)
        .and_then(|d| d.verify(&root(Kind::Token)))
        .is_ok();
    if candidate != *text {
        assert!(!ok, "a mutated credential verified: {candidate}");
    } else {
        assert!(ok);
    }
});
