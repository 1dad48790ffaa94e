//! The peer API's answer (`POST`/`PUT`/`GET /api/v3/wire_guard_peers`), checked field by field
//! before any of it reaches a wg-quick file.
//!
//! wg-quick runs the file as root, so the answer is treated as hostile input (issue 11): a server
//! or a man in the middle could send `"them": "1.2.3.4:51820\n[Interface]\nPostUp = …"`. Every
//! field is parsed into a checked type: the address inside an IPv6 /48, the resolver and the
//! routed prefix inside that same /48, the endpoint a DNS name, IPv4 or bracketed IPv6 address
//! with a port, keys 32-byte base64, labels DNS labels, and no string anywhere in the answer may
//! hold a control character. Anything else is refused with one line, and no file is written.
//!
//! The answer is read into the API's own [`PeerResponse`] (the type the server serializes and
//! the OpenAPI document describes); absent fields read as empty, since flyctl-style servers send
//! only `us`, `them` and `key`.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use serde_json::Value;

use super::exit::{Failure, fail};
use crate::api::types::PeerResponse;
use crate::model::{GroupName, PeerName, RegionCode, prefix_host};
use crate::wireguard::{DEFAULT_WIREGUARD_PORT, Endpoint, PublicKey};

/// A checked answer: every field parsed, consistent with the others.
#[derive(Debug, Clone)]
pub struct PeerAnswer {
    /// The peer's address.
    pub us: Ipv6Addr,
    /// The gateway's public key.
    pub key: PublicKey,
    /// The gateway's endpoint: `endpoint`, else `them` with port 51820.
    pub endpoint: Endpoint,
    /// The org's resolver: `dns`, else `<org /48>::3`.
    pub dns: Ipv6Addr,
    /// The org's /48: `allowed_ips`, else the /48 around `us`.
    pub allowed_ips: Ipv6Net,
    /// The public key the server stored for the peer, when it says.
    pub pubkey: Option<PublicKey>,
    /// The peer's name, when the server says.
    pub name: Option<PeerName>,
    /// The peer's group, when the server says.
    pub group: Option<GroupName>,
    /// The peer's region, when the server says.
    pub region: Option<RegionCode>,
    /// When the peer's key expires, when the server says (issue 23).
    pub key_expires_at: Option<std::time::SystemTime>,
    /// The peer's last create or re-key, when the server says in RFC 3339.
    pub updated_at: Option<std::time::SystemTime>,
}

impl PeerAnswer {
    /// Whether the key should be rotated at `now`: it has expired, or less than a third of its
    /// lifetime (from the last create or re-key to `key_expires_at`) is left. A key that never
    /// expires never needs it. Without `updated_at` the lifetime is unknown: only an expired key
    /// is rotated.
    pub fn rotation_due(&self, now: std::time::SystemTime) -> bool {
        let Some(expires) = self.key_expires_at else {
            return false;
        };
        let Ok(left) = expires.duration_since(now) else {
            return true;
        };
        match self.updated_at.and_then(|u| expires.duration_since(u).ok()) {
            Some(lifetime) => left < lifetime / 3,
            None => left.is_zero(),
        }
    }
}

/// The prefix length of an org's network: every org owns one /48.
const ORG_PREFIX_LEN: u8 = 48;

