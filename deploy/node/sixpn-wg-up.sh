#!/bin/sh
# sixpn-wg-up IFACE CONFIG [MTU]
#
# Applies a wg-quick file written by `sixpn token start|update` to an existing userspace WireGuard
# interface (e.g. `wireguard-go IFACE`), without wg-quick itself: no resolvconf needed (write the
# file with --no-dns, or the DNS line is simply ignored here), and the MTU set explicitly.
#
#   wireguard-go sixpn0
#   sixpn token start "$NODE_NAME" web "" /etc/sixpn/sixpn0.conf --no-dns
#   sixpn-wg-up sixpn0 /etc/sixpn/sixpn0.conf 1420
#
# Run again with a new file (after `sixpn token update`) to switch keys in place: the interface,
# its address and routes stay; only the key (and the peer) change. The interface ends up with
# exactly the file's addresses: one it no longer lists (a peer registered anew gets a new
# address) is removed.
#
# MTU: WireGuard adds 80 bytes over IPv6 (60 over IPv4); IPv6 inside needs at least 1280. The
# default 1420 fits a 1500-byte underlay; use 1380 or lower on overlays such as VXLAN pod networks.
set -eu

iface=${1:?usage: sixpn-wg-up IFACE CONFIG [MTU]}
conf=${2:?usage: sixpn-wg-up IFACE CONFIG [MTU]}
mtu=${3:-1420}

if [ "$mtu" -lt 1280 ]; then
    echo "sixpn-wg-up: MTU $mtu is below IPv6's minimum of 1280" >&2
    exit 1
fi

# `wg setconf` reads only WireGuard keys: drop wg-quick's own (Address, DNS, MTU, ...).
strip() {
    sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$conf" | awk '
        /^\[/ { print; next }
        {
            key = $0; sub(/[[:space:]]*=.*/, "", key)
            if (key ~ /^(Address|DNS|MTU|Table|PreUp|PostUp|PreDown|PostDown|SaveConfig)$/) next
            print
        }'
}
# The values of KEY lines, comma lists split, one per line.
values() {
    sed -n -e 's/#.*//' -e "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$conf" |
        tr ',' '\n' | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' -e '/^$/d'
}

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
chmod 600 "$tmp"
strip > "$tmp"
wg setconf "$iface" "$tmp"

# The file's addresses, each with its prefix length.
addresses() {
    for addr in $(values Address); do
        case $addr in
            */*) echo "$addr" ;;
            *:*) echo "$addr/128" ;;
            *) echo "$addr/32" ;;
        esac
    done
}
wanted=" $(addresses | tr '\n' ' ') "
# Addresses the file no longer holds go first: a peer registered again (after an admin deleted
# it) may get a new address, and the gateway drops packets from the old one. (Removed before the
# wanted ones are set, so one written differently is only re-added, never lost.)
for have in $(ip -o address show dev "$iface" scope global | awk '{ print $4 }'); do
    case $wanted in
        *" $have "*) ;;
        *) ip address del "$have" dev "$iface" ;;
    esac
done
for addr in $wanted; do
    ip address replace "$addr" dev "$iface"
done
ip link set dev "$iface" mtu "$mtu" up
for net in $(values AllowedIPs); do
    ip route replace "$net" dev "$iface"
done
echo "sixpn-wg-up: $iface is up with $(values Address | tr '\n' ' ')(mtu $mtu)"
