"""Measurements for the first session on a GPU (docs/performance.md, "GPU checklist").

Each part prints one JSON line; every part also runs on the CPU (smaller sizes) as a stand-in.

    python benchmarks/gpu_check.py numerics --device cuda
    python benchmarks/gpu_check.py fp16 --device cuda
    python benchmarks/gpu_check.py step --device cuda --model resnet50 --batch 128 --steps 10 --amp bf16
    python benchmarks/gpu_check.py host --batch 256 --size 224
    python benchmarks/gpu_check.py decode --device cuda --data /data/imagenet/val --n 2048 --model resnet50 --steps 50

- numerics: what an attack file's provenance will record on this device (GPU, CUDA, cuDNN, TF32, mode).
- fp16: PGD success of a zoo model whose logits are scaled to ImageNet-like margins, under
  fp32, bf16, fp16 and fp16 with the plain summed cross-entropy (the underflow satkit avoids).
- step: seconds per PGD step of satkit, torchattacks.PGD (if installed) and the bare floor
  (forward + input gradient), timm model with random weights, labels = clean predictions.
- host: per-batch host costs the attack keeps off the device's critical path (random start,
  uint8 conversion, quantization), and the device conversion through the 256-entry table.
- decode: images/s of decoding a folder (satkit's background threads) vs of attacking on the device.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
import torch.nn.functional as F


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_of(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: allocation, kernel selection, lazy init
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def part_numerics(a) -> dict:
    from satkit.devices import model_numerics, resolve_device

    dev = resolve_device(a.device)
    with model_numerics(dev, a.amp) as rec:
        pass
    return rec


def part_fp16(a) -> dict:
    """A digits zoo model with logits x8 (median margin ~34, past fp16's ~17)."""
    from satkit.attacks import AttackParams
    from satkit.attacks.pgd import pgd_linf
    from satkit.attacks.runner import random_start_noise
    from satkit.data import default_eps, load_data
    from satkit.devices import resolve_device
    from satkit.io.pixels import as_float
    from satkit.models import load_model

    dev = resolve_device(a.device)
    lm = load_model(a.zoo_model, device=dev)
    d = load_data("digits", n=a.n, seed=0)
    x, y = as_float(d.images).to(dev), d.labels.to(dev)

    class Scaled(torch.nn.Module):
        def forward(self, z):
            return lm.module(z) * a.scale

    net = Scaled()
    p = AttackParams(eps=default_eps("digits"), steps=a.steps)
    init = random_start_noise(d.ids, tuple(x.shape[1:]), p.eps, 0).to(dev)
    with torch.no_grad():
        logits = net(x)
    top2 = logits.topk(2, 1).values
    ok = logits.argmax(1) == y

    def plain_ce(model, x, y, *, eps, steps, alpha, init, amp_dtype):
        lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
        adv = torch.max(torch.min(x + init, hi), lo)
        for _ in range(steps):
            adv.requires_grad_(True)
            with torch.autocast(x.device.type, dtype=amp_dtype):
                out = model(adv)
            (g,) = torch.autograd.grad(F.cross_entropy(out.float(), y, reduction="sum"), adv)
            adv = torch.max(torch.min(adv.detach() + alpha * g.sign(), hi), lo)
        return adv

    res = {"model": a.zoo_model, "scale": a.scale, "n": a.n, "steps": a.steps, "device": str(dev),
           "median_margin": round(float((top2[:, 0] - top2[:, 1]).median()), 2)}
    for name, fn, dt in (("fp32", pgd_linf, None), ("bf16", pgd_linf, torch.bfloat16), ("fp16", pgd_linf, torch.float16),
                         ("fp16_plain_ce", plain_ce, torch.float16)):
        adv = fn(net, x, y, eps=p.eps, steps=p.steps, alpha=p.alpha, init=init, amp_dtype=dt)
        with torch.no_grad():
            res[f"success_{name}"] = round(float((net(adv).argmax(1)[ok] != y[ok]).float().mean()), 4)
    return res


def part_step(a) -> dict:
    from satkit.attacks.pgd import pgd_linf
    from satkit.devices import AMP_DTYPES, model_numerics, resolve_device
    from satkit.models import ModelOptions, load_model

    dev = resolve_device(a.device)
    lm = load_model(a.model, ModelOptions(pretrained=False), dev)
    net = lm.module
    c, h, w = lm.data_config.input_size
    g = torch.Generator().manual_seed(0)
    x = torch.rand((a.batch, c, h, w), generator=g).to(dev)
    with torch.no_grad():
        y = net(x).argmax(1)
    eps, alpha = 8 / 255, 2.5 * 8 / 255 / a.steps
    init = ((torch.rand(x.shape, generator=g) * 2 - 1) * eps).to(dev)
    amp = AMP_DTYPES[a.amp]
    out: dict = {}

    def floor():
        for _ in range(a.steps):
            xi = x.clone().requires_grad_(True)
            with torch.autocast(dev.type, dtype=amp) if amp else contextlib.nullcontext():
                loss = F.cross_entropy(net(xi).float(), y, reduction="sum")
            torch.autograd.grad(loss, xi)

    def satkit_run():
        out["satkit"] = pgd_linf(net, x, y, eps=eps, steps=a.steps, alpha=alpha, init=init, amp_dtype=amp)

    runs = {"floor": floor, "satkit": satkit_run}
    try:
        import torchattacks

        ta = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=a.steps, random_start=True)
        runs["torchattacks_fp32"] = lambda: out.__setitem__("torchattacks_fp32", ta(x, y))
    except ImportError:
        pass
    with model_numerics(dev, a.amp) as rec:
        t = {k: best_of(f, dev, a.repeats) / a.steps for k, f in runs.items()}
        succ = {}
        for k, adv in out.items():
            with torch.inference_mode():
                succ[k] = round(float((net(adv).argmax(1) != y).float().mean()), 4)
    res = {"model": a.model, "device": str(dev), "amp": a.amp, "batch": a.batch, "steps": a.steps,
           "step_s": {k: round(v, 5) for k, v in t.items()}, "images_per_s": {k: round(a.batch / v / a.steps, 1) for k, v in t.items()},
           "success": succ, "nondeterministic_ops": rec["nondeterministic_ops"]}
    if "torchattacks_fp32" in t:
        res["satkit_vs_torchattacks"] = round(t["torchattacks_fp32"] / t["satkit"], 3)
    return res


