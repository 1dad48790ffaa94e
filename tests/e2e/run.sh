#!/usr/bin/env bash
# End-to-end test: a sixpn gateway and two nodes in network namespaces, real wireguard-go
# tunnels, sixpn DNS, and HAProxy balancing over `web._g.internal`.
#
#   tests/e2e/run.sh [path/to/sixpn]        (root; default: target/debug/sixpn)
#
# Topology (all inside namespaces this script creates; nothing is touched on the host):
#
#   sixpn-gw  br0 10.99.0.1/24   wg0 (wireguard-go, :51820)   sixpn serve (API https://10.99.0.1:4280
#             with a private CA, DNS on each org's ::3 only)   HAProxy (127.0.0.1:8080 and, for a
#             group of 300 in org `big`, 127.0.0.1:8081; deploy/haproxy/haproxy.cfg as shipped)
#             wireguard-go and sixpn run as user 65534 with only the capabilities that
#             deploy/gateway/*.service give them (setpriv: ambient, bounding, no new privileges)
#   sixpn-n1  eth0 10.99.0.11/24 wg0 (wireguard-go)   python http.server on its tunnel address
#   sixpn-n2  eth0 10.99.0.12/24 wg0 (wireguard-go)   python http.server on its tunnel address
#   sixpn-x1  eth0 10.99.0.13/24 wg0 (wireguard-go)   a peer of another org (acme)
#   sixpn-nd  eth0 10.99.0.14/24 sixpn0 (wireguard-go, started by deploy/node/sixpn-node.sh, run
#             as the DaemonSet and then as the Nomad job run it, section i; then standing for a
#             Nomad client host running it with raw_exec, section m)
#   sixpn-ln  eth0 10.99.0.15/24 fd99:99::15/64: a LAN neighbour of the gateway (no tunnel) that
#             routes the org's /48 to the gateway's underlay address fd99:99::1 (section k)
#   sixpn-p1..p3  eth0 10.99.0.16-18/24 sixpn0: three pods of deploy/kubernetes/sidecar, each
#             with the sixpn sidecar as the manifest runs it and its app on [::]:8080 (section l)
#
# wireguard-go always puts its socket in /run/wireguard, which namespaces share; every command
# here runs with a private bind mount of a per-namespace directory there (see `nsrun`).
#
# It prints PASS/FAIL lines and ends with "N passed, M failed"; it exits non-zero on any failure.
# Everything it starts is stopped by PID, and its namespaces are deleted, even when it fails.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
sixpn=$(realpath "${1:-$root/target/debug/sixpn}")
prefix=${SIXPN_E2E_PREFIX:-sixpn}
NS_GW=$prefix-gw
NS_N1=$prefix-n1
NS_N2=$prefix-n2
NS_X=$prefix-x1 # a node of another org, to show the orgs are isolated
NS_D=$prefix-nd # a node run by deploy/node/sixpn-node.sh, as the DaemonSet and the Nomad job do
NS_L=$prefix-ln # a LAN neighbour of the gateway, outside every tunnel
NS_PODS=("$prefix-p1" "$prefix-p2" "$prefix-p3") # pods with the sixpn sidecar (section l)
GW_IP6=fd99:99::1
GW_UID=65534 # the user the gateway's wireguard-go and sixpn run as
LAN_IP6=fd99:99::15
GW_IP=10.99.0.1
API=https://$GW_IP:4280
ADMIN_TOKEN=e2e-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d " \n") # 32+ characters
WG_UP=$root/deploy/node/sixpn-wg-up.sh
# The system python (a version-manager shim may not exec through, which would hide its PID).
PYTHON=$(command -v /usr/bin/python3 || command -v python3)
HAPROXY_CFG=$root/deploy/haproxy/haproxy.cfg
# HAProxy's removal bound: `timeout resolve` + `hold obsolete` in haproxy.cfg, plus slack for
# the resolution in flight and this script's polling.
HAPROXY_REMOVAL_BOUND=8
# Health-aware groups (section j): the window, and how soon after its tunnel stops a node must
# leave the group answer: the window, plus the gateway's liveness read and the DNS poll (window /
# 12 each), plus slack for this script's polling.
HEALTH_WINDOW=30s
HEALTH_BOUND=40

work=$(mktemp -d /tmp/sixpn-e2e.XXXXXX)
pids=()
namespaces=()
made_run_wireguard=
made_etc_sixpn=
passed=0
failed=0
started=$(date +%s)

