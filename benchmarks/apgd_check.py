"""Check satkit's apgd-ce against torchattacks' APGD (the AutoAttack port) on the digits zoo.

    pip install --no-deps torchattacks   # its requests pin would downgrade requests (docs/performance.md)
    python benchmarks/apgd_check.py [--n 500 --eps 0.1 --steps 50 --models resnet-s1,vit-s1 --json out.json]

Same wrapped models (``load_model("digits/<name>")``: [0, 1] canvas pixels in), same
images (the digits test split at the zoo's canvas, as ``satkit attack --data digits``
feeds them), same eps and steps. Success rate = the fraction of the model's
correctly classified samples that the float adversarial fools (no 8-bit storage
here). satkit pgd at the same steps is shown for scale. Exits 1 if satkit's apgd-ce
falls more than ``--tolerance`` points (default 1) below torchattacks on any model.

By default satkit starts from the runner's random start (seeded per sample id, what
``satkit attack`` uses) and torchattacks from its own draw: the gap then includes
the luck of two different random starts (a sample or two at n=200, eps=0.03).
``--same-start`` gives satkit torchattacks' start, so the gap is the algorithms' alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def success(net, x, y, correct, adv) -> float:
    with torch.inference_mode():
        fooled = net(adv).argmax(1) != y
    return float(fooled[correct].float().mean())


def timed(fn, x, y, batch: int) -> tuple[torch.Tensor, float]:
    t = time.perf_counter()
    adv = torch.cat([fn(x[s:s + batch], y[s:s + batch], s) for s in range(0, len(x), batch)])
    return adv, time.perf_counter() - t


def check_model(name: str, data, eps: float, steps: int, batch: int, seed: int, same_start: bool) -> dict:
    import torchattacks

    from satkit.attacks import AttackParams
    from satkit.attacks.apgd import apgd_ce
    from satkit.attacks.pgd import pgd_linf
    from satkit.attacks.runner import random_start_noise
    from satkit.io.pixels import pixels_on
    from satkit.models import load_model

    lm = load_model(f"digits/{name}")
    net = lm.module
    x, y = pixels_on(data.images).to(lm.device), data.labels.to(lm.device)
    with torch.inference_mode():
        correct = net(x).argmax(1) == y
    if same_start:
        # torchattacks' own start: per batch, torch.manual_seed(seed), then 2 * rand - 1 for the batch's correctly
        # classified samples (the only ones it attacks). apgd-ce rescales its start to L-inf norm eps per sample as
        # torchattacks does, so this t gives it the same x0 bit for bit; pgd takes its start as given: t * eps
        t = torch.zeros_like(x)
        for s in range(0, len(x), batch):
            with torch.inference_mode():
                idx = (net(x[s:s + batch]).argmax(1) == y[s:s + batch]).nonzero().squeeze(1) + s
            torch.manual_seed(seed)
            t[idx] = (2 * torch.rand((len(idx), *x.shape[1:])) - 1).to(t.device)
        init_apgd, init_pgd = t, t * eps
    else:
        # the runner's own random start: U(-eps, eps), seeded per sample id (what `satkit attack` uses)
        init_apgd = init_pgd = random_start_noise(data.ids, tuple(x.shape[1:]), eps, seed).to(lm.device)
    a_apgd = AttackParams(eps=eps, steps=steps, attack="apgd-ce", seed=seed)
    a_pgd = AttackParams(eps=eps, steps=steps, attack="pgd", seed=seed)

    def run_satkit(fn, params, init):
        return lambda xb, yb, s: fn(net, xb, yb, eps=eps, steps=steps, alpha=params.alpha, init=init[s:s + len(xb)],
                                    **params.option_values)

    # warm-up (the first passes at a batch shape build the CPU kernels: seconds, not attack time)
    for s in sorted({0, (len(x) - 1) // batch * batch}):
        xb = x[s:s + batch].clone().requires_grad_(True)
        for _ in range(2):
            torch.autograd.grad(net(xb).logsumexp(1).sum(), xb)
    ta = torchattacks.APGD(net, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed)
    rows = {}
    for key, fn in (("satkit_apgd", run_satkit(apgd_ce, a_apgd, init_apgd)), ("torchattacks_apgd", lambda xb, yb, s: ta(xb, yb)),
                    ("satkit_pgd", run_satkit(pgd_linf, a_pgd, init_pgd))):
        adv, t = timed(fn, x, y, batch)
        d = (adv - x).abs().max().item()
        assert d <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1, f"{key} left the eps-ball ({d})"
        rows[key] = {"success": success(net, x, y, correct, adv), "ms_per_image": 1000 * t / len(x)}
    return {"model": name, "clean_accuracy": float(correct.float().mean()), "n_correct": int(correct.sum()), **rows,
            "gap_points": 100 * (rows["satkit_apgd"]["success"] - rows["torchattacks_apgd"]["success"])}


def main(argv=None) -> int:
    from satkit.data.loaders import load_digits_set
    from satkit.models import zoo

    # the ten-model default zoo (ZOO_MODELS may also hold training-strategy variants)
    default_models = getattr(zoo, "ZOO_SETS", {}).get("default", list(zoo.ZOO_MODELS))

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--models", default=",".join(default_models), help="comma-separated zoo names (default: the default zoo)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=1.0, help="allowed shortfall vs torchattacks, in points")
    ap.add_argument("--same-start", action="store_true",
                    help="give satkit torchattacks' random start (a paired comparison of the algorithms alone)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    data = load_digits_set("test", n=args.n)
    start = "torchattacks' start for all" if args.same_start else "satkit: the runner's per-sample start"
    print(f"digits test n={len(data)}  eps={args.eps}  steps={args.steps}  seed={args.seed}  ({start})  "
          f"torch threads={torch.get_num_threads()}")
    head = f"{'model':14s} {'clean':>6s} | {'satkit apgd':>11s} {'ta APGD':>8s} {'gap':>6s} {'satkit pgd':>10s} | ms/img: {'apgd':>5s} {'ta':>5s} {'pgd':>5s}"
    print(head)
    print("-" * len(head))
    results = []
    for name in args.models.split(","):
        r = check_model(name.strip(), data, args.eps, args.steps, args.batch_size, args.seed, args.same_start)
        results.append(r)
        s, t, p = r["satkit_apgd"], r["torchattacks_apgd"], r["satkit_pgd"]
        print(f"{r['model']:14s} {r['clean_accuracy']:6.1%} | {s['success']:11.1%} {t['success']:8.1%} {r['gap_points']:+6.1f} "
              f"{p['success']:10.1%} |         {s['ms_per_image']:5.2f} {t['ms_per_image']:5.2f} {p['ms_per_image']:5.2f}",
              flush=True)
    worst = min(results, key=lambda r: r["gap_points"])
    ok = worst["gap_points"] >= -args.tolerance
    print(f"worst gap satkit - torchattacks: {worst['gap_points']:+.1f} points ({worst['model']}): "
          f"{'OK' if ok else 'FAIL'} (tolerance {args.tolerance:g})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "results": results, "ok": ok}, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