impl PeerAnswer {
    /// Checks an answer. `us`, `key` and one of `endpoint`/`them` are required; `allowed_ips`,
    /// `dns` and `endpoint` are derived when absent: the /48 around `us`, its `::3`, and `them`
    /// with port 51820. An empty string counts as absent, as flyctl-style servers send them.
    ///
    /// # Errors
    /// One line naming the first bad field and why, with [`Failure::Other`] (exit 1).
    pub fn from_json(answer: &Value) -> anyhow::Result<PeerAnswer> {
        if let Some(path) = control_char_path(answer, "") {
            return Err(bad(&path, "holds a control character"));
        }
        let wire: PeerResponse = serde_json::from_value(answer.clone()).map_err(|e| {
            fail(
                Failure::Other,
                format!(
                    "the server's answer does not have the peer API's shape ({e}); refusing to write a config from it; is SIXPN_API_URL pointing at a sixpn server?"
                ),
            )
        })?;

        let us_text = present(&wire.us).ok_or_else(|| bad("us", "is missing"))?;
        // flyctl-style servers may append a prefix length; the address is what counts.
        let us: Ipv6Addr = us_text
            .split_once('/')
            .map_or(us_text, |(address, _)| address)
            .parse()
            .map_err(|e| bad("us", &format!("is not an IPv6 address: {e}")))?;
        if us.is_unspecified() || us.is_loopback() || us.is_multicast() {
            return Err(bad("us", &format!("{us} is not a unicast peer address")));
        }
        let org = Ipv6Net::new(us, ORG_PREFIX_LEN)
            .expect("48 is a valid IPv6 prefix length")
            .trunc();

        let allowed_ips = match present(&wire.allowed_ips) {
            None => org,
            Some(text) => {
                let net: Ipv6Net = text
                    .parse()
                    .map_err(|e| bad("allowed_ips", &format!("is not an IPv6 prefix: {e}")))?;
                // Anything wider would route more than the org (e.g. ::/0) through the tunnel.
                if net != org {
                    return Err(bad(
                        "allowed_ips",
                        &format!("{net} is not the org's /48 around \"us\" ({org})"),
                    ));
                }
                net
            }
        };
        let dns = match present(&wire.dns) {
            None => prefix_host(org, 3),
            Some(text) => {
                let dns: Ipv6Addr = text
                    .parse()
                    .map_err(|e| bad("dns", &format!("is not an IPv6 address: {e}")))?;
                if !org.contains(&dns) {
                    return Err(bad(
                        "dns",
                        &format!("{dns} is outside the org's /48 ({org})"),
                    ));
                }
                dns
            }
        };

        let them = present(&wire.them)
            .map(|text| Endpoint::parse(text, Some(DEFAULT_WIREGUARD_PORT)))
            .transpose()
            .map_err(|e| bad("them", &e.to_string()))?;
        let endpoint = present(&wire.endpoint)
            .map(|text| Endpoint::parse(text, None))
            .transpose()
            .map_err(|e| bad("endpoint", &e.to_string()))?;
        let endpoint = match (endpoint, them) {
            (Some(endpoint), Some(them)) if endpoint.host() != them.host() => {
                return Err(bad(
                    "endpoint",
                    &format!(
                        "host {} differs from \"them\" ({})",
                        endpoint.host(),
                        them.host()
                    ),
                ));
            }
            (Some(endpoint), _) => endpoint,
            (None, Some(them)) => them,
            (None, None) => return Err(bad("them", "is missing")),
        };

        let key = PublicKey::parse(present(&wire.key).ok_or_else(|| bad("key", "is missing"))?)
            .map_err(|e| bad("key", &format!("is not a WireGuard public key: {e}")))?;
        let pubkey = present(&wire.pubkey)
            .map(PublicKey::parse)
            .transpose()
            .map_err(|e| bad("pubkey", &format!("is not a WireGuard public key: {e}")))?;
        let name = label::<PeerName>(present(&wire.name), "name")?;
        let group = label::<GroupName>(present(&wire.group), "group")?;
        let region = label::<RegionCode>(present(&wire.region), "region")?;
        let key_expires_at = wire
            .key_expires_at
            .as_deref()
            .and_then(present)
            .map(humantime::parse_rfc3339_weak)
            .transpose()
            .map_err(|e| bad("key_expires_at", &format!("is not an RFC 3339 time: {e}")))?;
        // Only a hint for when to rotate: a server that words it otherwise is not refused.
        let updated_at =
            present(&wire.updated_at).and_then(|t| humantime::parse_rfc3339_weak(t).ok());
        Ok(PeerAnswer {
            us,
            key,
            endpoint,
            dns,
            allowed_ips,
            pubkey,
            name,
            group,
            region,
            key_expires_at,
            updated_at,
        })
    }
}

/// The field's text, where an empty string (or an absent field) counts as absent.
fn present(value: &str) -> Option<&str> {
    Some(value).filter(|s| !s.is_empty())
}

fn label<T>(text: Option<&str>, field: &str) -> anyhow::Result<Option<T>>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.map(|text| {
        text.parse()
            .map_err(|e| bad(field, &format!("is not a DNS label: {e}")))
    })
    .transpose()
}

fn bad(field: &str, why: &str) -> anyhow::Error {
    fail(
        Failure::Other,
        format!(
            "the server's answer has a bad {field:?} field ({why}); refusing to write a config from it; is SIXPN_API_URL pointing at a sixpn server?"
        ),
    )
}