log() { printf '%s  %s\n' "$(date +%T)" "$*"; }
pass() { printf 'PASS: %s\n' "$*"; passed=$((passed + 1)); }
fail() { printf 'FAIL: %s\n' "$*"; failed=$((failed + 1)); }
# check DESCRIPTION COMMAND...: PASS when the command succeeds.
check() {
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
die() {
    fail "$*"
    exit 1
}

# nsrun NS COMMAND...: run in namespace NS with its own /run/wireguard.
nsrun() {
    local ns=$1
    shift
    ip netns exec "$ns" unshare -m --propagation private \
        sh -c 'mount --bind "$0" /run/wireguard && exec "$@"' "$work/$ns/run" "$@"
}
# nsbg NS LOGNAME COMMAND...: like nsrun, in the background; the PID is recorded (ip netns
# exec, unshare and sh all exec, so $! is the command itself).
nsbg() {
    local ns=$1 name=$2
    shift 2
    # Not through the nsrun function: `func &` would fork a subshell and $! would be its PID.
    ip netns exec "$ns" unshare -m --propagation private \
        sh -c 'mount --bind "$0" /run/wireguard && exec "$@"' "$work/$ns/run" "$@" \
        >"$work/$name.log" 2>&1 &
    pids+=($!)
    last_pid=$!
}
stop_pid() {
    kill "$1" 2>/dev/null && wait "$1" 2>/dev/null
    return 0
}

cleanup() {
    local pid ns
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid=${pids[i]}
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        # wait only works for our own children, which these are.
        timeout 5 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for ns in "${namespaces[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    if [ -n "$made_run_wireguard" ]; then
        rmdir /run/wireguard 2>/dev/null || true
    fi
    if [ -n "$made_etc_sixpn" ]; then
        rmdir /etc/sixpn 2>/dev/null || true
    fi
    if [ "$failed" -gt 0 ] || [ -n "${SIXPN_E2E_KEEP_LOGS:-}" ]; then
        for f in "$work"/*.log; do
            [ -e "$f" ] || continue
            echo "----- $(basename "$f") (last 30 lines)"
            tail -n 30 "$f"
        done
    fi
    rm -rf "$work"
}
on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    cleanup
    if [ -z "${summary_done:-}" ]; then
        echo "$passed passed, $((failed > 0 ? failed : 1)) failed (aborted)"
        exit 1
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'fail "interrupted"; exit 1' INT TERM

# wait_for SECONDS COMMAND...: poll every 0.1 s until the command succeeds.
wait_for() {
    local deadline=$(($(date +%s%N) + $1 * 1000000000))
    shift
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s%N)" -gt "$deadline" ]; then return 1; fi
        sleep 0.1
    done
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# ----------------------------------------------------------------------------- preconditions
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
for tool in ip wg wireguard-go haproxy dig curl python3 ping unshare mount setpriv; do
    command -v "$tool" >/dev/null || die "needs $tool"
done
[ -x "$sixpn" ] || die "no sixpn binary at $sixpn (cargo build --bin sixpn)"
for ns in "$NS_GW" "$NS_N1" "$NS_N2" "$NS_X" "$NS_D" "$NS_L" "${NS_PODS[@]}"; do
    if ip netns list | grep -qw "^$ns"; then
        die "namespace $ns exists already (another run? remove it with: ip netns del $ns)"
    fi
done
if [ ! -d /run/wireguard ]; then
    mkdir -p /run/wireguard && made_run_wireguard=1
fi
# A mount point for the node's /etc/sixpn (the DaemonSet's emptyDir), in a private mount namespace.
if [ ! -d /etc/sixpn ]; then
    mkdir -p /etc/sixpn && made_etc_sixpn=1
fi

# ----------------------------------------------------------------------------- underlay
log "creating namespaces and the underlay 10.99.0.0/24"
for ns in "$NS_GW" "$NS_N1" "$NS_N2" "$NS_X" "$NS_D" "$NS_L" "${NS_PODS[@]}"; do
    ip netns add "$ns" || die "ip netns add $ns"
    namespaces+=("$ns")
    mkdir -p "$work/$ns/run"
    ip -n "$ns" link set lo up
done
# The gateway routes between peers (deploy/gateway/99-sixpn.conf sets the same on a host).
ip netns exec "$NS_GW" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/forwarding' 
ip -n "$NS_GW" link add br0 type bridge
ip -n "$NS_GW" addr add "$GW_IP/24" dev br0
ip -n "$NS_GW" link set br0 up
i=0
for ns in "$NS_N1" "$NS_N2" "$NS_X" "$NS_D" "$NS_L" "${NS_PODS[@]}"; do
    i=$((i + 1))
    ip -n "$NS_GW" link add "veth$i" type veth peer name eth0 netns "$ns"
    ip -n "$NS_GW" link set "veth$i" master br0 up
    ip -n "$ns" addr add "10.99.0.1$i/24" dev eth0
    ip -n "$ns" link set eth0 up
done
# IPv6 on the underlay too, for the LAN neighbour (section k).
ip -n "$NS_GW" -6 addr add "$GW_IP6/64" dev br0 nodad
ip -n "$NS_L" -6 addr add "$LAN_IP6/64" dev eth0 nodad

# ----------------------------------------------------------------------------- gateway
log "a private CA and the API's certificate for $GW_IP"
pki=$work/pki
mkdir -p "$pki"
(
    cd "$pki" &&
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -keyout ca.key -out ca.pem -subj /CN=sixpn-e2e-ca &&
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout api.key -out api.csr -subj "/CN=$GW_IP" &&
        printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$GW_IP" >ext.cnf &&
        openssl x509 -req -in api.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile ext.cnf -out api.crt
) >"$work/pki.log" 2>&1 || die "making the test CA (see pki.log)"
CA=$pki/ca.pem

log "starting wireguard-go and sixpn serve in $NS_GW, as user $GW_UID with the units' capabilities"
mkdir -p "$work/gw"
# The gateway's processes run as deploy/gateway/*.service run them: an unprivileged user (here
# nobody, there sixpn) with the units' capabilities only (ambient, bounding) and no new privileges.
chmod 711 "$work"
chown "$GW_UID:$GW_UID" "$work/gw" "$work/$NS_GW/run" "$pki/api.key"
# The unprivileged user must be able to reach the binary: a checkout under a private folder
# (`mktemp -d`, a home directory) is not, so the run uses a copy in its own folder.
install -m 0755 "$sixpn" "$work/sixpn"
sixpn=$work/sixpn
# Distributions ship /dev/net/tun world-writable (wireguard-go needs only CAP_NET_ADMIN then);
# where it is not, the gateway's mount namespace gets a node that is.
if [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
    mknod -m 0666 "$work/tun" c 10 200 || die "mknod $work/tun"
fi
# setpriv for the gateway's user, with wireguard-go@.service's and sixpn.service's capabilities.
priv() {
    printf '%s\n' setpriv --reuid="$GW_UID" --regid="$GW_UID" --clear-groups --inh-caps="-all,$1" \
        --ambient-caps="-all,$1" --bounding-set="-all,$1" --no-new-privs
}
mapfile -t WG_PRIV < <(priv +net_admin)
mapfile -t SIXPN_PRIV < <(priv +net_admin,+net_bind_service)
# gw_wireguard_go LOGNAME: wireguard-go wg0 in $NS_GW as wireguard-go@.service runs it.
gw_wireguard_go() {
    ip netns exec "$NS_GW" unshare -m --propagation private \
        sh -c 'mount --bind "$0" /run/wireguard && { [ ! -e "$1" ] || mount --bind "$1" /dev/net/tun; } && shift && exec "$@"' \
        "$work/$NS_GW/run" "$work/tun" "${WG_PRIV[@]}" wireguard-go -f wg0 >"$work/$1.log" 2>&1 &
    pids+=($!)
    last_pid=$!
}
# As deploy/gateway/sixpn.toml: HTTPS, [dns] listen left at its loopback default (the org ::3
# resolvers come with the gateway), max_udp_payload as HAProxy's accepted_payload_size.
cat >"$work/gw/sixpn.toml" <<EOF
data_dir = "$work/gw/data"

[api]
listen = "$GW_IP:4280"
tls_cert = "$pki/api.crt"
tls_key = "$pki/api.key"

[dns]
ttl = 5
max_udp_payload = 16384

[[regions]]
code = "e2e"
endpoint = "$GW_IP:51820"
default = true

[gateway]
interface = "wg0"
region = "e2e"
private_key_file = "$work/gw/gateway.key"
listen_port = 51820

# Health-aware groups for org personal (section j): the shortest window allowed.
[groups]
healthy_only = ["personal"]
health_window = "$HEALTH_WINDOW"
EOF
gw_wireguard_go wireguard-go-gw
gw_wg_pid=$last_pid
wait_for 10 test -S "$work/$NS_GW/run/wg0.sock" || die "wireguard-go did not start in $NS_GW"
# Secrets travel in the environment, never on a command line (/proc/<pid>/cmdline is world-readable).
SIXPN_ADMIN_TOKEN=$ADMIN_TOKEN nsbg "$NS_GW" sixpn-serve "${SIXPN_PRIV[@]}" \
    env RUST_LOG=info,hickory_server=warn "$sixpn" serve --config "$work/gw/sixpn.toml"
serve_pid=$last_pid
api_up() {
    kill -0 "$serve_pid" || return 0 # exited: stop waiting
    nsrun "$NS_GW" curl -fsS --cacert "$CA" -o /dev/null "$API/healthz"
}
wait_for 30 api_up || die "sixpn serve did not come up (see sixpn-serve.log)"
kill -0 "$serve_pid" 2>/dev/null || die "sixpn serve exited (see sixpn-serve.log)"
pass "sixpn serve runs in gateway mode on wireguard-go, API over HTTPS"
gw_procs_ok() {
    local pid
    for pid in "$gw_wg_pid" "$serve_pid"; do
        [ "$(stat -c %u "/proc/$pid")" = "$GW_UID" ] || return 1
    done
}
check "wireguard-go and sixpn serve run as user $GW_UID, not root (as the systemd units run them)" gw_procs_ok
check "the API refuses plain HTTP" sh -c "! ip netns exec '$NS_GW' curl -fsS -m 3 -o /dev/null 'http://$GW_IP:4280/healthz'"

admin() {
    SIXPN_ADMIN_TOKEN=$ADMIN_TOKEN nsrun "$NS_GW" env SIXPN_API_URL="$API" SIXPN_CA_CERT="$CA" "$sixpn" "$@"
}
gw_pubkey=$(nsrun "$NS_GW" wg show wg0 public-key)
check "the gateway interface carries the gateway key" test "$gw_pubkey" = \
    "$(nsrun "$NS_GW" sh -c "wg pubkey < '$work/gw/gateway.key'")"

# ----------------------------------------------------------------------------- nodes
# mint NAME: prints the token secret.
mint() {
    admin token create --name "$1" --group web | sed -n 's/^SIXPN_WIREGUARD_TOKEN=//p'
}
# node_cmd NS TOKEN ARGS...: run the sixpn CLI on a node (trusting the private CA by --cacert).
node_cmd() {
    local ns=$1 token=$2
    shift 2
    SIXPN_WIREGUARD_TOKEN=$token nsrun "$ns" env SIXPN_API_URL="$API" "$sixpn" "$@" --cacert "$CA"
}
# wg_up NS CONF: start wireguard-go wg0 in NS and apply CONF; sets wg_pid.
wg_up() {
    local ns=$1 conf=$2
    nsbg "$ns" "wireguard-go-$ns-$(date +%s%N)" wireguard-go -f wg0
    wg_pid=$last_pid
    wait_for 10 test -S "$work/$ns/run/wg0.sock" || return 1
    nsrun "$ns" "$WG_UP" wg0 "$conf" 1420 >>"$work/wg-up.log" 2>&1
}
wg_down() {
    local ns=$1 pid=$2
    stop_pid "$pid"
    wait_for 5 sh -c "! ip -n '$ns' link show wg0" || ip -n "$ns" link del wg0 2>/dev/null
    rm -f "$work/$ns/run/wg0.sock"
}
conf_addr() { sed -n 's/^Address *= *\([^/]*\).*/\1/p' "$1"; }
conf_dns() {
    # The org's ::3 from the peer's /48 (the file may omit DNS with --no-dns).
    local net
    net=$(sed -n 's/^AllowedIPs *= *\([^/,]*\)\/48.*/\1/p' "$1" | head -n1)
    python3 -c "import ipaddress,sys; print(ipaddress.IPv6Address(int(ipaddress.IPv6Address(sys.argv[1])) + 3))" "$net"
}
conf_pub() { sed -n 's/^PrivateKey *= *//p' "$1" | wg pubkey; }

declare -A token addr conf wgpid httppid
for n in 1 2; do
    ns_var=NS_N$n
    ns=${!ns_var}
    name=n$n
    log "node $name: token, sixpn token start, tunnel, http server"
    token[$n]=$(mint "$name")
    [ -n "${token[$n]}" ] || die "sixpn token create --name $name --group web printed no SIXPN_WIREGUARD_TOKEN"
    mkdir -p "$work/$name"
    conf[$n]=$work/$name/wg0.conf
    node_cmd "$ns" "${token[$n]}" token start "$name" web e2e "${conf[$n]}" --no-dns \
        >"$work/token-start-$name.log" 2>&1 || die "sixpn token start $name (see token-start-$name.log)"
    check "$name: config written with mode 0600" test "$(stat -c %a "${conf[$n]}")" = 600
    wg_up "$ns" "${conf[$n]}" || die "bringing up $name's tunnel"
    wgpid[$n]=$wg_pid
    addr[$n]=$(conf_addr "${conf[$n]}")
    mkdir -p "$work/$name/www"
    echo "$name" >"$work/$name/www/index.html"
    nsbg "$ns" "http-$name" "$PYTHON" -m http.server 8080 --bind "${addr[$n]}" --directory "$work/$name/www"
    httppid[$n]=$last_pid
done
ORG_DNS=$(conf_dns "${conf[1]}")
ORG_GW=$(python3 -c "import ipaddress,sys; print(ipaddress.IPv6Address(int(ipaddress.IPv6Address(sys.argv[1])) - 2))" "$ORG_DNS")
log "org resolver $ORG_DNS, gateway $ORG_GW, n1 ${addr[1]}, n2 ${addr[2]}"

# ----------------------------------------------------------------------------- (a) DNS, ping
dig_group() { nsrun "$1" dig +short +time=1 +tries=2 @"$ORG_DNS" web._g.internal AAAA | sort; }
expected=$(printf '%s\n' "${addr[1]}" "${addr[2]}" | sort)
# gw_has_peer KEY ADDR: the gateway interface holds KEY with exactly ADDR/128.
gw_has_peer() { nsrun "$NS_GW" wg show wg0 allowed-ips | grep -qxF "$(printf '%s\t%s/128' "$1" "$2")"; }
for n in 1 2; do
    check "(a) gateway interface: n$n's key with ${addr[$n]}/128" gw_has_peer "$(conf_pub "${conf[$n]}")" "${addr[$n]}"
done
for n in 1 2; do
    ns_var=NS_N$n
    ns=${!ns_var}
    other=$((3 - n))
    check "(a) n$n: ping6 the gateway ($ORG_GW) through the tunnel" nsrun "$ns" ping -6 -c 2 -i 0.3 -W 2 "$ORG_GW"
    # Groups are health-aware (section j): a node is listed once the gateway has seen it alive,
    # a few seconds after its tunnel came up.
    dig_both() { test "$(dig_group "$1")" = "$expected"; }
    check "(a) n$n: dig @$ORG_DNS web._g.internal AAAA lists both nodes" wait_for 10 dig_both "$ns"
    check "(a) n$n: ping6 n$other (${addr[$other]}) through the gateway" nsrun "$ns" ping -6 -c 2 -i 0.3 -W 2 "${addr[$other]}"
done

# Peer status, as the admin API and `sixpn peer show` report it from the interface.
status_ok() {
    admin peer show "$1" --json | "$PYTHON" -c '
import json, sys
s = json.load(sys.stdin).get("status") or {}
ok = s.get("last_handshake") and s.get("rx_bytes", 0) > 0 and s.get("tx_bytes", 0) > 0 and s.get("endpoint")
print(s, file=sys.stderr)
sys.exit(0 if ok else 1)'
}
# Port 53 is served on the org's ::3 and nowhere else: not the underlay, not a wildcard.
gw_listeners_53() { ip netns exec "$NS_GW" ss -Hln"$1" | awk '{ print $4 }' | grep -E ':53$' | sort -u; }
for proto in u t; do
    l53=$(gw_listeners_53 "$proto" | tr '\n' ' ')
    check "(a) port 53/${proto/u/udp} on the gateway: the org resolver [$ORG_DNS]:53 listens ($l53)" \
        sh -c "printf '%s' '$l53' | grep -qF '[$ORG_DNS]:53'"
    check "(a) port 53/${proto/u/udp} on the gateway: nothing on the underlay or a wildcard ($l53)" \
        sh -c "! printf '%s\n' $l53 | grep -qvE '^\\[fd[0-9a-f:]*::3\\]:53\$'"
done
check "(a) sixpn peer show n1: last handshake, bytes and endpoint from the gateway" status_ok n1
admin peer show n1 >"$work/peer-show-n1.log" 2>&1
check "(a) sixpn peer show n1 prints the handshake" grep -qi "handshake" "$work/peer-show-n1.log"

# ----------------------------------------------------------------------------- (k) the LAN
# Only the tunnel reaches an org's ::1 and ::3 (issue 22): a LAN neighbour that routes the org's
# /48 to the gateway gets no answer, over UDP, TCP or ICMP; with a forged source inside the /48 (a
# node's address) nothing is sent into that node's tunnel; nor can it inject a packet into a
# tunnel through the gateway. The gateway's policy rules drop such packets before the `local`
# table (src/gateway/netif.rs). Without them every check below fails.
log "(k) a LAN neighbour ($NS_L, $LAN_IP6) routing the org's /48 to the gateway ($GW_IP6)"
org_net=$(sed -n 's/^AllowedIPs *= *\([^,]*\/48\).*/\1/p' "${conf[1]}")
ip -n "$NS_L" -6 route add "$org_net" via "$GW_IP6" dev eth0
check "(k) the LAN neighbour reaches the gateway's underlay address (ping6 $GW_IP6)" \
    wait_for 5 nsrun "$NS_L" ping -6 -c 1 -W 1 "$GW_IP6"
# lan_answer ARGS...: whether a dig from the neighbour got any DNS answer (REFUSED included).
lan_answer() { nsrun "$NS_L" dig +tries=1 +time=1 "$@" | grep -q 'status: '; }
no_lan_answer() { ! lan_answer "$@"; }
check "(k) LAN → [$ORG_DNS]:53 over UDP: no answer" no_lan_answer @"$ORG_DNS" web._g.internal AAAA
check "(k) LAN → [$ORG_DNS]:53 over TCP: no answer" no_lan_answer +tcp @"$ORG_DNS" web._g.internal AAAA
for a in "$ORG_GW" "$ORG_DNS"; do
    if nsrun "$NS_L" ping -6 -c 2 -i 0.3 -W 1 "$a" >/dev/null 2>&1; then
        fail "(k) LAN → $a: ping6 answered"
    else
        pass "(k) LAN → $a: ping6 gets no answer"
    fi
done
# Forged sources: n2's address on the neighbour (answers to it would go into n2's tunnel), and
# from it a ping to n1 (it would go into n1's tunnel). Each node's tunnel is watched meanwhile.
ip -n "$NS_L" -6 addr add "${addr[2]}/128" dev eth0 nodad
# tunnel_watch NS NAME: capture what arrives on NS's wg0 from the gateway's addresses or n2 (or,
# without tcpdump, its received-packet counter); tunnel_seen NS NAME prints what arrived since.
rx_packets() { ip -n "$1" -s -j link show wg0 | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])'; }
tunnel_watch() {
    if command -v tcpdump >/dev/null; then
        nsbg "$1" "tcpdump-$2" tcpdump -i wg0 -n -l -Q in \
            "ip6 and (src host $ORG_DNS or src host $ORG_GW or src host ${addr[2]})"
        eval "watch_pid_$2=$last_pid"
        wait_for 5 grep -q 'listening on' "$work/tcpdump-$2.log"
    else
        rx_packets "$1" >"$work/rx-$2"
    fi
}
tunnel_seen() {
    local pid_var=watch_pid_$2
    if command -v tcpdump >/dev/null; then
        sleep 0.5
        stop_pid "${!pid_var}"
        grep ' IP6 ' "$work/tcpdump-$2.log" | head -n 5
    else
        local before after
        before=$(cat "$work/rx-$2")
        after=$(rx_packets "$1")
        [ "$after" = "$before" ] || echo "$((after - before)) packets"
    fi
}
tunnel_watch "$NS_N2" n2
tunnel_watch "$NS_N1" n1
forged=$(
    nsrun "$NS_L" dig +tries=1 +time=1 -b "${addr[2]}" @"$ORG_DNS" web._g.internal AAAA
    nsrun "$NS_L" dig +tries=1 +time=1 +bufsize=16384 -b "${addr[2]}" @"$ORG_DNS" _peer.internal TXT
    nsrun "$NS_L" dig +tcp +tries=1 +time=1 -b "${addr[2]}" @"$ORG_DNS" web._g.internal AAAA
    nsrun "$NS_L" ping -6 -c 2 -i 0.3 -W 1 -I "${addr[2]}" "$ORG_GW"
    nsrun "$NS_L" ping -6 -c 2 -i 0.3 -W 1 -I "${addr[2]}" "${addr[1]}"
)
printf '%s\n' "$forged" >"$work/lan-forged.log"
seen_n2=$(tunnel_seen "$NS_N2" n2)
seen_n1=$(tunnel_seen "$NS_N1" n1)
check "(k) queries and pings from the LAN with n2's address forged: nothing sent into n2's tunnel ($seen_n2)" \
    test -z "$seen_n2"
check "(k) a ping from the LAN to n1 with n2's address forged: nothing sent into n1's tunnel ($seen_n1)" \
    test -z "$seen_n1"
check "(k) the LAN's forged queries got no answer" sh -c "! grep -q 'status: ' '$work/lan-forged.log'"
ip -n "$NS_L" -6 addr del "${addr[2]}/128" dev eth0
# The watch itself sees what the tunnel carries: n2's own query through its tunnel.
tunnel_watch "$NS_N2" n2
dig_group "$NS_N2" >/dev/null
seen_n2=$(tunnel_seen "$NS_N2" n2)
check "(k) the watch on n2's tunnel does see the answer to n2's own query ($seen_n2)" test -n "$seen_n2"
check "(k) n1 still resolves through the tunnel" test "$(dig_group "$NS_N1")" = "$expected"
check "(k) the gateway still reaches n1 (ping6 from the gateway itself)" \
    nsrun "$NS_GW" ping -6 -c 1 -W 2 "${addr[1]}"

# ----------------------------------------------------------------------------- (f) orgs
log "(f) a node of org acme, on the same gateway"
admin org create acme >"$work/org-create.log" 2>&1 || fail "(f) sixpn org create acme (see org-create.log)"
x_token=$(admin token create --org acme --name x1 --group web | sed -n 's/^SIXPN_WIREGUARD_TOKEN=//p')
mkdir -p "$work/x1"
x_conf=$work/x1/wg0.conf
if [ -n "$x_token" ] &&
    node_cmd "$NS_X" "$x_token" token start x1 web e2e "$x_conf" --no-dns >"$work/token-start-x1.log" 2>&1 &&
    wg_up "$NS_X" "$x_conf"; then
    x_addr=$(conf_addr "$x_conf")
    x_dns=$(conf_dns "$x_conf")
    x_gw=$(python3 -c "import ipaddress,sys; print(ipaddress.IPv6Address(int(ipaddress.IPv6Address(sys.argv[1])) - 2))" "$x_dns")
    check "(f) acme has its own /48 (resolver $x_dns)" test "$x_dns" != "$ORG_DNS"
    check "(f) x1: ping6 its org's gateway ($x_gw)" nsrun "$NS_X" ping -6 -c 2 -i 0.3 -W 2 "$x_gw"
    check "(f) x1: web._g.internal in acme's view is x1 alone" \
        test "$(nsrun "$NS_X" dig +short +time=1 +tries=2 @"$x_dns" web._g.internal AAAA)" = "$x_addr"
    check "(f) x1: n1._peer.internal (org personal) is NXDOMAIN in acme's view" \
        sh -c "ip netns exec '$NS_X' dig +time=1 +tries=2 @'$x_dns' n1._peer.internal AAAA | grep -q 'status: NXDOMAIN'"
    # The nodes' own AllowedIPs (their org's /48 only) already keep the other org out. Widen them
    # on both nodes, as a node serving two orgs would, so only the gateway stands in between.
    x_net=$(sed -n 's/^AllowedIPs *= *\([^,]*\/48\).*/\1/p' "$x_conf")
    n_net=$(sed -n 's/^AllowedIPs *= *\([^,]*\/48\).*/\1/p' "${conf[1]}")
    widen() { # widen NS CONF OTHER_NET
        local gw_key
        gw_key=$(sed -n 's/^PublicKey *= *//p' "$2")
        nsrun "$1" wg set wg0 peer "$gw_key" allowed-ips "$(sed -n 's/^AllowedIPs *= *//p' "$2"),$3" &&
            ip -n "$1" -6 route replace "$3" dev wg0
    }
    narrow() { # narrow NS CONF OTHER_NET
        local gw_key
        gw_key=$(sed -n 's/^PublicKey *= *//p' "$2")
        nsrun "$1" wg set wg0 peer "$gw_key" allowed-ips "$(sed -n 's/^AllowedIPs *= *//p' "$2")"
        ip -n "$1" -6 route del "$3" dev wg0 2>/dev/null || true
    }
    widen "$NS_X" "$x_conf" "$n_net" && widen "$NS_N1" "${conf[1]}" "$x_net" ||
        fail "(f) widening the nodes' AllowedIPs"
    if nsrun "$NS_X" ping -6 -c 2 -i 0.3 -W 1 "${addr[1]}" >/dev/null 2>&1; then
        fail "(f) x1 (acme) reaches n1 (personal) through the gateway"
    else
        pass "(f) x1 (acme) cannot reach n1 (personal), even with both routing the other /48 to the gateway"
    fi
    if nsrun "$NS_N1" ping -6 -c 2 -i 0.3 -W 1 "$x_addr" >/dev/null 2>&1; then
        fail "(f) n1 (personal) reaches x1 (acme) through the gateway"
    else
        pass "(f) n1 (personal) cannot reach x1 (acme) through the gateway"
    fi
    check "(f) n1 still reaches n2 (same org) with the widened AllowedIPs" \
        nsrun "$NS_N1" ping -6 -c 1 -W 2 "${addr[2]}"
    # The gateway's addresses of another org are not the gateway's to a node (issue 22): x1 gets
    # no answer from personal's resolver, however it routes.
    if nsrun "$NS_X" dig +tries=1 +time=1 @"$ORG_DNS" web._g.internal AAAA | grep -q 'status: '; then
        fail "(f) x1 (acme) gets an answer from org personal's resolver $ORG_DNS"
    else
        pass "(f) x1 (acme) gets no answer from org personal's resolver $ORG_DNS"
    fi
    narrow "$NS_X" "$x_conf" "$n_net"
    narrow "$NS_N1" "${conf[1]}" "$x_net"
    # Nor the host's other addresses: n1, routing the gateway's underlay address into its tunnel.
    widen "$NS_N1" "${conf[1]}" "$GW_IP6/128" || fail "(f) routing $GW_IP6 into n1's tunnel"
    if nsrun "$NS_N1" ping -6 -c 2 -i 0.3 -W 1 "$GW_IP6" >/dev/null 2>&1; then
        fail "(f) n1 reaches the gateway's underlay address $GW_IP6 through the tunnel"
    else
        pass "(f) n1 cannot reach the gateway's underlay address $GW_IP6 through the tunnel"
    fi
    narrow "$NS_N1" "${conf[1]}" "$GW_IP6/128"
    check "(f) n1 still reaches its gateway ($ORG_GW) and n2" \
        sh -c "ip netns exec '$NS_N1' ping -6 -c 1 -W 2 '$ORG_GW' >/dev/null && ip netns exec '$NS_N1' ping -6 -c 1 -W 2 '${addr[2]}' >/dev/null"
else
    fail "(f) bringing up x1 in org acme (see token-start-x1.log)"
fi

# ----------------------------------------------------------------------------- (b) HAProxy
log "starting HAProxy ($HAPROXY_CFG) in $NS_GW"
haproxy_sock=$work/haproxy.sock
nsbg "$NS_GW" haproxy env SIXPN_DNS="$ORG_DNS" HAPROXY_LISTEN=127.0.0.1:8080 HAPROXY_STATS="$haproxy_sock" \
    haproxy -f "$HAPROXY_CFG" -db
# haproxy_servers: "address op_state" of each server slot that holds an address, from HAProxy's
# runtime API (op_state 2 = running, i.e. its health check passes).
haproxy_servers() {
    "$PYTHON" - "${1:-$haproxy_sock}" 2>/dev/null <<'PY' |
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect(sys.argv[1])
s.sendall(b"show servers state web\n")
sys.stdout.write(s.makefile().read())
PY
        awk 'NR > 2 && NF > 6 && $5 != "-" && $5 != "::" && $5 != "0.0.0.0" { print $5, $6 }' | sort
}
haproxy_addrs() { haproxy_servers | awk '{ print $1 }'; }
# Both nodes resolved and passing their health checks.
haproxy_both_up() { test "$(haproxy_servers | awk '$2 == 2 { print $1 }')" = "$expected"; }
if wait_for 20 haproxy_both_up; then
    pass "(b) HAProxy resolved web._g.internal to both nodes and their checks pass"
else
    fail "(b) HAProxy resolved both nodes (has: $(haproxy_servers | tr '\n' ' '))"
fi
# spread N: N requests through HAProxy; prints "n1=X n2=Y other=Z".
spread() {
    local n1=0 n2=0 other=0 body
    for _ in $(seq "$1"); do
        body=$(nsrun "$NS_GW" curl -sS -m 3 http://127.0.0.1:8080/ 2>/dev/null)
        case $body in
            n1) n1=$((n1 + 1)) ;;
            n2) n2=$((n2 + 1)) ;;
            *) other=$((other + 1)) ;;
        esac
    done
    echo "n1=$n1 n2=$n2 other=$other"
}
result=$(spread 20)
log "20 requests through HAProxy: $result"
read -r r1 r2 r3 <<<"$result"
check "(b) HAProxy spreads requests over both nodes ($result)" \
    test "${r1#n1=}" -ge 5 -a "${r2#n2=}" -ge 5 -a "${r3#other=}" -eq 0

