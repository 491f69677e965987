#!/usr/bin/env bash
# Runs each libFuzzer target (built by `make fuzz` into build-fuzz/fuzz/) for RUNS executions, one
# after another, starting from its stored corpus, then merges what grew back into
# tests/fuzz/corpus/<target>/ minimised (-merge=1 keeps only inputs that add coverage).
#   tests/fuzz/run.sh                      every target, 10 million executions each
#   RUNS=100000 tests/fuzz/run.sh fuzz_spec
# Prints one line per target: executions, seconds, corpus files before and after, findings (crash
# files are left in $WORK/<target>/ and named in the line).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${FUZZ_BUILD:-$root/build-fuzz}/fuzz
RUNS=${RUNS:-10000000}
WORK=${WORK:-/tmp/modelshare-fuzz-$UID}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in "$bin"/fuzz_*; do targets+=("$(basename "$f")"); done
fi
for t in "${targets[@]}"; do
    corpus=$root/tests/fuzz/corpus/$t
    w=$WORK/$t
    rm -rf "$w" && mkdir -p "$w/grown" "$w/artifacts" "$corpus"
    before=$(ls "$corpus" | wc -l)
    start=$(date +%s)
    (cd "$w" && nice -n 19 "$bin/$t" -runs="$RUNS" -jobs=1 -workers=1 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$w/artifacts/" "$w/grown" "$corpus" >/dev/null 2>&1) || true
    secs=$(( $(date +%s) - start ))
    execs=$(grep -ho 'stat::number_of_executed_units: *[0-9]*' "$w"/fuzz-*.log | grep -o '[0-9]*$' | tail -1)
    nice -n 19 "$bin/$t" -merge=1 "$corpus" "$w/grown" >"$w/merge.log" 2>&1
    after=$(ls "$corpus" | wc -l)
    found=$(ls "$w/artifacts" | tr '\n' ' ')
    echo "$t: executions ${execs:-?}, ${secs} s, corpus $before -> $after files, findings: ${found:-none}"
done
