//! The `sixpn` command line: `serve`, the admin commands (`org`, `token create|list|delete`,
//! `peer`), the node commands (`token start|update|ensure`), `backup` and `restore` of a SQLite
//! store, `keygen` and `completions`.
//!
//! Only this module knows clap and stdout. Admin and node commands talk to a running server over
//! its HTTP APIs (`client`); they never open the database, and they check every field of an
//! answer before writing a file from it (`answer`). Every failure becomes one line that says what
//! to do; `main` prints it as `error: …` and exits with the code of its kind (`exit`).

mod admin;
mod answer;
mod apikey;
mod attenuate;
mod backup;
mod client;
pub mod exit;
mod node;
mod output;
mod pages;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};
use crate::model::{GroupName, OrgSlug, PeerName, RegionCode, TokenName};
pub use pages::PageArg;

pub use client::DEFAULT_API_URL;
pub use exit::{EXIT_CODES_HELP, exit_code};
pub use node::normalize_name;

const ABOUT: &str = "Private IPv6 networks over WireGuard: token API, internal DNS, gateway";

const LONG_ABOUT: &str = "\
sixpn runs a private IPv6 network over WireGuard. An admin mints WireGuard tokens; a node holding a
token registers itself with one command and gets a ready wg-quick config. Every peer gets a stable
address in its org's /48 and a DNS name, <peer>._peer.internal.

Start a server:          sixpn serve
Mint a token (admin):    sixpn token create --name k8s --group web
Join a node:             SIXPN_WIREGUARD_TOKEN=... sixpn token start node-1 web
Re-key the node:         SIXPN_WIREGUARD_TOKEN=... sixpn token update node-1 --force

Admin commands find the server at $SIXPN_API_URL (default http://127.0.0.1:4280) and authenticate
with an API key ($SIXPN_API_KEY or --api-key; `sixpn apikey create`), else with $SIXPN_ADMIN_TOKEN,
or with the admin-token file the server wrote into its data directory
($SIXPN_DATA_DIR or --data-dir, default ./sixpn-data). Over https they trust the system's roots
plus the CA in --cacert FILE ($SIXPN_CA_CERT).";

/// The `sixpn` command line.
#[derive(Debug, Parser)]
#[command(name = "sixpn", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log lines on stderr as `text` (default; coloured only on a terminal, never with NO_COLOR)
    /// or `json` (one object per line, for log shippers). Also $SIXPN_LOG_FORMAT.
    #[arg(long, global = true, value_name = "FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
}

/// The top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: peer and admin API, authoritative DNS, and the gateway when configured.
    #[command(long_about = "\
Run the server: the peer API (for `sixpn token start|update` and flyctl), the admin API, the
authoritative DNS for *.internal, and, when [gateway] is configured, keep a WireGuard interface in
step with the peers.

With no config at all it runs on the built-in defaults: SQLite in ./sixpn-data, the API on
127.0.0.1:4280, DNS on 127.0.0.1:5354, one region `local` whose gateway is this host. Settings come
from the config file (--config, or SIXPN_CONFIG), then the environment (SIXPN_DATA_DIR,
SIXPN_DATABASE_URL, SIXPN_READ_DATABASE_URL, SIXPN_API_LISTEN, SIXPN_ADMIN_LISTEN, SIXPN_DNS_LISTEN, SIXPN_DNS_VIEWS,
SIXPN_ZONES_DIR, SIXPN_ADMIN_TOKEN, SIXPN_ULA_PREFIX), then these flags; later ones win. README's
Configuration section lists every key.

Examples:
  sixpn serve
  sixpn serve --config /etc/sixpn/sixpn.toml
  SIXPN_DATABASE_URL=postgres://sixpn@db/sixpn sixpn serve --api-listen 0.0.0.0:4280")]
    Serve(ServeArgs),
    /// Create and list orgs (tenants, each with its own /48).
    #[command(subcommand)]
    Org(OrgCommand),
    /// Mint, list and delete WireGuard tokens (admin); join or re-key a node with one (node).
    #[command(subcommand)]
    Token(TokenCommand),
    /// List, show and delete peers (admin).
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Create, list and revoke API keys: admin credentials with a role and a scope (owner).
    #[command(subcommand)]
    Apikey(ApiKeyCommand),
    /// Show the org's audit log: every token and peer change, newest first (admin).
    #[command(long_about = "\