/// The path (`them`, `peers[2].name`) of the first string or object key anywhere in `value`
/// that holds a control character.
fn control_char_path(value: &Value, path: &str) -> Option<String> {
    let bad = |s: &str| s.chars().any(char::is_control);
    match value {
        Value::String(s) if bad(s) => Some(if path.is_empty() {
            "(answer)".into()
        } else {
            path.into()
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| control_char_path(item, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let here = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if bad(key) {
                Some(format!("{path}.(a key)"))
            } else {
                control_char_path(item, &here)
            }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The answer of a server that set the key at `updated` (unix seconds) to expire at
    /// `expires`, RFC 3339 at second resolution as sixpn answers.
    fn with_expiry(updated: u64, expires: Option<u64>) -> PeerAnswer {
        let at = |secs: u64| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs))
                .to_string()
        };
        let mut answer = full();
        answer["updated_at"] = json!(at(updated));
        answer["key_expires_at"] = json!(expires.map(at));
        PeerAnswer::from_json(&answer).unwrap()
    }

    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[test]
    fn rotation_is_due_in_the_last_third_of_the_key_lifetime() {
        let secs = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let peer = with_expiry(1_000, Some(1_090));
        assert!(!peer.rotation_due(secs(1_000)));
        assert!(!peer.rotation_due(secs(1_060)), "a third left exactly");
        assert!(peer.rotation_due(secs(1_061)));
        assert!(peer.rotation_due(secs(1_090)), "expired");
        assert!(peer.rotation_due(secs(5_000)), "long expired");
        assert!(!with_expiry(1_000, None).rotation_due(secs(1_000_000)));
        let mut bad = full();
        bad["key_expires_at"] = json!("tomorrow");
        let err = PeerAnswer::from_json(&bad).unwrap_err().to_string();
        assert!(err.contains("key_expires_at"), "{err}");
    }

    /// `sixpn token ensure` in a loop against a server whose keys live 3 s (second resolution,
    /// as the store keeps them), on tokio's paused clock: the key is rotated before it expires
    /// every time, and only when a third of its lifetime is left, not on every run.
    #[tokio::test(start_paused = true)]
    async fn ensure_in_a_loop_rotates_before_expiry_and_not_more() {
        const LIFETIME: u64 = 3;
        let start = tokio::time::Instant::now();
        // An arbitrary wall-clock origin, part-way into a second.
        let origin = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let now = || origin + start.elapsed();
        let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        // The server's row: set at creation.
        let mut updated = unix(now());
        let mut expires = updated + LIFETIME;
        let mut rotations = 0;
        let mut runs = 0;
        while start.elapsed() < Duration::from_secs(60) {
            let t = now();
            assert!(
                unix(t) < expires,
                "the key expired at {expires} before a run at {t:?} rotated it"
            );
            runs += 1;
            if with_expiry(updated, Some(expires)).rotation_due(t) {
                // The re-key: the server sets the key's times from its own clock.
                updated = unix(t);
                expires = updated + LIFETIME;
                rotations += 1;
                assert!(
                    !with_expiry(updated, Some(expires)).rotation_due(t),
                    "a fresh key is not rotated again at once"
                );
            }
            // The loop's pause, like a DaemonSet's `sleep`.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(runs, 240);
        // Every 2 to 3 s: the last third of a 3 s key is its last second.
        assert!(
            (20..=31).contains(&rotations),
            "{rotations} rotations in 60 s"
        );
    }

    const GW: &str = "s6k35vSpDrtq5ERd7XHOL4udSAJZaA6kXIK+kw6c9C0=";

    fn full() -> Value {
        json!({
            "us": "fdaa:1:2::5", "them": "127.0.0.1", "key": GW,
            "endpoint": "127.0.0.1:4500", "dns": "fdaa:1:2::3", "allowed_ips": "fdaa:1:2::/48",
            "name": "node-1", "group": "web", "region": "local", "pubkey": GW,
            "created_at": "2026-11-30T00:00:00Z",
        })
    }

    #[test]
    fn full_answer_is_used_as_given() {
        let p = PeerAnswer::from_json(&full()).unwrap();
        assert_eq!(p.us, "fdaa:1:2::5".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.endpoint.to_string(), "127.0.0.1:4500");
        assert_eq!(p.dns.to_string(), "fdaa:1:2::3");
        assert_eq!(p.allowed_ips.to_string(), "fdaa:1:2::/48");
        assert_eq!(p.group.unwrap().as_str(), "web");
        assert_eq!(p.name.unwrap().as_str(), "node-1");
    }

    #[test]
    fn flyctl_minimal_answer_gets_derived_fields() {
        let answer = json!({"us": "fdaa:1:2:0:8000::5/120", "them": "gw.example.com", "key": GW});
        let p = PeerAnswer::from_json(&answer).unwrap();
        assert_eq!(p.us.to_string(), "fdaa:1:2:0:8000::5");
        assert_eq!(p.endpoint.to_string(), "gw.example.com:51820");
        assert_eq!(p.allowed_ips.to_string(), "fdaa:1:2::/48");
        assert_eq!(p.dns.to_string(), "fdaa:1:2::3");
        let answer = json!({"us": "fdaa:1:2::5", "them": "2001:db8::1", "key": GW, "dns": ""});
        let p = PeerAnswer::from_json(&answer).unwrap();
        assert_eq!(p.endpoint.to_string(), "[2001:db8::1]:51820");
    }

    /// Each hostile or broken answer is refused, naming the field at fault (issue 11).
    #[test]
    fn bad_answers_are_refused() {
        let check = |patch: Value, field: &str, why: &str| {
            let mut answer = full();
            for (key, value) in patch.as_object().unwrap() {
                if value.is_null() {
                    answer.as_object_mut().unwrap().remove(key);
                } else {
                    answer[key] = value.clone();
                }
            }
            let err = PeerAnswer::from_json(&answer).unwrap_err();
            let line = err.to_string();
            assert!(
                line.contains(&format!("bad {field:?} field")) && line.contains(why),
                "{patch}: {line}"
            );
            assert!(!line.contains('\n'), "{line:?}");
            assert_eq!(super::super::exit::exit_code(&err), 1);
        };
        let pwned = "1.2.3.4:51820\n[Interface]\nPostUp = touch /tmp/pwned";
        check(json!({"them": pwned}), "them", "control character");
        check(json!({"endpoint": pwned}), "endpoint", "control character");
        check(
            json!({"created_at": "x\u{7f}"}),
            "created_at",
            "control character",
        );
        check(json!({"us": "fdaa::5\r"}), "us", "control character");
        check(json!({"us": null}), "us", "missing");
        check(json!({"us": "nope"}), "us", "not an IPv6 address");
        check(json!({"us": "10.0.0.1"}), "us", "not an IPv6 address");
        check(json!({"us": "::1"}), "us", "not a unicast");
        check(
            json!({"allowed_ips": "::/0"}),
            "allowed_ips",
            "not the org's /48",
        );
        check(
            json!({"allowed_ips": "fdaa:1:3::/48"}),
            "allowed_ips",
            "not the org's /48",
        );
        check(
            json!({"dns": "2001:db8::53"}),
            "dns",
            "outside the org's /48",
        );
        check(json!({"dns": "8.8.8.8"}), "dns", "not an IPv6 address");
        check(json!({"key": "short"}), "key", "not a WireGuard public key");
        check(json!({"key": null}), "key", "missing");
        check(
            json!({"key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}),
            "key",
            "not a WireGuard public key",
        );
        check(
            json!({"pubkey": "x"}),
            "pubkey",
            "not a WireGuard public key",
        );
        check(json!({"them": null, "endpoint": null}), "them", "missing");
        check(json!({"them": "gw;id", "endpoint": null}), "them", "host");
        check(json!({"endpoint": "127.0.0.1"}), "endpoint", "no port");
        check(
            json!({"endpoint": "evil.example:4500"}),
            "endpoint",
            "differs",
        );
        check(json!({"group": "a b"}), "group", "not a DNS label");
        check(json!({"name": "x.y"}), "name", "not a DNS label");
        check(json!({"region": "-x"}), "region", "not a DNS label");

        let err = PeerAnswer::from_json(&json!({"us": 5}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not have the peer API's shape"), "{err}");
    }

    #[test]
    fn control_characters_are_found_anywhere() {
        assert_eq!(control_char_path(&full(), ""), None);
        let v = json!({"a": [{"b": "ok"}, {"c": "x\ty"}]});
        assert_eq!(control_char_path(&v, "").as_deref(), Some("a[1].c"));
        let v = json!({"a\n": 1});
        assert_eq!(control_char_path(&v, "").as_deref(), Some(".(a key)"));
    }
}
