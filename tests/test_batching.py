"""--batch-size auto and --compile."""

import pytest
import torch
from safetensors import safe_open

from satkit.data import load_data
from satkit.errors import ParameterError
from satkit.models import load_model
from satkit.models.batching import fastest_small, largest_fitting, parse_batch_size, powers_of_two, resolve_batch_size
from tests.cli_helpers import assert_clean_error, run


def test_parse_batch_size():
    assert parse_batch_size("auto") == "auto" and parse_batch_size(" AUTO ") == "auto"
    assert parse_batch_size("64") == 64 and parse_batch_size(8) == 8
    for bad in ("0", "-3", "lots", "1.5"):
        with pytest.raises(ParameterError, match="--batch-size"):
            parse_batch_size(bad)


def test_largest_fitting_stops_at_out_of_memory_and_at_the_budget():
    def step(b):  # pretend 1 MB per image and an OOM above 96 images
        if b > 96:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return b * 2**20

    cands = powers_of_two(1, 1024)
    assert largest_fitting(step, cands, budget=10**12) == 64
    assert largest_fitting(step, cands, budget=20 * 2**20) == 16  # 32 MB would exceed a 20 MB budget


def test_fastest_small_takes_the_smallest_batch_near_full_speed():
    # fixed overhead of 0.1 s per call + 0.01 s per image: images/s saturates near 100
    t = {b: 0.1 + 0.01 * b for b in powers_of_two(8, 128)}
    speed = {b: b / s for b, s in t.items()}
    got = fastest_small(lambda b: t[b], list(t))
    assert speed[got] >= 0.9 * max(speed.values())
    assert all(speed[b] < 0.9 * max(speed.values()) for b in t if b < got)


def test_auto_on_cpu_returns_a_usable_power_of_two():
    lm = load_model("digits/resnet-s1")
    clean = load_data("digits", n=50)
    for kind in ("attack", "transfer"):
        b = resolve_batch_size("auto", lm, clean.images[:1], kind=kind, n=len(clean))
        assert b in powers_of_two(8, 32) or b == len(clean)  # 64 would be capped at the 50 images
    assert resolve_batch_size("auto", lm, clean.images[:1], kind="attack", n=5) == 5  # never more than the images
    assert resolve_batch_size(32, lm, clean.images[:1], kind="attack", n=5) == 32  # numbers pass through


def test_transfer_cli_auto_batch_and_shards(tmp_path):
    a1, a2 = tmp_path / "r.safetensors", tmp_path / "v.safetensors"
    for m, p in (("digits/resnet-s1", a1), ("digits/vit-s1", a2)):
        run("attack", m, "--n", 30, "--steps", 2, "--eps", 0.1, "-o", p, "-q")
    whole = tmp_path / "t.csv"
    run("transfer", "digits/mixer-s1", a1, a2, "--batch-size", "auto", "-o", whole, "-q")
    parts = [tmp_path / f"t{i}.csv" for i in range(2)]
    for i, p in enumerate(parts):
        run("transfer", "digits/mixer-s1", a1, a2, "--shard", f"{i}/2", "-o", p, "-q")
    import polars as pl

    joined = pl.concat([pl.read_csv(p) for p in parts]).sort("source")
    assert joined.height == 2 and joined.equals(pl.read_csv(whole).sort("source"))
    assert_clean_error(run("transfer", "digits/mixer-s1", a1, "--shard", "1/1", "-o", tmp_path / "x.csv", ok=False), "--shard")
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.slow
def test_compile_gives_the_same_attack(tmp_path):
    """--compile changes speed, not results (CPU inductor: ~1 min of compiling for this small model)."""
    plain, comp = tmp_path / "plain.safetensors", tmp_path / "comp.safetensors"
    args = ["attack", "digits/resnet-s1", "--n", 16, "--steps", 2, "--eps", 0.1, "--batch-size", 16, "-q"]
    run(*args, "-o", plain)
    run(*args, "--compile", "-o", comp)
    with safe_open(str(plain), "pt") as a, safe_open(str(comp), "pt") as b:
        assert torch.equal(a.get_tensor("source_correct"), b.get_tensor("source_correct"))
        # compiled kernels may sum in another order: adversarial pixels agree up to one quantization step
        assert (a.get_tensor("adv").int() - b.get_tensor("adv").int()).abs().max() <= 1
        torch.testing.assert_close(a.get_tensor("clean_logits"), b.get_tensor("clean_logits"), rtol=1e-4, atol=1e-4)
