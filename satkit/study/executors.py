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
  worker process per device (``--devices cuda:0,cuda:1``), each with an equal
  share of the host's threads and its CUDA device current; progress per batch
  comes back through a queue, and a worker that dies fails the run.
- :class:`RayExecutor` submits each job as a Ray task asking for one GPU and its
  node's CPUs per GPU when the cluster has GPUs (else a few CPUs,
  :func:`ray_task_cpus`); progress per finished job.
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


def cpu_share(workers: int, cpus: int | None = None) -> int:
    """Host threads of each of ``workers`` processes sharing this machine's ``cpus`` (default: all)."""
    return max(1, (cpus or os.cpu_count() or 1) // max(1, workers))


def bind_worker(device: str, cpu_threads: int) -> None:
    """Set up a worker process for ``device``: its share of the host's threads (a GPU worker's host
    work is decoding, preparing batches and launching kernels; a CPU worker computes with them),
    and for CUDA its device as the current one (allocations, cuBLAS handles and streams there)."""
    import torch

    torch.set_num_threads(cpu_threads)
    if device.startswith("cuda"):
        from satkit.devices import resolve_device

        torch.cuda.set_device(resolve_device(device))


def _worker_main(device: str, cpu_threads: int, inbox: Any, outbox: Any) -> None:
    """A worker process: bind to ``device``, then run the jobs ``inbox`` brings until it brings None."""
    import importlib
    import pickle

    bind_worker(device, cpu_threads)
    while True:
        msg = inbox.get()
        if msg is None:
            return
        i, job_path, cfg, spec, stage = msg
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if done == total or now - last[0] > 0.2:  # a few updates per second are enough
                last[0] = now
                outbox.put(("progress", i, (stage, spec, done, total)))

        try:
            job = getattr(importlib.import_module(job_path[0]), job_path[1])
            outbox.put(("done", i, pickle.dumps(job(cfg, spec, device, progress=progress))))
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent, which raises it
            try:
                payload = pickle.dumps(e)
            except Exception:  # an exception that cannot travel: its text can
                payload = pickle.dumps(SatkitError(f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"))
            outbox.put(("error", i, payload))
            if not isinstance(e, Exception):
                raise


def _death(code: int | None) -> str:
    import signal

    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    return f"exit code {code}"


class DeviceExecutor:
    """One worker process per device; each takes the next job when it finishes one.

    Each worker gets an equal share of the host's CPU threads and, for CUDA, its device
    as the current one. A worker that dies without reporting (killed, out of memory,
    a crash in native code) fails the run with a one-line error naming its job; the
    other workers are stopped. Finished jobs' files stay: a rerun resumes.
    """

    name = "devices"

    def __init__(self, devices: list[str]):
        if not devices:
            raise ParameterError("--devices needs at least one device")
        self.devices = list(devices)

    def run(self, job, cfg, specs, stage, progress):
        if not specs:
            return []
        import pickle

        ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
        devices = self.devices[: len(specs)]
        threads = cpu_share(len(devices))
        outbox = ctx.Queue()
        workers = []
        for d in devices:
            inbox = ctx.Queue()
            proc = ctx.Process(target=_worker_main, args=(d, threads, inbox, outbox), name=f"satkit-worker-{d}", daemon=True)
            proc.start()
            workers.append({"device": d, "proc": proc, "inbox": inbox, "job": None})
        path = (job.__module__, job.__name__)
        todo = list(range(len(specs)))
        results: list[Any] = [None] * len(specs)

        def assign(w: dict) -> None:
            w["job"] = todo.pop(0) if todo else None
            if w["job"] is not None:
                w["inbox"].put((w["job"], path, cfg, specs[w["job"]], stage))

        def handle(kind: str, i: int, payload: Any) -> None:
            if kind == "progress":
                progress(*payload)
            elif kind == "error":
                raise pickle.loads(payload)
            else:
                results[i] = pickle.loads(payload)
                for w in workers:
                    if w["job"] == i:
                        assign(w)

        try:
            for w in workers:
                assign(w)
            while any(w["job"] is not None for w in workers):
                try:
                    handle(*outbox.get(timeout=0.2))
                except queue.Empty:
                    pass
                for w in workers:  # every round: other workers' progress must not hide a death
                    if w["job"] is not None and not w["proc"].is_alive():
                        i = w["job"]
                        w["job"] = None  # takes no more jobs
                        deadline = time.monotonic() + 2.0
                        while time.monotonic() < deadline:  # what it sent before dying still counts
                            try:
                                handle(*outbox.get(timeout=0.5))
                            except queue.Empty:
                                break
                        what = f"while running the {stage} job of {specs[i]}" if results[i] is None else "after its last job"
                        raise SatkitError(f"the worker for {w['device']} died ({_death(w['proc'].exitcode)}) {what}; "
                                          "rerun to resume (finished jobs are kept)")
            return results
        finally:
            for w in workers:
                if w["proc"].is_alive() and w["job"] is None:
                    w["inbox"].put(None)
            for w in workers:
                w["proc"].join(timeout=5 if w["job"] is None else 0)
                if w["proc"].is_alive():
                    w["proc"].terminate()  # on error (or Ctrl-C): stop the other devices' jobs now
                    w["proc"].join(timeout=5)
                if w["proc"].is_alive():
                    w["proc"].kill()
                    w["proc"].join()
            outbox.close()
            outbox.cancel_join_thread()


# --------------------------------------------------------------------------- Ray


RAY_CPU_TASK_THREADS = 4  # a CPU-only task: enough threads for torch's kernels, several tasks per node


def ray_task_cpus(nodes: list[dict[str, float]]) -> int:
    """CPUs (host threads) each Ray task asks for, from the alive nodes' resources.

    With GPUs: the smallest CPUs-per-GPU share over the nodes that have GPUs (a task
    then fits beside every other GPU task on any of them), at least 1. Without:
    ``RAY_CPU_TASK_THREADS``, or the smallest node's CPUs if fewer.
    """
    gpu_nodes = [r for r in nodes if r.get("GPU", 0) >= 1]
    if gpu_nodes:
        return max(1, min(int(r.get("CPU", 1) // r["GPU"]) for r in gpu_nodes))
    cpus = [int(r.get("CPU", 1)) for r in nodes] or [1]
    return max(1, min(RAY_CPU_TASK_THREADS, min(cpus)))


def _ray_job(job_path: tuple[str, str], cfg: Any, spec: str, cpus: int):
    import importlib

    import ray

    job = getattr(importlib.import_module(job_path[0]), job_path[1])
    device = "cuda:0" if ray.get_gpu_ids() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU
    bind_worker(device, cpus)  # a reused Ray worker may have run a task with another share
    return job(cfg, spec, device)


class RayExecutor:
    """Each job a Ray task (one GPU per task where the cluster has GPUs; CPUs: :func:`ray_task_cpus`).

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
        cpus = ray_task_cpus([n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")])
        task = ray.remote(num_gpus=1, num_cpus=cpus)(_ray_job) if gpus else ray.remote(num_cpus=cpus)(_ray_job)
        path = (job.__module__, job.__name__)
        refs = {task.remote(path, cfg, s, cpus): i for i, s in enumerate(specs)}
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


def choose_executor(devices: str | None = None, ray: str | None = None, device: Any = "cpu") -> tuple[Any, Any, str]:
    """(executor or None, the device this process uses, where the jobs run in words) for ``devices``
    (one worker per device) or ``ray`` (a cluster address), or neither (here, on ``device``).
    Either works with every sampling plan: each chunk of an adaptive study is dispatched like a fixed study.
    A :class:`RayExecutor` must be entered (``with``) around the run."""
    from satkit.devices import resolve_device

    if devices is not None and ray is not None:
        raise ParameterError("devices cannot be combined with ray: give one of the two")
    if devices is not None:
        devs = parse_devices(devices)
        return DeviceExecutor(devs), resolve_device(devs[0]), f"{len(devs)} device workers ({', '.join(devs)})"
    if ray is not None:
        return RayExecutor(ray), resolve_device(device), f"Ray ({ray})"
    return None, resolve_device(device), ""