Show the org's audit log: each token and peer change (token_minted, token_deleted, peer_created,
peer_rekeyed, peer_deleted, peer_reaped) with its time, actor (admin, the token's name, or reaper
for idle ephemeral peers), the client's address and the target, newest first.

Examples:
  sixpn audit
  sixpn audit --org acme --limit 20
  sixpn audit --json | jq '.entries[] | select(.action == \"peer_reaped\")'")]
    Audit(AuditArgs),
    /// Copy a running server's SQLite store to FILE, consistently, and check the copy.
    #[command(long_about = "\
Copy the SQLite store to FILE while the server runs and writes: the copy is the database as of one
commit (SQLite's VACUUM INTO on a connection of its own), passes PRAGMA integrity_check and is
written under a temporary name, then renamed, mode 0600. An existing FILE is replaced only with
--force.

The store is found as `sixpn serve` finds it: --config (SIXPN_CONFIG), then SIXPN_DATA_DIR and
SIXPN_DATABASE_URL, then --data-dir and --database-url. A PostgreSQL store is backed up with
pg_dump instead (README: \"Backup and restore\").

The admin-token and key files in the data directory are not in the store: copy them yourself.

Examples:
  sixpn backup /var/backups/sixpn-$(date +%F).db
  sixpn backup --data-dir /var/lib/sixpn --force /var/backups/sixpn.db")]
    Backup(BackupArgs),
    /// Replace the SQLite store of a stopped server with a backup.
    #[command(long_about = "\
Put FILE (made by `sixpn backup`) in place as the SQLite store, for a stopped server: refused while
a server holds the data directory. FILE must be a sixpn store that passes PRAGMA integrity_check
and whose schema this sixpn knows (an older one is migrated when the server starts). The store is
replaced atomically (a checked copy beside it, synced, renamed); the old store's -wal and -shm
files and the saved DNS state (dns-state.bin) are removed, so the server rebuilds it from the
restored store.

The store is found as `sixpn serve` finds it (see `sixpn backup --help`). A PostgreSQL store is
restored with pg_restore instead (README: \"Backup and restore\").

Example:
  systemctl stop sixpn && sixpn restore /var/backups/sixpn.db && systemctl start sixpn")]
    Restore(RestoreArgs),
    /// Generate a WireGuard key pair locally (like `wg genkey | wg pubkey`).
    #[command(long_about = "\
Generate a WireGuard key pair from the operating system's secure random source and print both
keys. Nothing is sent anywhere. `sixpn token start` does this itself; keygen is for configuring a
gateway or checking a key by hand.

Examples:
  sixpn keygen
  sixpn keygen --json")]
    Keygen(KeygenArgs),
    /// Print shell completions for bash, zsh or fish.
    #[command(long_about = "\
Print a completion script for bash, zsh or fish on stdout.

Examples:
  source <(sixpn completions bash)                       # this shell only
  sixpn completions bash > /etc/bash_completion.d/sixpn
  sixpn completions zsh > \"${fpath[1]}/_sixpn\"
  sixpn completions fish > ~/.config/fish/completions/sixpn.fish")]
    Completions {
        /// The shell.
        shell: CompletionShell,
    },
}

/// The shells `sixpn completions` writes for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompletionShell {
    /// GNU bash.
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// `sixpn serve` flags; each one given wins over the environment and the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (every key optional); default: built-in defaults.
    #[arg(long, short = 'c', value_name = "FILE", env = "SIXPN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where SQLite, the generated admin token and generated keys live [default: sixpn-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite:...` or `postgres://...` [default: SQLite in the data directory].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Address the HTTP API listens on [default: 127.0.0.1:4280].
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,
    /// Address the admin plane (`/api/v1`, `/metrics`) listens on, apart from the peer API
    /// [default: none, the API listener serves everything].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Address the DNS server listens on, UDP and TCP; repeat for several [default: 127.0.0.1:5354].
    #[arg(long, value_name = "ADDR", value_delimiter = ',')]
    pub dns_listen: Vec<SocketAddr>,
}

/// Where the store is, found as `sixpn serve` finds it.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The server's TOML config file.
    #[arg(long, short = 'c', value_name = "FILE", env = "SIXPN_CONFIG")]
    pub config: Option<PathBuf>,
    /// The server's data directory (also $SIXPN_DATA_DIR) [default: sixpn-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server's database URL (also $SIXPN_DATABASE_URL) [default: SQLite in the data
    /// directory].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

/// `sixpn backup` arguments.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where the copy goes.
    pub file: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
    /// Where the store is.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `sixpn restore` arguments.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup to put in place.
    pub file: PathBuf,
    /// Where the store is.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Where the server is and how to authenticate as its admin.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The server's base URL.
    #[arg(long, value_name = "URL", env = "SIXPN_API_URL", default_value = DEFAULT_API_URL)]
    pub api_url: String,
    /// PEM file with the CA certificate(s) to trust for an https URL, besides the system's roots.
    #[arg(long, value_name = "FILE", env = "SIXPN_CA_CERT")]
    pub cacert: Option<PathBuf>,
    /// An API key (sixpn_ak_...) to authenticate with; it wins over $SIXPN_ADMIN_TOKEN and the
    /// admin-token file.
    #[arg(
        long,
        value_name = "KEY",
        env = "SIXPN_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// The server's data directory, where it wrote `admin-token`; used when neither an API key
    /// nor $SIXPN_ADMIN_TOKEN is given.
    #[arg(
        long,
        value_name = "DIR",
        env = "SIXPN_DATA_DIR",
        default_value = "sixpn-data"
    )]
    pub data_dir: PathBuf,
}

