"""Benchmark: painplast.stats.nbs.nbs against bctpy's nbs_bct on the same connectomes.

Two groups of 30 participants, 200 ROIs (19,900 edges), a planted 10-node component (45 edges,
mean shift of 1 SD in the first group). bctpy runs 100 permutations, painplast 1000, both seeded
with the same integer, so painplast's first 100 permutations are bctpy's 100 permutations.

Agreement means: the same supra-threshold edges; the same components (nodes, edges, size); the
first 100 values of painplast's null distribution equal to bctpy's; every component's FWE p
within Monte-Carlo error of bctpy's (3 binomial standard errors at bctpy's 100 permutations, plus
1/100 for the different p-value conventions).

Run from the repository root::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/nbs.py

The last line printed is one JSON object.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import resource
import time

import numpy as np

N_NODES, N_PER_GROUP = 200, 30
PLANTED = np.arange(10) * 17 + 3          # 10 nodes spread over the 200
EFFECT = 1.0                              # mean shift in SD units on the planted edges
THRESHOLD, TAIL, SEED = 3.0, "both", 42
K_BCT, K_PAINPLAST = 100, 1000


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N_PER_GROUP, N_NODES, N_NODES))
    y = rng.normal(size=(N_PER_GROUP, N_NODES, N_NODES))
    x[:, PLANTED[:, None], PLANTED[None, :]] += EFFECT

    def symmetric(a):
        upper = np.triu(a, 1)
        return np.ascontiguousarray(np.moveaxis(upper + np.swapaxes(upper, 1, 2), 0, 2))

    return symmetric(x), symmetric(y)     # (n_nodes, n_nodes, n_subjects), as bctpy wants


def bct_components(adj):
    out = []
    for label in range(1, int(adj.max()) + 1):
        i, j = np.nonzero(np.triu(adj == label, 1))
        out.append((frozenset(np.r_[i, j].tolist()), frozenset(zip(i.tolist(), j.tolist()))))
    return out


def main() -> dict:
    from painplast.stats.nbs import nbs
    import bct

    x, y = make_data()
    print(f"data: 2 groups x {N_PER_GROUP} participants, {N_NODES} ROIs "
          f"({N_NODES * (N_NODES - 1) // 2} edges), planted component of {PLANTED.size} nodes; "
          f"threshold {THRESHOLD}, tail {TAIL}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")

    nbs(x, y, threshold=THRESHOLD, tail=TAIL, n_permutations=10, random_state=SEED)  # warm-up
    times = []
    for _ in range(3):
        start = time.perf_counter()
        result = nbs(x, y, threshold=THRESHOLD, tail=TAIL, n_permutations=K_PAINPLAST,
                     random_state=SEED)
        times.append(time.perf_counter() - start)
    painplast_s = float(np.median(times))
    rss_painplast = peak_rss_mb()
    print(f"painplast: {K_PAINPLAST} permutations in {painplast_s:.3f} s (median of 3: "
          f"{', '.join(f'{t:.3f}' for t in times)}), peak RSS so far {rss_painplast:.0f} MB")

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # bctpy prints its progress
        p_bct, adj_bct, null_bct = bct.nbs_bct(x, y, THRESHOLD, k=K_BCT, tail=TAIL, seed=SEED)
    bct_s = time.perf_counter() - start
    print(f"bctpy:     {K_BCT} permutations in {bct_s:.1f} s")

    # ---- agreement
    same_supra = bool(np.array_equal(result.supra_threshold, adj_bct > 0))
    ours = {frozenset(c.nodes.tolist()): c for c in result.components}
    theirs = bct_components(adj_bct)
    same_components = set(ours) == {nodes for nodes, _ in theirs} and all(
        {tuple(e) for e in ours[nodes].edges.tolist()} == edges
        and ours[nodes].size == len(edges) for nodes, edges in theirs if nodes in ours)
    same_null_prefix = bool(np.array_equal(result.null_distribution[:K_BCT], null_bct))
    p_ok = True
    for (nodes, _), p in zip(theirs, p_bct):
        if nodes not in ours:
            p_ok = False
            continue
        mine = ours[nodes].p_fwe
        tolerance = 3 * np.sqrt(max(p * (1 - p), mine * (1 - mine)) / K_BCT) + 1 / K_BCT
        p_ok &= abs(mine - p) <= tolerance
    planted_found = bool(result.components) and set(PLANTED.tolist()) <= set(
        result.components[0].nodes.tolist())
    agree = bool(same_supra and same_components and same_null_prefix and p_ok)

    largest = result.components[0] if result.components else None
    print(f"components: {len(result.components)} (bctpy {len(theirs)}); largest "
          f"{largest.size:.0f} edges on {largest.nodes.size} nodes, p_fwe {largest.p_fwe:.4f} "
          f"(bctpy p {p_bct[[n for n, _ in theirs].index(frozenset(largest.nodes.tolist()))]:.3f})"
          if largest else "components: none")
    print(f"same supra-threshold edges: {same_supra}; same components: {same_components}; "
          f"first {K_BCT} null values identical: {same_null_prefix}; p within MC error: {p_ok}; "
          f"planted nodes in the largest component: {planted_found}")

    bct_per_perm = bct_s / K_BCT
    painplast_per_perm = painplast_s / K_PAINPLAST
    speedup = bct_per_perm / painplast_per_perm
    print(f"time per permutation: bctpy {bct_per_perm * 1e3:.1f} ms, painplast "
          f"{painplast_per_perm * 1e3:.3f} ms, speed-up {speedup:.0f}x")
    summary = {
        "benchmark": "nbs",
        "bct_s_per_perm": round(bct_per_perm, 4),
        "painplast_s_per_perm": round(painplast_per_perm, 6),
        "speedup": round(speedup, 1),
        "agree": agree,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "painplast_peak_rss_mb": round(rss_painplast, 1),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
