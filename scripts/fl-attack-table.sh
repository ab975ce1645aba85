#!/usr/bin/env bash
# Aggregator x attack table of `x0tta6bl4 fl bench` (final test accuracy, %), as
# recorded in docs/fl.md. Every cell is one seeded run; the same arguments give the
# same table.
#
#   scripts/fl-attack-table.sh [BINARY] [-- extra fl bench arguments]
#
# BINARY defaults to target/release/x0tta6bl4 (build it with
# `cargo build --release -p x0tta6bl4-cli`). Default run: digits, 20 participants,
# all sampled every round, 30 % Byzantine (none: 0 %), non-IID alpha 0.5, logistic regression,
# 20 rounds, seed 1.
# A cell marked * had rounds that adopted no model; "refused" means every round did
# (Bulyan needs n >= 4f + 3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${1:-target/release/x0tta6bl4}
shift || true
[[ ${1:-} == "--" ]] && shift
extra=("$@")
attacks=(none sign-flip label-flip alie ipm gaussian inflate-samples)
aggregators=(fedavg median trimmed-mean krum multi-krum bulyan fltrust)
base=(--dataset digits --participants 20 --per-round 20 --model logreg
    --lr 0.2 --batch 16 --rounds 20 --seed 1 --non-iid 0.5 --json)
printf '| aggregator |'
for a in "${attacks[@]}"; do printf ' %s |' "$a"; done
printf '\n|---|'
for _ in "${attacks[@]}"; do printf -- '---|'; done
printf '\n'
for g in "${aggregators[@]}"; do
    printf '| %s |' "$g"
    for a in "${attacks[@]}"; do
        byz=0.3
        [[ $a == none ]] && byz=0
        acc=$("$bin" fl bench "${base[@]}" --byzantine "$byz" --attack "$a" --aggregator "$g" "${extra[@]}" \
            | python3 -c 'import json,sys
r = json.load(sys.stdin)
failed = len(r["failed_rounds"])
print("refused (%s)" % r["failed_rounds"][0][1] if failed == r["rounds"] else "%.1f%s" % (100 * r["final_accuracy"], " *" if failed else ""))')
        printf ' %s |' "$acc"
    done
    printf '\n'
done