# ----------------------------------------------------------------------------- (c) re-key
log "(c) sixpn token update on n1"
old_pub=$(conf_pub "${conf[1]}")
mkdir -p "$work/n1/old" "$work/n1/new"
cp -p "${conf[1]}" "$work/n1/old/wg0.conf"
n2_pub=$(conf_pub "${conf[2]}")
n2_before=$(nsrun "$NS_GW" wg show wg0 dump | awk -v k="$n2_pub" '$1 == k { print $3, $5 }')
node_cmd "$NS_N1" "${token[1]}" token update n1 "$work/n1/new/wg0.conf" \
    >"$work/token-update-n1.log" 2>&1 || fail "(c) sixpn token update n1 (see token-update-n1.log)"
new_conf=$work/n1/new/wg0.conf
new_pub=$(conf_pub "$new_conf")
check "(c) the new config keeps n1's address" test "$(conf_addr "$new_conf")" = "${addr[1]}"
check "(c) the new config has a new key" test "$new_pub" != "$old_pub"
gw_peers() { nsrun "$NS_GW" wg show wg0 peers; }
gw_has_key() { gw_peers | grep -qxF "$1"; }
check "(c) the gateway swapped n1's key in place: the new key holds ${addr[1]}/128" wait_for 2 gw_has_peer "$new_pub" "${addr[1]}"
if gw_has_key "$old_pub"; then fail "(c) old key still on the gateway"; else pass "(c) old key removed from the gateway"; fi
n2_after=$(nsrun "$NS_GW" wg show wg0 dump | awk -v k="$n2_pub" '$1 == k { print $3, $5 }')
check "(c) n2's peer on the gateway was not touched (endpoint, handshake: $n2_after)" test "$n2_before" = "$n2_after"
check "(c) gateway → n2 still works without a new handshake" nsrun "$NS_N2" ping -6 -c 1 -W 2 "$ORG_GW"

