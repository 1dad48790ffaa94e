#!/usr/bin/env bash
# dns_vs_peers.sh - `sixpn serve` side by side with Knot DNS and NSD on the shared DNS harness.
#
# Builds the release binary, generates the workload (gen_zone.py --disjoint: 10k peers, 100
# groups of 1-50, 70 % peer / 20 % group / 10 % NXDOMAIN), loads it into a fresh sixpn data
# directory through the API (seed_sixpn.py), then runs compare.sh: interleaved rounds in which
# every server is started fresh and measured by dnsperf on loopback. Finally counts user-space
# instructions per query with callgrind (instr_per_query.sh) for the full mix, for hits only and
# for NXDOMAIN only. Writes into OUT: cmp.tsv (raw rows), summary.md (summarize.py tables) and
# instr.txt.
#
# Usage: benches/dns_vs_peers.sh [-R ROUNDS] [-l SECONDS] [-o OUT] [-b BENCH_DIR] [-n] [-I]
#                                [MODE...]
#   -R ROUNDS    interleaved rounds [3]          -l SECONDS  length of each dnsperf run [8]
#   -o OUT       output folder [target/dns_vs_peers]
#   -b BENCH_DIR the shared harness [../shared/bench or ../../shared/bench]
#   -n           do not (re)build the release binary      -I  skip the callgrind counts
#   MODE         compare.sh modes [udp-edns udp-edns-pin tcp lat50k]
# Needs: knotd, nsd, dnsperf, dig, valgrind, python3 (see the harness's README).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=3 dur=8 out=$root/target/dns_vs_peers bench="" build=1 instr=1
while getopts "R:l:o:b:nIh" opt; do
    case $opt in
    R) rounds=$OPTARG ;; l) dur=$OPTARG ;; o) out=$OPTARG ;; b) bench=$OPTARG ;;
    n) build=0 ;; I) instr=0 ;;
    h) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(udp-edns udp-edns-pin tcp lat50k)
if [ -z "$bench" ]; then
    for d in "$root/../shared/bench" "$root/../../shared/bench"; do
        [ -x "$d/compare.sh" ] && { bench=$(cd "$d" && pwd); break; }
    done
fi
[ -n "$bench" ] && [ -x "$bench/compare.sh" ] || { echo "dns_vs_peers.sh: harness not found (-b)" >&2; exit 2; }

data=${TMPDIR:-/tmp}/dnsbench/data
mkdir -p "$out" "$data"
out=$(cd "$out" && pwd)
bin=$root/target/release/sixpn
[ "$build" = 1 ] && (cd "$root" && cargo build --release --bin sixpn)

# ---- workload (same zone for every server)
if [ ! -s "$data/groups.tsv" ] || [ ! -s "$data/queries-nonx.txt" ]; then
    python3 "$bench/gen_zone.py" --disjoint --out-dir "$data"
    python3 "$bench/gen_zone.py" --disjoint --out-dir "$data" --peer-frac 0.78 --group-frac 0.22 \
        --query-file queries-nonx.txt
fi
awk '/_peer\.internal\. AAAA/ && !/^nx-/ { print; if (++n == 2000) exit }' "$data/queries-nonx.txt" > "$out/q-hit.txt"
awk '/^nx-/ { print; if (++n == 2000) exit }' "$data/queries.txt" > "$out/q-nx.txt"

# ---- sixpn with the workload loaded through its API
state=$out/sixpn-data
rm -rf "$state"
mkdir -p "$state"
# RRL off, as Knot and NSD run by default: dnsperf's NXDOMAIN share comes from one address at
# line rate, which sixpn's default limit (200 negative answers a second per source) would drop.
# RRL=1 in the environment keeps the default, to measure its cost.
printf '[dns]\nrrl_responses_per_second = 0\n' > "$out/no-rrl.toml"
rrl_env="SIXPN_CONFIG=$out/no-rrl.toml"
[ "${RRL:-0}" = 1 ] && rrl_env=""
S="env $rrl_env SIXPN_DATA_DIR=$state SIXPN_ADMIN_TOKEN=bench-admin-token-0123456789abcdef SIXPN_API_LISTEN=127.0.0.1:5390 SIXPN_DNS_LISTEN=127.0.0.1:5310 RUST_LOG=warn $bin serve"
$S > "$out/seed-server.log" 2>&1 &
seed_pid=$!
trap 'kill "$seed_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:5390/ || true)
    [ "$code" != 000 ] && break
    sleep 0.2
done
python3 "$bench/seed_sixpn.py" --api http://127.0.0.1:5390 --admin-token bench-admin-token-0123456789abcdef \
    --groups "$data/groups.tsv" --peers 10000
kill "$seed_pid"
wait "$seed_pid" 2>/dev/null || true
trap - EXIT

# ---- side by side
rm -f "$out/cmp.tsv"
echo "command: $bench/compare.sh -R $rounds -l $dur -o $out/cmp.tsv -s \"knot nsd\" -x \"sixpn:5310:$S\" ${modes[*]}" |
    tee "$out/command.txt"
"$bench/compare.sh" -R "$rounds" -l "$dur" -o "$out/cmp.tsv" -s "knot nsd" -x "sixpn:5310:$S" "${modes[@]}"
python3 "$bench/summarize.py" "$out/cmp.tsv" --ref sixpn | tee "$out/summary.md"

# ---- user-space instructions per query (callgrind)
if [ "$instr" = 1 ]; then
    : > "$out/instr.txt"
    for q in "mix:$data/queries.txt" "hit:$out/q-hit.txt" "nxdomain:$out/q-nx.txt"; do
        label=${q%%:*} file=${q#*:}
        "$bench/instr_per_query.sh" -n "sixpn-$label" -p 5310 -e -d "$file" -- $S | tee -a "$out/instr.txt"
        "$bench/instr_per_query.sh" -n "knot-$label" -p 5301 -e -d "$file" -- \
            env WORKERS=1 "$bench/servers.sh" knot 5301 | tee -a "$out/instr.txt"
        "$bench/instr_per_query.sh" -n "nsd-$label" -p 5302 -e -d "$file" -- \
            env WORKERS=1 "$bench/servers.sh" nsd 5302 | tee -a "$out/instr.txt"
    done
fi
echo "results in $out"
