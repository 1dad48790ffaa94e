//! sixpn: private IPv6 networks over WireGuard, with limited-purpose WireGuard tokens, a peer API
//! compatible with flyctl, an authoritative internal DNS and a gateway that keeps a real WireGuard
//! interface in step.
//!
//! # Bird's-eye view
//!
//! ```text
//! POST /api/v3/wire_guard_peers ─► api::peers ─► store::register_peer (one transaction: check the
//!   token's and the org's caps (O(1): counters kept by triggers), allocate the address, insert
//!   the peer, bump the generation, write its change set to the change log; PostgreSQL also
//!   pg_notify, a wake-up hint only) ─► commit
//!   ─► store::Changes (the change set, in process, and watch<Generation>)
//!   ─► every consumer's store::Feed: the change sets since its generation (memory, else the
//!      change log, else a full reload) ─┬─► snapshot publisher: Model::apply ─► Snapshot::apply
//!                                       │   (rebuilds only the answer-table shards holding the
//!                                       │   touched names) ─► ArcSwap::store ─► the API answers
//!                                       │   once that generation is published
//!                                       └─► gateway: names only the changed peers to the interface
//! DNS query ─► dns ─► snapshot.load() ─► one table lookup ─► answer
//!   (UDP: fastpath writes the table's bytes in batches; the rest goes to the hickory handler,
//!   which builds records from the same entries)
//! ```
//!
//! # Code map (reading order)
//! - [`model`]: shared domain types (names, orgs, peers, tokens, generation, change sets).
//! - [`wireguard`]: keys and wg-quick files.
//! - [`config`]: TOML + env + flags, validated; plain data, defaults included.
//! - [`store`]: SQLite / PostgreSQL, the source of truth, its change log and the change feed
//!   (which also times key expiry: a peer whose key expired is handed out as removed, on every
//!   server, with no write).
//! - [`snapshot`]: the DNS model, patched per change, its answer table (`snapshot::table`:
//!   sharded, patched per change) and the publisher; the last-known-good state on disk.
//! - [`dns`]: the hickory-server authoritative server over the snapshot.
//! - [`fastpath`]: the UDP fast path in front of the hickory handler: writes answers from the
//!   snapshot's answer table (batched sockets, response-rate limit).
//! - [`api`]: the peer API (token auth) and admin API (axum).
//! - [`gateway`]: keeps a WireGuard interface equal to the store.
//! - [`metrics`]: Prometheus counters and histograms, rendered by `GET /metrics`.
//! - [`reaper`]: removes idle ephemeral peers through ordinary store deletes.
//! - [`cli`]: the `sixpn` command line.
//! - [`logging`]: log filter and format, and a stderr sink that never takes the server down.
//! - [`serve`]: wires store → publisher → API + DNS (+ gateway) under one cancellation token.
//!
//! # Invariants
//! - The store is the source of truth. The snapshot is derived from it: built whole at start and
//!   on resync, patched per batch of changes otherwise, and a patched snapshot answers exactly like
//!   one built from scratch (`tests/it/incremental.rs`).
//! - A write costs O(changes), not O(peers): no consumer reloads the store for a change.
//! - The DNS path never touches the store, never awaits while holding a lock or guard, and the
//!   fast path never allocates.
//! - Only `store/` knows SQL, only `api/` knows HTTP and JSON, only `dns/` and `snapshot/` (static
//!   zones) know hickory types, and only `cli/` knows clap and stdout.
//! - No CPU-bound work (building or patching snapshots) runs on the async worker threads.
//! - The server never sees a private key, and never stores or logs a token secret.
//! - `config` is plain data at the bottom: it parses, merges and validates, and imports no
//!   subsystem (only `model` and `wireguard` types). Settings and their defaults are defined
//!   there and subsystems read them; the I/O of starting (data directory, admin credential,
//!   keys, regions) is `serve::bootstrap`'s.
//! - Imports between top-level modules only run downward: no two of them import each other,
//!   directly or around a circle (`.ci/imports.sh` derives the graph from the `crate::` paths
//!   and fails CI on a circle). `config` imports no subsystem; `fastpath` never imports `store`
//!   or the snapshot's builder (it reads the answer table, `snapshot::table`, and is handed it
//!   through `IndexSource`); only `serve` wires subsystems together.

pub mod api;
pub mod cli;
pub mod config;
pub mod dns;
pub mod fastpath;
pub mod gateway;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod reaper;
pub mod serve;
pub mod snapshot;
pub mod store;
pub mod wireguard;