/// The org an admin command acts on.
#[derive(Debug, Args)]
pub struct OrgArg {
    /// The org.
    #[arg(long, value_name = "ORG", env = "SIXPN_ORG", default_value = crate::model::DEFAULT_ORG)]
    pub org: OrgSlug,
}

/// `--json`.
#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON instead of a table (lists are JSON arrays).
    #[arg(long)]
    pub json: bool,
}

/// `sixpn org …`.
#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an org; it gets its own private /48.
    #[command(long_about = "\
Create an org (a tenant). It gets its own private /48 carved from the server's ULA prefix, and its
own DNS view: its peers never see another org's names.

Example:
  sixpn org create acme")]
    Create {
        /// The org's slug, a DNS label such as `acme`.
        slug: OrgSlug,
        /// The server and the admin credential.
        #[command(flatten)]
        admin: AdminArgs,
        /// Output format.
        #[command(flatten)]
        json: JsonArg,
    },
    /// List orgs with their /48 and resolver address.
    #[command(long_about = "\
List the orgs with their private /48 and the resolver address (<prefix>::3) their peers use.

The list is fetched a page at a time (--page-size per request) and printed as it arrives.

Examples:
  sixpn org list
  sixpn org list --json")]
    List {
        /// The server and the admin credential.
        #[command(flatten)]
        admin: AdminArgs,
        /// Output format.
        #[command(flatten)]
        json: JsonArg,
        /// Paging.
        #[command(flatten)]
        page: PageArg,
    },
    /// Delete an org (owner); --cascade also deletes its tokens and peers.
    #[command(long_about = "\
Delete an org: its /48 and its slug are free again. An org that still has peers or tokens is
refused (exit 4) unless --cascade is given, which deletes them with it: their DNS names vanish and
the gateway drops them. The org's audit log goes with it; the delete is logged in the default
org's log. API keys scoped to the org are revoked. The default org cannot be deleted.

On a terminal it asks first; --yes skips the question. Without a terminal it refuses unless --yes
is given (exit 2): an org is too much to delete by accident from a script.

Examples:
  sixpn org delete typo-org
  sixpn org delete acme --cascade --yes")]
    Delete {
        /// The org's slug.
        #[arg(value_name = "ORG")]
        slug: OrgSlug,
        /// Also delete the org's tokens and peers.
        #[arg(long)]
        cascade: bool,
        /// Confirmation.
        #[command(flatten)]
        yes: YesArg,
        /// The server and the admin credential.
        #[command(flatten)]
        admin: AdminArgs,
        /// Output format.
        #[command(flatten)]
        json: JsonArg,
    },
}

/// `sixpn token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a WireGuard token (admin); prints the secret once.
    #[command(long_about = "\
Mint a WireGuard token for an org. The token can create, re-key, read and delete only the peers it
created itself, only in its org, and only in its group when --group is given.

The secret is printed once, as SIXPN_WIREGUARD_TOKEN=<secret>, ready for a shell or an env file;
the server keeps only a hash of it. Store it now (e.g. in a Kubernetes Secret).

