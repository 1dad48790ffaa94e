#!/usr/bin/env bash
# Runs every fuzz target of tests/fuzz (issue 11) for a while; exits non-zero when one crashes.
#
# CI runs it as is (20 s per target). For a long run:
#   FUZZ_TIME=600 .ci/fuzz.sh differential          # 10 minutes of one target
#   FUZZ_RUNS=10000000 FUZZ_TIME=0 .ci/fuzz.sh      # 10M executions of each target
#
# Arguments: the targets to run (default: all). Environment:
#   FUZZ_TIME       seconds per target (-max_total_time; default 20; 0 = no time limit)
#   FUZZ_RUNS       executions per target (-runs; default: no limit)
#   FUZZ_SANITIZER  cargo fuzz --sanitizer (default none: the library has no unsafe code on these
#                   paths, and without ASan a run does ~3x the executions; use `address` for C
#                   dependencies or unsafe code)
#   FUZZ_TOOLCHAIN  the nightly toolchain cargo-fuzz builds with (default nightly)
#   FUZZ_WORK       where the growing corpora go (default target/fuzz-corpus); the seeds under
#                   tests/fuzz/corpus/ are only read, so the repository stays small
#   CARGO_FUZZ_VERSION  the cargo-fuzz installed from crates.io when missing (default 0.13.2)
#
# Builds are release with debug assertions and overflow checks (cargo fuzz's default), so an
# arithmetic overflow is a crash too. A crash leaves its input in tests/fuzz/artifacts/<target>/;
# replay it with `cargo +nightly fuzz run --fuzz-dir tests/fuzz -s none <target> <file>`.
set -euo pipefail

cd "$(dirname "$0")/.."

all_targets=(fastpath_answer full_handler differential zone_loader api_json wg_conf derived_token)
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=("${all_targets[@]}")
fi
time_limit=${FUZZ_TIME:-20}
runs=${FUZZ_RUNS:-}
sanitizer=${FUZZ_SANITIZER:-none}
toolchain=${FUZZ_TOOLCHAIN:-nightly}
work=${FUZZ_WORK:-target/fuzz-corpus}
fuzz_dir=tests/fuzz

if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version "${CARGO_FUZZ_VERSION:-0.13.2}"
fi
cargo "+$toolchain" fuzz --version

cargo "+$toolchain" fuzz build --fuzz-dir "$fuzz_dir" --sanitizer "$sanitizer"

dict_for() {
    case $1 in
        fastpath_answer | full_handler) echo "$fuzz_dir/dict/dns.dict" ;;
        api_json) echo "$fuzz_dir/dict/json.dict" ;;
        zone_loader) echo "$fuzz_dir/dict/zone.dict" ;;
        wg_conf) echo "$fuzz_dir/dict/wg.dict" ;;
        *) ;;
    esac
}

# api_json keeps a SQLite store in the temporary folder; give the runs their own.
case $work in
    /*) export TMPDIR="$work/tmp" ;;
    *) export TMPDIR="$PWD/$work/tmp" ;;
esac

failed=()
summary=()
for target in "${targets[@]}"; do
    corpus="$work/$target"
    mkdir -p "$corpus" "$fuzz_dir/artifacts/$target" "$TMPDIR"
    args=(-max_total_time="$time_limit" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    if [[ -n "$runs" ]]; then
        args+=(-runs="$runs")
    fi
    dict=$(dict_for "$target")
    if [[ -n "$dict" ]]; then
        args+=(-dict="$dict")
    fi
    log="$work/$target.log"
    echo "== $target (${time_limit}s${runs:+, $runs runs})"
    start=$(date +%s)
    # The first corpus folder receives new inputs; the seeds are read only.
    if cargo "+$toolchain" fuzz run --fuzz-dir "$fuzz_dir" --sanitizer "$sanitizer" "$target" \
        "$corpus" "$fuzz_dir/corpus/$target" -- "${args[@]}" >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        failed+=("$target")
        grep -E -A 12 "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | head -n 40 >&2 || true
        grep -E "Test unit written to" "$log" >&2 || true
    fi
    rm -rf "$TMPDIR"
    seconds=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    summary+=("$(printf '%-16s %-6s %12s execs %6s s' "$target" "$result" "${execs:-?}" "$seconds")")
done

echo
echo "== fuzz summary (logs in $work/)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "crashed: ${failed[*]}" >&2
    exit 1
fi
