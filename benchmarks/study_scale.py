"""Study-level work and where it runs: counted, not timed against a target.

- incremental: a 4-model digits study, then the same study with a 5th model:
  attacks run, transfer evaluations, model loads and transfer forward passes of
  the second run, against the minimum (1 attack, 2N+1 evaluations, N+2 loads,
  sum of |X_AB| over the new pairs);
- ray: the same study through a local Ray instance (``--ray local``) and in this
  process: are sat.csv and sat_long.csv byte-identical?
- devices: the same through ``DeviceExecutor(["cpu", "cpu"])`` (two worker processes).

Used by ``bench.py --only study`` and runnable alone::

    python benchmarks/study_scale.py [--out benchmarks/study_scale.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

MODELS = ["digits/resnet-s1", "digits/vit-s1", "digits/mixer-s1", "digits/convmixer-s1"]
NEW = "digits/convnext-s1"
N, STEPS = 100, 5


def bench_incremental(tmp: Path) -> dict:
    from satkit.attacks import AttackParams
    from satkit.study import StudyConfig, run_study

    p = AttackParams(eps=0.1, steps=STEPS)
    first = run_study(StudyConfig.create(MODELS, tmp / "inc", params=p, n=N, analyses=False))
    t0 = time.perf_counter()
    more = run_study(StudyConfig.create(MODELS + [NEW], tmp / "inc", params=p, n=N, analyses=False))
    secs = time.perf_counter() - t0
    long = more.matrix.long
    new_pairs = long.filter((long["a"] == NEW) | (long["b"] == NEW))
    # forward passes of the second run: the new attack (N * (steps + 2)) + adversarial forwards of the new pairs
    adv_forwards = more.forward_samples - N * (STEPS + 2)
    min_adv = int(2 * new_pairs["n_both"].sum() - new_pairs.filter(new_pairs["a"] == new_pairs["b"])["n_both"].sum())
    n = len(MODELS)
    return {"models_before": n, "first_attacks": first.attacks_run, "first_evaluations": first.transfer_evaluations,
            "attacks_run": more.attacks_run, "attacks_reused": more.attacks_skipped,
            "transfer_evaluations": more.transfer_evaluations, "expected_evaluations": 2 * n + 1,
            "model_loads": more.model_loads, "min_model_loads": 1 + n + 1,  # the new source once; every target once (all get a new source)
            "transfer_forwards": adv_forwards, "min_transfer_forwards": min_adv, "seconds": secs}


def _run(out: Path, executor=None, cli_ray: bool = False) -> float:
    from satkit.attacks import AttackParams
    from satkit.study import StudyConfig, run_study

    t0 = time.perf_counter()
    if cli_ray:
        from satkit.study.executors import RayExecutor

        with RayExecutor("local") as ex:
            run_study(StudyConfig.create(MODELS, out, params=AttackParams(eps=0.1, steps=STEPS), n=N, analyses=False), executor=ex)
    else:
        run_study(StudyConfig.create(MODELS, out, params=AttackParams(eps=0.1, steps=STEPS), n=N, analyses=False), executor=executor)
    return time.perf_counter() - t0


def bench_executors(tmp: Path) -> dict:
    from satkit.study.executors import DeviceExecutor

    res = {"local_s": _run(tmp / "local")}
    ref = [(tmp / "local" / f).read_bytes() for f in ("sat.csv", "sat_long.csv")]
    res["devices_s"] = _run(tmp / "devices", DeviceExecutor(["cpu", "cpu"]))
    res["devices_same_matrix"] = ref == [(tmp / "devices" / f).read_bytes() for f in ("sat.csv", "sat_long.csv")]
    try:
        import ray  # noqa: F401
    except ImportError:
        res["ray"] = "not installed"
        return res
    res["ray_local_s"] = _run(tmp / "ray", cli_ray=True)
    res["ray_same_matrix"] = ref == [(tmp / "ray" / f).read_bytes() for f in ("sat.csv", "sat_long.csv")]
    res["sat_csv"] = (tmp / "ray" / "sat.csv").read_text()
    return res


def print_scale(res: dict) -> None:
    i = res.get("incremental")
    if i:
        print(f"\nadding a 5th model to a finished {i['models_before']}-model study: {i['attacks_run']} attack run "
              f"({i['attacks_reused']} reused), {i['transfer_evaluations']} transfer evaluations (2N+1 = {i['expected_evaluations']}), "
              f"{i['model_loads']} model loads (minimum {i['min_model_loads']}), {i['transfer_forwards']} adversarial forwards "
              f"(minimum {i['min_transfer_forwards']}); {i['seconds']:.1f} s")
    e = res.get("executors")
    if e:
        print(f"\nsame 4-model study: local {e['local_s']:.1f} s; --devices cpu,cpu {e['devices_s']:.1f} s, same matrix: "
              f"{e['devices_same_matrix']}" + (f"; --ray local {e['ray_local_s']:.1f} s, same matrix: {e['ray_same_matrix']}"
                                              if "ray_local_s" in e else f"; ray: {e.get('ray')}"))
        if "sat_csv" in e:
            print("Ray study's sat.csv:\n" + e["sat_csv"])


def run_all(tmp: Path) -> dict:
    return {"incremental": bench_incremental(tmp), "executors": bench_executors(tmp)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("benchmarks/study_scale.json"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        res = run_all(Path(d))
    a.out.write_text(json.dumps(res, indent=2))
    print_scale(res)


if __name__ == "__main__":
    main()