Examples:
  sixpn token create --name k8s --group web
  sixpn token create --name ci --expires 12h --max-peers 10
  export \"$(sixpn token create --name laptop)\"")]
    Create(TokenCreateArgs),
    /// List the org's tokens: group, expiry, use and live peers (never the secret).
    #[command(long_about = "\
List the org's WireGuard tokens: name, group, expiry, creation, last use and live peer count. The
secrets are never shown (the server keeps only their hashes).

The list is fetched a page at a time (--page-size per request) and printed as it arrives.

Examples:
  sixpn token list
  sixpn token list --org acme --json")]
    List(OrgListArgs),
    /// Show one token: group, expiry, cap, use and live peers (never the secret).
    #[command(long_about = "\
Show one WireGuard token of the org: group, expiry, peer cap, creation, last use and live peer
count. The secret is never shown (the server keeps only its hash).

Examples:
  sixpn token show k8s
  sixpn token show k8s --org acme --json")]
    Show(TokenShowArgs),
    /// Delete a token and every peer it created.
    #[command(long_about = "\
Delete a WireGuard token. Every peer the token created is deleted with it: their DNS names vanish
and the gateway drops them.

On a terminal it asks first; --yes skips the question. Without one (scripts, CI, stderr to a
log) it does not ask and deletes.

Examples:
  sixpn token delete k8s
  sixpn token delete k8s --yes")]
    Delete(TokenDeleteArgs),
    /// Narrow $SIXPN_WIREGUARD_TOKEN offline: one peer name, one group, a lifetime.
    #[command(long_about = "\
Derive a narrower WireGuard token from $SIXPN_WIREGUARD_TOKEN (or $FLY_WIREGUARD_TOKEN), offline:
nothing is sent to the server. The derived token can only create, re-key, read and delete the peer
--name, only in group --group (within the parent's group), until --expires. It is printed as
SIXPN_WIREGUARD_TOKEN=<token> and used like any token (`sixpn token start`, flyctl). Peers it
creates belong to the parent token: deleting the parent deletes them and refuses the derived token.
A derived token can be narrowed again the same way.

Examples:
  sixpn token attenuate --name node-1 --expires 1h
  export \"$(sixpn token attenuate --name node-1 --group web --expires 10m)\"")]
    Attenuate(TokenAttenuateArgs),
    /// Register this node as a peer and write its wg-quick config (node).
    #[command(long_about = "\
Register this node as a peer and write its wg-quick config. The key pair is generated here, from
the OS's secure random source; only the public key is sent. The token comes from
$SIXPN_WIREGUARD_TOKEN (or $FLY_WIREGUARD_TOKEN), the server from $SIXPN_API_URL.

GROUP and REGION may be left out or given as \"\" for the token's group and the default region.
FILE defaults to <NAME>.conf; `-` or `stdout` prints the config instead. The file is created with
mode 0600 and an existing file is never replaced unless --force is given. wg-quick takes the
interface name from the file name, so keep it a valid one (at most 15 characters, e.g. wg0.conf).

Examples:
  sixpn token start node-1 web
  sixpn token start node-1 web local /etc/wireguard/sixpn0.conf
  sixpn token start node-1 \"\" \"\" - --no-dns > wg0.conf
  sudo wg-quick up ./node-1.conf")]
    Start(StartArgs),
    /// Re-key this node's peer, keeping its address, and write a new config (node).
    #[command(long_about = "\
Re-key a peer the token created: generate a new key pair here, send the new public key, and write a
new wg-quick config. The peer keeps its address and DNS name; the old key stops working. A
replacement pod runs this to reclaim its name.

FILE defaults to <NAME>.conf; to replace an existing file pass --force.

Examples:
  sixpn token update node-1 --force
  sixpn token update node-1 - > wg0.conf")]
    Update(UpdateArgs),
    /// Make sure this node is a working peer: register, re-key or leave alone (node; idempotent).
    #[command(long_about = "\
Make sure this node is a working peer with a config in FILE, whatever happened since the last run.
Made for loops in DaemonSets and Nomad jobs (deploy/):

- FILE holds a key the server has for NAME, and the server's details match: nothing is done.
- Only the gateway's details changed: FILE is rewritten, the key stays.
- NAME is not registered (first run, or an admin or a preStop hook deleted it): a new key pair is
  registered, as `token start` does.
- NAME exists with another key (e.g. a restarted pod lost FILE): it is re-keyed, as `token update`
  does; its address stays.

