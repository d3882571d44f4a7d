"""GPU paths tested where the CPU can stand in (issue 16): fp16 PGD on confident models, NaN inside
the attack, numerics in provenance, the deterministic mode, one --amp rule, host work off the
critical path, --compile over many models, no host syncs in hot loops, the CUDA default batch
size, executor workers that die.

fp16 and bf16 autocast run on the CPU (torch >= 2.x); CUDA-only calls (pinning, set_device,
CUDA events, cuDNN) cannot run here and are named where a test stops short of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.deterministic

from satkit.attacks import AttackParams, run_attack, save_attack
from satkit.attacks.pgd import ce_logit_direction, pgd_linf
from satkit.attacks.quantize import clean_for_storage, quantize_adv
from satkit.attacks.runner import random_start_noise
from satkit.data import default_eps, load_data
from satkit.devices import model_numerics, numerics
from satkit.errors import ModelError, SatkitError
from satkit.formats import read_satkit_file
from satkit.io.pixels import as_float, pixels_on, uint8_table
from satkit.logits import compute_logits, logits_from_attack, save_logits
from satkit.models import load_model
from satkit.models.wrapper import ClassifierWrapper, DataConfig, LoadedModel, preprocess
from satkit.transfer import open_attack_files, run_transfer
from tests.conftest import TinyCNN, tiny_model


def _sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def _old_pgd(model, x, y, *, eps, steps, alpha, init=None, amp_dtype=None):
    """PGD as it was before the fp16 fix: the summed cross-entropy for every autocast dtype."""
    lo, hi = (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)
    adv = x.clone() if init is None else torch.max(torch.min(x + init, hi), lo)
    ctx = torch.autocast(device_type=x.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    for _ in range(steps):
        adv.requires_grad_(True)
        with ctx:
            logits = model(adv)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits.float(), y, reduction="sum"), adv)
        adv = torch.max(torch.min(adv.detach().add_(grad.sign_(), alpha=alpha), hi), lo)
    return adv.detach()


class Scaled(nn.Module):
    """A model's logits times ``k``: the zoo's margins (~4, label smoothing) made ImageNet-like (~20-40)."""

    def __init__(self, model: nn.Module, k: float):
        super().__init__()
        self.model, self.k = model, k

    def forward(self, x):
        return self.model(x) * self.k


@pytest.fixture(scope="module")
def confident():
    lm = load_model("digits/resnet-s1")
    d = load_data("digits", n=64, seed=0)
    x, y = as_float(d.images), d.labels
    net = Scaled(lm.module, 8.0)
    with torch.no_grad():
        logits = net(x)
    top2 = logits.topk(2, dim=1).values
    ok = logits.argmax(1) == y
    return net, x, y, ok, float((top2[:, 0] - top2[:, 1]).median())


def _success(net, x, y, ok, attack, amp_dtype, steps=20):
    p = AttackParams(eps=default_eps("digits"), steps=steps)
    init = random_start_noise(torch.arange(len(x)), tuple(x.shape[1:]), p.eps, seed=0)
    adv = attack(net, x, y, eps=p.eps, steps=p.steps, alpha=p.alpha, init=init, amp_dtype=amp_dtype)
    with torch.no_grad():
        pred = net(adv).argmax(1)
    return float((pred[ok] != y[ok]).float().mean())


# ------------------------------------------------------------------ 1. fp16 gradient underflow


def test_fp16_pgd_moves_confident_samples_like_fp32(confident):
    net, x, y, ok, margin = confident
    assert margin > 20  # past fp16's ~17: the plain loss gradient flushes to zero at the logits
    fp32 = _success(net, x, y, ok, pgd_linf, None)
    fp16 = _success(net, x, y, ok, pgd_linf, torch.float16)
    before = _success(net, x, y, ok, _old_pgd, torch.float16)
    assert fp32 > 0.8
    assert abs(fp16 - fp32) <= 0.05, (fp16, fp32)
    assert before < 0.5 * fp32  # the test sees the bug it guards against


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16])
def test_fp32_and_bf16_steps_are_unchanged(confident, amp_dtype):
    net, x, y, _, _ = confident
    kw = dict(eps=0.1, steps=3, alpha=0.01, init=random_start_noise(torch.arange(len(x)), tuple(x.shape[1:]), 0.1, seed=1),
              amp_dtype=amp_dtype)
    assert torch.equal(pgd_linf(net, x, y, **kw), _old_pgd(net, x, y, **kw))  # bit for bit


def test_logit_direction_is_the_rescaled_gradient():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    exact = torch.softmax(z, 1) - F.one_hot(y, 5)
    d = ce_logit_direction(z.float(), y).double()
    scale = -exact.gather(1, y.view(-1, 1))  # 1 - p_y > 0
    torch.testing.assert_close(d, exact / scale, rtol=1e-5, atol=1e-6)
    huge = torch.tensor([[1000.0, 0.0, -5.0]])  # p_y = 1 in any float: the plain gradient is all zeros
    d = ce_logit_direction(huge, torch.tensor([0]))
    assert torch.isfinite(d).all() and d[0, 0] == -1 and d[0, 1] > 0.99 and d.abs().max() == 1


# ------------------------------------------------------------------ 2. NaN/inf inside the attack


class NaNGradient(nn.Module):
    """Finite logits, NaN input gradient (the sqrt of a negative in a branch `where` does not take)."""

    def __init__(self):
        super().__init__()
        self.net = TinyCNN()

    def forward(self, x):
        trap = torch.where(x > 2, torch.sqrt(x - 2), torch.zeros_like(x)).flatten(1).sum(1, keepdim=True)
        return self.net(x) + 0 * trap


def test_nan_during_the_attack_is_a_one_line_model_error(digits_small):
    cfg = DataConfig(input_size=(1, 16, 16), mean=(0.5,), std=(0.5,))
    lm = LoadedModel(name="nan-model", spec="nan-model", module=ClassifierWrapper(NaNGradient(), cfg), num_classes=10,
                     weights_id="test:nan", kind="test")
    with torch.no_grad():
        assert torch.isfinite(lm.module(as_float(digits_small.images[:4]))).all()  # the clean check cannot see it
    with pytest.raises(ModelError, match="model nan-model produced NaN/inf gradients or adversarial images on 16 sample") as e:
        run_attack(lm, digits_small, AttackParams(eps=0.1, steps=2, attack_all=True), batch_size=16)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------ 3. numerics in provenance

NUMERICS = {"device", "amp", "mode", "deterministic_algorithms", "float32_matmul_precision", "gpu", "cuda", "cudnn",
            "tf32_matmul", "tf32_cudnn", "cudnn_deterministic", "cudnn_benchmark", "cublas_workspace_config",
            "sdpa_backends", "nondeterministic_ops"}
CUDA_ONLY = NUMERICS - {"device", "amp", "mode", "deterministic_algorithms", "float32_matmul_precision"}


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_attack_and_logits_files_record_numerics(tmp_path, digits_small, amp):
    p = AttackParams(eps=0.1, steps=2)
    a = save_attack(run_attack(tiny_model(), digits_small, p, batch_size=32, amp=amp), tmp_path / "a.safetensors")
    b = save_attack(run_attack(tiny_model(), digits_small, p, batch_size=32, amp=amp), tmp_path / "b.safetensors")
    assert _sha(a) == _sha(b)  # still byte-identical on the CPU
    la = save_logits(compute_logits(tiny_model(), digits_small, batch_size=32, amp=amp), tmp_path / "la.safetensors")
    lb = save_logits(compute_logits(tiny_model(), digits_small, batch_size=32, amp=amp), tmp_path / "lb.safetensors")
    assert _sha(la) == _sha(lb)
    for path, fmt in ((a, "satkit.attack"), (la, "satkit.logits")):
        num = read_satkit_file(path, fmt).provenance["numerics"]
        assert set(num) == NUMERICS
        assert num["device"] == "cpu" and num["amp"] == amp and num["mode"] == "default"
        assert num["deterministic_algorithms"] == "off" and num["float32_matmul_precision"] == "highest"
        assert all(num[k] is None for k in CUDA_ONLY), {k: num[k] for k in CUDA_ONLY}
    assert logits_from_attack(a).provenance["numerics"] == read_satkit_file(a, "satkit.attack").provenance["numerics"]


# ------------------------------------------------------------------ 4. the deterministic mode


def _global_state():
    b = torch.backends
    return (b.cudnn.deterministic, b.cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(), b.cuda.flash_sdp_enabled(), b.cuda.mem_efficient_sdp_enabled(),
            b.cuda.cudnn_sdp_enabled(), b.cuda.math_sdp_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
            torch.utils.deterministic.fill_uninitialized_memory)


def test_cuda_mode_is_applied_recorded_and_undone(monkeypatch):
    """The settings are global flags torch keeps on any build: set for a "cuda" device without a GPU."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = _global_state()
    with model_numerics(torch.device("cuda"), "bf16") as rec:
        b = torch.backends
        assert b.cudnn.deterministic and not b.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert b.cuda.math_sdp_enabled() and not (b.cuda.flash_sdp_enabled() or b.cuda.mem_efficient_sdp_enabled() or b.cuda.cudnn_sdp_enabled())
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.utils.deterministic.fill_uninitialized_memory is False  # a memset per allocation buys nothing here
        x = torch.zeros(4)
        for _ in range(3):  # put_ has no deterministic version on the CPU either: it warns, and is collected
            x.put_(torch.tensor([1, 1]), torch.tensor([1.0, 2.0]))
        with pytest.warns(UserWarning, match="unrelated"):
            warnings.warn("unrelated")  # other warnings pass through
    assert _global_state() == before
    assert rec["mode"] == "deterministic" and rec["device"] == "cuda" and rec["amp"] == "bf16"
    assert rec["cudnn_deterministic"] is True and rec["cudnn_benchmark"] is False and rec["sdpa_backends"] == ["math"]
    assert rec["deterministic_algorithms"] == "warn_only" and rec["cublas_workspace_config"] == ":4096:8"
    assert rec["nondeterministic_ops"] == ["put_"]


