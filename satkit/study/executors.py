"""Where a study's jobs run: in this process, one process per device, or as Ray tasks.

A study is two waves of independent jobs (see :mod:`satkit.study`): one attack
job per model, then one transfer job per target. A job is a module-level
function ``job(cfg, spec, device, progress=None, clean=None) -> JobReport``
that reads and writes only files under the study directory, skips work whose
output already exists and matches, and writes every file atomically. So any
executor that runs each job once, anywhere the study directory is visible,
gives the same files as a run in this process.

- :class:`LocalExecutor` runs jobs one after another on one device (progress per batch).
- :class:`DeviceExecutor` runs one job per device at a time, in one spawned
  worker process per device (``--devices cuda:0,cuda:1``); progress per batch
  comes back through a queue.
- :class:`RayExecutor` submits each job as a Ray task asking for one GPU when
  the cluster has GPUs (else one CPU); progress per finished job.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from typing import Any, Callable, Protocol

from satkit.errors import ParameterError, SatkitError

# progress(stage, spec, done, total)
JobProgress = Callable[[str, str, int, int], None]


class Executor(Protocol):
    name: str

    def run(self, job: Callable[..., Any], cfg: Any, specs: list[str], stage: str, progress: JobProgress) -> list[Any]:
        """Run ``job(cfg, spec, device, ...)`` for every spec; return the reports in ``specs`` order."""
        ...


class LocalExecutor:
    """Jobs one after another in this process, on one device."""

    name = "local"

    def __init__(self, device: Any = "cpu", clean: Any = None):
        self.device = device
        self.clean = clean  # the clean set, already loaded by the study

    def run(self, job, cfg, specs, stage, progress):
        out = []
        for spec in specs:
            out.append(job(cfg, spec, self.device, progress=lambda d, t, s=spec: progress(stage, s, d, t), clean=self.clean))
        return out


def parse_devices(value: str) -> list[str]:
    """``"cuda:0,cuda:1"`` -> ``["cuda:0", "cuda:1"]``; each must resolve (checked here, before any work)."""
    from satkit.devices import resolve_device

    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ParameterError("--devices needs a comma-separated list, e.g. cuda:0,cuda:1")
    out = []
    for it in items:
        if it.lower() == "auto":
            raise ParameterError("--devices takes explicit devices (cpu, cuda:N, mps), not auto")
        out.append(str(resolve_device(it)))
    return out


# --------------------------------------------------------------------------- one process per device

_WORKER_DEVICE: str | None = None


def _init_worker(devices: "mp.Queue[str]", cpu_threads: int) -> None:
    global _WORKER_DEVICE
    try:
        _WORKER_DEVICE = devices.get(timeout=30)
    except queue.Empty:  # pragma: no cover - more workers than devices cannot happen (pool size = devices)
        _WORKER_DEVICE = "cpu"
    if _WORKER_DEVICE == "cpu":
        import torch

        torch.set_num_threads(cpu_threads)


def _run_in_worker(job_path: tuple[str, str], cfg: Any, spec: str, stage: str, progress_q: Any):
    import importlib

    job = getattr(importlib.import_module(job_path[0]), job_path[1])
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 0.2:  # a few updates per second are enough
            last[0] = now
            progress_q.put((stage, spec, done, total))

    return job(cfg, spec, _WORKER_DEVICE, progress=progress)


class DeviceExecutor:
    """One worker process per device; each takes the next job when it finishes one."""

    name = "devices"

    def __init__(self, devices: list[str]):
        if not devices:
            raise ParameterError("--devices needs at least one device")
        self.devices = list(devices)

    def run(self, job, cfg, specs, stage, progress):
        if not specs:
            return []
        ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
        n_cpu = sum(1 for d in self.devices if d == "cpu")
        cpu_threads = max(1, (os.cpu_count() or 1) // max(1, n_cpu))
        with ctx.Manager() as manager:
            dev_q = manager.Queue()
            for d in self.devices:
                dev_q.put(d)
            prog_q = manager.Queue()
            pool = ctx.Pool(processes=min(len(self.devices), len(specs)),
                            initializer=_init_worker, initargs=(dev_q, cpu_threads))
            try:
                path = (job.__module__, job.__name__)
                handles = [pool.apply_async(_run_in_worker, (path, cfg, s, stage, prog_q)) for s in specs]
                pending = set(range(len(handles)))
                while pending:
                    self._drain(prog_q, progress)
                    for i in list(pending):
                        if handles[i].ready():
                            pending.discard(i)
                            if not handles[i].successful():
                                handles[i].get()  # re-raises the worker's exception here
                    if pending:
                        time.sleep(0.05)
                self._drain(prog_q, progress)
                results = [h.get() for h in handles]
                pool.close()
                pool.join()
                return results
            finally:
                pool.terminate()  # on error (or Ctrl-C): stop the other devices' jobs now

    @staticmethod
    def _drain(q, progress) -> None:
        while True:
            try:
                stage, spec, d, t = q.get_nowait()
            except queue.Empty:
                return
            progress(stage, spec, d, t)


# --------------------------------------------------------------------------- Ray


def _ray_job(job_path: tuple[str, str], cfg: Any, spec: str):
    import importlib

    import ray

    job = getattr(importlib.import_module(job_path[0]), job_path[1])
    device = "cuda:0" if ray.get_gpu_ids() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU
    return job(cfg, spec, device)


class RayExecutor:
    """Each job a Ray task (one GPU per task where the cluster has GPUs, else one CPU).

    The study directory must be on storage every node sees (NFS, a shared disk):
    tasks read the attack files and write their outputs there. ``address`` is
    passed to ``ray.init``: ``auto`` joins a running cluster, ``ray://host:10001``
    a remote one, ``local`` starts a private instance on this machine.
    """

    name = "ray"

    def __init__(self, address: str):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise SatkitError("--ray needs Ray: pip install 'satkit[ray]'") from None
        self.address = address
        self._started = False

    def __enter__(self):
        import logging

        import ray

        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING, configure_logging=True)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise SatkitError(f"cannot connect to Ray at '{self.address}': {' '.join(str(e).split())[:160]}") from None
            self._started = True
        return self

    def __exit__(self, *exc):
        import ray

        if self._started:
            ray.shutdown()
            self._started = False

    def run(self, job, cfg, specs, stage, progress):
        import ray

        if not specs:
            return []
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(num_gpus=1, num_cpus=1)(_ray_job) if gpus else ray.remote(num_cpus=1)(_ray_job)
        path = (job.__module__, job.__name__)
        refs = {task.remote(path, cfg, s): i for i, s in enumerate(specs)}
        results: list[Any] = [None] * len(specs)
        for s in specs:
            progress(stage, s, 0, 1)
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
                for r in ready:
                    i = refs[r]
                    try:
                        results[i] = ray.get(r)
                    except ray.exceptions.RayTaskError as e:
                        cause = getattr(e, "cause", None)
                        if isinstance(cause, SatkitError):
                            raise type(cause)(str(cause)) from None
                        raise SatkitError(f"Ray task for {specs[i]} failed: {' '.join(str(cause or e).split())[:200]}") from None
                    progress(stage, specs[i], 1, 1)
        except BaseException:
            for r in pending:
                ray.cancel(r, force=True)
            raise
        return results