With FILE `-` (or `stdout`) no key is kept between runs: the first run registers NAME and prints
its config; later runs leave an existing NAME alone (nothing printed, exit 0) instead of re-keying
the live peer. `sixpn token update NAME -` re-keys it on purpose.

FILE (default <NAME>.conf) is always replaced atomically, mode 0600. Compare it before and after
(e.g. with cksum) to know whether to apply it again. --normalize-name turns a machine name into a
DNS label first: lowercase, other characters than letters, digits and '-' become '-', leading and
trailing '-' dropped, cut to 63 (`Node-1.eu-west.internal` → `node-1-eu-west-internal`).

Examples:
  sixpn token ensure node-1 web
  sixpn token ensure --normalize-name \"$NODE_NAME\" web \"\" /etc/sixpn/sixpn0.conf --no-dns")]
    Ensure(EnsureArgs),
}

/// `sixpn token ensure` arguments.
#[derive(Debug, Args)]
pub struct EnsureArgs {
    /// The peer's name, a DNS label (or any machine name with --normalize-name).
    pub name: String,
    /// The peer's group when it is registered [default: the token's group].
    pub group: Option<String>,
    /// The gateway region when it is registered [default: the server's default region].
    pub region: Option<String>,
    /// Where the wg-quick config lives; `-` or `stdout` prints it (default: `<NAME>.conf`).
    pub file: Option<String>,
    /// Turn NAME into a DNS label first (lowercase; dots and other characters become '-').
    #[arg(long)]
    pub normalize_name: bool,
    /// Node flags.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// `--yes` for destructive commands.
#[derive(Debug, Args)]
pub struct YesArg {
    /// Do not ask for confirmation (without a terminal, nothing is asked anyway).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `sixpn token create` arguments.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// The token's name, unique among the org's tokens.
    #[arg(long, value_name = "NAME")]
    pub name: TokenName,
    /// Confine the token's peers to this group.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<crate::model::GroupName>,
    /// Lifetime, e.g. 30d, 12h, 90m, 3600s [default: never expires].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expires: Option<std::time::Duration>,
    /// Cap on the token's live peers [default: none; the org's `[orgs] max_peers` still applies].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_peers: Option<u32>,
    /// Make every peer of the token ephemeral: removed once idle (`[peers] ephemeral_idle`).
    #[arg(long)]
    pub ephemeral: bool,
    /// Key lifetime of its peers, e.g. 24h: a peer is served only this long after its last
    /// create or re-key (`sixpn token ensure` re-keys in time) [default: `[peers] key_expiry`].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub key_expiry: Option<std::time::Duration>,
    /// The org to act on.
    #[command(flatten)]
    pub org: OrgArg,
    /// The server and the admin credential.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Output format.
    #[command(flatten)]
    pub json: JsonArg,
}

/// `sixpn audit` arguments.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Entries to show, newest first (1 to 1000).
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Only entries older than this id (the `next` of a previous `--json` page).
    #[arg(long, value_name = "ID")]
    pub before: Option<i64>,
    /// The org to act on.
    #[command(flatten)]
    pub org: OrgArg,
    /// The server and the admin credential.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Output format.
    #[command(flatten)]
    pub json: JsonArg,
}

/// `sixpn token start` arguments.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The peer's name, a DNS label: it resolves as `<NAME>._peer.internal`.
    pub name: PeerName,
    /// The peer's group [default: the token's group, else the server's default group].
    pub group: Option<String>,
    /// The gateway region [default: the server's default region].
    pub region: Option<String>,
    /// Where to write the wg-quick config; `-` or `stdout` prints it (default: `<NAME>.conf`).
    pub file: Option<String>,
    /// Make the peer ephemeral: the server removes it once idle (`[peers] ephemeral_idle`), e.g.
    /// for a CI job or an autoscaled pod. A token minted `--ephemeral` makes every peer so.
    #[arg(long)]
    pub ephemeral: bool,
    /// Node flags.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// `sixpn token update` arguments.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The peer's name.
    pub name: PeerName,
    /// Where to write the wg-quick config; `-` or `stdout` prints it (default: `<NAME>.conf`).
    pub file: Option<String>,
    /// Node flags.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// `sixpn token delete` arguments.
#[derive(Debug, Args)]
pub struct TokenDeleteArgs {
    /// The token's name.
    pub name: TokenName,
    /// Confirmation.
    #[command(flatten)]
    pub yes: YesArg,
    /// The org to act on.
    #[command(flatten)]
    pub org: OrgArg,
    /// The server and the admin credential.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Output format.
    #[command(flatten)]
    pub json: JsonArg,
}

