#!/usr/bin/env bash
# A study run whole and as N shards one after another, timed, with the identical-output
# check: `twin run --json --no-wall-clock` of the whole run against `twin merge` of the N
# parts (cmp, byte for byte). Prints the wall time of the whole run, of every shard, of
# the shards together and of the merge.
#
#   scripts/bench-twin-shards.sh N [twin run flags...]
#   scripts/bench-twin-shards.sh 4 --topology real:freifunk-bielefeld \
#       --scenario node-failure:transit=1 --iterations 20 --seed 1
#
# Uses target/release/x0tta6bl4 (X0TTA6BL4_BIN=PATH for another); builds it if missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
shards=${1:?usage: scripts/bench-twin-shards.sh N [twin run flags...]}
shift
bin=${X0TTA6BL4_BIN:-target/release/x0tta6bl4}
if [[ ! -x $bin ]]; then cargo build --release --quiet -p x0tta6bl4-cli; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

echo "study: $* ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
start=$(now)
status=0
"$bin" twin run "$@" --json --no-wall-clock >"$work/whole.json" || status=$?
echo "whole run: $(seconds "$start" "$(now)") s wall (exit $status)"

shards_start=$(now)
for ((i = 0; i < shards; i++)); do
    shard_start=$(now)
    "$bin" twin run "$@" --shard "$i/$shards" --out "$work/part-$i.json" >/dev/null
    echo "shard $i/$shards: $(seconds "$shard_start" "$(now)") s wall, part $(stat -c %s "$work/part-$i.json") bytes"
done
shards_end=$(now)
merge_status=0
"$bin" twin merge "$work"/part-*.json --json --no-wall-clock >"$work/merged.json" || merge_status=$?
echo "$shards shards one after another: $(seconds "$shards_start" "$shards_end") s wall; merge: $(seconds "$shards_end" "$(now)") s (exit $merge_status)"

if cmp -s "$work/whole.json" "$work/merged.json"; then
    echo "identical: twin merge printed the same $(stat -c %s "$work/whole.json") bytes as the whole run"
else
    echo "DIFFERENT: twin merge and the whole run disagree" >&2
    diff <(tr ',' '\n' <"$work/whole.json") <(tr ',' '\n' <"$work/merged.json") >&2 || true
    exit 1
fi
