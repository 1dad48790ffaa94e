//! The API's wire types: every request and response body, shared by the server (which fills and
//! serializes them), the CLI (which sends requests and deserializes answers into them) and the
//! OpenAPI document (generated from them with `utoipa`, see [`super::openapi`]).
//!
//! Patterns, lengths and nullability are stated here, next to the fields, and each one is what
//! the server enforces: the label and key patterns are those of [`crate::model::parse_label`]
//! and [`crate::wireguard::PublicKey::parse`], and [`expires_in_pattern`] is generated from the
//! same table the server's duration parser reads. Unknown request fields are ignored (flyctl may
//! add some), so no object says `additionalProperties: false`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{
    KnownFormat, Object, ObjectBuilder, OneOfBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr, Schema};

use crate::model::{GroupName, OrgSlug, PeerName, TokenName};
use crate::wireguard::PublicKey;

/// A DNS label as the server parses it ([`crate::model::parse_label`]): ASCII letters in either
/// case (stored lowercase), digits and inner hyphens, 1 to 63 characters.
pub const LABEL_PATTERN: &str = "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$";

/// A WireGuard public key as the server answers it: 32 bytes, padded standard base64 (the last
/// character before `=` carries only 4 bits, hence its short class).
pub const PUBLIC_KEY_PATTERN: &str = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$";

/// The characters Rust's `str::trim` removes (Unicode `White_Space`): the server trims a
/// submitted key before parsing it (issue 13).
const TRIMMED: &str =
    "[\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// Lifetime units of `expires_in` and their length in seconds. A year is 365.25 days, so 100
/// years is exactly [`super::admin::MAX_EXPIRES_IN`] (36,525 days). No unit means seconds.
pub const EXPIRES_UNITS: [(&str, u64); 7] = [
    ("", 1),
    ("s", 1),
    ("m", 60),
    ("h", 3_600),
    ("d", 86_400),
    ("w", 604_800),
    ("y", 31_557_600),
];

/// A regular expression (ECMA-262 and Rust `regex` alike) for `1..=max` in decimal, without
/// leading zeros.
pub fn range_pattern(max: u64) -> String {
    assert!(max >= 1, "an empty range has no pattern");
    let digits: Vec<u8> = max.to_string().bytes().map(|b| b - b'0').collect();
    let k = digits.len();
    let mut alternatives = Vec::new();
    // Every number with fewer digits than `max`.
    if k >= 2 {
        alternatives.push(if k == 2 {
            "[1-9]".to_owned()
        } else {
            format!("[1-9][0-9]{{0,{}}}", k - 2)
        });
    }
    // Numbers with k digits: equal to `max` up to position i, smaller at i, anything after.
    for i in 0..k {
        let low = u8::from(i == 0);
        if digits[i] > low {
            let prefix: String = digits[..i].iter().map(|d| char::from(b'0' + d)).collect();
            let high = digits[i] - 1;
            let class = if low == high {
                char::from(b'0' + low).to_string()
            } else {
                format!("[{low}-{high}]")
            };
            let rest = match k - i - 1 {
                0 => String::new(),
                1 => "[0-9]".to_owned(),
                n => format!("[0-9]{{{n}}}"),
            };
            alternatives.push(format!("{prefix}{class}{rest}"));
        }
    }
    alternatives.push(max.to_string());
    alternatives.join("|")
}

/// The pattern of `expires_in` as a string: a whole number of one unit of [`EXPIRES_UNITS`]
/// (leading zeros allowed), longer than zero and at most `max_secs` in all, which is exactly what
/// the server accepts.
pub fn expires_in_pattern(max_secs: u64) -> String {
    let alternatives: Vec<String> = EXPIRES_UNITS
        .iter()
        .filter(|(_, secs)| max_secs / secs >= 1)
        .map(|(unit, secs)| format!("(?:{}){unit}", range_pattern(max_secs / secs)))
        .collect();
    format!("^0*(?:{})$", alternatives.join("|"))
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::new(Type::String))
}

fn nullable_string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}