/// `sixpn token show` arguments.
#[derive(Debug, Args)]
pub struct TokenShowArgs {
    /// The token's name.
    pub name: TokenName,
    /// The org to act on.
    #[command(flatten)]
    pub org: OrgArg,
    /// The server and the admin credential.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Output format.
    #[command(flatten)]
    pub json: JsonArg,
}

/// Arguments of a list command scoped to one org.
#[derive(Debug, Args)]
pub struct OrgListArgs {
    /// The org to act on.
    #[command(flatten)]
    pub org: OrgArg,
    /// The server and the admin credential.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Output format.
    #[command(flatten)]
    pub json: JsonArg,
    /// Paging.
    #[command(flatten)]
    pub page: PageArg,
}

/// Arguments of `peer list`: the list's, and filters.
#[derive(Debug, Args)]
pub struct PeerListArgs {
    /// The org, credential, format and paging.
    #[command(flatten)]
    pub list: OrgListArgs,
    /// Only peers of this group.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<GroupName>,
    /// Only peers of this region.
    #[arg(long, value_name = "REGION")]
    pub region: Option<RegionCode>,
    /// Only peers this token created.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<TokenName>,
    /// Only peers a gateway saw alive within the server's `[groups] health_window`.
    #[arg(long, conflicts_with = "idle")]
    pub live: bool,
    /// Only peers no gateway saw alive within the server's `[groups] health_window`.
    #[arg(long)]
    pub idle: bool,
}

/// Flags shared by `token start`, `token update` and `token ensure`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Replace FILE if it exists (atomically, still mode 0600); `ensure` always does.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Leave out the `DNS =` line (wg-quick hands it to resolvconf, which containers often lack).
    #[arg(long)]
    pub no_dns: bool,
    /// Add an `MTU =` line.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(1280..=9000))]
    pub mtu: Option<u16>,
    /// Print the server's answer as JSON on stdout (the config still goes to FILE).
    #[arg(long)]
    pub json: bool,
    /// The server's base URL.
    #[arg(long, value_name = "URL", env = "SIXPN_API_URL", default_value = DEFAULT_API_URL)]
    pub api_url: String,
    /// PEM file with the CA certificate(s) to trust for an https URL, besides the system's roots.
    #[arg(long, value_name = "FILE", env = "SIXPN_CA_CERT")]
    pub cacert: Option<PathBuf>,
}

/// `sixpn apikey …`.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key; prints it once.
    #[command(long_about = "\