# The old key: a fresh tunnel with the old config must not get a handshake.
wg_down "$NS_N1" "${wgpid[1]}"
wg_up "$NS_N1" "$work/n1/old/wg0.conf" || fail "(c) bringing up n1 with the old config"
if nsrun "$NS_N1" ping -6 -c 3 -i 0.5 -W 1 "$ORG_GW" >/dev/null 2>&1; then
    fail "(c) the old key still reaches the gateway"
else
    pass "(c) with the old key, ping to the gateway fails"
fi
hs=$(nsrun "$NS_N1" wg show wg0 latest-handshakes | awk '{ print $2 }')
check "(c) with the old key, no handshake completes (latest: ${hs:-none})" test "${hs:-0}" = 0
wg_down "$NS_N1" "$wg_pid"

# The new key: the tunnel comes back.
wg_up "$NS_N1" "$new_conf" || fail "(c) bringing up n1 with the new config"
wgpid[1]=$wg_pid
stop_pid "${httppid[1]}" # bind again on the new wg0
nsbg "$NS_N1" http-n1b "$PYTHON" -m http.server 8080 --bind "${addr[1]}" --directory "$work/n1/www"
check "(c) with the new key, ping6 to the gateway works" nsrun "$NS_N1" ping -6 -c 2 -i 0.3 -W 2 "$ORG_GW"
check "(c) with the new key, ping6 to n2 works" nsrun "$NS_N1" ping -6 -c 2 -i 0.3 -W 2 "${addr[2]}"
hs=$(nsrun "$NS_N1" wg show wg0 latest-handshakes | awk '{ print $2 }')
check "(c) with the new key, a handshake completed" test "${hs:-0}" -gt 0
check "(c) DNS still lists both nodes after the re-key" test "$(dig_group "$NS_N2")" = "$expected"

# ----------------------------------------------------------------------------- (j) health
# [groups] healthy_only = ["personal"]: web._g.internal lists only the nodes the gateway saw alive
# within HEALTH_WINDOW. Stopping n2's WireGuard must take it out of the group answer within the
# window (plus the liveness read, the DNS poll and a keepalive: a few seconds), and so out of
# HAProxy; its peer name keeps resolving; bringing the tunnel back brings it back.
log "(j) health-aware groups: stopping n2's WireGuard (window $HEALTH_WINDOW)"
wait_for 20 haproxy_both_up || fail "(j) HAProxy has both nodes up before the stop ($(haproxy_servers | tr '\n' ' '))"
wg_down "$NS_N2" "${wgpid[2]}"
t0=$(now_ms)
only_n1_dns() { test "$(dig_group "$NS_N1")" = "${addr[1]}"; }
if wait_for "$HEALTH_BOUND" only_n1_dns; then
    pass "(j) n2 left web._g.internal $(($(now_ms) - t0)) ms after its WireGuard stopped (bound ${HEALTH_BOUND}s)"
else
    fail "(j) web._g.internal still lists n2 ${HEALTH_BOUND}s after its WireGuard stopped: $(dig_group "$NS_N1" | tr '\n' ' ')"
fi
check "(j) n2._peer.internal still resolves" \
    test "$(nsrun "$NS_N1" dig +short +time=1 +tries=2 @"$ORG_DNS" n2._peer.internal AAAA)" = "${addr[2]}"
haproxy_only_n1() { test "$(haproxy_addrs)" = "${addr[1]}"; }
check "(j) HAProxy dropped n2 (bound ${HAPROXY_REMOVAL_BOUND}s)" wait_for "$HAPROXY_REMOVAL_BOUND" haproxy_only_n1
n1_up() { test "$(haproxy_servers | awk '$2 == 2 { print $1 }')" = "${addr[1]}"; }
wait_for 10 n1_up || fail "(j) HAProxy's check of n1 passes ($(haproxy_servers | tr '\n' ' '))"
result=$(spread 10)
check "(j) with n2's tunnel down, all requests go to n1 ($result)" test "$result" = "n1=10 n2=0 other=0"
log "(j) restarting n2's WireGuard"
wg_up "$NS_N2" "${conf[2]}" || fail "(j) bringing n2's tunnel up again"
wgpid[2]=$wg_pid
stop_pid "${httppid[2]}" # bind again on the new wg0
nsbg "$NS_N2" http-n2b "$PYTHON" -m http.server 8080 --bind "${addr[2]}" --directory "$work/n2/www"
httppid[2]=$last_pid
t0=$(now_ms)
both_dns() { test "$(dig_group "$NS_N1")" = "$expected"; }
if wait_for 20 both_dns; then
    pass "(j) n2 is back in web._g.internal $(($(now_ms) - t0)) ms after its tunnel came up"
else
    fail "(j) n2 is not back in web._g.internal 20 s after its tunnel came up"
fi
check "(j) HAProxy sends to n2 again" wait_for 30 haproxy_both_up
result=$(spread 20)
read -r r1 r2 r3 <<<"$result"
check "(j) requests reach both nodes again ($result)" \
    test "${r1#n1=}" -ge 5 -a "${r2#n2=}" -ge 5 -a "${r3#other=}" -eq 0

# ----------------------------------------------------------------------------- (d) delete
log "(d) deleting n2's token"
wait_for 20 haproxy_both_up || fail "(d) HAProxy has both nodes up before the delete ($(haproxy_servers | tr '\n' ' '))"
t0=$(now_ms)
admin token delete n2 >"$work/token-delete.log" 2>&1 || fail "(d) sixpn token delete n2 (see token-delete.log)"
t_cli=$(now_ms)
only_n1() { test "$(dig_group "$NS_N1")" = "${addr[1]}"; }
check "(d) n2 vanished from DNS at once" only_n1
if gw_has_key "$n2_pub"; then fail "(d) n2's key still on the gateway"; else pass "(d) n2's key is off the gateway"; fi
if wait_for "$HAPROXY_REMOVAL_BOUND" haproxy_only_n1; then
    t_ha=$(now_ms)
    pass "(d) HAProxy dropped n2 $((t_ha - t_cli)) ms after the delete (bound ${HAPROXY_REMOVAL_BOUND}s)"
else
    fail "(d) HAProxy still has n2 after ${HAPROXY_REMOVAL_BOUND}s: $(haproxy_addrs | tr '\n' ' ')"
fi
# n1's health check may still be catching up with (c)'s tunnel restart (fall 2, rise 1, inter 2s).
wait_for 10 n1_up || fail "(d) HAProxy's check of n1 passes ($(haproxy_servers | tr '\n' ' '))"
result=$(spread 10)
check "(d) all requests now go to n1 ($result)" test "$result" = "n1=10 n2=0 other=0"
log "(d) delete took $((t_cli - t0)) ms in the CLI"

