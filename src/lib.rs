//! sixpn: private IPv6 networks over WireGuard, with limited-purpose WireGuard tokens, a peer API
//! compatible with flyctl, an authoritative internal DNS and a gateway that keeps a real WireGuard
//! interface in step.
//!
//! # Bird's-eye view
//!
//! ```text
//! POST /api/v3/wire_guard_peers ─► api::peers ─► store::register_peer (one transaction: check the
//!   token's cap, allocate the address, insert the peer, bump the generation; PostgreSQL also
//!   pg_notify in the same transaction) ─► commit ─► store::Changes (watch<Generation>)
//!   ─► snapshot publisher wakes (a burst of writes gives one rebuild) ─► Store::load_all
//!   ─► Snapshot::build ─► ArcSwap::store ─► the API answers once that generation is published
//! DNS query ─► dns ─► snapshot.load() ─► one map lookup ─► prebuilt records ─► response
//!   (UDP: fastpath answers from prebuilt bytes in batches; the rest goes to the hickory handler)
//! ```
//!
//! # Code map (reading order)
//! - [`model`]: shared domain types (names, orgs, peers, tokens, generation).
//! - [`wireguard`]: keys and wg-quick files.
//! - [`config`]: TOML + env + flags.
//! - [`store`]: SQLite / PostgreSQL, the source of truth, its change log and the change feed.
//! - [`snapshot`]: the immutable, query-ready DNS view and its publisher.
//! - [`dns`]: the hickory-server authoritative server over the snapshot.
//! - [`fastpath`]: the UDP fast path in front of it (prebuilt answer bytes, batched sockets).
//! - [`api`]: the peer API (token auth) and admin API (axum).
//! - [`gateway`]: keeps a WireGuard interface equal to the store.
//! - [`cli`]: the `sixpn` command line.
//! - [`serve`]: wires store → publisher → API + DNS (+ gateway) under one cancellation token.
//!
//! # Invariants
//! - The store is the source of truth. The snapshot is derived from it, always rebuilt whole and
//!   never patched.
//! - The DNS path never touches the store, never awaits while holding a lock or guard, and never
//!   builds records per query.
//! - Only `store/` knows SQL, only `api/` knows HTTP and JSON, only `dns/` and `snapshot/` (which
//!   prebuilds hickory records) know hickory types,
//!   and only `cli/` knows clap and stdout.
//! - The server never sees a private key, and never stores or logs a token secret.

pub mod api;
pub mod cli;
pub mod config;
pub mod dns;
pub mod fastpath;
pub mod gateway;
pub mod model;
pub mod serve;
pub mod snapshot;
pub mod store;
pub mod wireguard;
