"""Host work one step ahead of the device, in a background thread."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def ahead(fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """``fn(item)`` for each item, in order, each computed in a background thread while the
    caller works on the previous result. An exception of ``fn`` is raised where its result
    is taken; closing the iterator (or leaving a loop over it) joins the thread."""
    todo = list(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="satkit-prepare") as pool:
        nxt: Future | None = pool.submit(fn, todo[0]) if todo else None
        try:
            for k in range(len(todo)):
                assert nxt is not None
                current = nxt
                nxt = pool.submit(fn, todo[k + 1]) if k + 1 < len(todo) else None
                yield current.result()
        finally:
            if nxt is not None:
                nxt.cancel()


def pinned(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` in page-locked memory when it is going to a CUDA device (the copy then runs
    asynchronously, without syncing the device); unchanged otherwise."""
    return t.pin_memory() if device.type == "cuda" else t
