#!/usr/bin/env bash
# What an idle link costs a node: start a pair of linked nodes on loopback for each
# binary given (all pairs at once, so they share the host's load), let them probe each
# other for SECONDS, then print each pair's CPU (utime + stime of both processes, from
# /proc/PID/stat, in clock ticks and as a share of one core per node) and, when strace
# is installed, node 1's system calls over 10 s (epoll_wait = wakeups and readiness
# polls, sendmsg = QUIC packets sent, sendto = probe-path packets sent, recvmmsg = receive
# calls, total = every system call).
#
#   scripts/node-cost.sh [--seconds S] BIN [BIN...]
#   scripts/node-cost.sh target/release/x0tta6bl4 /tmp/old/x0tta6bl4   # an A/B
#
# Everything it makes lives in a temporary directory, removed on exit with the nodes.
set -euo pipefail
seconds=30
if [[ "${1:-}" == "--seconds" ]]; then
    seconds=${2:?--seconds needs a value}
    shift 2
fi
if [[ $# -eq 0 ]]; then
    echo "usage: $0 [--seconds S] BIN [BIN...]  (an x0tta6bl4 binary per pair)" >&2
    exit 2
fi
for bin in "$@"; do
    [[ -x "$bin" ]] || { echo "$0: $bin is not an executable x0tta6bl4 binary" >&2; exit 2; }
done
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
first=$1
"$first" ca init --dir "$work/ca" --trust-domain cost.test >/dev/null
for i in 1 2; do
    "$first" ca issue --dir "$work/ca" --name "n$i" --out "$work/n$i" --ttl 1h >/dev/null
done
# Ports from a base drawn per run, so two runs at once do not collide.
base=$((20000 + (RANDOM % 200) * 100))
pair=0
for bin in "$@"; do
    pair=$((pair + 1))
    for i in 1 2; do
        j=$((3 - i))
        quic=$((base + pair * 10 + i))
        peer=$((base + pair * 10 + j))
        api=$((base + 5000 + pair * 10 + i))
        # A minimal configuration (defaults for the rest), so older binaries read it too.
        cat >"$work/p$pair-n$i.toml" <<EOF
listen = "127.0.0.1:$quic"
api_listen = "127.0.0.1:$api"
peers = ["127.0.0.1:$peer"]
[identity]
dir = "$work/n$i"
EOF
        RUST_LOG=warn "$bin" node --config "$work/p$pair-n$i.toml" >"$work/p$pair-n$i.log" 2>&1 &
        pids+=($!)
    done
done
sleep 5
for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "$0: a node exited at start:" >&2; cat "$work"/*.log >&2; exit 1; }
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=()
for pid in "${pids[@]}"; do before+=("$(ticks "$pid")"); done
sleep "$seconds"
hz=$(getconf CLK_TCK)
pair=0
for bin in "$@"; do
    a=$((pair * 2))
    b=$((a + 1))
    used=$(($(ticks "${pids[$a]}") - before[a] + $(ticks "${pids[$b]}") - before[b]))
    core=$(awk -v t="$used" -v hz="$hz" -v s="$seconds" 'BEGIN { printf "%.4f", t / hz / s / 2 }')
    echo "pair $((pair + 1)) ($bin): $used ticks over $seconds s for 2 nodes, $core of a core per node"
    pair=$((pair + 1))
done
if command -v strace >/dev/null; then
    pair=0
    for bin in "$@"; do
        # strace -c prints its table when `timeout` stops it (exit status 124).
        calls=$( (timeout 10 strace -c -f -p "${pids[$((pair * 2))]}" 2>&1 || true) |
            awk '$NF ~ /^(epoll_wait|sendmsg|sendto|recvmmsg|write|total)$/ { printf "%s %s  ", $NF, $4 }')
        echo "pair $((pair + 1)) node 1, system calls in 10 s: $calls"
        pair=$((pair + 1))
    done
fi