/// `Label`: a DNS label, required.
pub fn label_schema() -> Object {
    string()
        .min_length(Some(1))
        .max_length(Some(63))
        .pattern(Some(LABEL_PATTERN))
        .description(Some(
            "A DNS label: ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ matched case-insensitively \
             (input in any case, stored and answered lowercase)",
        ))
        .build()
}

/// `OptionalLabel`: a DNS label, or empty/null/absent for "not given".
pub fn optional_label_schema() -> Object {
    nullable_string()
        .max_length(Some(63))
        .pattern(Some("^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)?$"))
        .description(Some(
            "A DNS label as in Label; empty, null or absent means \"not given\"",
        ))
        .build()
}

/// `PublicKey`: a key as the server answers it.
pub fn public_key_schema() -> Object {
    string()
        .min_length(Some(44))
        .max_length(Some(44))
        .pattern(Some(PUBLIC_KEY_PATTERN))
        .description(Some(
            "A Curve25519 public key: 32 bytes, standard base64 with padding",
        ))
        .build()
}

/// A key as a client may send it: surrounding whitespace is ignored.
fn public_key_input_schema() -> Object {
    let key = &PUBLIC_KEY_PATTERN[1..PUBLIC_KEY_PATTERN.len() - 1];
    string()
        .pattern(Some(format!("^{TRIMMED}*{key}{TRIMMED}*$")))
        .description(Some(
            "A Curve25519 public key (32 bytes, standard base64 with padding; surrounding \
             whitespace is ignored). A small-order point is refused (422); a key another peer \
             or a gateway holds is a conflict (409).",
        ))
        .build()
}

/// The `Label` schema as a type, for path parameters.
pub struct Label;

impl utoipa::PartialSchema for Label {
    fn schema() -> RefOr<Schema> {
        label_schema().into()
    }
}

impl ToSchema for Label {
    fn name() -> std::borrow::Cow<'static, str> {
        "Label".into()
    }
}

fn label_ref() -> Ref {
    Ref::from_schema_name("Label")
}

fn optional_label_ref() -> Ref {
    Ref::from_schema_name("OptionalLabel")
}

fn public_key_ref() -> Ref {
    Ref::from_schema_name("PublicKey")
}

fn region_ref() -> Ref {
    Ref::from_schema_name("Region")
}

/// `Region` with no regions known (a document built without a server): any label. The served
/// document replaces it with [`region_schema`] of the configured regions.
pub fn region_schema(codes: &[&str]) -> Object {
    let description = "A configured region, matched case-insensitively; empty, null or absent: \
                       the default region";
    if codes.is_empty() {
        return nullable_string()
            .max_length(Some(63))
            .pattern(Some("^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)?$"))
            .description(Some(description))
            .build();
    }
    // Each code, any case: [lL][oO][cC][aA][lL].
    let alternatives: Vec<String> = codes
        .iter()
        .map(|code| {
            code.chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        })
        .collect();
    nullable_string()
        .pattern(Some(format!("^(|{})$", alternatives.join("|"))))
        .description(Some(format!(
            "{description}. This server: {}",
            codes.join(", ")
        )))
        .build()
}

fn timestamp() -> Object {
    string()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .examples(["2026-11-25T16:00:00Z"])
        .build()
}

fn nullable_timestamp() -> Object {
    nullable_string()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .build()
}

fn ipv6() -> Object {
    string()
        .format(Some(SchemaFormat::Custom("ipv6".to_owned())))
        .build()
}

fn expires_in_schema() -> RefOr<Schema> {
    let max = super::admin::MAX_EXPIRES_IN.as_secs();
    OneOfBuilder::new()
        .item(
            string()
                .pattern(Some(expires_in_pattern(max)))
                .examples(["30d"])
                .description(Some(
                    "A whole number of seconds, optionally with one unit: s, m, h, d, w or y \
                     (365.25 d); e.g. 30d, 12h, 3600",
                )),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::Integer))
                .minimum(Some(1))
                .maximum(Some(max))
                .description(Some("Seconds")),
        )
        .description(Some(
            "Lifetime, longer than zero and at most 100 years (36525d); leave it out for a \
             token that never expires. Not nullable: null is refused.",
        ))
        .into()
}