def test_cuda_mode_is_undone_after_an_error():
    before = _global_state()
    with pytest.raises(RuntimeError, match="boom"):
        with model_numerics(torch.device("cuda")):
            raise RuntimeError("boom")
    assert _global_state() == before


def test_cpu_mode_changes_nothing():
    before = _global_state()
    with model_numerics(torch.device("cpu")) as rec:
        assert _global_state() == before
    assert rec == numerics("cpu") and rec["mode"] == "default"


# ------------------------------------------------------------------ 5. one --amp rule


def test_bf16_source_correct_equals_transfer_and_logits(tmp_path):
    """Every evaluation runs under the attack's autocast: what the attack file says the source got right
    is what transfer and logits compute for the same model and --amp."""
    d = load_data("digits", n=96, seed=3)
    lm = load_model("digits/vit-s1")
    path = save_attack(run_attack(lm, d, AttackParams(eps=0.1, steps=1), batch_size=32, amp="bf16"), tmp_path / "a.safetensors")
    f = open_attack_files([path])[0]
    sc, clean_logits = f.get("source_correct"), f.get("clean_logits")
    lg = compute_logits(lm, d, batch_size=32, amp="bf16")
    assert torch.equal(lg.tensors["logits"], clean_logits)  # bit for bit
    assert torch.equal(lg.tensors["logits"].argmax(1) == d.labels, sc)
    lm.name = "same-model-other-name"  # not its own file: transfer predicts the clean images itself
    res = run_transfer(lm, [f], batch_size=32, amp="bf16", per_sample=True)
    ps = res.per_sample_table()
    assert ps["target_correct"].to_list() == sc.tolist()
    fp32 = compute_logits(lm, d, batch_size=32, amp="off").tensors["logits"]
    assert not torch.equal(fp32, clean_logits)  # bf16 really ran: the rule is not vacuous


