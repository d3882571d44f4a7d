"""Device selection (``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``), autocast modes, and the
numerics every model evaluation runs under (:func:`model_numerics`), recorded in provenance."""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from typing import Any, Iterator

import torch

from satkit.errors import DeviceError, ParameterError

# cuBLAS reads this when it creates a handle (the first matmul of a process on a device):
# with it, cuBLAS picks reproducible reductions. Set before any CUDA work (resolve_device).
CUBLAS_WORKSPACE = ":4096:8"


def resolve_device(spec: str | None = "auto") -> torch.device:
    """Turn a ``--device`` value into a torch.device, or raise a one-line DeviceError."""
    dev = _resolve_device(spec)
    if dev.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    return dev


def _resolve_device(spec: str | None) -> torch.device:
    s = (spec or "auto").strip().lower()
    if s == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise DeviceError("device 'mps' is not available on this machine; use --device cpu or auto")
        return torch.device("mps")
    m = re.fullmatch(r"cuda(?::(\d+))?", s)
    if m:
        if not torch.cuda.is_available():
            raise DeviceError(f"device '{spec}' requested but CUDA is not available here; use --device cpu or auto")
        idx = int(m.group(1) or 0)
        n = torch.cuda.device_count()
        if idx >= n:
            raise DeviceError(f"device '{spec}' does not exist: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
        return torch.device("cuda", idx)
    raise DeviceError(f"unknown device '{spec}'; use cpu, cuda, cuda:N, mps or auto")


AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_amp(amp: str | None, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``--amp``; fp16 autocast needs CUDA (or MPS)."""
    a = (amp or "off").lower()
    if a not in AMP_DTYPES:
        raise ParameterError(f"unknown --amp '{amp}'; use bf16, fp16 or off")
    dt = AMP_DTYPES[a]
    if dt is torch.float16 and device.type == "cpu":
        raise ParameterError("--amp fp16 needs a GPU; on CPU use --amp bf16 or off")
    return dt


# ----------------------------------------------------------------------------- numerics

_NONDETERMINISTIC = re.compile(r"^(\S+) does not have a deterministic implementation")


@contextlib.contextmanager
def model_numerics(device: torch.device | str, amp: str = "off") -> Iterator[dict[str, Any]]:
    """Run model evaluations (attack, transfer, logits, the batch-size probe) in satkit's numerics mode.

    On CUDA the mode is deterministic: cuDNN deterministic with benchmarking off (an
    algorithm picked by timing can differ between runs), the math attention backend
    (the fused ones have non-deterministic backward passes), and
    ``torch.use_deterministic_algorithms(True, warn_only=True)``: a kernel that has no
    deterministic version (e.g. the backward of bicubic or antialiased resizing) still
    runs, and its name is collected in ``nondeterministic_ops`` instead of a warning.
    Elsewhere nothing changes: CPU kernels give the same bits for the same inputs,
    thread count and batch size.

    Yields the :func:`numerics` record of the run (``nondeterministic_ops`` is filled on
    exit). Every global setting it touches is restored on exit.
    """
    device = torch.device(device)
    if device.type != "cuda":
        yield numerics(device, amp)
        return
    import torch.utils.deterministic as det
    from torch.nn.attention import SDPBackend, sdpa_kernel

    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             det.fill_uninitialized_memory)
    had_env = "CUBLAS_WORKSPACE_CONFIG" in os.environ
    ops: set[str] = set()
    show = warnings.showwarning

    def collect(message, category, filename, lineno, file=None, line=None):
        m = _NONDETERMINISTIC.match(str(message))
        if m:
            ops.add(m.group(1))
        else:
            show(message, category, filename, lineno, file, line)

    try:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        # results never read uninitialized memory; filling every new tensor with NaN would cost a
        # memset per allocation
        det.fill_uninitialized_memory = False
        with sdpa_kernel([SDPBackend.MATH]), warnings.catch_warnings():
            warnings.filterwarnings("always", message=_NONDETERMINISTIC.pattern)  # each one, not once per place
            warnings.showwarning = collect
            record = numerics(device, amp, nondeterministic_ops=[])
            yield record
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
        det.fill_uninitialized_memory = saved[4]
        if not had_env:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    record["nondeterministic_ops"] = sorted(ops)


def numerics(device: torch.device | str, amp: str = "off", nondeterministic_ops: list[str] | None = None) -> dict[str, Any]:
    """What decided the numbers of a run on ``device``: stored as ``provenance["numerics"]``.

    The CUDA fields are None on other devices. ``mode`` is ``deterministic`` when
    :func:`model_numerics` set CUDA's deterministic kernels, ``default`` elsewhere.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    algos = ("warn_only" if torch.is_deterministic_algorithms_warn_only_enabled() else "on") \
        if torch.are_deterministic_algorithms_enabled() else "off"
    return {
        "device": device.type,
        "amp": amp or "off",
        "mode": "deterministic" if cuda and torch.backends.cudnn.deterministic and algos != "off" else "default",
        "deterministic_algorithms": algos,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "gpu": torch.cuda.get_device_name(device) if cuda and torch.cuda.is_available() else None,
        "cuda": (torch.version.cuda or f"hip {torch.version.hip}") if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32) if cuda else None,
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32) if cuda else None,
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic) if cuda else None,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark) if cuda else None,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG") if cuda else None,
        "sdpa_backends": _sdpa_backends() if cuda else None,
        "nondeterministic_ops": (list(nondeterministic_ops) if nondeterministic_ops is not None else None) if cuda else None,
    }


def _sdpa_backends() -> list[str]:
    b = torch.backends.cuda
    flags = {"flash": b.flash_sdp_enabled(), "mem_efficient": b.mem_efficient_sdp_enabled(),
             "cudnn": b.cudnn_sdp_enabled(), "math": b.math_sdp_enabled()}
    return [k for k, on in flags.items() if on]