fn audit_action_schema() -> Object {
    string()
        .enum_values(Some([
            "token_minted",
            "token_deleted",
            "peer_created",
            "peer_rekeyed",
            "peer_deleted",
            "peer_reaped",
            "org_deleted",
        ]))
        .description(Some("What changed"))
        .build()
}

/// Every error: `{"error": "<what was wrong and how to fix it>"}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What was wrong and how to fix it.
    #[schema(min_length = 1)]
    pub error: String,
}

/// `POST /api/v3/wire_guard_peers`: what `flyctl wireguard token start` sends (it sends `group`
/// and `region` as empty strings when it leaves them to the server).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({ "name": "node-1", "group": "k8s",
    "pubkey": "qo8Xh4XIqcCm8rFm8yRZ8fdzsm07kB6aZbXdUwoJqEg=", "region": "" }))]
pub struct PeerCreate {
    /// The peer's name.
    #[schema(schema_with = label_ref)]
    pub name: PeerName,
    /// Empty, null or absent: the token's group, else `default`. A token confined to a group
    /// may name only that one (else 403).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = optional_label_ref)]
    pub group: Option<GroupName>,
    /// The node's public key; the private key never leaves the node.
    #[schema(schema_with = public_key_input_schema)]
    pub pubkey: PublicKey,
    /// The gateway region (empty, null or absent: the default one).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = region_ref)]
    pub region: Option<String>,
    /// Removed once idle: no handshake on its gateway for `[peers] ephemeral_idle` (default
    /// 30m; a peer that never connected counts from its creation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(default = false, value_type = Option<bool>)]
    pub ephemeral: bool,
}

/// `PUT /api/v3/wire_guard_peers/{name}`: what `flyctl wireguard token update` sends,
/// `{"name":"","group":"","pubkey":"...","region":""}`. Empty or null fields are ignored; a
/// non-empty one that differs from the peer is a conflict (409): re-keying neither renames nor
/// moves a peer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PeerRekey {
    /// The new public key.
    #[schema(schema_with = public_key_input_schema)]
    pub pubkey: PublicKey,
    /// Ignored when empty or null; else must be the name in the URL (409 otherwise).
    pub name: Option<String>,
    /// Ignored when empty or null; else must be the peer's group (409 otherwise).
    pub group: Option<String>,
    /// Ignored when empty or null; else must be the peer's region (409 otherwise).
    pub region: Option<String>,
}

/// What the peer API answers for a peer. flyctl reads `us`, `them` and `key`.
///
/// A client reads it leniently (absent fields read as empty): a flyctl-style server may send
/// only `us`, `them` and `key`, and the CLI derives the rest (see `cli::answer`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PeerResponse {
    /// The peer's address, without prefix length.
    #[serde(default)]
    #[schema(required = true, schema_with = ipv6)]
    pub us: String,
    /// The gateway endpoint's host, without port.
    #[serde(default)]
    #[schema(required = true)]
    pub them: String,
    /// The gateway's WireGuard public key.
    #[serde(default)]
    #[schema(required = true, schema_with = public_key_ref)]
    pub key: String,
    /// The peer's name (lowercase).
    #[serde(default)]
    #[schema(required = true)]
    pub name: String,
    /// The peer's group.
    #[serde(default)]
    #[schema(required = true)]
    pub group: String,
    /// The peer's region.
    #[serde(default)]
    #[schema(required = true)]
    pub region: String,
    /// The peer's org.
    #[serde(default)]
    #[schema(required = true)]
    pub org: String,
    /// The peer's public key.
    #[serde(default)]
    #[schema(required = true, schema_with = public_key_ref)]
    pub pubkey: String,
    /// The gateway endpoint, `host:port` (`[v6]:port`).
    #[serde(default)]
    #[schema(required = true)]
    pub endpoint: String,
    /// The org's resolver.
    #[serde(default)]
    #[schema(required = true, schema_with = ipv6)]
    pub dns: String,
    /// The org's /48, to route through the tunnel.
    #[serde(default)]
    #[schema(required = true)]
    pub allowed_ips: String,
    /// Creation time, RFC 3339.
    #[serde(default)]
    #[schema(required = true, schema_with = timestamp)]
    pub created_at: String,
    /// Last re-key (or creation) time, RFC 3339.
    #[serde(default)]
    #[schema(required = true, schema_with = timestamp)]
    pub updated_at: String,
    /// Only in the answer to a create: whether the peer is ephemeral.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = bool)]
    pub ephemeral: Option<bool>,
    /// When the peer's key expires, RFC 3339 (issue 23): it is served until then, and a re-key
    /// before it keeps it alive (`sixpn token ensure` does that once less than a third of the
    /// lifetime is left). Null: never.
    #[serde(default)]
    #[schema(required = true, schema_with = nullable_timestamp)]
    pub key_expires_at: Option<String>,
}