# ----------------------------------------------------------------------------- (i) sixpn-node
# deploy/node/sixpn-node.sh in $NS_D, run exactly as the DaemonSet and the Nomad job run it: their
# command and args and the env values they set, read from the files themselves; the image's PATH
# (sixpn, sixpn-wg-up, sixpn-node, as deploy/node/Dockerfile installs them) and ENV; the conf and
# wireguard-go directories mounted where the manifests mount them. Changed, as an operator would:
# SIXPN_API_URL (this gateway), SIXPN_CA_CERT (the private CA; both files show it commented) and
# SIXPN_CHECK_EVERY, the probe period: CHECK_EVERY seconds here instead of 30.
# The DaemonSet's readiness probe (its command, read from the manifest, is run here too) promises
# readiness while a handshake with the gateway is under 3 minutes old, not more: it is checked
# ready with the tunnel up (before the delete and after the re-registration) and not ready once
# the tunnel is gone; during the seconds the peer is deleted it may still say ready.
K8S_YAML=$root/deploy/kubernetes/sixpn-node.yaml
NOMAD_HCL=$root/deploy/nomad/sixpn-node.nomad.hcl
CHECK_EVERY=3
# A deleted peer must be back within one probe period, plus one `sixpn token ensure` (two HTTPS
# requests from a debug build) and sixpn-wg-up.
REREGISTER_BOUND=$((CHECK_EVERY + 3))
image_bin=$work/image-bin
mkdir -p "$image_bin"
ln -s "$sixpn" "$image_bin/sixpn"
ln -s "$root/deploy/node/sixpn-wg-up.sh" "$image_bin/sixpn-wg-up"
ln -s "$root/deploy/node/sixpn-node.sh" "$image_bin/sixpn-node"
IMAGE_ENV=(HOME=/root PATH="$image_bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    "$(sed -n 's/^ENV \(WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=.*\)/\1/p' "$root/deploy/node/Dockerfile")")

# The DaemonSet's tunnel container: NAME=VALUE for each env entry with a literal value, its args
# (the command is /bin/sh -c), its readiness probe's command (a folded scalar, joined by spaces).
k8s_env() {
    awk '
        /^ *- name: tunnel$/ { t = 1; next }
        t && /^ *command:/ { exit }
        t && /^ *- name: / { n = $3; next }
        t && /^ *value: / { v = $0; sub(/^ *value: */, "", v); sub(/ +#.*$/, "", v); gsub(/^"|"$/, "", v); print n "=" v }
    ' "$K8S_YAML"
}
k8s_command() { sed -n 's/^ *command: \(\["\/bin\/sh", "-c"\]\)$/\1/p' "$K8S_YAML"; }
k8s_args() { sed -n "s/^ *args: \['\(.*\)'\]\$/\1/p" "$K8S_YAML"; }
k8s_probe() {
    awk '/readinessProbe:/ { r = 1 } r && /- >-$/ { f = 1; next } f && /periodSeconds:/ { exit }
        f { sub(/^ +/, ""); printf "%s%s", sep, $0; sep = " " }' "$K8S_YAML"
}
k8s_grace() { sed -n 's/^ *terminationGracePeriodSeconds: *\([0-9]*\)$/\1/p' "$K8S_YAML"; }
# The Nomad job's task TASK: its env block (KEY=VALUE, uninterpolated), command and `-c` script.
nomad_task() {
    awk -v task="$1" '$1 == "task" { t = ($2 == "\"" task "\"") } t' "$NOMAD_HCL"
}
nomad_env() {
    nomad_task "$1" | awk '/^ *env \{/ { e = 1; next } e && /^ *\}/ { exit }
        e && /^ *[A-Z_]+ *= *"/ { k = $1; v = $0; sub(/^[^"]*"/, "", v); sub(/"[^"]*$/, "", v); print k "=" v }'
}
nomad_command() { nomad_task "$1" | sed -n 's/^ *command *= *"\(.*\)"$/\1/p'; }
nomad_args() { nomad_task "$1" | sed -n 's/^ *args *= *\["-c", "\(.*\)"\]$/\1/p' | sed 's/\\"/"/g'; }
nomad_kill_timeout() { nomad_task "$1" | sed -n 's/^ *kill_timeout *= *"\([0-9]*\)s"$/\1/p'; }
# nomad_interpolate VALUE SECRETS_DIR NODE_NAME: what Nomad makes of an env value.
nomad_interpolate() {
    local v=$1
    v=${v//'$${NOMAD_SECRETS_DIR}'/$2}
    v=${v//'${node.unique.name}'/$3}
    printf '%s' "$v"
}

# node_script_bg LOG ETC_SIXPN SCRIPT ENV...: `/bin/sh -c SCRIPT` in $node_ns (default $NS_D) with
# only ENV, its own /run/wireguard (= /var/run/wireguard) and ETC_SIXPN on /etc/sixpn; sets
# node_pid. ENV (the token among it) goes through a 0600 file, not a command line. With
# node_host_bin set, that directory is mounted on /usr/local/bin (a host's installed tools, for
# raw_exec); with node_caps set (e.g. +net_admin), the script keeps only those capabilities (a
# container's securityContext: `add: [...]`, `drop: ["ALL"]`, no privilege escalation).
node_script_bg() {
    local name=$1 etc=$2 script=$3 kv v ns=${node_ns:-$NS_D} caps=${node_caps:-}
    local -a priv=()
    shift 3
    if [ -n "$caps" ]; then
        priv=(setpriv --inh-caps="-all,$caps" --ambient-caps="-all,$caps" --bounding-set="-all,$caps" --no-new-privs)
    fi
    (
        umask 077
        for kv in "$@"; do
            v=${kv#*=}
            printf "%s='%s'\n" "${kv%%=*}" "${v//\'/\'\\\'\'}"
        done >"$work/$name.env"
    )
    ip netns exec "$ns" unshare -m --propagation private \
        sh -c 'mount --bind "$0" /run/wireguard && mount --bind "$1" /etc/sixpn &&
            { [ -z "$2" ] || mount --bind "$2" /usr/local/bin; } && shift 2 && exec "$@"' \
        "$work/$ns/run" "$etc" "${node_host_bin:-}" "${priv[@]}" \
        env -i /bin/sh -c 'set -a && . "$0" && set +a && exec /bin/sh -c "$1"' \
        "$work/$name.env" "$script" >"$work/$name.log" 2>&1 &
    node_pid=$!
    pids+=("$node_pid")
}
# Has the server got PEER, with public key KEY (when given)?
admin_has_peer() {
    admin peer show "$1" --json 2>/dev/null | "$PYTHON" -c '
import json, sys
p = json.load(sys.stdin)
sys.exit(0 if p.get("name") == sys.argv[1] and (not sys.argv[2] or p.get("pubkey") == sys.argv[2]) else 1)' "$1" "${2:-}" 2>/dev/null
}
admin_lists_peer() {
    admin peer list --json | "$PYTHON" -c '
import json, sys
sys.exit(0 if any(p.get("name") == sys.argv[1] for p in json.load(sys.stdin)) else 1)' "$1"
}
# dig_peer NS NAME: the AAAA of NAME._peer.internal from the org resolver, asked from NS.
dig_peer() { nsrun "$1" dig +short +time=1 +tries=2 @"$ORG_DNS" "$2._peer.internal" AAAA; }
peer_nxdomain() { nsrun "$NS_GW" dig +time=1 +tries=2 @"$ORG_DNS" "$1._peer.internal" AAAA | grep -q 'status: NXDOMAIN'; }
nd_handshake() {
    local hs
    hs=$(nsrun "$NS_D" wg show sixpn0 latest-handshakes 2>/dev/null | awk 'NR == 1 { print $2 }')
    test "${hs:-0}" -gt 0
}
nd_ping_gw() { nsrun "$NS_D" ping -6 -c 1 -W 1 "$ORG_GW"; }
nd_up() { admin_has_peer "$1" && test -s "$2" && nd_handshake && nd_ping_gw; }

# deploy_cycle WHAT RAW_NAME PEER CONF MTU GRACE PROBE [WEB [FLEET_TOKEN VICTIM]]: sixpn-node
# (node_pid) registers PEER and brings the tunnel up; an admin deletes the peer; within the probe
# period it is back (API, DNS, gateway key) and the tunnel works; SIGTERM deregisters it and stops
# wireguard-go. PROBE: the readiness probe's command, or empty. WEB: the pod's web container runs,
# so HAProxy must take the node in (and drop it after SIGTERM). FLEET_TOKEN, VICTIM: another node
# registers VICTIM with the same token, and this node cannot re-key it (no_hijack).
deploy_cycle() {
    local what=$1 raw=$2 peer=$3 cf=$4 mtu=$5 grace=$6 probe=$7 web=${8:-} fleet=${9:-} victim=${10:-}
    local pub1 pub2 addr2 wg_go t0 t1 rc children alive
    if ! wait_for 30 nd_up "$peer" "$cf"; then
        fail "$what: sixpn-node registered $peer and its tunnel has a handshake (see $what.log)"
        return
    fi
    pass "$what: sixpn-node registered \"$raw\" as $peer and its tunnel has a handshake (ping $ORG_GW)"
    wg_go=$(pgrep -P "$node_pid" -x wireguard-go)
    [ -z "$wg_go" ] || pids+=("$wg_go")
    check "$what: wireguard-go runs (PID ${wg_go:-none}), the config is mode 0600, sixpn0 has MTU $mtu" \
        sh -c "test -n '$wg_go' && test \"\$(stat -c %a '$cf')\" = 600 && ip -n '$NS_D' link show sixpn0 | grep -q ' mtu $mtu '"
    if [ -n "$probe" ]; then
        check "$what: the readiness probe reports ready" nsrun "$NS_D" /bin/sh -c "$probe"
    fi
    pub1=$(conf_pub "$cf")
    if [ -n "$victim" ]; then
        no_hijack "$what" "$NS_D" "$fleet" "$victim"
    fi

    log "$what: the admin deletes peer $peer"
    admin peer delete "$peer" --yes >"$work/$what-peer-delete.log" 2>&1 ||
        fail "$what: sixpn peer delete $peer (see $what-peer-delete.log)"
    t0=$(now_ms)
    # Back: the server holds the config's (new) key, and the gateway has it with the address.
    back() {
        local key addr
        key=$(conf_pub "$cf") && addr=$(conf_addr "$cf") && test "$key" != "$pub1" &&
            admin_has_peer "$peer" "$key" && gw_has_peer "$key" "$addr"
    }
    if wait_for "$REREGISTER_BOUND" back; then
        t1=$(now_ms)
        pass "$what: $peer registered again, with a new key, $((t1 - t0)) ms after the delete (probe period ${CHECK_EVERY}s, bound ${REREGISTER_BOUND}s)"
    else
        fail "$what: $peer not registered again within ${REREGISTER_BOUND}s of the delete (see $what.log)"
    fi
    pub2=$(conf_pub "$cf")
    addr2=$(conf_addr "$cf")
    check "$what: the admin API lists $peer again" admin_lists_peer "$peer"
    if gw_has_key "$pub1"; then fail "$what: the deleted key is still on the gateway"; else pass "$what: the gateway has the new key only (wg show)"; fi
    check "$what: sixpn0 carries only the current address $addr2" \
        test "$(ip -n "$NS_D" -6 -o addr show dev sixpn0 scope global | awk '{ print $4 }')" = "$addr2/128"
    check "$what: the tunnel works again (ping6 $ORG_GW)" wait_for 10 nd_ping_gw
    check "$what: $peer._peer.internal resolves to $addr2 through the tunnel (@$ORG_DNS)" \
        test "$(dig_peer "$NS_D" "$peer")" = "$addr2"
    if [ -n "$probe" ]; then
        check "$what: the readiness probe reports ready again" nsrun "$NS_D" /bin/sh -c "$probe"
    fi
    haproxy_has_up() { haproxy_servers | grep -qxF "$1 2"; }
    if [ -n "$web" ]; then
        check "$what: HAProxy serves the node at its new address $addr2 (check up)" wait_for 10 haproxy_has_up "$addr2"
    fi

    children=$(pgrep -P "$node_pid" | tr '\n' ' ')
    log "$what: SIGTERM to sixpn-node (PID $node_pid; its children: $children)"
    kill -TERM "$node_pid"
    if timeout "$grace" tail --pid="$node_pid" -f /dev/null; then
        wait "$node_pid"
        rc=$?
        check "$what: sixpn-node exited with 0 within the grace period (${grace}s) (status $rc)" test "$rc" = 0
    else
        fail "$what: sixpn-node still runs ${grace}s after SIGTERM"
    fi
    alive=
    for pid in $children; do
        if kill -0 "$pid" 2>/dev/null; then alive="$alive $pid"; fi
    done
    check "$what: none of sixpn-node's children ($children) outlives it" test -z "$alive"
    check "$what: after SIGTERM, $peer._peer.internal is NXDOMAIN" peer_nxdomain "$peer"
    if admin_has_peer "$peer"; then fail "$what: the admin API still has $peer"; else pass "$what: the admin API no longer has $peer"; fi
    if gw_has_key "$pub2"; then fail "$what: the key is still on the gateway"; else pass "$what: the key is off the gateway"; fi
    check "$what: wireguard-go (PID ${wg_go:-none}) stopped and sixpn0 is gone" \
        wait_for 5 sh -c "test -n '$wg_go' && ! kill -0 '$wg_go' 2>/dev/null && ! ip -n '$NS_D' link show sixpn0"
    if [ -n "$probe" ]; then
        if nsrun "$NS_D" /bin/sh -c "$probe" >/dev/null 2>&1; then
            fail "$what: the readiness probe still reports ready without the tunnel"
        else
            pass "$what: the readiness probe reports not ready without the tunnel"
        fi
    fi
    if [ -n "$web" ]; then
        haproxy_lacks() { ! haproxy_addrs | grep -qxF "$1"; }
        check "$what: HAProxy dropped the node after SIGTERM (bound ${HAPROXY_REMOVAL_BOUND}s)" \
            wait_for "$HAPROXY_REMOVAL_BOUND" haproxy_lacks "$addr2"
    fi
}

# node_token_of PID: the WireGuard token the running sixpn-node PID uses: the one in its
# children's environment (its `sleep`, each `sixpn token ensure`), read as root can.
node_token_of() {
    local child tok i
    for i in $(seq 50); do
        for child in $(pgrep -P "$1"); do
            tok=$(tr '\0' '\n' <"/proc/$child/environ" 2>/dev/null | sed -n 's/^SIXPN_WIREGUARD_TOKEN=//p')
            if [ -n "$tok" ]; then
                printf '%s' "$tok"
                return 0
            fi
        done
        sleep 0.2
    done
    return 1
}
# peer_call NS TOKEN METHOD PATH [BODY]: one peer API request from NS with curl (the header on
# stdin); prints the HTTP status, the answer goes to $work/peer-call.json.
peer_call() {
    local ns=$1 tok=$2 method=$3 path=$4 body=${5:-}
    local -a data=()
    [ -z "$body" ] || data=(-H 'content-type: application/json' --data "$body")
    printf 'Authorization: Bearer %s\n' "$tok" |
        nsrun "$ns" curl -sS -m 10 --cacert "$CA" -o "$work/peer-call.json" -w '%{http_code}' \
            -X "$method" -H @- "${data[@]}" "$API/api/v3/wire_guard_peers$path"
}
fresh_pubkey() { wg genkey | wg pubkey; }
underlay_ip() { ip -n "$1" -4 -o addr show dev eth0 | awk '{ sub(/\/.*/, "", $4); print $4 }'; }
# audit_has ACTION TARGET TEXT: the org's audit log ($SIXPN_ORG, default personal) has an ACTION
# row for TARGET whose source and detail hold TEXT.
audit_has() {
    admin audit --json --limit 200 | "$PYTHON" -c '
import json, sys
action, target, text = sys.argv[1:4]
rows = [e for e in json.load(sys.stdin)["entries"] if e["action"] == action and e["target"] == target]
sys.exit(0 if any(text in "%s %s" % (e.get("source"), e.get("detail")) for e in rows) else 1)' "$1" "$2" "$3"
}
# no_hijack WHAT NS FLEET_TOKEN VICTIM (issue 23): another node registers VICTIM with the fleet
# token; the node running in NS (sixpn-node, node_pid) uses a token narrowed to its own name, so
# it cannot re-key or delete VICTIM (403), which keeps its key. The fleet token itself can (what
# deploy/README.md says a holder of it can do), and the audit log shows that re-key with both
# source addresses. VICTIM is deleted afterwards.
no_hijack() {
    local what=$1 ns=$2 fleet=$3 victim=$4 own code vpub src
    if ! node_cmd "$NS_GW" "$fleet" token start "$victim" web e2e "$work/$victim.conf" --no-dns \
        >"$work/token-start-$victim.log" 2>&1; then
        fail "$what: another node registers $victim with the fleet token (see token-start-$victim.log)"
        return
    fi
    vpub=$(conf_pub "$work/$victim.conf")
    own=$(node_token_of "$node_pid")
    check "$what: sixpn-node runs with a token narrowed to its name (sixpn_dt_...), not the fleet token" \
        test -n "$own" -a "${own#sixpn_dt_}" != "$own" -a "$own" != "$fleet"
    code=$(peer_call "$ns" "$own" PUT "/$victim" "{\"pubkey\":\"$(fresh_pubkey)\"}")
    check "$what: the node's token cannot re-key another node's peer $victim (HTTP $code: $(head -c 200 "$work/peer-call.json"))" \
        test "$code" = 403 -o "$code" = 404
    code=$(peer_call "$ns" "$own" DELETE "/$victim")
    check "$what: nor delete it (HTTP $code)" test "$code" = 403 -o "$code" = 404
    check "$what: $victim keeps its key" admin_has_peer "$victim" "$vpub"
    src=$(underlay_ip "$ns")
    code=$(peer_call "$ns" "$fleet" PUT "/$victim" "{\"pubkey\":\"$(fresh_pubkey)\"}")
    check "$what: the fleet token itself can re-key $victim (HTTP $code), as deploy/README.md says" test "$code" = 200
    check "$what: the audit log shows that re-key with both addresses (source_changed=$GW_IP->$src)" \
        audit_has peer_rekeyed "$victim" "source_changed=$GW_IP->$src"
    admin peer delete "$victim" --yes >/dev/null 2>&1 || fail "$what: deleting $victim"
}

log "(i) deploy/kubernetes: sixpn-node as the DaemonSet runs it, in $NS_D"
check "(i) the DaemonSet runs /bin/sh -c 'exec sixpn-node ...' (as this test does)" \
    test "$(k8s_command)" = '["/bin/sh", "-c"]' -a -n "$(k8s_args)"
k8s_node='E2E-Worker-1.eu-west-1.compute.internal' # spec.nodeName
k8s_peer=$(sh "$root/deploy/node/sixpn-node.sh" --normalize "$k8s_node")
k8s_token=$(mint k8s-web)
mkdir -p "$work/k8s/etc-sixpn" "$work/k8s/www"
echo "$k8s_peer" >"$work/k8s/www/index.html"
# The pod's web container (the same network namespace): `python3 -m http.server 8080 --bind ::`.
check "(i) the DaemonSet's web container serves [::]:8080 (as this test does)" \
    grep -qF 'command: ["python3", "-m", "http.server", "8080", "--bind", "::"]' "$K8S_YAML"
nsbg "$NS_D" k8s-web "$PYTHON" -m http.server 8080 --bind :: --directory "$work/k8s/www"
k8s_web_pid=$last_pid
env_args=("${IMAGE_ENV[@]}" NODE_NAME="$k8s_node" SIXPN_WIREGUARD_TOKEN="$k8s_token")
while IFS= read -r kv; do env_args+=("$kv"); done < <(k8s_env)
k8s_mtu=$(k8s_env | sed -n 's/^SIXPN_MTU=//p')
env_args+=(SIXPN_API_URL="$API" SIXPN_CA_CERT="$CA" SIXPN_CHECK_EVERY="$CHECK_EVERY")
printf '%s\n' "${env_args[@]}" | grep -v TOKEN >"$work/k8s-env.log"
node_script_bg k8s "$work/k8s/etc-sixpn" "$(k8s_args)" "${env_args[@]}"
deploy_cycle "(i) DaemonSet" "$k8s_node" "$k8s_peer" "$work/k8s/etc-sixpn/sixpn0.conf" "$k8s_mtu" \
    "$(k8s_grace)" "$(k8s_probe)" web "$k8s_token" e2e-worker-2
stop_pid "$k8s_web_pid"

log "(i) deploy/nomad: sixpn-node as the Nomad job's tunnel task runs it, in $NS_D"
nomad_node='e2e-client-2.dc1.sixpn.test' # ${node.unique.name}
nomad_peer=$(sh "$root/deploy/node/sixpn-node.sh" --normalize "$nomad_node")
nomad_secrets=$work/nomad/secrets # ${NOMAD_SECRETS_DIR}
mkdir -p "$nomad_secrets" "$work/nomad/etc-sixpn"
check "(i) the Nomad tasks run /bin/sh -c 'exec sixpn-node ...' (as this test does)" \
    test "$(nomad_command tunnel)/$(nomad_command deregister)" = /bin/sh//bin/sh
nomad_token=$(mint nomad-web)
env_args=("${IMAGE_ENV[@]}" NOMAD_SECRETS_DIR="$nomad_secrets" SIXPN_WIREGUARD_TOKEN="$nomad_token")
while IFS= read -r kv; do
    env_args+=("$(nomad_interpolate "$kv" "$nomad_secrets" "$nomad_node")")
done < <(nomad_env tunnel)
nomad_mtu=$(nomad_env tunnel | sed -n 's/^SIXPN_MTU=//p')
nomad_conf_dir=$(nomad_interpolate "$(nomad_env tunnel | sed -n 's/^SIXPN_CONF_DIR=//p')" "$nomad_secrets" "$nomad_node")
env_args+=(SIXPN_API_URL="$API" SIXPN_CA_CERT="$CA" SIXPN_CHECK_EVERY="$CHECK_EVERY")
printf '%s\n' "${env_args[@]}" | grep -v TOKEN >"$work/nomad-env.log"
check "(i) the Nomad job names the peer by \${node.unique.name} and keeps the config in the secrets dir" \
    test -n "$nomad_conf_dir" -a "$(printf '%s\n' "${env_args[@]}" | sed -n 's/^PEER_NAME=//p')" = "$nomad_node"
node_script_bg nomad "$work/nomad/etc-sixpn" "$(nomad_args tunnel)" "${env_args[@]}"
deploy_cycle "(i) Nomad" "$nomad_node" "$nomad_peer" "$nomad_conf_dir/sixpn0.conf" "$nomad_mtu" \
    "$(nomad_kill_timeout tunnel)" "" "" "$nomad_token" e2e-client-3
# The poststop task deletes the peer once more; it is gone already, which must not fail it.
env_args=("${IMAGE_ENV[@]}" NOMAD_SECRETS_DIR="$nomad_secrets" SIXPN_WIREGUARD_TOKEN="$nomad_token")
while IFS= read -r kv; do
    env_args+=("$(nomad_interpolate "$kv" "$nomad_secrets" "$nomad_node")")
done < <(nomad_env deregister)
env_args+=(SIXPN_API_URL="$API" SIXPN_CA_CERT="$CA")
node_script_bg nomad-deregister "$work/nomad/etc-sixpn" "$(nomad_args deregister)" "${env_args[@]}"
wait "$node_pid"
check "(i) Nomad: the poststop task (sixpn-node --deregister) exits 0 with the peer already gone" test $? = 0

# ----------------------------------------------------------------------------- (l) sidecar
# deploy/kubernetes/sidecar/web.yaml: three pods of the `web` Deployment, each a namespace with
# the `sixpn` native sidecar run exactly as the manifest says (its command, args and literal env
# read from the file; POD_NAME and APP as the downward API gives them: the pod's name and its
# app.kubernetes.io/name label), with NET_ADMIN as its only capability, one group token (a
# Secret minted for group web in org `side`, as the manifest's comment says), and the app
# container on [::]:8080 once the sidecar's startup probe passes. HAProxy as shipped, on org
# side's ::3, balances over web._g.internal: all three pods get requests. Deleting a pod (the app
# stopped, then SIGTERM to the sidecar, as the kubelet does for native sidecars) takes it out of
# DNS at once and out of HAProxy within HAPROXY_REMOVAL_BOUND. A pod's token, and the group's,
# cannot create a peer in another group (403), nor re-key another pod (403).
SIDECAR_YAML=$root/deploy/kubernetes/sidecar/web.yaml
# The sidecar container's lines (from `- name: sixpn` to the app's `containers:`).
sidecar_block() { awk '/^ *- name: sixpn$/ { t = 1 } t && /^ *containers:/ { exit } t' "$SIDECAR_YAML"; }
sidecar_env() {
    sidecar_block | awk '/^ *command:/ { exit } /^ *- name: / { n = $3; next }
        /^ *value: / { v = $0; sub(/^ *value: */, "", v); sub(/ +#.*$/, "", v); gsub(/^"|"$/, "", v); print n "=" v }'
}
sidecar_command() { sidecar_block | sed -n 's/^ *command: \(\["\/bin\/sh", "-c"\]\)$/\1/p'; }
sidecar_args() { sidecar_block | sed -n "s/^ *args: \['\(.*\)'\]\$/\1/p"; }
sidecar_startup() {
    sidecar_block | awk '/startupProbe:/ { p = 1 } p && /command:/ { print; exit }' |
        sed -n 's/^ *command: \["\/bin\/sh", "-c", "\(.*\)"\]$/\1/p'
}
sidecar_is_native() {
    awk '/^ *initContainers:/ { i = 1 } /^ *containers:/ { i = 0 } i && /^ *- name: sixpn$/ { n = 1 }
        n && /^ *restartPolicy: Always$/ { ok = 1 } END { exit !ok }' "$SIDECAR_YAML"
}
side_app=$(sed -n 's/^ *labels: { app.kubernetes.io\/name: \([a-z0-9-]*\) }$/\1/p' "$SIDECAR_YAML" | tail -n1)
side_grace=$(sed -n 's/^ *terminationGracePeriodSeconds: *\([0-9]*\)$/\1/p' "$SIDECAR_YAML")
log "(l) deploy/kubernetes/sidecar: three pods of $side_app with the sixpn sidecar, org side"
check "(l) the sidecar is a native sidecar: an init container with restartPolicy: Always" sidecar_is_native
check "(l) the sidecar runs /bin/sh -c 'exec sixpn-node \"\$POD_NAME\" \"\$APP\" ...' (as this test does)" \
    test "$(sidecar_command)" = '["/bin/sh", "-c"]' -a -n "$(sidecar_args)"
check "(l) the sidecar adds NET_ADMIN only, drops the rest, and mounts /dev/net/tun" sh -c "
    sidecar() { awk '/^ *- name: sixpn\$/ { t = 1 } t && /^ *containers:/ { exit } t' '$SIDECAR_YAML'; }
    sidecar | grep -qF 'capabilities: { add: [\"NET_ADMIN\"], drop: [\"ALL\"] }' &&
    sidecar | grep -qF 'allowPrivilegeEscalation: false' && ! grep -q 'privileged: true' '$SIDECAR_YAML' &&
    sidecar | grep -qF '{ name: tun, mountPath: /dev/net/tun }'"
downward_api_names() {
    sidecar_block | grep -qF 'fieldPath: metadata.name' &&
        sidecar_block | grep -qF "fieldPath: \"metadata.labels['app.kubernetes.io/name']\""
}
check "(l) the peer is named after the pod and its group after the app (downward API)" downward_api_names
check "(l) the app container serves [::]:8080 (as this test does)" \
    grep -qF 'command: ["python3", "-m", "http.server", "8080", "--bind", "::"]' "$SIDECAR_YAML"
admin org create side >"$work/org-create-side.log" 2>&1 || fail "(l) sixpn org create side (see org-create-side.log)"
# The Secret's token: minted for the group, as the manifest's comment says.
side_token=$(admin token create --org side --name k8s-web-pods --group "$side_app" --ephemeral --max-peers 50 |
    sed -n 's/^SIXPN_WIREGUARD_TOKEN=//p')
[ -n "$side_token" ] || fail "(l) minting the group token"
side_pods=(web-5d8c7f9b6-x2k4p web-5d8c7f9b6-q7zrm web-5d8c7f9b6-b9wtn) # metadata.name
declare -A side_pid side_web side_conf side_addr
for i in 0 1 2; do
    pod=${side_pods[i]}
    mkdir -p "$work/side/$pod/etc-sixpn" "$work/side/$pod/www"
    echo "$pod" >"$work/side/$pod/www/index.html"
    env_args=("${IMAGE_ENV[@]}" POD_NAME="$pod" APP="$side_app" SIXPN_WIREGUARD_TOKEN="$side_token")
    while IFS= read -r kv; do env_args+=("$kv"); done < <(sidecar_env)
    env_args+=(SIXPN_API_URL="$API" SIXPN_CA_CERT="$CA" SIXPN_CHECK_EVERY="$CHECK_EVERY")
    printf '%s\n' "${env_args[@]}" | grep -v TOKEN >"$work/side-env.log"
    node_ns=${NS_PODS[i]} node_caps=+net_admin node_script_bg "side-$pod" "$work/side/$pod/etc-sixpn" \
        "$(sidecar_args)" "${env_args[@]}"
    side_pid[$i]=$node_pid
    side_conf[$i]=$work/side/$pod/etc-sixpn/sixpn0.conf
done
side_mtu=$(sidecar_env | sed -n 's/^SIXPN_MTU=//p')
for i in 0 1 2; do
    pod=${side_pods[i]}
    ns=${NS_PODS[i]}
    # The kubelet starts the app once the sidecar's startup probe passes.
    if wait_for 30 nsrun "$ns" /bin/sh -c "$(sidecar_startup)"; then
        pass "(l) $pod: the sidecar's startup probe passes (the tunnel has its address)"
    else
        fail "(l) $pod: the sidecar's startup probe never passed (see side-$pod.log)"
    fi
    nsbg "$ns" "side-web-$pod" "$PYTHON" -m http.server 8080 --bind :: --directory "$work/side/$pod/www"
    side_web[$i]=$last_pid
    side_addr[$i]=$(conf_addr "${side_conf[$i]}")
done
side_dns=$(conf_dns "${side_conf[0]}")
side_gw=$(python3 -c "import ipaddress,sys; print(ipaddress.IPv6Address(int(ipaddress.IPv6Address(sys.argv[1])) - 2))" "$side_dns")
side_expected=$(printf '%s\n' "${side_addr[@]}" | sort)
side_caps_ok() {
    local eff
    eff=$(awk '/^CapEff:/ { print $2 }' "/proc/$1/status")
    # CAP_NET_ADMIN is bit 12: 0x1000 and nothing else.
    test "$eff" = 0000000000001000
}
peer_in_group() {
    SIXPN_ORG=side admin peer show "$1" --json 2>/dev/null | "$PYTHON" -c '
import json, sys
p = json.load(sys.stdin)
sys.exit(0 if p.get("name") == sys.argv[1] and p.get("group") == sys.argv[2] else 1)' "$1" "$2"
}
for i in 0 1 2; do
    pod=${side_pods[i]}
    check "(l) $pod: the sidecar runs with CAP_NET_ADMIN only (PID ${side_pid[$i]})" side_caps_ok "${side_pid[$i]}"
    check "(l) $pod: peer $pod in group $side_app, with a handshake through its tunnel (ping6 $side_gw)" sh -c "
        ip netns exec '${NS_PODS[i]}' ping -6 -c 2 -i 0.3 -W 2 '$side_gw' >/dev/null" 
    check "(l) $pod: the admin API has peer $pod in group $side_app" peer_in_group "$pod" "$side_app"
    check "(l) $pod: sixpn0 has MTU $side_mtu" sh -c "ip -n '${NS_PODS[i]}' link show sixpn0 | grep -q ' mtu $side_mtu '"
done
side_dig() { nsrun "$1" dig +short +time=1 +tries=2 @"$side_dns" "$side_app._g.internal" AAAA | sort; }
side_all_dns() { test "$(side_dig "${NS_PODS[0]}")" = "$side_expected"; }
check "(l) $side_app._g.internal lists the three pods (dig from a pod, through its tunnel)" wait_for 10 side_all_dns
side_sock=$work/haproxy-side.sock
nsbg "$NS_GW" haproxy-side env SIXPN_DNS="$side_dns" HAPROXY_LISTEN=127.0.0.1:8082 HAPROXY_STATS="$side_sock" \
    haproxy -f "$HAPROXY_CFG" -db
side_haproxy_up() { haproxy_servers "$side_sock" | awk '$2 == 2 { print $1 }'; }
side_all_up() { test "$(side_haproxy_up)" = "$side_expected"; }
if wait_for 30 side_all_up; then
    pass "(l) HAProxy as shipped resolved $side_app._g.internal to the three pods and their checks pass"
else
    fail "(l) HAProxy has the three pods up (has: $(haproxy_servers "$side_sock" | tr '\n' ' '))"
fi
# side_spread N: N requests through HAProxy; prints how many each pod answered, "other" last.
side_spread() {
    local body
    for _ in $(seq "$1"); do
        body=$(nsrun "$NS_GW" curl -sS -m 3 http://127.0.0.1:8082/ 2>/dev/null)
        case " ${side_pods[*]} " in
            *" $body "*) echo "$body" ;;
            *) echo other ;;
        esac
    done | sort | uniq -c | awk '{ printf "%s=%s ", $2, $1 }'
}
result=$(side_spread 30)
log "(l) 30 requests through HAProxy: $result"
spread_ok() {
    local pod
    for pod in "$@"; do
        printf '%s' "$result" | grep -qE "(^| )$pod=[0-9]+" || return 1
    done
    ! printf '%s' "$result" | grep -q other
}
check "(l) HAProxy spreads 30 requests over all three pods ($result)" spread_ok "${side_pods[@]}"

# The app reaches other peers over its pod's tunnel: pod 1 asks the org's DNS for pod 2's name and
# fetches pod 2's page from its tunnel address.
pod2_addr=$(nsrun "${NS_PODS[0]}" dig +short +time=1 +tries=2 @"$side_dns" "${side_pods[1]}._peer.internal" AAAA)
check "(l) ${side_pods[0]} reaches ${side_pods[1]} over its tunnel (${side_pods[1]}._peer.internal = $pod2_addr, its app answers)" \
    test -n "$pod2_addr" -a "$(nsrun "${NS_PODS[0]}" curl -sS -m 3 "http://[$pod2_addr]:8080/" 2>/dev/null)" = "${side_pods[1]}"

# Issue 23 with the sidecar: a pod's own token cannot touch another pod's peer, and neither it
# nor the group's token can create a peer in another group.
pod_token=$(node_token_of "${side_pid[0]}")
check "(l) the sidecar runs with a token narrowed to its pod (sixpn_dt_...)" \
    test -n "$pod_token" -a "${pod_token#sixpn_dt_}" != "$pod_token"
pub1=$(conf_pub "${side_conf[1]}")
code=$(peer_call "${NS_PODS[0]}" "$pod_token" PUT "/${side_pods[1]}" "{\"pubkey\":\"$(fresh_pubkey)\"}")
check "(l) ${side_pods[0]}'s token cannot re-key ${side_pods[1]} (HTTP $code)" test "$code" = 403
SIXPN_ORG=side check "(l) ${side_pods[1]} keeps its key on the server" admin_has_peer "${side_pods[1]}" "$pub1"
for which in pod group; do
    if [ "$which" = pod ]; then tok=$pod_token; name=${side_pods[0]}; else tok=$side_token; name=db-1; fi
    code=$(peer_call "${NS_PODS[0]}" "$tok" POST "" \
        "{\"name\":\"$name\",\"group\":\"db\",\"pubkey\":\"$(fresh_pubkey)\",\"region\":\"\"}")
    check "(l) the $which token cannot create a peer in group db (HTTP $code: $(head -c 160 "$work/peer-call.json"))" \
        test "$code" = 403
done

# Pod deletion: the kubelet stops the app container, then SIGTERMs the native sidecar.
gone=${side_pods[2]}
gone_addr=${side_addr[2]}
log "(l) deleting pod $gone: app stopped, then SIGTERM to its sidecar (PID ${side_pid[2]})"
children=$(pgrep -P "${side_pid[2]}" | tr '\n' ' ')
stop_pid "${side_web[2]}"
kill -TERM "${side_pid[2]}"
t0=$(now_ms)
if timeout "$side_grace" tail --pid="${side_pid[2]}" -f /dev/null; then
    wait "${side_pid[2]}"
    rc=$?
    check "(l) $gone: the sidecar exited with 0 within the grace period (${side_grace}s) (status $rc)" test "$rc" = 0
else
    fail "(l) $gone: the sidecar still runs ${side_grace}s after SIGTERM"
fi
t_exit=$(now_ms)
two_left=$(printf '%s\n' "${side_addr[0]}" "${side_addr[1]}" | sort)
side_two_dns() { test "$(side_dig "${NS_PODS[0]}")" = "$two_left"; }
check "(l) $gone left $side_app._g.internal as its sidecar exited ($((t_exit - t0)) ms after SIGTERM)" side_two_dns
check "(l) $gone._peer.internal is NXDOMAIN" sh -c \
    "ip netns exec '$NS_GW' dig +time=1 +tries=2 @'$side_dns' '$gone._peer.internal' AAAA | grep -q 'status: NXDOMAIN'"
side_haproxy_lacks() { ! haproxy_servers "$side_sock" | awk '{ print $1 }' | grep -qxF "$gone_addr"; }
if wait_for "$HAPROXY_REMOVAL_BOUND" side_haproxy_lacks; then
    pass "(l) HAProxy dropped $gone $(($(now_ms) - t0)) ms after SIGTERM (bound ${HAPROXY_REMOVAL_BOUND}s)"
else
    fail "(l) HAProxy still has $gone ${HAPROXY_REMOVAL_BOUND}s after SIGTERM"
fi
alive=
for pid in $children; do
    if kill -0 "$pid" 2>/dev/null; then alive="$alive $pid"; fi
done
check "(l) $gone: nothing of the sidecar outlives it ($children), and sixpn0 is gone" \
    sh -c "test -z '$alive' && ! ip -n '${NS_PODS[2]}' link show sixpn0 2>/dev/null"
side_two_up() { test "$(side_haproxy_up)" = "$two_left"; }
wait_for 10 side_two_up || fail "(l) HAProxy has the two remaining pods up ($(haproxy_servers "$side_sock" | tr '\n' ' '))"
result=$(side_spread 10)
check "(l) requests now go to the two remaining pods only ($result)" spread_ok "${side_pods[0]}" "${side_pods[1]}"
for i in 0 1; do
    stop_pid "${side_web[$i]}"
    stop_pid "${side_pid[$i]}"
done
no_pods_left() { test -z "$(side_dig "$NS_GW")"; }
check "(l) with every pod deleted, $side_app._g.internal is empty" wait_for 5 no_pods_left

# ----------------------------------------------------------------------------- (m) raw_exec
# deploy/nomad/sixpn-node-raw-exec.nomad.hcl: the tunnel task's command, as raw_exec runs it: on
# the host (here $NS_D, with the node tools installed in /usr/local/bin as the job's comment
# says), with no image, only the job's env (interpolated as Nomad does) and the token from its
# template. The host registers as the normalised ${node.unique.name}, its tunnel works, a host
# service on [::]:8080 is served by HAProxy, an admin delete is repaired, and on stop (SIGTERM)
# the peer is deregistered; the poststop task then exits 0.
NOMAD_RAW_HCL=$root/deploy/nomad/sixpn-node-raw-exec.nomad.hcl
log "(m) deploy/nomad raw_exec: sixpn-node on the host ($NS_D)"
nomad_docker_hcl=$NOMAD_HCL
NOMAD_HCL=$NOMAD_RAW_HCL
check "(m) a system job whose two tasks (tunnel, deregister) use the raw_exec driver" sh -c "
    grep -q '^ *type = \"system\"' '$NOMAD_RAW_HCL' &&
    test \"\$(grep -c '^ *driver = \"raw_exec\"' '$NOMAD_RAW_HCL')\" = 2 &&
    ! grep -q '^ *driver = \"docker\"' '$NOMAD_RAW_HCL'"
check "(m) its tasks run /bin/sh -c 'exec sixpn-node ...' (as this test does)" \
    test "$(nomad_command tunnel)/$(nomad_command deregister)" = /bin/sh//bin/sh
host_bin=$work/host-bin # /usr/local/bin on the host, as installed per the job's comment
mkdir -p "$host_bin"
ln -s "$sixpn" "$host_bin/sixpn"
ln -s "$root/deploy/node/sixpn-node.sh" "$host_bin/sixpn-node"
ln -s "$root/deploy/node/sixpn-wg-up.sh" "$host_bin/sixpn-wg-up"
raw_node='Host-3.DC1.sixpn.test' # ${node.unique.name}
raw_peer=$(sh "$root/deploy/node/sixpn-node.sh" --normalize "$raw_node")
raw_secrets=$work/raw/secrets # ${NOMAD_SECRETS_DIR}
mkdir -p "$raw_secrets" "$work/raw/etc-sixpn" "$work/raw/www"
chmod 700 "$raw_secrets"
echo "$raw_peer" >"$work/raw/www/index.html"
raw_token=$(mint nomad-hosts)
env_args=(NOMAD_SECRETS_DIR="$raw_secrets" SIXPN_WIREGUARD_TOKEN="$raw_token")
while IFS= read -r kv; do
    env_args+=("$(nomad_interpolate "$kv" "$raw_secrets" "$raw_node")")
done < <(nomad_env tunnel)
raw_mtu=$(nomad_env tunnel | sed -n 's/^SIXPN_MTU=//p')
raw_conf_dir=$(nomad_interpolate "$(nomad_env tunnel | sed -n 's/^SIXPN_CONF_DIR=//p')" "$raw_secrets" "$raw_node")
env_args+=(SIXPN_API_URL="$API" SIXPN_CA_CERT="$CA" SIXPN_CHECK_EVERY="$CHECK_EVERY")
printf '%s\n' "${env_args[@]}" | grep -v TOKEN >"$work/raw-env.log"
check "(m) the job names the peer by \${node.unique.name}, sets PATH to /usr/local/bin and keeps the config in the secrets dir" \
    test -n "$raw_conf_dir" -a "$(printf '%s\n' "${env_args[@]}" | sed -n 's/^PEER_NAME=//p')" = "$raw_node" \
    -a -n "$(printf '%s\n' "${env_args[@]}" | grep '^PATH=.*/usr/local/bin')"
# A service of the host, on all IPv6 addresses.
nsbg "$NS_D" raw-web "$PYTHON" -m http.server 8080 --bind :: --directory "$work/raw/www"
raw_web_pid=$last_pid
node_host_bin=$host_bin node_script_bg raw "$work/raw/etc-sixpn" "$(nomad_args tunnel)" "${env_args[@]}"
deploy_cycle "(m) raw_exec" "$raw_node" "$raw_peer" "$raw_conf_dir/sixpn0.conf" "$raw_mtu" \
    "$(nomad_kill_timeout tunnel)" "" web "$raw_token" host-4-dc1
stop_pid "$raw_web_pid"
env_args=(NOMAD_SECRETS_DIR="$raw_secrets" SIXPN_WIREGUARD_TOKEN="$raw_token")
while IFS= read -r kv; do
    env_args+=("$(nomad_interpolate "$kv" "$raw_secrets" "$raw_node")")
done < <(nomad_env deregister)
env_args+=(SIXPN_API_URL="$API" SIXPN_CA_CERT="$CA")
node_host_bin=$host_bin node_script_bg raw-deregister "$work/raw/etc-sixpn" "$(nomad_args deregister)" "${env_args[@]}"
wait "$node_pid"
check "(m) raw_exec: the poststop task (sixpn-node --deregister) exits 0 with the peer already gone" test $? = 0
NOMAD_HCL=$nomad_docker_hcl

# ----------------------------------------------------------------------------- (h) big group
log "(h) org big, created now, with a group of 300 peers; HAProxy as shipped on its ::3"
admin org create big >"$work/org-create-big.log" 2>&1 || fail "(h) sixpn org create big (see org-create-big.log)"
big_tokens=()
for t in 1 2 3; do
    # Three tokens: each one's burst (100 requests) covers its share without waiting.
    big_tokens+=("$(admin token create --org big --name "big$t" --group web | sed -n 's/^SIXPN_WIREGUARD_TOKEN=//p')")
done
# register 300 fake peers (random public keys) over HTTPS; prints the org's resolver address.
big_dns=$(BIG_TOKENS="${big_tokens[*]}" nsrun "$NS_GW" "$PYTHON" - "$GW_IP" "$CA" 2>"$work/big-register.log" <<'PY'
import base64, http.client, json, os, ssl, sys
host, ca, tokens = sys.argv[1], sys.argv[2], os.environ["BIG_TOKENS"].split()
ctx = ssl.create_default_context(cafile=ca)
dns = None
for t, token in enumerate(tokens):
    conn = http.client.HTTPSConnection(host, 4280, context=ctx, timeout=10)
    for i in range(100):
        body = json.dumps({"name": f"big-{t}-{i}", "group": "web", "region": "e2e",
                           "pubkey": base64.b64encode(os.urandom(32)).decode()})
        conn.request("POST", "/api/v3/wire_guard_peers", body,
                     {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        res = conn.getresponse()
        answer = json.loads(res.read() or b"{}")
        if res.status != 200:
            sys.exit(f"peer big-{t}-{i}: {res.status} {answer}")
        dns = answer["dns"]
print(dns)
PY
)
if [ -n "$big_dns" ] && [ "$big_dns" != "$ORG_DNS" ]; then
    pass "(h) 300 peers registered in org big (resolver $big_dns)"
    check "(h) org big's ::3 ($big_dns) is served, over UDP and TCP, though the org came after start" \
        sh -c "ip netns exec '$NS_GW' ss -Hlnu | grep -qF '[$big_dns]:53' && ip netns exec '$NS_GW' ss -Hlnt | grep -qF '[$big_dns]:53'"
    big_tcp=$(nsrun "$NS_GW" dig +tcp +short +time=2 +tries=2 @"$big_dns" web._g.internal AAAA | grep -c :)
    check "(h) dig +tcp @$big_dns web._g.internal lists all 300 ($big_tcp)" test "$big_tcp" = 300
    big_sock=$work/haproxy-big.sock
    nsbg "$NS_GW" haproxy-big env SIXPN_DNS="$big_dns" HAPROXY_LISTEN=127.0.0.1:8081 HAPROXY_STATS="$big_sock" \
        haproxy -f "$HAPROXY_CFG" -db
    big_count() { haproxy_servers "$big_sock" | awk '{ print $1 }' | sort -u | wc -l; }
    big_all() { test "$(big_count)" = 300; }
    if wait_for 20 big_all; then
        pass "(h) HAProxy as shipped resolved the group of 300 and lists all 300 addresses (show servers state)"
    else
        fail "(h) HAProxy lists $(big_count) of 300 addresses (see haproxy-big.log)"
    fi
else
    fail "(h) registering 300 peers in org big (see big-register.log)"
fi

# ----------------------------------------------------------------------------- (g) drift
log "(g) restarting the gateway's wireguard-go: sixpn must reconfigure the blank interface"
stop_pid "$gw_wg_pid"
wait_for 5 sh -c "! ip -n '$NS_GW' link show wg0" || true
rm -f "$work/$NS_GW/run/wg0.sock"
gw_wireguard_go wireguard-go-gw2
t0=$(now_ms)
gw_configured() { test "$(nsrun "$NS_GW" wg show wg0 public-key)" = "$gw_pubkey" && gw_has_key "$new_pub"; }
if wait_for 15 gw_configured; then
    pass "(g) the restarted interface got its key and peers back in $(($(now_ms) - t0)) ms"
else
    fail "(g) the restarted interface was not reconfigured within 15 s"
fi
# The node notices the dead session and handshakes again (WireGuard: within ~15 s of sending).
n1_back() { nsrun "$NS_N1" ping -6 -c 1 -W 1 "$ORG_GW"; }
check "(g) n1 reaches the gateway again" wait_for 40 n1_back

# ----------------------------------------------------------------------------- (e) cleanup
log "(e) cleaning up"
trap - EXIT
cleanup
leftover_ns=$(ip netns list | grep -E "^($NS_GW|$NS_N1|$NS_N2|$NS_X|$NS_D|$NS_L|${NS_PODS[0]}|${NS_PODS[1]}|${NS_PODS[2]})( |$)" || true)
check "(e) no namespace left behind" test -z "$leftover_ns"
alive=
for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then alive="$alive $pid"; fi
done
check "(e) no process left behind" test -z "$alive"
elapsed=$(($(date +%s) - started))
check "(e) the whole test took ${elapsed}s (< 300s)" test "$elapsed" -lt 300

summary_done=1
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
