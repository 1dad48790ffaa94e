#!/bin/sh
# sixpn-node NAME [GROUP] [REGION]
# sixpn-node --normalize NAME        print NAME as a DNS label (step 1 below)
# sixpn-node --deregister NAME       delete peer NAME (as on SIGTERM, step 5)
#
# Joins this machine (a pod, a Nomad allocation) to the sixpn network as peer NAME and keeps it
# joined: the entry point of the `sixpn-node` image that deploy/kubernetes and deploy/nomad run.
#
#   1. NAME is made a DNS label: lowercase; every character but a-z, 0-9 and '-' becomes '-';
#      leading '-' dropped; cut to 63; trailing '-' dropped (`Node-1.EU.internal` →
#      `node-1-eu-internal`). `sixpn token ensure --normalize-name` does exactly the same.
#      The token (the fleet's, shared by every node) is then narrowed offline to this one peer
#      name (and GROUP, when given): `sixpn token attenuate --name NAME`. Everything below uses
#      only that node token, so this node can create, re-key and delete its own peer and no
#      other node's (issue 23; SIXPN_NARROW_TOKEN=0 keeps the token as given).
#   2. `sixpn token ensure` registers the peer, or re-keys it when the name exists, and writes
#      $SIXPN_CONF_DIR/$SIXPN_IFACE.conf; wireguard-go and sixpn-wg-up bring the tunnel up.
#   3. Every $SIXPN_CHECK_EVERY seconds it runs `sixpn token ensure` again. That is a no-op while
#      the server holds this node's key; when an admin (or a stale preStop) deleted the peer, it
#      registers again; when the gateway's details changed, it rewrites the file. A changed file
#      is applied in place with sixpn-wg-up.
#   4. No handshake with the gateway for $SIXPN_STALE_AFTER seconds (e.g. the gateway lost the
#      peer): the node re-keys, which makes the server push the peer to the gateway afresh.
#   5. On SIGTERM/SIGINT it deletes its peer (unless SIXPN_DEREGISTER=0), so the name leaves DNS,
#      and HAProxy drops the node at once, then stops wireguard-go and waits for it to exit.
#
# Environment: SIXPN_API_URL, SIXPN_WIREGUARD_TOKEN (required); SIXPN_CA_CERT (a private CA for
# an https API); SIXPN_IFACE (sixpn0); SIXPN_CONF_DIR (/etc/sixpn; keep it in memory, it holds the
# private key); SIXPN_MTU (1420); SIXPN_CHECK_EVERY (30); SIXPN_STALE_AFTER (300);
# SIXPN_DEREGISTER (1); SIXPN_WG_RUN_DIR (/var/run/wireguard, where wireguard-go puts its socket);
# SIXPN_NARROW_TOKEN (1: narrow the token to this node's name at start).
set -eu

# Must match `normalize_name` in src/cli/node.rs (tests/it/cli.rs checks both on the same names).
normalize() {
    printf '%s' "$1" | LC_ALL=C tr '[:upper:]' '[:lower:]' | LC_ALL=C tr -c 'a-z0-9-' '-' |
        sed -e 's/^-*//' | cut -c1-63 | sed -e 's/-*$//'
}

mode=run
case ${1:-} in
    --normalize)
        normalize "${2:?usage: sixpn-node --normalize NAME}"
        exit 0
        ;;
    --deregister)
        mode=deregister
        shift
        ;;
esac

raw_name=${1:?usage: sixpn-node NAME [GROUP] [REGION]}
group=${2:-}
region=${3:-}
name=$(normalize "$raw_name")
[ -n "$name" ] || { echo "sixpn-node: NAME $raw_name holds no letter or digit" >&2; exit 2; }
: "${SIXPN_API_URL:?set SIXPN_API_URL to the sixpn server, e.g. https://sixpn.example.net:4280}"
: "${SIXPN_WIREGUARD_TOKEN:?set SIXPN_WIREGUARD_TOKEN to a token from sixpn token create}"
iface=${SIXPN_IFACE:-sixpn0}
conf_dir=${SIXPN_CONF_DIR:-/etc/sixpn}
conf=$conf_dir/$iface.conf
mtu=${SIXPN_MTU:-1420}
every=${SIXPN_CHECK_EVERY:-30}
stale_after=${SIXPN_STALE_AFTER:-300}
wg_run_dir=${SIXPN_WG_RUN_DIR:-/var/run/wireguard}
wg_pid=
sleep_pid=
stopping=

log() { echo "sixpn-node: $*" >&2; }

