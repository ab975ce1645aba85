#!/usr/bin/env python3
"""Reference computations for crates/fl's differential tests.

  fl-reference.py flower IN.json   Flower's own aggregation functions
                                   (flwr.server.strategy.aggregate) on the updates in
                                   IN.json: {"updates": [[values...], ...],
                                   "num_samples": [...], "f": F, "beta": B, "m": M};
                                   prints {"fedavg": [...], "median": [...],
                                   "trimmed_mean": [...], "krum": [...],
                                   "multi_krum": [...], "bulyan": [...]}
  fl-reference.py dp IN.json       Google's dp-accounting RdpAccountant on a grid
                                   {"delta": D, "cases": [[q, sigma, steps], ...]};
                                   prints {"epsilon": [...]}

Needs `pip install flwr dp-accounting numpy` (scripts/test.sh installs them).
"""

import json
import sys


def flower(spec):
    import numpy as np
    from flwr.server.strategy import aggregate as agg

    results = [
        ([np.asarray(u, dtype=np.float64)], int(n))
        for u, n in zip(spec["updates"], spec["num_samples"])
    ]
    f, beta, m = spec["f"], spec["beta"], spec["m"]
    out = {
        "fedavg": agg.aggregate(list(results)),
        "median": agg.aggregate_median(list(results)),
        "trimmed_mean": agg.aggregate_trimmed_avg(list(results), beta),
        "krum": agg.aggregate_krum(list(results), f, 0),
        "multi_krum": agg.aggregate_krum(list(results), f, m),
        "bulyan": agg.aggregate_bulyan(list(results), f, agg.aggregate_krum, to_keep=0),
    }
    return {k: [float(x) for x in v[0]] for k, v in out.items()}


def dp(spec):
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    eps = []
    for q, sigma, steps in spec["cases"]:
        acc = RdpAccountant()
        event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
        acc.compose(event, int(steps))
        eps.append(acc.get_epsilon(spec["delta"]))
    return {"epsilon": eps}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("flower", "dp"):
        sys.exit(__doc__)
    with open(sys.argv[2]) as f:
        spec = json.load(f)
    result = flower(spec) if sys.argv[1] == "flower" else dp(spec)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