def part_host(a) -> dict:
    from satkit.attacks.quantize import as_float, quantize_adv
    from satkit.attacks.runner import random_start_noise
    from satkit.io.pixels import pixels_on

    g = torch.Generator().manual_seed(0)
    shape = (a.batch, 3, a.size, a.size)
    u8 = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    adv = (as_float(u8) + (torch.rand(shape, generator=g) - 0.5) * 0.06).clamp(0, 1)
    ids = torch.arange(a.batch)
    cpu = torch.device("cpu")

    def noise_per_sample():  # the draw as it was: one affine transform per sample
        out = torch.empty(shape)
        gen = torch.Generator()
        for j, i in enumerate(ids.tolist()):
            gen.manual_seed(i)
            out[j] = torch.rand(shape[1:], generator=gen) * (2 * 8 / 255) - 8 / 255
        return out

    res = {"batch": a.batch, "size": a.size, "threads": torch.get_num_threads(),
           "random_start_s": best_of(lambda: random_start_noise(ids, shape[1:], 8 / 255, 0), cpu, a.repeats),
           "random_start_per_sample_affine_s": best_of(noise_per_sample, cpu, a.repeats),
           "as_float_s": best_of(lambda: as_float(u8), cpu, a.repeats),
           "quantize_uint8_s": best_of(lambda: quantize_adv(adv, u8, 8 / 255, "uint8"), cpu, a.repeats)}
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        pinned = u8.pin_memory()
        res["device_convert_s"] = best_of(lambda: pixels_on(pinned, dev), dev, a.repeats)
        adv_d, u8_d = adv.to(dev), u8.to(dev)
        res["device_quantize_s"] = best_of(lambda: quantize_adv(adv_d, u8_d, 8 / 255, "uint8"), dev, a.repeats)
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in res.items()}


def part_decode(a) -> dict:
    from satkit.attacks import AttackParams, run_attack
    from satkit.data import open_data
    from satkit.data.stream import default_workers
    from satkit.devices import resolve_device
    from satkit.models import ModelOptions, load_model

    dev = resolve_device(a.device)
    src = open_data(a.data, n=a.n)
    workers = default_workers(busy_device=dev.type == "cpu")
    t0 = time.perf_counter()
    with src.stream(workers=workers) as s:
        s.wait_all()
        clean = s.clean_set()
    t_decode = time.perf_counter() - t0
    lm = load_model(a.model, ModelOptions(pretrained=a.pretrained), dev)
    params = AttackParams(eps=8 / 255, steps=a.steps)
    k = min(len(clean), a.attack_n)
    from dataclasses import replace

    sub = replace(clean, images=clean.images[:k], labels=clean.labels[:k], ids=clean.ids[:k])
    t0 = time.perf_counter()
    res = run_attack(lm, sub, params, batch_size=a.batch, amp=a.amp)
    t_attack = time.perf_counter() - t0
    return {"device": str(dev), "decode_workers": workers, "images": len(clean), "decode_images_per_s": round(len(clean) / t_decode, 1),
            "model": a.model, "amp": a.amp, "steps": a.steps, "attack_images": k, "batch": a.batch,
            "attack_images_per_s": round(k / t_attack, 2), "success": res.success_rate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["numerics", "fp16", "step", "host", "decode"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--pretrained", action="store_true", help="decode: pretrained weights (default: random)")
    ap.add_argument("--zoo-model", default="digits/resnet-s1")
    ap.add_argument("--scale", type=float, default=8.0)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--attack-n", type=int, default=512, help="decode: images attacked (of --n decoded)")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    fn = {"numerics": part_numerics, "fp16": part_fp16, "step": part_step, "host": part_host, "decode": part_decode}[a.part]
    print(json.dumps({"part": a.part, "torch": torch.__version__, **fn(a)}))


if __name__ == "__main__":
    main()