Create an API key: an admin credential for one org (or \"*\" for every org) with one role:
owner (everything in its orgs, API keys included), operator (mint, list and delete WireGuard
tokens; list, show and delete peers; read the audit log) or viewer (read only).

The key is printed once, as SIXPN_API_KEY=<key>; the server keeps only a hash of it. Admin
commands use $SIXPN_API_KEY (or --api-key) before the bootstrap admin token.

Examples:
  sixpn apikey create --name ci-minter --org acme --role operator --expires 90d
  sixpn apikey create --name dashboard --org '*' --role viewer")]
    Create(ApiKeyCreateArgs),
    /// List the API keys your credential may see (never the keys themselves).
    #[command(long_about = "\
List the live API keys within your credential's scope, with their org, role, expiry, creator and
last use. The keys themselves are never shown: the server has only their hashes.

The list is fetched a page at a time (--page-size per request) and printed as it arrives.

Examples:
  sixpn apikey list
  sixpn apikey list --json")]
    List {
        /// The server and the admin credential.
        #[command(flatten)]
        admin: AdminArgs,
        /// Output format.
        #[command(flatten)]
        json: JsonArg,
        /// Paging.
        #[command(flatten)]
        page: PageArg,
    },
    /// Narrow $SIXPN_API_KEY offline: one org, a lower role, a lifetime.
    #[command(long_about = "\
Derive a narrower API key from $SIXPN_API_KEY (or --api-key), offline: nothing is sent to the
server. The derived key acts as its parent within --org (which must be within the parent's scope),
with at most --role, until --expires. It is printed as SIXPN_API_KEY=<key>. Revoking the parent
refuses every key derived from it.

Examples:
  sixpn apikey attenuate --org acme --role viewer
  sixpn apikey attenuate --role operator --expires 1h")]
    Attenuate(ApiKeyAttenuateArgs),
    /// Revoke an API key: every replica refuses it from the next request on.
    #[command(long_about = "\
Revoke an API key. Every replica refuses it from its next request on.

Examples:
  sixpn apikey revoke ci-minter
  sixpn apikey revoke ci-minter --yes")]
    Revoke {
        /// The key's name.
        name: String,
        /// Confirmation.
        #[command(flatten)]
        yes: YesArg,
        /// The server and the admin credential.
        #[command(flatten)]
        admin: AdminArgs,
        /// Output format.
        #[command(flatten)]
        json: JsonArg,
    },
}

/// `sixpn token attenuate` arguments.
#[derive(Debug, Args)]
pub struct TokenAttenuateArgs {
    /// The only peer name the derived token may use.
    #[arg(long, value_name = "PEER")]
    pub name: Option<String>,
    /// The only group it may use (within the parent token's group).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// Lifetime, e.g. 1h, 10m, 3600s [default: the parent's].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expires: Option<std::time::Duration>,
}

/// `sixpn apikey attenuate` arguments.
#[derive(Debug, Args)]
pub struct ApiKeyAttenuateArgs {
    /// The only org the derived key reaches (within the parent's scope).
    #[arg(long, value_name = "ORG")]
    pub org: Option<String>,
    /// The most it may do.
    #[arg(long, value_name = "ROLE", value_parser = ["owner", "operator", "viewer"])]
    pub role: Option<String>,
    /// Lifetime, e.g. 1h, 90d [default: the parent's].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expires: Option<std::time::Duration>,
    /// The key to narrow [default: $SIXPN_API_KEY].
    #[arg(
        long,
        value_name = "KEY",
        env = "SIXPN_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
}

/// `sixpn apikey create` arguments.
#[derive(Debug, Args)]
pub struct ApiKeyCreateArgs {
    /// The key's name, a DNS label unique among live keys.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// The org it reaches, or `*` for every org.
    #[arg(long, value_name = "ORG")]
    pub org: String,
    /// Its role.
    #[arg(long, value_name = "ROLE", value_parser = ["owner", "operator", "viewer"])]
    pub role: String,
    /// Lifetime, e.g. 90d, 12h, 3600s [default: never expires].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub expires: Option<std::time::Duration>,
    /// The server and the admin credential.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Output format.
    #[command(flatten)]
    pub json: JsonArg,
}

/// `sixpn peer …`.
#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// List the org's peers.
    #[command(long_about = "\
List the org's peers: name, group, region, address, the token that created each, public key and
last change.

The list is fetched a page at a time (--page-size per request) and printed as it arrives, so
an org of 100,000 peers streams. --group, --region, --token, --live and --idle narrow it (on the
server).

Examples:
  sixpn peer list
  sixpn peer list --group web --live
  sixpn peer list --json | jq -r '.[].address'")]
    List(PeerListArgs),
    /// Show one peer, with its gateway status (last handshake, bytes) when known.
    #[command(long_about = "\
Show one peer: group, region, address, public key, the token that created it, and what the gateway
reports about it (last handshake, bytes received and sent, outer endpoint) when a gateway runs.

Example:
  sixpn peer show node-1")]
    Show {
        /// The peer's name.
        name: PeerName,
        /// The org to act on.
        #[command(flatten)]
        org: OrgArg,
        /// The server and the admin credential.
        #[command(flatten)]
        admin: AdminArgs,
        /// Output format.
        #[command(flatten)]
        json: JsonArg,
    },
    /// Delete a peer (its token stays).
    #[command(long_about = "\
Delete one peer: its DNS name vanishes and the gateway drops it. The token that created it stays
and may register the name again.

On a terminal it asks first; --yes skips the question. Without a terminal it does not ask.

Examples:
  sixpn peer delete node-1
  sixpn peer delete node-1 -y")]
    Delete {
        /// The peer's name.
        name: PeerName,
        /// Confirmation.
        #[command(flatten)]
        yes: YesArg,
        /// The org to act on.
        #[command(flatten)]
        org: OrgArg,
        /// The server and the admin credential.
        #[command(flatten)]
        admin: AdminArgs,
        /// Output format.
        #[command(flatten)]
        json: JsonArg,
    },
}

/// `sixpn keygen` flags.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Output format.
    #[command(flatten)]
    pub json: JsonArg,
}

