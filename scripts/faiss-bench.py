#!/usr/bin/env python3
"""FAISS on the same vectors as `x0tta6bl4 rag bench`, printing the same figures.

Export a data set first, then run FAISS on it:

    x0tta6bl4 rag bench --dataset linux-doc --index flat --export /tmp/rag-export
    taskset -c 0 python3 scripts/faiss-bench.py /tmp/rag-export [--json] [FACTORY ...]

FACTORY strings are faiss.index_factory descriptions (inner-product metric), by default
SQ8 (IndexScalarQuantizer), PQ48, PQ96, PQ192 (IndexPQ; 192 bytes = 8x of 384-d f32),
IVF256,PQ48 (IndexIVFPQ, nprobe 32) and HNSW32,Flat (IndexHNSWFlat). Needs PyPI
faiss-cpu and numpy. One thread, one query at a time, like the Rust bench.

Two spellings of our own, for comparing with the `qdrant` index (binary codes with
rescoring) at the same bytes per vector:

- `LSH<BITS>`: FAISS's binary codes, IndexLSH with BITS bits a vector (a random rotation,
  then one trained threshold per bit; searched by Hamming distance). `LSH768` is 96 bytes
  a vector, the size of Qdrant's 2-bit codes of 384-d vectors; `LSH384` is 48 bytes, its
  1-bit codes.
- `<FACTORY>,RFlat<K>`: IndexRefineFlat around any of the above: the codes pick K x 10
  candidates, which are rescored with the full f32 vectors (kept in memory by FAISS, so
  counted in its memory figure), like Qdrant's rescoring with `over=K`.

Sizes: disk bytes are those of faiss.serialize_index; FAISS keeps the same structures in
memory, so memory bytes are taken to be the serialized size (for HNSW this includes the
full vectors and the graph).
"""
import json
import pathlib
import re
import sys
import time

import faiss
import numpy as np

DEFAULT = ["SQ8", "PQ48", "PQ96", "PQ192", "IVF256,PQ48", "HNSW32,Flat"]


def code_size(index):
    """Bytes per vector of a standalone codec; None for indexes without one (HNSW). For a
    refined index, the codes that pick the candidates (the full vectors come on top)."""
    if isinstance(index, faiss.IndexRefine):
        return code_size(faiss.downcast_index(index.base_index))
    try:
        return index.sa_code_size()
    except RuntimeError:
        return None


def make_index(dim, factory):
    """The index a FACTORY string names (see the module docs); also returns the objects
    it references, which must outlive it."""
    refine = re.fullmatch(r"(.+),RFlat(\d+)", factory)
    if refine:
        base, keep = make_index(dim, refine.group(1))
        index = faiss.IndexRefineFlat(base)
        index.k_factor = float(refine.group(2))
        return index, keep + [base]
    lsh = re.fullmatch(r"LSH(\d+)", factory)
    if lsh:
        # rotate_data: a random rotation first; train_thresholds: one median per bit.
        return faiss.IndexLSH(dim, int(lsh.group(1)), True, True), []
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if isinstance(index, faiss.IndexPQ):
        # Polysemous training only renumbers the centroids for Hamming pre-filtering,
        # which these searches (plain asymmetric distances) do not use: the same
        # results, minutes less of training at 96 sub-quantizers.
        index.do_polysemous_training = False
    return index, []


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    as_json = "--json" in sys.argv
    if not args:
        sys.exit(__doc__)
    d = pathlib.Path(args[0])
    meta = json.loads((d / "meta.json").read_text())
    dim, n, nq = meta["dim"], meta["vectors"], meta["queries"]
    base = np.fromfile(d / "base.f32", dtype="<f4").reshape(n, dim)
    queries = np.fromfile(d / "queries.f32", dtype="<f4").reshape(nq, dim)
    gt = np.fromfile(d / "gt.i32", dtype="<i4").reshape(nq, 10)
    faiss.omp_set_num_threads(1)
    raw = base.nbytes
    if not as_json:
        print(f"{'faiss index':<28} {'vectors':>8} {'code B':>6} {'R@1':>7} {'R@10':>7} {'mem x':>8} {'disk x':>8} {'build s':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for factory in args[1:] or DEFAULT:
        index, _keep = make_index(dim, factory)
        t0 = time.perf_counter()
        if not index.is_trained:
            index.train(base[: min(n, 65536)])
        index.add(base)
        build_s = time.perf_counter() - t0
        if "IVF" in factory:
            faiss.extract_index_ivf(index).nprobe = 32
        if "HNSW" in factory:
            index.hnsw.efSearch = 64
        lat = []
        r1 = r10 = 0.0
        for i in range(nq):
            q = queries[i : i + 1]
            t = time.perf_counter()
            _, ids = index.search(q, 10)
            lat.append((time.perf_counter() - t) * 1e3)
            got = ids[0]
            r1 += float(got[0] == gt[i, 0])
            r10 += len(set(got.tolist()) & set(gt[i].tolist())) / 10.0
        lat.sort()
        p = lambda q: lat[min(len(lat) - 1, max(0, int(np.ceil(q / 100 * len(lat))) - 1))]
        size = faiss.serialize_index(index).nbytes
        report = {
            "index": "faiss:" + factory,
            "dataset": meta["dataset"],
            "vectors": n,
            "queries": nq,
            "recall_at_1": r1 / nq,
            "recall_at_10": r10 / nq,
            "bytes_per_vector_code": code_size(index),
            "raw_bytes": raw,
            "memory_bytes": size,
            "disk_bytes": size,
            "compression_memory": raw / size,
            "compression_disk": raw / size,
            "build_s": build_s,
            "p50_ms": p(50),
            "p99_ms": p(99),
            "p99_end_to_end_ms": None,
        }
        if as_json:
            print(json.dumps(report))
        else:
            print(
                f"{report['index']:<28} {n:>8} {str(report['bytes_per_vector_code']):>6} {report['recall_at_1']:>7.4f} {report['recall_at_10']:>7.4f} "
                f"{report['compression_memory']:>8.2f} {report['compression_disk']:>8.2f} {build_s:>8.2f} "
                f"{report['p50_ms']:>7.3f} {report['p99_ms']:>7.3f}"
            )


if __name__ == "__main__":
    main()
