#!/usr/bin/env bash
# A fuzz campaign: every target in turn for SECONDS each (default 600), each starting from its
# seeds in fuzz/seeds/<target>/ plus the corpus earlier runs left in fuzz/corpus/<target>/.
# Prints one line of figures per target (executions, rate, corpus size, coverage) and exits
# non-zero if any target found a crash (the input lands in fuzz/artifacts/<target>/).
#   fuzz/campaign.sh              # all targets, 10 minutes each
#   fuzz/campaign.sh 60 journal_replay
# Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`).
set -uo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-600}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=($(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^fota-fuzz$'))
fi

failed=0
printf '| target | seconds | executions | exec/s | corpus | coverage (cov) | crashes |\n|---|---|---|---|---|---|---|\n'
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    [ -d "fuzz/seeds/$t" ] && cp -n fuzz/seeds/"$t"/* "fuzz/corpus/$t/" 2>/dev/null
    log="$(mktemp)"
    cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)"
    corpus="$(ls "fuzz/corpus/$t" | wc -l)"
    crashes=0
    if [ "$rc" -ne 0 ]; then
        crashes=1
        failed=1
        echo "fuzz: $t failed (exit $rc); its log: $log" >&2
        grep -m5 -E 'panicked|ERROR|Test unit written' "$log" >&2
    else
        rm -f "$log"
    fi
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$seconds" "${runs:-?}" "${rate:-?}" "$corpus" "${cov:-?}" "$crashes"
done
exit "$failed"
