#!/usr/bin/env bash
# A study run whole and as N shards one after another, timed, with the identical-output
# check: `twin run --json --no-wall-clock` of the whole run against `twin merge` of the N
# parts (cmp, byte for byte). Prints the wall and CPU time of the whole run, of every
# shard, of the shards together and of the merge. A whole run that fails (exit 1, e.g.
# unhealed flows) still prints its report; the merge must then fail alike.
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

# Run a command (output to $1, stderr to $1.err); print "WALL CPU EXIT": seconds of wall
# and CPU time (user + system, less sensitive than wall time to other load on the
# machine) and the exit code.
timed() {
    local out=$1 TIMEFORMAT='%R %U %S' times status=0
    shift
    times=$({ time "$@" >"$out" 2>"$out.err"; } 2>&1) || status=$?
    awk -v status="$status" '{ printf "%.1f %.1f %d\n", $1, $2 + $3, status }' <<<"$times"
}
sum() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a + b }'; }

echo "study: $* ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
read -r wall cpu whole_status < <(timed "$work/whole.json" "$bin" twin run "$@" --json --no-wall-clock)
echo "whole run: $wall s wall, $cpu s CPU (exit $whole_status)"

shards_wall=0 shards_cpu=0
for ((i = 0; i < shards; i++)); do
    read -r wall cpu status < <(timed "$work/shard-$i.txt" "$bin" twin run "$@" --shard "$i/$shards" --out "$work/part-$i.json")
    if ((status != 0)); then cat "$work/shard-$i.txt.err" >&2; exit 1; fi
    echo "shard $i/$shards: $wall s wall, $cpu s CPU, part $(stat -c %s "$work/part-$i.json") bytes"
    shards_wall=$(sum "$shards_wall" "$wall") shards_cpu=$(sum "$shards_cpu" "$cpu")
done
read -r wall cpu status < <(timed "$work/merged.json" "$bin" twin merge "$work"/part-*.json --json --no-wall-clock)
echo "$shards shards one after another: $shards_wall s wall, $shards_cpu s CPU; merge: $wall s wall, $cpu s CPU (exit $status)"

if ((status != whole_status)); then
    echo "DIFFERENT: twin merge exited $status, the whole run $whole_status" >&2
    exit 1
fi
if cmp -s "$work/whole.json" "$work/merged.json"; then
    echo "identical: twin merge printed the same $(stat -c %s "$work/whole.json") bytes as the whole run"
else
    echo "DIFFERENT: twin merge and the whole run disagree" >&2
    diff <(tr ',' '\n' <"$work/whole.json") <(tr ',' '\n' <"$work/merged.json") >&2 || true
    exit 1
fi
