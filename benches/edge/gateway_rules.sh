#!/usr/bin/env bash
# What the gateway's per-org policy rules (src/gateway/netif.rs, rules 30-33) cost an IPv6 packet
# that arrives on another interface than WireGuard: `ping -f` round trips from a neighbour to the
# gateway's underlay address, with the kernel's rule 0 and then with N orgs' rules, in two network
# namespaces this script creates and deletes (root; nothing else is touched).
#
#   benches/edge/gateway_rules.sh [N ...]        (default: 100 1000)
#
# The host's own packets leave the list at the first rule (`iif lo`), tunnel packets at their
# org's rule, and IPv4 is not affected; only IPv6 from other interfaces walks the whole list.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
A=sixpn-rules-gw
B=sixpn-rules-ln
cleanup() { ip netns del "$A" 2>/dev/null || true; ip netns del "$B" 2>/dev/null || true; }
trap cleanup EXIT
rtt() { ip netns exec "$B" ping -6 -f -q -c 20000 fd99:99::1 | sed -n 's|^rtt [^=]*= [0-9.]*/\([0-9.]*\)/.*|\1|p'; }
[ "$#" -gt 0 ] || set -- 100 1000
for n in "$@"; do
    cleanup
    ip netns add "$A"
    ip netns add "$B"
    ip -n "$A" link set lo up
    ip -n "$B" link set lo up
    ip -n "$A" link add eth0 type veth peer name eth0 netns "$B"
    ip -n "$A" link add wg0 type veth peer name wg0p
    ip -n "$A" -6 addr add fd99:99::1/64 dev eth0 nodad
    ip -n "$B" -6 addr add fd99:99::2/64 dev eth0 nodad
    ip -n "$A" link set eth0 up
    ip -n "$B" link set eth0 up
    rtt >/dev/null # warm up
    before=$(rtt)
    ip -n "$A" -6 rule add pref 33 lookup local
    ip -n "$A" -6 rule add pref 30 iif lo goto 33
    for i in $(seq "$n"); do
        ip -n "$A" -6 rule add pref 30 iif wg0 from "fdaa:$(printf %x "$i")::/48" to "fdaa:$(printf %x "$i")::/48" goto 33
    done
    ip -n "$A" -6 rule add pref 31 iif wg0 prohibit
    for i in $(seq "$n"); do
        ip -n "$A" -6 rule add pref 32 to "fdaa:$(printf %x "$i")::/48" blackhole
    done
    ip -n "$A" -6 rule del pref 0 lookup local
    after=$(rtt)
    echo "$n orgs: ping -f RTT ${before} ms with rule 0, ${after} ms with the orgs' rules"
done