# ------------------------------------------------------------------ 6. host work off the critical path


def test_device_conversion_table_gives_the_cpu_values():
    u = torch.arange(256, dtype=torch.uint8)
    t = uint8_table("cpu")
    assert t.dtype == torch.float32 and torch.equal(t, as_float(u))
    # what the table avoids: a multiplication by the reciprocal (CUDA's scalar division) is off in 126 values
    assert int((u.float() * (1 / 255.0) != as_float(u)).sum()) == 126
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8, generator=g)
    assert torch.equal(t[img.int()], as_float(img))
    for stored in (img, clean_for_storage(img, "float16"), clean_for_storage(img, "float32")):
        assert torch.equal(pixels_on(stored, "cpu"), as_float(stored))


def test_random_start_is_the_per_sample_draw():
    ids, shape, eps, seed = torch.tensor([5, 0, 17]), (2, 3, 3), 0.1, 4
    got = random_start_noise(ids, shape, eps, seed)
    for j, i in enumerate(ids.tolist()):
        g = torch.Generator().manual_seed((seed * 1_000_003 + i) % (2**63 - 1))
        assert torch.equal(got[j], torch.rand(shape, generator=g) * (2 * eps) - eps)


def _plain_attack(model, data, params, batch_size):
    """The attack loop without prefetching, device conversion, device quantization or deferred results."""
    clean_store = clean_for_storage(data.images, params.storage)
    adv, sc, sac, logits_all = torch.empty_like(clean_store), [], [], []
    for s in range(0, len(data), batch_size):
        sl = slice(s, min(s + batch_size, len(data)))
        x, y = as_float(clean_store[sl]), data.labels[sl]
        with torch.inference_mode():
            logits = model.module(x).float()
        init = random_start_noise(data.ids[sl], tuple(x.shape[1:]), params.eps, params.seed)
        a = pgd_linf(model.module, x, y, eps=params.eps, steps=params.steps, alpha=params.alpha, init=init)
        adv[sl] = quantize_adv(a, clean_store[sl], params.eps, params.storage)
        with torch.inference_mode():
            sac.append(model.module(as_float(adv[sl])).argmax(1) == y)
        sc.append(logits.argmax(1) == y)
        logits_all.append(logits)
    return {"clean": clean_store, "adv": adv, "source_correct": torch.cat(sc), "source_adv_correct": torch.cat(sac),
            "clean_logits": torch.cat(logits_all)}


