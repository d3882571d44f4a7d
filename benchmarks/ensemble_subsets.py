"""Cost of one ensemble subset's error at paper scale: a stacked copy per subset vs buffers reused in place.

    python benchmarks/ensemble_subsets.py [--n 5000] [--classes 1000] [--size 5] [--repeat 10]

Random float32 logits (what logits files hold); prints ms per subset for each way and checks
that both give the same bits.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from satkit.analysis.ensemble import _average_into


def stacked(logits):
    stack = np.stack([np.asarray(x, dtype=np.float64) for x in logits])
    return np.sum(stack / len(stack), axis=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--size", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=10)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    logits = [rng.standard_normal((a.n, a.classes), dtype=np.float32) for _ in range(a.size)]
    buffers = [np.empty((a.n, a.classes)), np.empty((a.n, a.classes))]
    assert np.array_equal(stacked(logits), _average_into(logits, buffers))
    times = {}
    for name, fn in (("stacked copy", lambda: stacked(logits)), ("in place", lambda: _average_into(logits, buffers))):
        fn()
        t = time.perf_counter()
        for _ in range(a.repeat):
            fn()
        times[name] = (time.perf_counter() - t) / a.repeat
        print(f"{name:>12}: {times[name] * 1000:7.1f} ms per subset of {a.size} ({a.n} x {a.classes})")
    print(f"speed-up: {times['stacked copy'] / times['in place']:.1f}x, same bits")


if __name__ == "__main__":
    main()
