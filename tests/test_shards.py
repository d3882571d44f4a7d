"""satkit attack --shard i/n + satkit merge == one unsharded attack; transfer refuses unmerged shards."""

import random

import pytest
import torch
from safetensors.torch import load_file

from satkit.attacks.shards import shard_rows
from satkit.errors import ParameterError
from satkit.formats import read_satkit_file
from tests.cli_helpers import assert_clean_error, run

ARGS = ["attack", "digits/resnet-s1", "--n", 50, "--steps", 2, "--eps", 0.1, "--batch-size", 16, "-q"]


@pytest.mark.parametrize("n,bs,count", [(50, 16, 3), (50, 16, 4), (50, 16, 7), (7, 8, 2), (128, 32, 4)])
def test_shard_rows_cover_the_set_in_whole_batches(n, bs, count):
    ranges = [shard_rows(n, bs, (i, count)) for i in range(count)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    for (a0, a1), (b0, b1) in zip(ranges, ranges[1:]):
        assert a1 == b0  # contiguous, no overlap
    for a, b in ranges:
        assert a % bs == 0 and (b % bs == 0 or b == n)  # whole batches: same batches as an unsharded run
    with pytest.raises(ParameterError):
        shard_rows(n, bs, (count, count))


@pytest.fixture(scope="module")
def attack_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    run(*ARGS, "-o", d / "whole.safetensors")
    for i in range(3):
        run(*ARGS, "--shard", f"{i}/3", "-o", d / f"part{i}.safetensors")
    return d


def test_merged_shards_equal_the_unsharded_attack(attack_files, tmp_path):
    d = attack_files
    parts = [d / f"part{i}.safetensors" for i in range(3)]
    sizes = [len(load_file(p)["labels"]) for p in parts]
    assert sizes == [16, 16, 18]  # 4 batches of 16 (the last one 2 images) over 3 shards
    random.Random(0).shuffle(parts)
    merged = tmp_path / "merged.safetensors"
    run("merge", *parts, "-o", merged, "-q")
    a, b = load_file(d / "whole.safetensors"), load_file(merged)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    pa, pb = read_satkit_file(d / "whole.safetensors", "satkit.attack").provenance, read_satkit_file(merged, "satkit.attack").provenance
    assert pa["attack_key"] == pb["attack_key"] and pa["stats"] == pb["stats"] and "shard" not in pb
    # eps bound holds on the stored merged file
    assert (b["adv"].int() - b["clean"].int()).abs().max() <= round(0.1 * 255)
    # and it transfers like the unsharded file
    t1, t2 = tmp_path / "t1.csv", tmp_path / "t2.csv"
    run("transfer", "digits/vit-s1", d / "whole.safetensors", "-o", t1, "-q")
    run("transfer", "digits/vit-s1", merged, "-o", t2, "-q")
    import polars as pl

    cols = ["source", "target", "n_both", "n_fooled", "attack_key"]
    assert pl.read_csv(t1).select(cols).equals(pl.read_csv(t2).select(cols))


def test_shard_and_merge_errors(attack_files, tmp_path):
    d = attack_files
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"keep me")
    cases = [
        (["transfer", "digits/vit-s1", d / "part0.safetensors", "-o", tmp_path / "t.csv"], ["shard 0/3", "satkit merge"]),
        (["merge", d / "part0.safetensors", d / "part1.safetensors", "-o", out], ["missing", "2/3"]),
        (["merge", d / "part0.safetensors", d / "part0.safetensors", d / "part1.safetensors", d / "part2.safetensors", "-o", out], ["twice"]),
        (["merge", d / "whole.safetensors", "-o", out], ["not a shard"]),
        (["merge", d / "part0.safetensors", "-o", d / "part0.safetensors"], []),
        ([*ARGS, "--shard", "3/3", "-o", tmp_path / "x.safetensors"], ["--shard"]),
        ([*ARGS, "--shard", "a/b", "-o", tmp_path / "x.safetensors"], ["--shard"]),
    ]
    for args, words in cases:
        assert_clean_error(run(*args, ok=False), *words)
    assert out.read_bytes() == b"keep me"
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "t.csv").exists()


def test_merge_refuses_shards_of_different_attacks(attack_files, tmp_path):
    d = attack_files
    other = tmp_path / "other1.safetensors"
    run(*[a if a != 0.1 else 0.2 for a in ARGS], "--shard", "1/3", "-o", other)
    r = run("merge", d / "part0.safetensors", other, d / "part2.safetensors", "-o", tmp_path / "m.safetensors", ok=False)
    assert_clean_error(r, "different attacks")