@pytest.mark.parametrize("storage", ["uint8", "float16"])
def test_pipelined_attack_gives_the_plain_loop_tensors(digits_small, monkeypatch, storage):
    import threading

    import satkit.attacks.runner as runner

    params = AttackParams(eps=0.1, steps=3, storage=storage, seed=5, attack_all=True)
    threads = set()
    real = runner._pinned

    def pinned(t, device):
        threads.add(threading.current_thread().name)
        return real(t, device)

    monkeypatch.setattr(runner, "_pinned", pinned)
    got = run_attack(tiny_model(), digits_small, params, batch_size=16).tensors
    want = _plain_attack(tiny_model(), digits_small, params, 16)
    for k, v in want.items():
        assert torch.equal(got[k], v), k
    assert threads and all(n.startswith("satkit-prepare") for n in threads)  # the host work ran ahead, in the background
    # the default attacks only the samples the source gets right, gathered into full batches across the set:
    # those get the plain loop's adversarials exactly, the others keep their clean pixels
    from dataclasses import replace

    skip = run_attack(tiny_model(), digits_small, replace(params, attack_all=False), batch_size=16).tensors
    sc = want["source_correct"]
    assert 0 < int(sc.sum()) < len(sc)
    assert torch.equal(skip["adv"][sc], want["adv"][sc]) and torch.equal(skip["adv"][~sc], want["clean"][~sc])
    for k in ("clean", "source_correct", "clean_logits"):
        assert torch.equal(skip[k], want[k]), k


def test_predict_logits_reads_ahead_and_gives_the_plain_loop_logits(digits_small):
    lm = tiny_model()
    got = lm.predict_logits(digits_small.images, batch_size=7)
    with torch.inference_mode():
        want = torch.cat([lm.module(as_float(digits_small.images[s:s + 7])).float() for s in range(0, len(digits_small), 7)])
    assert torch.equal(got, want)