/// `DELETE` of a peer: its name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Deleted)]
pub struct DeletedJson {
    /// The deleted peer's name.
    pub deleted: String,
}

/// `DELETE` of a token: its name and how many peers went with it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = TokenDeleted)]
pub struct TokenDeletedJson {
    /// The deleted token's name.
    pub deleted: String,
    /// Peers deleted with it.
    pub deleted_peers: u64,
}

/// `DELETE` of an org: what went with it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = OrgDeleted)]
pub struct OrgDeletedJson {
    /// The deleted org's slug.
    pub deleted: String,
    /// Its /48, no longer in use.
    pub prefix: String,
    /// Peers deleted with it (cascade).
    pub deleted_peers: u64,
    /// Live tokens deleted with it (cascade).
    pub deleted_tokens: u64,
    /// API keys scoped to it, revoked with it.
    pub revoked_api_keys: u64,
}

/// `POST /api/v1/orgs`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrgCreate {
    /// The new org's slug.
    #[schema(schema_with = label_ref)]
    pub slug: OrgSlug,
}

/// An org as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Org)]
pub struct OrgJson {
    /// The org's slug.
    pub slug: String,
    /// The org's /48.
    #[schema(example = "fdaa:1:2::/48")]
    pub prefix: String,
    /// The org's resolver address (`::3`).
    #[schema(schema_with = ipv6)]
    pub dns: String,
    /// Creation time, RFC 3339.
    #[schema(schema_with = timestamp)]
    pub created_at: String,
}

/// `POST /api/v1/orgs/{org}/wireguard_tokens`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenCreate {
    /// The token's name, unique among the org's live tokens.
    #[schema(schema_with = label_ref)]
    pub name: TokenName,
    /// Confine the token to this group (empty, null or absent: no confinement).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = optional_label_ref)]
    pub group: Option<GroupName>,
    /// Lifetime in seconds (a client may also send a string such as `"30d"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = expires_in_schema)]
    pub expires_in: Option<u64>,
    /// Cap on the token's live peers (null or absent: no cap).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 4_294_967_295_u64, format = Int64)]
    pub max_peers: Option<u32>,
    /// Every peer the token creates is ephemeral.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(default = false, value_type = Option<bool>)]
    pub ephemeral: bool,
    /// Key lifetime in seconds (or a string such as `"24h"`, like `expires_in`): a peer created
    /// or re-keyed with the token is served only this long after (absent: the org default,
    /// `[peers] key_expiry`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = expires_in_schema)]
    pub key_expiry: Option<u64>,
}

/// A WireGuard token as the admin API shows it: never the secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Token)]
pub struct TokenJson {
    /// The token's org.
    pub org: String,
    /// The token's name.
    pub name: String,
    /// The group it is confined to.
    #[schema(required = true)]
    pub group: Option<String>,
    /// Expiry, RFC 3339.
    #[schema(required = true, schema_with = nullable_timestamp)]
    pub expires_at: Option<String>,
    /// Cap on live peers.
    #[schema(required = true)]
    pub max_peers: Option<u32>,
    /// Creation time, RFC 3339.
    #[schema(schema_with = timestamp)]
    pub created_at: String,
    /// Last use, RFC 3339.
    #[schema(required = true, schema_with = nullable_timestamp)]
    pub last_used_at: Option<String>,
    /// Live peers it created.
    pub live_peers: u64,
    /// Every peer it creates is ephemeral.
    pub ephemeral: bool,
    /// Key lifetime, seconds, of the peers it creates or re-keys; null: the org default.
    #[serde(default)]
    #[schema(required = true)]
    pub key_expiry: Option<u64>,
    /// Its `expires_at` has passed: it authenticates no more.
    #[serde(default)]
    pub expired: bool,
}