# The fleet token narrowed to this node (step 1): offline, no request to the server. The node
# token replaces it in this process's environment, so no child (sixpn, curl, wireguard-go) ever
# sees the fleet token.
narrow_token() {
    [ "${SIXPN_NARROW_TOKEN:-1}" != 0 ] || return 0
    set -- --name "$name"
    [ -z "$group" ] || set -- "$@" --group "$group"
    if ! node_token=$(sixpn token attenuate "$@"); then
        log "cannot narrow SIXPN_WIREGUARD_TOKEN to peer $name (sixpn token attenuate failed)"
        exit 2
    fi
    SIXPN_WIREGUARD_TOKEN=${node_token#SIXPN_WIREGUARD_TOKEN=}
    export SIXPN_WIREGUARD_TOKEN
}

ensure() {
    sixpn token ensure --normalize-name "$name" "$group" "$region" "$conf" --no-dns
}

apply() {
    sixpn-wg-up "$iface" "$conf" "$mtu"
    applied_at=$(date +%s)
}

deregister() {
    [ "${SIXPN_DEREGISTER:-1}" != 0 ] || return 0
    log "deleting peer $name"
    set --
    [ -z "${SIXPN_CA_CERT:-}" ] || set -- --cacert "$SIXPN_CA_CERT"
    # The header comes on stdin (`-H @-`; printf is the shell's own), never on a command line,
    # where /proc/<pid>/cmdline would show the token to every local user.
    printf 'Authorization: Bearer %s\n' "$SIXPN_WIREGUARD_TOKEN" |
        curl -fsS -m 10 "$@" -X DELETE -H @- \
            "${SIXPN_API_URL%/}/api/v3/wire_guard_peers/$name" >/dev/null || true
}

narrow_token

if [ "$mode" = deregister ]; then
    deregister
    exit 0
fi

# Leaves nothing running: the pending sleep goes, and wireguard-go is waited for (it removes its
# interface and socket on SIGTERM).
stop() {
    stopping=1
    [ -z "$sleep_pid" ] || kill "$sleep_pid" 2>/dev/null || true
    deregister
    if [ -n "$wg_pid" ]; then
        kill "$wg_pid" 2>/dev/null || true
        wait "$wg_pid" 2>/dev/null || true
    fi
    exit 0
}
trap stop TERM INT

# Seconds since the last handshake with the gateway (since the tunnel came up when none yet).
handshake_age() {
    last=$(wg show "$iface" latest-handshakes 2>/dev/null | awk 'NR == 1 { print $2 }')
    [ -n "$last" ] && [ "$last" -gt 0 ] || last=$applied_at
    echo $(($(date +%s) - last))
}

mkdir -p "$conf_dir"
chmod 700 "$conf_dir" 2>/dev/null || true
# The API may not answer yet (the gateway starting too): retry with a growing pause. A refusal
# that waiting never lifts (2: a bad value, 4: a cap on live peers reached or a name conflict,
# 5: the token refused) ends the process with that code instead, so the orchestrator shows it
# (CrashLoopBackOff, a failed allocation) rather than a node that retries forever.
pause=1
while :; do
    rc=0
    ensure || rc=$?
    [ "$rc" -ne 0 ] || break
    case $rc in
        2 | 4 | 5)
            log "sixpn token ensure was refused (exit $rc; see its message above): retrying cannot help, exiting"
            exit "$rc"
            ;;
    esac
    log "sixpn token ensure failed; again in ${pause}s"
    sleep "$pause" &
    sleep_pid=$!
    wait "$sleep_pid" || true
    [ "$pause" -ge 30 ] || pause=$((pause * 2))
done

env -u SIXPN_WIREGUARD_TOKEN wireguard-go -f "$iface" &
wg_pid=$!
i=0
until [ -S "$wg_run_dir/$iface.sock" ]; do
    i=$((i + 1))
    [ "$i" -lt 100 ] || { log "wireguard-go did not start"; exit 1; }
    sleep 0.1
done
apply
log "peer $name is up on $iface"

while [ -z "$stopping" ]; do
    # `sleep & wait`: a signal is handled at once, not after the sleep.
    sleep "$every" &
    sleep_pid=$!
    wait "$sleep_pid" || true
    kill -0 "$wg_pid" 2>/dev/null || { log "wireguard-go exited"; exit 1; }
    before=$(cksum <"$conf" 2>/dev/null || true)
    age=$(handshake_age)
    if [ "$age" -gt "$stale_after" ]; then
        log "no handshake for ${age}s: re-keying"
        rm -f "$conf"
    fi
    if ! ensure; then
        log "sixpn token ensure failed; keeping the current tunnel, trying again in ${every}s"
        continue
    fi
    if [ "$(cksum <"$conf")" != "$before" ]; then
        log "config changed: applying it"
        apply
    fi
done
