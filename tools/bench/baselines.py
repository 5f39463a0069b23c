"""Reference implementations from the literature, timed on the same weights the studio's kernels see.

Reads a manifest (a raw float32 file and a list of [K, N] tensors in it) and prints JSON: per method,
total seconds and total squared error. One thread for torch, as a browser worker is one thread.
Runs with Debian's python3-torch / python3-sklearn; never part of the app or its tests.
"""
import json
import sys
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")
torch.set_num_threads(1)


def int8_per_channel(w):
    # textbook symmetric per-output-channel int8: s = max|w| / 127, q = clamp(round(w / s))
    s = w.abs().amax(dim=0) / 127
    q = torch.clamp(torch.round(w / s), -127, 127).to(torch.int8)
    return q, s


def int8_dequant(q, s):
    return q.float() * s


def int4_block(w, block):
    # textbook block-wise symmetric int4 round-to-nearest along K: s = max|w| / 7 per block of K
    k, n = w.shape
    pad = (-k) % block
    wp = torch.nn.functional.pad(w, (0, 0, 0, pad)).reshape(-1, block, n)
    s = wp.abs().amax(dim=1, keepdim=True) / 7
    q = torch.clamp(torch.round(wp / s), -7, 7).to(torch.int8)
    return q, s


def int4_dequant(q, s, k):
    return (q.float() * s).reshape(-1, q.shape[2])[:k]


def l1_prune(w, amount):
    import torch.nn.utils.prune as prune

    lin = torch.nn.Linear(w.shape[0], w.shape[1], bias=False)
    with torch.no_grad():
        lin.weight.copy_(w.t())
    t0 = time.perf_counter()
    prune.l1_unstructured(lin, "weight", amount=amount)
    out = lin.weight.detach()
    return time.perf_counter() - t0, out.t()


def main():
    manifest = json.load(open(sys.argv[1]))
    methods = manifest["methods"]
    data = np.fromfile(manifest["file"], dtype=np.float32)
    tensors = []
    for t in manifest["tensors"]:
        k, n = t["shape"]
        tensors.append(torch.from_numpy(data[t["offset"] : t["offset"] + k * n].reshape(k, n)))
    out = {}

    def record(name, seconds, sq):
        r = out.setdefault(name, {"seconds": 0.0, "sqError": 0.0})
        r["seconds"] += seconds
        r["sqError"] += sq

    for w in tensors:
        if "int8" in methods:
            t0 = time.perf_counter()
            q, s = int8_per_channel(w)
            record("int8", time.perf_counter() - t0, float(((int8_dequant(q, s) - w) ** 2).double().sum()))
        if "int4" in methods:
            t0 = time.perf_counter()
            q, s = int4_block(w, 32)
            record("int4", time.perf_counter() - t0, float(((int4_dequant(q, s, w.shape[0]) - w) ** 2).double().sum()))
        if "fp16" in methods:
            t0 = time.perf_counter()
            h = w.half()
            record("fp16", time.perf_counter() - t0, float(((h.float() - w) ** 2).double().sum()))
        if "prune" in methods:
            seconds, p = l1_prune(w, 0.5)
            record("prune", seconds, float(((p - w) ** 2).double().sum()))
        if "kmeans" in methods:
            from sklearn.cluster import KMeans

            x = w.numpy().reshape(-1, 1)
            t0 = time.perf_counter()
            # n_init=1: scikit-learn's default for k-means++ from 1.4 on ('auto')
            km = KMeans(n_clusters=16, n_init=1, random_state=0).fit(x)
            seconds = time.perf_counter() - t0
            centers = km.cluster_centers_.astype(np.float32)[:, 0]
            record("kmeans", seconds, float(((centers[km.labels_] - x[:, 0]).astype(np.float64) ** 2).sum()))
        print(".", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
