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
# Like with like: the harness runs Knot at its default UDP size cap (`udp-max-payload` 1232) and
# NSD at its own, so sixpn runs with `[dns] max_udp_payload = 1232` here too (UDP_PAYLOAD in the
# environment changes it). Over the cap, all three answer TC with no records. One more short
# udp-edns run gives the mean answer size at sixpn's default cap, 4096 (sizes.tsv). summary.md
# ends with the latency percentiles (p50, p99, p99.9) and the mean answer sizes, medians over
# the rounds.
#
# Usage: benches/dns_vs_peers.sh [-R ROUNDS] [-l SECONDS] [-o OUT] [-b BENCH_DIR] [-n] [-I]
#                                [-B BINARY] [MODE...]
#   -R ROUNDS    interleaved rounds [3]          -l SECONDS  length of each dnsperf run [8]
#   -o OUT       output folder [target/dns_vs_peers]
#   -b BENCH_DIR the shared harness [../shared/bench or ../../shared/bench]
#   -n           do not (re)build the release binary      -I  skip the callgrind counts
#   -B BINARY    another sixpn build (e.g. the code before a change), measured in the same
#                rounds and callgrind counts as "sixpn-before"
#   MODE         compare.sh modes [udp-edns udp-edns-pin tcp lat50k]
# Environment: UDP_PAYLOAD (sixpn's cap, 1232), RRL=1 (keep the response-rate limit on),
# SEEDED=DIR (copy this data directory, seeded before with the same workload, instead of
# seeding through the API again).
# Needs: knotd, nsd, dnsperf, dig, valgrind, python3 (see the harness's README).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=3 dur=8 out=$root/target/dns_vs_peers bench="" build=1 instr=1 before=""
while getopts "R:l:o:b:nIB:h" opt; do
    case $opt in
    R) rounds=$OPTARG ;; l) dur=$OPTARG ;; o) out=$OPTARG ;; b) bench=$OPTARG ;;
    n) build=0 ;; I) instr=0 ;; B) before=$(cd "$(dirname "$OPTARG")" && pwd)/$(basename "$OPTARG") ;;
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
# The UDP size cap as Knot's (see the top).
payload=${UDP_PAYLOAD:-1232}
if [ "${RRL:-0}" = 1 ]; then
    printf '[dns]\nmax_udp_payload = %s\n' "$payload" > "$out/bench.toml"
else
    printf '[dns]\nrrl_responses_per_second = 0\nmax_udp_payload = %s\n' "$payload" > "$out/bench.toml"
fi
printf '[dns]\nrrl_responses_per_second = 0\n' > "$out/default-payload.toml"
env_of() { # CONFIG BINARY -> the server command
    echo "env SIXPN_CONFIG=$1 SIXPN_DATA_DIR=$state SIXPN_ADMIN_TOKEN=bench-admin-token-0123456789abcdef SIXPN_API_LISTEN=127.0.0.1:5390 SIXPN_DNS_LISTEN=127.0.0.1:5310 RUST_LOG=warn $2 serve"
}
S=$(env_of "$out/bench.toml" "$bin")
if [ -n "${SEEDED:-}" ]; then
    # A data directory seeded before with this workload: copied, not seeded again.
    (cd "$SEEDED" && tar --exclude=sixpn.lock -cf - .) | (cd "$state" && tar -xf -)
else
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
fi

# ---- side by side
rm -f "$out/cmp.tsv" "$out/sizes.tsv"
extra=(-x "sixpn:5310:$S")
[ -n "$before" ] && extra+=(-x "sixpn-before:5310:$(env_of "$out/bench.toml" "$before")")
echo "command: $bench/compare.sh -R $rounds -l $dur -o $out/cmp.tsv -s \"knot nsd\" ${extra[*]} ${modes[*]}" |
    tee "$out/command.txt"
"$bench/compare.sh" -R "$rounds" -l "$dur" -o "$out/cmp.tsv" -s "knot nsd" "${extra[@]}" "${modes[@]}"
# The mean answer size at sixpn's default cap (4096), for the record.
"$bench/run_dnsperf.sh" -t udp-edns-4096 -n sixpn-4096 -p 5310 -e -l 3 -o "$out/sizes.tsv" -- \
    $(env_of "$out/default-payload.toml" "$bin") || echo "dns_vs_peers.sh: the 4096 run failed" >&2
{
    python3 "$bench/summarize.py" "$out/cmp.tsv" --ref sixpn
    python3 - "$out/cmp.tsv" "$out/sizes.tsv" <<'PY'
import csv, os, statistics, sys
rows = []
for f in sys.argv[1:]:
    if os.path.exists(f):
        rows += list(csv.DictReader(open(f), delimiter="\t"))
def med(rs, k):
    xs = [float(r[k]) for r in rs if r.get(k) not in (None, "", "NA")]
    return statistics.median(xs) if xs else None
by = {}
for r in rows:
    by.setdefault((r["tag"], r["name"]), []).append(r)
lat = sorted(k for k in by if k[0].startswith("lat"))
if lat:
    print("\n### Latency percentiles (median of the rounds, ms)\n")
    print("| mode | server | runs | p50 | p99 | p99.9 | qps | other procs CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for k in lat:
        rs = by[k]
        f = lambda v: "-" if v is None else f"{v:.3f}"
        print(f"| {k[0]} | {k[1]} | {len(rs)} | {f(med(rs, 'p50_ms'))} | {f(med(rs, 'p99_ms'))} "
              f"| {f(med(rs, 'p999_ms'))} | {med(rs, 'qps'):,.0f} | {med(rs, 'other_cpu_s'):.2f} |")
print("\n### Mean answer size (median of the runs, bytes)\n")
print("| mode | server | runs | mean answer B |")
print("|---|---|---|---|")
for k in sorted(by):
    if k[0] in ("udp-edns", "udp-edns-pin", "udp-edns-4096"):
        print(f"| {k[0]} | {k[1]} | {len(by[k])} | {med(by[k], 'resp_bytes'):.0f} |")
PY
} | tee "$out/summary.md"

# ---- user-space instructions per query (callgrind)
if [ "$instr" = 1 ]; then
    : > "$out/instr.txt"
    for q in "mix:$data/queries.txt" "hit:$out/q-hit.txt" "nxdomain:$out/q-nx.txt"; do
        label=${q%%:*} file=${q#*:}
        "$bench/instr_per_query.sh" -n "sixpn-$label" -p 5310 -e -d "$file" -- $S | tee -a "$out/instr.txt"
        if [ -n "$before" ]; then
            "$bench/instr_per_query.sh" -n "sixpn-before-$label" -p 5310 -e -d "$file" -- \
                $(env_of "$out/bench.toml" "$before") | tee -a "$out/instr.txt"
        fi
        "$bench/instr_per_query.sh" -n "knot-$label" -p 5301 -e -d "$file" -- \
            env WORKERS=1 "$bench/servers.sh" knot 5301 | tee -a "$out/instr.txt"
        "$bench/instr_per_query.sh" -n "nsd-$label" -p 5302 -e -d "$file" -- \
            env WORKERS=1 "$bench/servers.sh" nsd 5302 | tee -a "$out/instr.txt"
    done
fi
echo "results in $out"