# ------------------------------------------------------------------ 7. --compile over many models


class Stack(nn.Module):
    def __init__(self, depth: int):
        super().__init__()
        self.body = nn.Sequential(*[nn.Linear(16, 16) for _ in range(depth)])
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.body(x.flatten(1)))


def test_compile_keeps_compiling_past_the_recompile_limit(monkeypatch):
    import functools

    import torch._dynamo

    from satkit.models.registry import prepare_model

    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    limit = torch._dynamo.config.recompile_limit
    cfg = DataConfig(input_size=(1, 4, 4), mean=(0.5,), std=(0.5,))
    compiled_per_model = []
    try:
        for depth in range(1, limit + 4):  # every model another graph: more graphs than the limit
            lm = LoadedModel(name=f"m{depth}", spec=f"m{depth}", module=ClassifierWrapper(Stack(depth), cfg), num_classes=10,
                             weights_id=f"test:{depth}", kind="test")
            lm = prepare_model(lm, compile=True)
            before = len(graphs)
            lm.module(torch.rand(3, 1, 4, 4))
            compiled_per_model.append(len(graphs) - before)
    finally:
        torch.compiler.reset()
    assert all(c >= 1 for c in compiled_per_model), compiled_per_model


# ------------------------------------------------------------------ 8. no host syncs in hot loops


@contextlib.contextmanager
def no_host_sync(monkeypatch):
    """Every Python-level way to read a tensor's value on the host (each one a device sync on a GPU),
    and building a tensor from Python numbers (a host-to-device copy), raises."""

    def boom(*a, **k):
        raise AssertionError("host sync in a hot loop")

    with monkeypatch.context() as m:
        for name in ("item", "__bool__", "__float__", "__int__", "tolist", "numpy"):
            m.setattr(torch.Tensor, name, boom)
        m.setattr(torch, "tensor", boom)
        yield


def _passthrough_model():
    from satkit.models.loaders.plain import PassThroughWrapper as _PassThroughWrapper
    from satkit.models.registry import ModelOptions

    opts = ModelOptions(mean=(0.5,), std=(0.25,))
    module = _PassThroughWrapper(TinyCNN(), DataConfig(input_size=(0, 0, 0), mean=(0.0,), std=(1.0,)), opts)
    return module


@pytest.mark.parametrize("which", ["zoo", "passthrough", "zoo-bf16", "zoo-fp16"])
def test_pgd_steps_never_sync(monkeypatch, digits_small, which):
    x, y = as_float(digits_small.images[:8]), digits_small.labels[:8]
    net = _passthrough_model() if which == "passthrough" else load_model("digits/resnet-s1").module
    amp = {"zoo-bf16": torch.bfloat16, "zoo-fp16": torch.float16}.get(which)
    init = random_start_noise(torch.arange(8), tuple(x.shape[1:]), 0.1, 0)
    with no_host_sync(monkeypatch):
        adv = pgd_linf(net, x, y, eps=0.1, steps=5, alpha=0.02, init=init, amp_dtype=amp)
    assert not torch.equal(adv, x)


def test_preprocess_without_buffers_never_syncs(monkeypatch):
    cfg = DataConfig(input_size=(3, 8, 8), mean=(0.4, 0.5, 0.6), std=(0.2, 0.2, 0.3))
    x = torch.rand(2, 1, 6, 6)
    want = preprocess(x, cfg)  # the first call makes the constants
    with no_host_sync(monkeypatch):
        for _ in range(3):
            assert torch.equal(preprocess(x, cfg), want)


