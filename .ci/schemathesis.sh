#!/usr/bin/env bash
# schemathesis against a running server (issue 11): the served OpenAPI document
# (/api/openapi.json) must describe what the server really does.
#
# Builds and starts a debug `sixpn serve` on loopback with a temporary data directory and a known
# admin token, mints a WireGuard token and creates two API keys (issue 16: a viewer of every org
# and an operator of `personal`) through the admin API, then runs schemathesis (v4, from PyPI, in
# a venv) with every check and every phase, the stateful one included: as the admin, with the
# WireGuard token, with the viewer key and with the operator key. Exits non-zero when any run
# reports a failure.
#
# Environment:
#   SCHEMATHESIS_MAX_EXAMPLES  test cases per operation and phase (default 25; each run stays
#                              under ~3 minutes on 2 cores)
#   SCHEMATHESIS_MAX_TIME      time budget per run in seconds (default 170)
#   SCHEMATHESIS_VENV          where the venv lives (default target/schemathesis-venv)
#   SCHEMATHESIS_VERSION       pip requirement (default "schemathesis>=4,<5")
#   SCHEMATHESIS_SEED          a seed, to replay a run
#   SCHEMATHESIS_REPORT_DIR    where the JUnit reports go (default target/schemathesis-report)
#   SCHEMATHESIS_RUNS          which runs, space-separated (default "admin wireguard viewer
#                              operator")
#   SCHEMATHESIS_RATE_LIMITS   `on` keeps the API's rate limits (default off: schemathesis sends
#                              hundreds of requests without or with wrong credentials from one
#                              address, after which the failed-authentication limit answers 429 to
#                              everything from it and hides the rest; the limits have their own
#                              tests, tests/it/api.rs::issue10_*)
set -euo pipefail

cd "$(dirname "$0")/.."

max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-25}
max_time=${SCHEMATHESIS_MAX_TIME:-170}
venv=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
requirement=${SCHEMATHESIS_VERSION:-schemathesis>=4,<5}
report_dir=${SCHEMATHESIS_REPORT_DIR:-target/schemathesis-report}
venv=$(realpath -m "$venv")
report_dir=$(realpath -m "$report_dir")
# Which inferred links the stateful phase follows (see the file).
config_file=$(realpath .ci/schemathesis.toml)

if [[ ! -x "$venv/bin/schemathesis" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "$requirement"
fi
"$venv/bin/schemathesis" --version

cargo build --locked --bin sixpn

data_dir=$(mktemp -d "${TMPDIR:-/tmp}/sixpn-schemathesis.XXXXXX")
server_pid=
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
dns="127.0.0.1:$(free_port)"
admin_token="schemathesis-admin-$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
base="http://$api"

config="$data_dir/sixpn.toml"
if [[ "${SCHEMATHESIS_RATE_LIMITS:-off}" == on ]]; then
    : >"$config"
else
    printf '[api]\ntoken_rate = 0\nfailed_auth_rate = 0\nfailed_admin_auth_rate = 0\naccept_rate = 0\n' >"$config"
fi

SIXPN_DATA_DIR="$data_dir" SIXPN_ADMIN_TOKEN="$admin_token" SIXPN_API_LISTEN="$api" \
    SIXPN_DNS_LISTEN="$dns" RUST_LOG="${RUST_LOG:-warn}" \
    target/debug/sixpn serve --config "$config" >"$data_dir/serve.log" 2>&1 &
server_pid=$!

for _ in $(seq 100); do
    if curl --silent --fail --output /dev/null "$base/healthz"; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "schemathesis.sh: the server exited:" >&2
        cat "$data_dir/serve.log" >&2
        exit 1
    fi
    sleep 0.1
done
curl --silent --fail --output /dev/null "$base/healthz"

# A WireGuard token for the second run, minted the way an admin would.
# Headers with secrets go on curl's stdin, never on a command line (issue 22).
wg_token=$(printf 'Authorization: Bearer %s\n' "$admin_token" | curl --silent --show-error --fail \
    -H @- -H 'Content-Type: application/json' \
    --data '{"name":"schemathesis"}' \
    "$base/api/v1/orgs/personal/wireguard_tokens" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')

# API keys for the role runs (issue 16), created the way an owner would.
api_key() {
    printf 'Authorization: Bearer %s\n' "$admin_token" | curl --silent --show-error --fail \
        -H @- -H 'Content-Type: application/json' \
        --data "{\"name\":\"$1\",\"org\":\"$2\",\"role\":\"$3\"}" \
        "$base/api/v1/api_keys" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])'
}
viewer_key=$(api_key schemathesis-viewer '*' viewer)
operator_key=$(api_key schemathesis-operator personal operator)

run() {
    local who=$1 token=$2
    local args=(
        run "$base/api/openapi.json"
        --checks all
        --phases examples,coverage,fuzzing,stateful
        --max-examples "$max_examples"
        --max-time "$max_time"
        --header "Authorization: Bearer $token"
        --request-timeout 10
        --report junit --report-junit-path "$report_dir/$who.xml"
    )
    if [[ -n "${SCHEMATHESIS_SEED:-}" ]]; then
        args+=(--seed "$SCHEMATHESIS_SEED")
    fi
    echo "== schemathesis as $who"
    # From the report folder: schemathesis and hypothesis keep their databases in ./.schemathesis
    # and ./.hypothesis.
    (cd "$report_dir" && "$venv/bin/schemathesis" --config-file "$config_file" "${args[@]}")
}

mkdir -p "$report_dir"
status=0
for who in ${SCHEMATHESIS_RUNS:-admin wireguard viewer operator}; do
    case $who in
    admin) run admin "$admin_token" || status=1 ;;
    wireguard) run wireguard "$wg_token" || status=1 ;;
    viewer) run viewer "$viewer_key" || status=1 ;;
    operator) run operator "$operator_key" || status=1 ;;
    *)
        echo "schemathesis.sh: unknown run $who (admin, wireguard, viewer, operator)" >&2
        status=1
        ;;
    esac
done

if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "schemathesis.sh: the server died during the runs:" >&2
    tail -n 50 "$data_dir/serve.log" >&2
    status=1
fi
if [[ $status -ne 0 ]]; then
    echo "schemathesis.sh: failures (see above; JUnit reports in $report_dir)" >&2
fi
exit "$status"