/// Turns clap's rendered usage error into one line: the message and its details, without the
/// usage block and the "try --help" footer, which the line then points to.
pub fn usage_error_line(rendered: &str) -> String {
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:"))
        .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
        .collect();
    format!("{} (see --help)", parts.join(" "))
}

/// An error and its causes as one line, `what: why: root cause`, each cause said once: many
/// errors already quote their cause in their own message (`reading config file x: No such file`),
/// and printing the chain as well would repeat it (issue 23).
pub fn error_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace(['\n', '\r'], " ")
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(seconds));
    }
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{e} (expected e.g. 30d, 12h, 90m or 3600s)"))?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

/// Runs one command line.
///
/// # Errors
/// Whatever the command ran into, as one line that says what to do.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Org(command) => admin::org(command).await,
        Command::Token(TokenCommand::Create(args)) => admin::token_create(args).await,
        Command::Token(TokenCommand::List(args)) => admin::token_list(args).await,
        Command::Token(TokenCommand::Show(args)) => admin::token_show(args).await,
        Command::Token(TokenCommand::Delete(args)) => admin::token_delete(args).await,
        Command::Token(TokenCommand::Start(args)) => node::start(args).await,
        Command::Token(TokenCommand::Attenuate(args)) => attenuate::token(args),
        Command::Token(TokenCommand::Update(args)) => node::update(args).await,
        Command::Token(TokenCommand::Ensure(args)) => node::ensure(args).await,
        Command::Peer(command) => admin::peer(command).await,
        Command::Apikey(command) => apikey::run(command).await,
        Command::Audit(args) => admin::audit(args).await,
        Command::Backup(args) => backup::backup(args).await,
        Command::Restore(args) => backup::restore(args).await,
        Command::Keygen(args) => node::keygen(args.json.json),
        Command::Completions { shell } => completions(shell),
    }
}

fn completions(shell: CompletionShell) -> anyhow::Result<()> {
    use clap::CommandFactory as _;
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sixpn", &mut script);
    output::print(&String::from_utf8_lossy(&script))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        data_dir: args.data_dir,
        database_url: args.database_url,
        api_listen: args.api_listen,
        admin_listen: args.admin_listen,
        dns_listen: args.dns_listen,
    };
    let config = Config::load(args.config.as_deref(), &overrides)?;
    let path = args.config.clone();
    crate::serve::run(config, move || Config::load(path.as_deref(), &overrides)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn issue23_error_lines_say_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = io.to_string();
        let err = anyhow::Error::new(crate::config::ConfigError::Read {
            path: "/nope/sixpn.toml".into(),
            cause: io,
        });
        let line = error_line(&err);
        assert_eq!(line.matches(&text).count(), 1, "{line}");
        assert!(
            line.starts_with("reading config file /nope/sixpn.toml: "),
            "{line}"
        );
        let chained = anyhow::anyhow!("root cause\nsecond line").context("opening the store");
        assert_eq!(
            error_line(&chained),
            "opening the store: root cause second line"
        );
    }

    #[test]
    fn usage_errors_fit_one_line() {
        let err = Cli::try_parse_from(["sixpn", "token", "create"]).unwrap_err();
        let line = usage_error_line(&err.render().to_string());
        assert_eq!(
            line,
            "error: the following required arguments were not provided: --name <NAME> (see --help)"
        );
        let err = Cli::try_parse_from(["sixpn", "token", "start", "Bad_Name"]).unwrap_err();
        let line = usage_error_line(&err.render().to_string());
        assert!(
            line.starts_with("error: invalid value 'Bad_Name' for '<NAME>'"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap().as_secs(), 30 * 86400);
        assert_eq!(parse_duration("12h").unwrap().as_secs(), 12 * 3600);
        assert_eq!(parse_duration("3600").unwrap().as_secs(), 3600);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn parses_flyctl_style_start() {
        let cli =
            Cli::try_parse_from(["sixpn", "token", "start", "node-1", "web", "", "-"]).unwrap();
        let Command::Token(TokenCommand::Start(args)) = cli.command else {
            panic!("parsed as {cli:?}");
        };
        assert_eq!(args.name.as_str(), "node-1");
        assert_eq!(args.group.as_deref(), Some("web"));
        assert_eq!(args.region.as_deref(), Some(""));
        assert_eq!(args.file.as_deref(), Some("-"));
        assert!(Cli::try_parse_from(["sixpn", "token", "start", "Bad_Name"]).is_err());
    }
}