/// The answer to a mint: the secret, shown this once, beside the token's metadata. `Debug`
/// hides the secret.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = MintedToken)]
pub struct MintedToken {
    /// The secret (`sixpn_wg_...`), shown only here.
    pub token: String,
    /// Everything else.
    #[serde(flatten)]
    pub info: TokenJson,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("token", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// `POST /api/v1/api_keys` (issue 16).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyCreate {
    /// The key's name, unique among live keys.
    #[schema(schema_with = label_ref)]
    pub name: String,
    /// The org it reaches, or `*` for every org.
    #[schema(schema_with = key_scope_schema)]
    pub org: String,
    /// What it may do there.
    #[schema(schema_with = role_schema)]
    pub role: String,
    /// Lifetime in seconds (a client may also send a string such as `"90d"`); absent: never
    /// expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = expires_in_schema)]
    pub expires_in: Option<u64>,
}

/// An API key as lists show it: never the key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = ApiKey)]
pub struct ApiKeyJson {
    /// Its name.
    pub name: String,
    /// The org it reaches, or `*`.
    pub org: String,
    /// Its role: owner, operator or viewer.
    #[schema(schema_with = role_schema)]
    pub role: String,
    /// Expiry, RFC 3339.
    #[schema(required = true, schema_with = nullable_timestamp)]
    pub expires_at: Option<String>,
    /// Creation time, RFC 3339.
    #[schema(schema_with = timestamp)]
    pub created_at: String,
    /// Who created it: `bootstrap` or `key:<name>`.
    pub created_by: String,
    /// Last successful use, RFC 3339 (10 s resolution).
    #[schema(required = true, schema_with = nullable_timestamp)]
    pub last_used_at: Option<String>,
}

/// The answer to creating an API key: the key, shown this once, beside its metadata. `Debug`
/// hides the key.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = CreatedApiKey)]
pub struct CreatedApiKey {
    /// The key (`sixpn_ak_...`), shown only here.
    pub key: String,
    /// Everything else.
    #[serde(flatten)]
    pub info: ApiKeyJson,
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiKey")
            .field("key", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// `DELETE` of an API key: its name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = ApiKeyRevoked)]
pub struct ApiKeyRevokedJson {
    /// The revoked key's name.
    pub revoked: String,
}

fn key_scope_schema() -> Object {
    string()
        .max_length(Some(63))
        .pattern(Some("^(\\*|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)$"))
        .description(Some("An org's slug (a DNS label), or `*` for every org"))
        .build()
}

fn role_schema() -> Object {
    string()
        .enum_values(Some(["owner", "operator", "viewer"]))
        .build()
}

/// A peer as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Peer)]
pub struct PeerJson {
    /// The peer's org.
    pub org: String,
    /// The peer's name.
    pub name: String,
    /// The peer's group.
    pub group: String,
    /// The peer's region.
    pub region: String,
    /// The peer's public key.
    #[schema(schema_with = public_key_ref)]
    pub pubkey: String,
    /// The peer's address.
    #[schema(schema_with = ipv6)]
    pub address: String,
    /// The token that created it.
    pub token: String,
    /// Creation time, RFC 3339.
    #[schema(schema_with = timestamp)]
    pub created_at: String,
    /// Last re-key, RFC 3339.
    #[schema(schema_with = timestamp)]
    pub updated_at: String,
    /// Removed once idle: no handshake on its gateway for `[peers] ephemeral_idle` (default
    /// 30m; a peer that never connected counts from its creation).
    pub ephemeral: bool,
    /// When a gateway last saw the peer alive (handshake or traffic, 30 s coarse); null: never.
    #[schema(required = true, schema_with = nullable_timestamp)]
    pub last_seen_at: Option<String>,
    /// When its key expires (or expired), RFC 3339; null: never. An expired peer is not served
    /// (DNS, gateway) until a re-key, and is removed after `[peers] expired_grace`.
    #[serde(default)]
    #[schema(required = true, schema_with = nullable_timestamp)]
    pub key_expires_at: Option<String>,
    /// Its key has expired.
    #[serde(default)]
    pub expired: bool,
}

/// One peer with its live status on the gateway.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = PeerWithStatus)]
pub struct PeerWithStatus {
    /// The peer.
    #[serde(flatten)]
    pub peer: PeerJson,
    /// What the gateway interface reports; `null` without a gateway or before it has the peer.
    #[schema(required = true)]
    pub status: Option<StatusJson>,
}

/// A peer's status on the gateway interface.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = PeerStatus)]
pub struct StatusJson {
    /// Last handshake, RFC 3339.
    #[schema(required = true, schema_with = nullable_timestamp)]
    pub last_handshake: Option<String>,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// The peer's outer endpoint.
    #[schema(required = true)]
    pub endpoint: Option<String>,
}

/// One audit log entry as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = AuditEntry)]
pub struct AuditJson {
    /// Position in the log (the cursor).
    #[schema(minimum = 1)]
    pub id: i64,
    /// When, RFC 3339.
    #[schema(schema_with = timestamp)]
    pub at: String,
    /// Who: `admin`, the token's name, or `reaper`.
    pub actor: String,
    /// The client's address; `null` when the server itself acted.
    #[schema(required = true)]
    pub source: Option<String>,
    /// What changed.
    #[schema(schema_with = audit_action_schema)]
    pub action: String,
    /// The token's or peer's name.
    pub target: String,
    /// More about the change.
    #[schema(required = true)]
    pub detail: Option<String>,
}

/// A page of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = AuditPage)]
pub struct AuditPageJson {
    /// The org.
    pub org: String,
    /// Entries, newest first.
    pub entries: Vec<AuditJson>,
    /// Pass as `?before=` for the next (older) page; `null` on the last one.
    #[schema(required = true)]
    pub next: Option<i64>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(schema_with = status_ok)]
    pub status: String,
    /// The generation DNS has published.
    pub generation: u64,
}

/// `GET /readyz` when ready.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    /// Always `ready`.
    #[schema(schema_with = status_ready)]
    pub status: String,
    /// The generation DNS has published.
    pub generation: u64,
}

/// `GET /readyz` when not ready (`503`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NotReady {
    /// Why, part by part.
    #[schema(min_length = 1)]
    pub error: String,
    /// The parts that are down: `primary` (`database_url`), `read_replica`
    /// (`read_database_url`), `snapshot` (DNS behind the store).
    pub down: Vec<String>,
}

fn status_ok() -> Object {
    string().enum_values(Some(["ok"])).build()
}

fn status_ready() -> Object {
    string().enum_values(Some(["ready"])).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(text)
    }

    #[test]
    fn ranges_match_exactly_one_to_max() {
        for max in [
            1, 2, 9, 10, 11, 19, 20, 99, 100, 101, 109, 110, 999, 1000, 1234, 5217,
        ] {
            let pattern = format!("^(?:{})$", range_pattern(max));
            for n in 0..=(max * 2 + 20) {
                assert_eq!(
                    matches(&pattern, &n.to_string()),
                    (1..=max).contains(&n),
                    "{n} against {max}: {pattern}"
                );
            }
            assert!(!matches(&pattern, "01"), "{pattern}");
        }
    }

    #[test]
    fn label_pattern_is_the_parser() {
        for text in [
            "a",
            "A",
            "node-1",
            "-a",
            "a-",
            "a.b",
            "",
            "é",
            "a_b",
            &"a".repeat(63),
        ] {
            assert_eq!(
                matches(LABEL_PATTERN, text),
                crate::model::parse_label(text).is_ok(),
                "{text:?}"
            );
        }
        assert!(!matches(LABEL_PATTERN, &"a".repeat(64)));
    }
}
