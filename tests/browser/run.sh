#!/usr/bin/env bash
# The console's browser tests (issue 19): a real headless Chromium, driven by Selenium, against a
# real `sixpn serve` (tests/browser/test_console.py says what each test proves).
#
# - Installs Debian's `chromium` and `chromium-driver` (and `dig`) when missing and running as
#   root; otherwise says why it skips and exits 0.
# - Makes a venv (default target/browser-venv) with tests/browser/requirements.txt from PyPI
#   (Selenium, axe-selenium-python with axe-core 3.1 inside, and their dependencies, all pinned),
#   and, when `npm` is there, a pinned axe-core 4 from npm as well: every page is checked by each
#   engine present.
# - Builds target/debug/sixpn (or uses SIXPN_BIN), starts `sixpn serve` on a temporary data
#   directory with ephemeral loopback ports, runs the tests, stops the server by its PID, and exits
#   non-zero on any failure.
#
# Environment:
#   SIXPN_BIN               the binary to test (default: target/debug/sixpn, built here)
#   BROWSER_VENV            the venv (default target/browser-venv)
#   SIXPN_SCREENSHOT_DIR    where the screenshots go (default target/browser-screenshots;
#                           README's are tests/browser/screenshots: set it to that to refresh them)
#   BROWSER_TEST_FILTER     a unittest name pattern (-k) to run only some tests
set -euo pipefail
cd "$(dirname "$0")/../.."

AXE_CORE_NPM_VERSION=4.11.4

have() { command -v "$1" >/dev/null 2>&1; }
chromium_bin=$(command -v chromium || true)
driver_bin=$(command -v chromedriver || true)
if [[ -z "$chromium_bin" || -z "$driver_bin" ]] || ! have dig; then
  if [[ "$(id -u)" == 0 ]] && have apt-get; then
    echo "== installing chromium chromium-driver bind9-dnsutils"
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends chromium chromium-driver bind9-dnsutils >/dev/null
    chromium_bin=$(command -v chromium)
    driver_bin=$(command -v chromedriver)
  else
    echo "note: the browser tests need chromium, chromium-driver and dig, which only root can" \
      "install here (apt-get); skipped"
    exit 0
  fi
fi

venv=$(realpath -m "${BROWSER_VENV:-target/browser-venv}")
requirements=tests/browser/requirements.txt
# (Re)made when missing or when the requirements changed since.
if ! cmp -s "$requirements" "$venv/requirements.txt"; then
  echo "== venv $venv ($requirements)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
fi

# axe-core 4 from npm, when npm is there (axe-selenium-python's engine is 3.1).
axe_dir="$venv/axe-core-$AXE_CORE_NPM_VERSION"
if [[ ! -s "$axe_dir/axe.min.js" ]] && have npm; then
  tmp=$(mktemp -d)
  if (cd "$tmp" && timeout 180 npm pack --silent "axe-core@$AXE_CORE_NPM_VERSION" >/dev/null 2>&1) &&
    tar -xzf "$tmp"/axe-core-*.tgz -C "$tmp" package/axe.min.js; then
    mkdir -p "$axe_dir" && mv "$tmp/package/axe.min.js" "$axe_dir/axe.min.js"
  else
    echo "note: npm could not fetch axe-core $AXE_CORE_NPM_VERSION; only axe-selenium-python's engine runs"
  fi
  rm -rf "$tmp"
fi
if [[ -s "$axe_dir/axe.min.js" ]]; then
  export AXE_EXTRA_SCRIPT="$axe_dir/axe.min.js"
fi

if [[ -z "${SIXPN_BIN:-}" ]]; then
  cargo build --locked --bin sixpn
  SIXPN_BIN=target/debug/sixpn
fi
SIXPN_BIN=$(realpath "$SIXPN_BIN")

data_dir=$(mktemp -d "${TMPDIR:-/tmp}/sixpn-browser.XXXXXX")
server_pid=
# shellcheck disable=SC2329 # run by the EXIT trap
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$data_dir"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
api="127.0.0.1:$(free_port)"
dns_port=$(free_port)
admin_token="browser-admin-$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
base="http://$api"

SIXPN_DATA_DIR="$data_dir" SIXPN_ADMIN_TOKEN="$admin_token" SIXPN_API_LISTEN="$api" \
  SIXPN_DNS_LISTEN="127.0.0.1:$dns_port" RUST_LOG="${RUST_LOG:-warn}" \
  "$SIXPN_BIN" serve >"$data_dir/serve.log" 2>&1 &
server_pid=$!

up=
for _ in $(seq 300); do
  if (exec 3<>"/dev/tcp/${api%:*}/${api#*:}") 2>/dev/null &&
    python3 -c "import urllib.request,sys; urllib.request.urlopen('$base/healthz', timeout=5)" 2>/dev/null; then
    up=1
    break
  fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
if [[ -z "$up" ]]; then
  echo "tests/browser/run.sh: the server did not come up:" >&2
  cat "$data_dir/serve.log" >&2
  exit 1
fi

screens=$(realpath -m "${SIXPN_SCREENSHOT_DIR:-target/browser-screenshots}")
mkdir -p "$screens"
echo "== browser tests ($("$chromium_bin" --version 2>/dev/null || echo chromium), server $base, DNS 127.0.0.1:$dns_port)"
status=0
SIXPN_BIN="$SIXPN_BIN" SIXPN_TEST_BASE="$base" SIXPN_TEST_ADMIN_TOKEN="$admin_token" \
  SIXPN_TEST_DNS_PORT="$dns_port" SIXPN_TEST_DATA_DIR="$data_dir" SIXPN_SCREENSHOT_DIR="$screens" \
  CHROMIUM_BIN="$chromium_bin" CHROMEDRIVER_BIN="$driver_bin" SE_AVOID_STATS=true PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/python" tests/browser/test_console.py -v \
  ${BROWSER_TEST_FILTER:+-k "$BROWSER_TEST_FILTER"} || status=$?
if [[ "$status" != 0 ]]; then
  echo "== server log (last 60 lines)" >&2
  tail -n 60 "$data_dir/serve.log" >&2
fi
exit "$status"