def test_training_reads_the_device_once_per_epoch_not_per_step(monkeypatch, digits_small):
    """fit (zoo training, distillation): the loss, accuracy and finiteness are read at the end of an epoch."""
    import sys

    from satkit.models.train import fit

    reads = []

    def counted(name):
        real = getattr(torch.Tensor, name)

        def read(self, *a, **k):
            where = sys._getframe(1).f_code.co_filename
            if "torch/optim" not in where:  # the optimizers' step counters are CPU tensors even on a GPU: no sync
                reads.append((name, where))
            return real(self, *a, **k)
        return read

    for name in ("item", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    cfg = DataConfig(input_size=(1, 16, 16), mean=(0.5,), std=(0.5,))
    hist = fit(TinyCNN(), cfg, digits_small.images, digits_small.labels, epochs=2, lr=1e-3, batch_size=4, seed=0,
               weight_decay=0.0, label_smoothing=0.1, max_shift=1)
    steps = 2 * len(digits_small) // 4
    assert len(hist) == 2 and steps == 30
    assert len(reads) <= 4 * 2, reads  # a few per epoch, none per step


# ------------------------------------------------------------------ 9. the default batch size


def test_default_batch_size_is_auto_on_cuda_only(tmp_path, digits_small):
    from satkit.attacks import AttackParams as P
    from satkit.data import DataRequest
    from satkit.jobs import DEFAULT_BATCH_SIZE, AttackJob, attack_into_file
    from satkit.models.batching import default_batch_size, resolve_batch_size

    assert default_batch_size("cuda") == "auto" and default_batch_size(torch.device("cuda", 1)) == "auto"
    assert default_batch_size("cpu") == 128 and default_batch_size("mps") == 128
    assert default_batch_size("cuda", fixed=True) == 128  # shards cut the data alike on every device
    assert AttackJob("digits/resnet-s1").batch_size is DEFAULT_BATCH_SIZE is None
    assert resolve_batch_size(None, tiny_model(), digits_small.images[:1], kind="attack", n=500) == 128
    o = attack_into_file(AttackJob("digits/resnet-s1", data=DataRequest("digits", 20), params=P(eps=0.1, steps=1)),
                         tmp_path / "a.safetensors")
    assert o.header.batch_size == 128 and o.header.numerics["device"] == "cpu"


# ------------------------------------------------------------------ 10. executors


def report_threads(cfg, spec, device, progress=None):
    return (spec, device, torch.get_num_threads())


def die_hard(cfg, spec, device, progress=None):
    if spec == "exit":
        os._exit(3)
    if spec == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return spec


def _noop_progress(*a):
    pass


@pytest.mark.slow
def test_device_workers_get_a_thread_share():
    from satkit.study.executors import DeviceExecutor, cpu_share

    out = DeviceExecutor(["cpu", "cpu"]).run(report_threads, None, ["a", "b", "c"], "attack", _noop_progress)
    assert [o[0] for o in out] == ["a", "b", "c"] and {o[1] for o in out} == {"cpu"}
    assert {o[2] for o in out} == {cpu_share(2)}
    assert cpu_share(4, cpus=64) == 16 and cpu_share(3, cpus=2) == 1


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("how, words", [("exit", "exit code 3"), ("kill", "killed by SIGKILL")])
def test_a_worker_that_dies_fails_the_run_in_one_line(how, words):
    from satkit.study.executors import DeviceExecutor

    with pytest.raises(SatkitError) as e:
        DeviceExecutor(["cpu", "cpu"]).run(die_hard, None, ["ok1", how, "ok2", "ok3"], "attack", _noop_progress)
    msg = str(e.value)
    assert "\n" not in msg and "the worker for cpu died" in msg and words in msg and f"attack job of {how}" in msg


def test_ray_tasks_get_their_nodes_cpu_share():
    from satkit.study.executors import RAY_CPU_TASK_THREADS, ray_task_cpus

    assert ray_task_cpus([{"CPU": 64.0, "GPU": 8.0}, {"CPU": 96.0, "GPU": 8.0}]) == 8  # the smaller share fits everywhere
    assert ray_task_cpus([{"CPU": 4.0, "GPU": 8.0}]) == 1
    assert ray_task_cpus([{"CPU": 64.0, "GPU": 4.0}, {"CPU": 2.0}]) == 16  # CPU-only nodes take no GPU task
    assert ray_task_cpus([{"CPU": 64.0}]) == RAY_CPU_TASK_THREADS
    assert ray_task_cpus([{"CPU": 2.0}, {"CPU": 32.0}]) == 2
