#!/usr/bin/env bash
# Keeps N cores busy (default: all of them) until it is stopped (Ctrl-C, SIGTERM, or the shell
# that started it exiting), so timing-sensitive tests can be run on a machine as busy as a CI
# runner's. Each busy loop is a child shell; they all die with this script.
#
#   tests/cpu-hog.sh            # every core
#   tests/cpu-hog.sh 2          # two cores
#   tests/cpu-hog.sh & hog=$!; cargo test --test it dns_abuse; kill $hog
set -euo pipefail
n="${1:-$(nproc)}"
case "$n" in
    '' | *[!0-9]* | 0) echo "usage: $0 [CORES]  (a whole number, at least 1)" >&2; exit 2 ;;
esac
pids=()
stop() {
    trap - EXIT INT TERM HUP
    if ((${#pids[@]})); then kill "${pids[@]}" 2>/dev/null || true; fi
    wait 2>/dev/null || true
}
trap stop EXIT
trap 'stop; exit 0' INT TERM HUP
for _ in $(seq "$n"); do
    # A pure busy loop: no fork per iteration, no I/O.
    ( trap - INT TERM HUP; while :; do :; done ) &
    pids+=("$!")
done
echo "cpu-hog: $n busy loop(s), pids ${pids[*]}; stop with kill $$" >&2
# Also stop when the parent goes away (a test loop killed with -9, a closed terminal).
parent=$PPID
while kill -0 "$parent" 2>/dev/null; do sleep 1; done
