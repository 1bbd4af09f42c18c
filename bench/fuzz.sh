#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a set time each and reports what they did.
#
#   bash bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Default: 600 s for each of authorize_request, token_request, bearer_jwt, config and params.
# Needs the nightly toolchain (libFuzzer's instrumentation); installs cargo-fuzz when missing.
# Builds into FUZZ_TARGET_DIR (default ~/.cache/tessera-fuzz-target), outside the repository,
# and keeps each target's growing corpus in FUZZ_WORK (default ~/.cache/tessera-fuzz), seeded
# from the committed fuzz/seeds/<target>/ (which this never changes). Crash inputs land in
# fuzz/artifacts/<target>/ (git-ignored). Prints, per target: executions, executions per
# second, corpus size and findings; exits non-zero when any target found something.
#
# A finding is fixed in the code, then its input is copied into fuzz/seeds/<target>/ so the
# normal test suite (tests/it/fuzz_corpus.rs) replays it from then on. Reproduce one with
#   cargo +nightly fuzz run --fuzz-dir fuzz --target-dir ~/.cache/tessera-fuzz-target \
#     --codegen-units 16 TARGET fuzz/artifacts/TARGET/crash-…
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-600}
shift || true
all=(authorize_request token_request bearer_jwt config params)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=("${all[@]}")
fi
case "$seconds" in
    '' | *[!0-9]*)
        echo "usage: bash bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
        exit 2
        ;;
esac
for t in "${targets[@]}"; do
    if [ ! -f "$root/fuzz/fuzz_targets/$t.rs" ]; then
        echo "unknown target $t (known: ${all[*]})" >&2
        exit 2
    fi
done

# Longest input libFuzzer makes, per target: requests and tokens stay small; a configuration
# file (the example is ~9 KB) and signed claims (the verifier's limit is 8 KiB) need more.
max_len() {
    case "$1" in
        bearer_jwt | config) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

export PATH="$HOME/.cargo/bin:$PATH"
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

target_dir=${FUZZ_TARGET_DIR:-$HOME/.cache/tessera-fuzz-target}
work=${FUZZ_WORK:-$HOME/.cache/tessera-fuzz}
mkdir -p "$target_dir" "$work"
# The same flags for the build and every run, so a run never rebuilds.
flags=(--fuzz-dir "$root/fuzz" --target-dir "$target_dir" --codegen-units 16)

echo "building the fuzz targets (nightly, release with debug assertions, AddressSanitizer)"
cargo +nightly fuzz build "${flags[@]}"

failed=0
summary=()
for t in "${targets[@]}"; do
    corpus="$work/corpus/$t"
    artifacts="$root/fuzz/artifacts/$t"
    log="$work/$t.log"
    mkdir -p "$corpus" "$artifacts"
    cp -n "$root/fuzz/seeds/$t/"* "$corpus/" 2>/dev/null || true
    before=$(find "$artifacts" -type f | wc -l)
    echo
    echo "== $t: ${seconds}s (log: $log)"
    status=0
    cargo +nightly fuzz run "${flags[@]}" "$t" "$corpus" -- \
        -max_total_time="$seconds" \
        -max_len="$(max_len "$t")" \
        -rss_limit_mb=2048 \
        -timeout=10 \
        -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -m1 -E '^Done [0-9]+ runs' "$log" || true
    final_stat() { grep -m1 "^stat::$1:" "$log" | awk '{print $2}'; }
    execs=$(final_stat number_of_executed_units)
    rate=$(final_stat average_exec_per_sec)
    size=$(find "$corpus" -type f | wc -l)
    found=$(($(find "$artifacts" -type f | wc -l) - before))
    if [ "$status" -ne 0 ] || [ "$found" -gt 0 ]; then
        failed=1
        verdict="FOUND $found (exit $status): see $artifacts and $log"
        grep -m1 -A2 "panicked at" "$log" || true
        grep -m2 -E "ERROR: libFuzzer|SUMMARY" "$log" || true
    else
        verdict="none"
    fi
    summary+=("$(printf '%-18s %12s %9s %8s  %s' "$t" "${execs:-?}" "${rate:-?}" "$size" "$verdict")")
done

echo
printf '%-18s %12s %9s %8s  %s\n' target executions exec/s corpus findings
for line in "${summary[@]}"; do
    echo "$line"
done
exit "$failed"
