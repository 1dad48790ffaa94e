#!/usr/bin/env bash
# The whole test suite, as README.md describes: unit + integration tests (SQLite always,
# PostgreSQL when reachable), then the end-to-end WireGuard/HAProxy test when running as root.
#
#   tests/run-all.sh            # everything this machine can run
#   SIXPN_SKIP_E2E=1 tests/run-all.sh
#   SIXPN_SKIP_BROWSER=1 tests/run-all.sh
#   SIXPN_SKIP_REGIONS=1 tests/run-all.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
have dig || need_pkgs+=(bind9-dnsutils)
have wg || need_pkgs+=(wireguard-tools)
have wireguard-go || need_pkgs+=(wireguard-go)
have haproxy || need_pkgs+=(haproxy)
have ip || need_pkgs+=(iproute2)
have ping || need_pkgs+=(iputils-ping)
have curl || need_pkgs+=(curl)
have promtool || need_pkgs+=(prometheus) # ops: /metrics passes `promtool check metrics`
have python3 || need_pkgs+=(python3) # tests/e2e: HTTP servers on the nodes, HAProxy runtime API
have tcpdump || need_pkgs+=(tcpdump) # tests/e2e (k): what enters a node's tunnel
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && have apt-get; then
    echo "== installing ${need_pkgs[*]}"
    # Debian's packages try to start services (haproxy) on install; forbid that.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "note: missing ${need_pkgs[*]}; tests that need them say so and skip"
  fi
fi

# Use the local PostgreSQL when it answers and nothing else was chosen.
if [ -z "${SIXPN_TEST_POSTGRES_URL:-}" ] && (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  export SIXPN_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test
fi
echo "== PostgreSQL for tests: ${SIXPN_TEST_POSTGRES_URL:-none (SQLite only)}"

echo "== cargo test"
cargo test --locked

# The console in a real headless Chromium (issue 19). It installs chromium, chromium-driver and
# its pinned PyPI packages itself, and says so and skips when it cannot (not root).
if [ -z "${SIXPN_SKIP_BROWSER:-}" ]; then
  echo "== browser tests (headless Chromium, Selenium, axe-core)"
  tests/browser/run.sh
fi

if [ -z "${SIXPN_SKIP_E2E:-}" ] && [ -x tests/e2e/run.sh ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== end-to-end (network namespaces, wireguard-go, HAProxy)"
    cargo build --locked --bin sixpn
    tests/e2e/run.sh target/debug/sixpn
  else
    echo "note: the end-to-end test needs root (network namespaces); skipped"
  fi
fi

# Issue 17: three simulated regions (PostgreSQL primary + standbys, WAN through a delaying proxy),
# quick mode (about 4 minutes). The full mode is the benchmark: tests/regions/run.sh --full.
if [ -z "${SIXPN_SKIP_REGIONS:-}" ] && [ -x tests/regions/run.sh ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== three-region simulation (quick)"
    cargo build --locked --bin sixpn
    tests/regions/run.sh --quick target/debug/sixpn
  else
    echo "note: the region simulation needs root (network namespaces); skipped"
  fi
fi
