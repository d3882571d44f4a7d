"""Pretrained timm weights: from the local cache, or downloaded within a bounded time, or one line saying what to do.

Every network use for a timm name (``resnet50``, ``resnet50.a1_in1k``) or a hub name
(``hf-hub:timm/resnet18.a1_in1k``) happens here, before timm builds anything:

1. where the weights live: the hub repo and file (or URL) timm would read, and the
   cache folder it looks in;
2. already cached: timm then loads them with the hub in offline mode (no network at all);
3. not cached and ``HF_HUB_OFFLINE`` set: the answer is known, no network is asked;
4. otherwise one short probe of the endpoint through huggingface_hub's own session
   (so ``HF_ENDPOINT``'s scheme and port, proxies and TLS settings apply), once per
   process; an endpoint that does not answer within the probe time is "unreachable";
5. the download itself runs in a worker thread bounded by ``SATKIT_HUB_TIMEOUT``
   seconds of wall-clock time (default :data:`DEFAULT_HUB_TIMEOUT`), whatever the
   server does (accept and never answer, trickle bytes, retry).

Each failure is a :class:`ModelError` of one line naming the repo and file, the cache
folder, ``HF_HUB_OFFLINE=1``, a local weights file with ``--arch`` and ``--random-init``.

This module imports neither torch nor timm at import time: :func:`early_answer`
answers steps 1-4 for the CLI before the seconds of torch/timm start-up, from the
table ``timm_weights.py`` (used only with the timm version it was made from).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from satkit.errors import ModelError

HF_HUB_PREFIX = "hf-hub:"
HUB_TIMEOUT_ENV = "SATKIT_HUB_TIMEOUT"
DEFAULT_HUB_TIMEOUT = 600.0  # s for the whole download of one model's files (a 1 GB ViT-L at ~2 MB/s)
MAX_HUB_TIMEOUT = 86400.0  # s; anything longer is a typo
PROBE_TIMEOUT = 5.0  # s for the endpoint to answer one HEAD request (capped by SATKIT_HUB_TIMEOUT)
READ_TIMEOUT = 10.0  # s huggingface_hub waits for a metadata answer (its own default), capped likewise
SAFE, BIN = "model.safetensors", "pytorch_model.bin"  # timm's file names on the hub (safetensors tried first)
_MODEL_FILE = re.compile(r".*\.(safetensors|pt2?|pth|ts|bin|ckpt)$", re.IGNORECASE)


# ------------------------------------------------------------------ settings


def hub_timeout() -> float:
    """Seconds a whole download may take: ``SATKIT_HUB_TIMEOUT`` or :data:`DEFAULT_HUB_TIMEOUT`."""
    raw = os.environ.get(HUB_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_HUB_TIMEOUT
    try:
        t = float(raw)
    except ValueError:
        t = float("nan")
    if not 0 < t <= MAX_HUB_TIMEOUT:  # also false for nan
        raise ModelError(f"{HUB_TIMEOUT_ENV} is seconds for a hub download, from 0 to {MAX_HUB_TIMEOUT:g} (exclusive of 0), got '{raw}'")
    return t


def _constants():
    import huggingface_hub.constants as hc  # light: no HTTP stack

    return hc


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set, read now and as huggingface_hub read it at import."""
    hc = _constants()
    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return bool(hc.HF_HUB_OFFLINE) or (env or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def endpoint() -> str:
    return str(_constants().ENDPOINT).rstrip("/")


# ------------------------------------------------------------------ where the weights live


@dataclass(frozen=True)
class Weights:
    """What timm would read for one model spec, and where it caches it."""

    spec: str  # as the user gave it
    arch: str  # timm architecture for `--arch` ("ARCH" when only the hub's config.json says)
    repo: str | None = None  # hub repo id
    revision: str | None = None
    files: tuple[tuple[str, ...], ...] = ()  # each entry: alternatives, the first one found is used
    url: str | None = None  # a plain URL (torch hub cache) instead of a hub repo
    hub_name: bool = False  # an hf-hub: spec (needs config.json even for random init)
    pretrained: bool = True

    def cache_dir(self) -> Path:
        if self.repo is not None:
            return Path(_constants().HF_HUB_CACHE) / ("models--" + self.repo.replace("/", "--"))
        return _torch_hub_checkpoints()

    def url_file(self) -> Path:
        from urllib.parse import urlparse

        return _torch_hub_checkpoints() / os.path.basename(urlparse(self.url or "").path)


def _torch_hub_checkpoints() -> Path:
    # torch.hub.get_dir() without importing torch: $TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def _weight_files(filename: str | None) -> tuple[str, ...]:
    """The files timm's load_state_dict_from_hf tries, in order."""
    if filename and filename.endswith(".safetensors"):
        return (filename,)
    if not filename or filename == BIN:
        return (SAFE, BIN)
    if filename == "open_clip_pytorch_model.bin":
        return ("open_clip_model.safetensors", filename)
    if filename.endswith(".bin"):
        return (filename[: -len(".bin")] + ".safetensors", filename)
    return (filename,)


def source_of_cfg(cfg: dict[str, Any], name: str = "") -> str | None:
    """Where timm's load_pretrained reads a pretrained config's weights: ``hub:REPO[:FILE]``, ``url:URL`` or None.

    Mirrors timm.models._builder._resolve_pretrained_source (hub preferred to url); ``name``
    (architecture.tag) completes a registered ``timm/`` as timm's registry does.
    """
    if cfg.get("state_dict") or cfg.get("file"):
        return None  # nothing to fetch
    hub = cfg.get("hf_hub_id")
    if hub:
        if hub.endswith("/") and name:
            hub += name
        fn = cfg.get("hf_hub_filename")
        return f"hub:{hub}" + (f":{fn}" if fn else "")
    if cfg.get("url"):
        return f"url:{cfg['url']}"
    return None


def _from_source(spec: str, arch: str, src: str) -> Weights:
    if src.startswith("url:"):
        return Weights(spec, arch, url=src[4:])
    repo, _, fn = src[4:].partition(":")
    repo, _, rev = repo.partition("@")
    return Weights(spec, arch, repo=repo, revision=rev or None, files=(_weight_files(fn or None),))


def hub_weights(spec: str, pretrained: bool) -> Weights:
    """An ``hf-hub:ORG/REPO[@REV]`` spec: its config.json (always) and weights (when pretrained)."""
    repo, _, rev = spec.removeprefix(HF_HUB_PREFIX).partition("@")
    org, _, rest = repo.partition("/")
    arch = rest.split(".", 1)[0] if org == "timm" else "ARCH"  # timm's own repos are named <architecture>.<tag>
    files = (("config.json",),) + ((_weight_files(None),) if pretrained else ())
    return Weights(spec, arch, repo=repo, revision=rev or None, files=files, hub_name=True, pretrained=pretrained)


def timm_weights(name: str) -> Weights | None:
    """What ``timm.create_model(name, pretrained=True)`` reads (asks timm: imports torch); None: nothing to fetch."""
    import timm.models

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    src = source_of_cfg(cfg.to_dict(), f"{cfg.architecture}.{cfg.tag}" if cfg.tag else str(cfg.architecture))
    return _from_source(name, name.split(".", 1)[0], src) if src else None


def _table_weights(name: str) -> Weights | None:
    """The same answer from the generated table, without timm; None when the table cannot say."""
    try:
        from importlib.metadata import version

        from satkit.models import timm_weights as table

        if version("timm") != table.TIMM_VERSION:
            return None
    except Exception:  # no timm, or no table
        return None
    arch, _, tag = name.partition(".")
    tags = table.TAGS.get(arch, ())
    tag = tag or (tags[0] if tags else "")
    if tag not in tags:
        return None  # unknown architecture or tag, or no weights to fetch: timm's own answer says which
    full = f"{arch}.{tag}"
    return _from_source(name, arch, table.OTHER_SOURCE.get(full, f"hub:timm/{full}"))


# ------------------------------------------------------------------ the cache


def _cached(repo: str, revision: str | None, filename: str) -> Path | None:
    """The cached file huggingface_hub would return offline (its cache layout), or None."""
    folder = Path(_constants().HF_HUB_CACHE) / ("models--" + repo.replace("/", "--"))
    rev = revision or "main"
    ref = folder / "refs" / rev
    try:
        commit = ref.read_text(encoding="utf-8").strip() if ref.is_file() else rev
    except OSError:
        return None
    p = folder / "snapshots" / commit / filename
    return p if p.is_file() else None


def _missing(w: Weights) -> list[tuple[str, ...]]:
    """The file groups of ``w`` not in the local cache."""
    if w.url is not None:
        return [] if w.url_file().is_file() else [(w.url_file().name,)]
    assert w.repo is not None
    return [g for g in w.files if not any(_cached(w.repo, w.revision, f) for f in g)]


# ------------------------------------------------------------------ the network, bounded


_PROBED: dict[str, str | None] = {}  # endpoint -> None (it answers) or why not; once per process


def probe(url: str, seconds: float) -> str | None:
    """None when ``url`` answers a HEAD request within ``seconds`` (any HTTP status); else why not."""
    if url in _PROBED:
        return _PROBED[url]

    def ask() -> None:
        from huggingface_hub.utils import get_session

        get_session().head(url + "/", timeout=seconds)

    why = _bounded(ask, seconds + 1.0, f"no answer within {seconds:g} s")
    if why and "Timeout" in why.split(":", 1)[0]:  # httpx's ConnectTimeout, ReadTimeout, ...
        why = f"no answer within {seconds:g} s"
    _PROBED[url] = why
    return why


def _bounded(fn: Callable[[], None], seconds: float, timeout_text: str) -> str | None:
    """Run ``fn`` in a daemon thread for at most ``seconds`` of wall-clock time: None, or why it failed.

    A thread still blocked at the deadline is left behind (a daemon: it cannot keep the
    process alive, and huggingface_hub's own timeouts end it later).
    """
    err: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # reported to the caller's thread
            err.append(e)

    t = threading.Thread(target=run, name="satkit-hub", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        return timeout_text
    if err:
        return _why(err[0])
    return None


def _why(e: BaseException) -> str:
    name = type(e).__name__
    text = " ".join(str(e).split())
    text = text.splitlines()[0] if text else ""
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{name}: {text}" if text else name


class _NotOnHub(Exception):
    """The hub answered: this repo or file does not exist (or is gated/private)."""


def _download(w: Weights, groups: list[tuple[str, ...]], seconds: float) -> None:
    if w.url is not None:
        def fetch_url() -> None:
            import torch.hub

            dst = w.url_file()
            dst.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(w.url, str(dst), progress=False)

        why = _bounded(fetch_url, seconds, f"the download did not finish within {seconds:g} s ({HUB_TIMEOUT_ENV})")
        if why:
            raise ModelError(message(w, f"the download of {w.url} failed ({why})"))
        return

    def fetch_hub() -> None:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

        for group in groups:
            for i, f in enumerate(group):
                try:
                    hf_hub_download(w.repo, f, revision=w.revision, cache_dir=_constants().HF_HUB_CACHE,
                                    etag_timeout=min(READ_TIMEOUT, seconds))
                    break
                except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError) as e:
                    raise _NotOnHub(f"the hub has no (public) repo {w.repo}" + (f"@{w.revision}" if w.revision else "")
                                    + f" ({type(e).__name__})") from None
                except EntryNotFoundError:
                    if i == len(group) - 1:
                        raise _NotOnHub(f"the hub repo {w.repo} has no {' or '.join(group)}") from None

    with _no_progress_bars():
        why = _bounded(fetch_hub, seconds,
                       f"the download from {endpoint()} did not finish within {seconds:g} s ({HUB_TIMEOUT_ENV})")
    if why:
        raise ModelError(message(w, why.split(": ", 1)[1] if why.startswith("_NotOnHub: ") else
                                 (why if "did not finish" in why else f"the download from {endpoint()} failed ({why})")))


@contextlib.contextmanager
def _no_progress_bars():
    # the library never prints: huggingface_hub draws tqdm bars on stderr while downloading
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was:
            enable_progress_bars()


def ensure_local(w: Weights) -> None:
    """Make every file ``w`` names local (cache, or a bounded download), or raise the one-line ModelError."""
    seconds = hub_timeout()  # a bad setting is refused whether or not it is needed this time
    groups = _missing(w)
    if not groups:
        return
    if w.url is None:
        ensure_local_without_download(w)
    elif hub_offline():
        raise ModelError(message(w, "HF_HUB_OFFLINE is set and they are not in the local torch hub cache"))
    _download(w, groups, seconds)


def message(w: Weights, reason: str) -> str:
    """One line: what failed, what timm reads and where it caches it, and what to do instead."""
    ep = endpoint()
    if w.url is not None:
        fn = w.url_file()
        return (
            f"pretrained weights for '{w.spec}' cannot be downloaded: {reason}. timm reads {w.url} from the torch hub "
            f"cache {fn.parent}; fetch that file where there is network and put it there (then HF_HUB_OFFLINE=1 uses the "
            f"cache only), or pass a local weights file: `satkit ... {fn.name} --arch {w.arch}`, "
            f"or try the pipeline without weights: --random-init"
        )
    assert w.repo is not None
    weights = w.files[-1][0] if w.pretrained and w.files else SAFE
    wanted = " ".join(g[0] for g in w.files) if w.files else weights
    rev = f" --revision {w.revision}" if w.revision else ""
    resolve = f"{ep}/{w.repo}/resolve/{w.revision or 'main'}/{weights}"
    arch_hint = ", ARCH being the 'architecture' named in its config.json" if w.arch == "ARCH" else ""
    if w.hub_name:
        what = f"the files of '{w.spec}' cannot be downloaded: {reason}. timm reads {' and '.join(g[0] for g in w.files)} of the hub repo {w.repo}"
    else:
        what = f"pretrained weights for '{w.spec}' cannot be downloaded: {reason}. timm reads {weights} of the hub repo {w.repo}"
    tail = "" if not w.pretrained else ", or try the pipeline without weights: --random-init" + (
        " (a hub name still needs its config.json)" if w.hub_name else "")
    return (
        f"{what} from the cache folder {w.cache_dir()}; fetch it where there is network (`hf download {w.repo} {wanted}{rev}`, "
        f"then copy that folder here; HF_HUB_OFFLINE=1 then reads the cache only), or download {resolve} and pass the "
        f"file: `satkit ... {weights} --arch {w.arch}`{arch_hint}{tail}"
    )


# ------------------------------------------------------------------ entry points


def _looks_like_timm_name(spec: str, arch: str | None) -> bool:
    if arch or not spec or spec.startswith(("digits/", HF_HUB_PREFIX)) or "/" in spec or os.sep in spec:
        return False
    return not _MODEL_FILE.match(spec) and not os.path.exists(spec) and bool(re.fullmatch(r"[\w.-]+", spec))


def early_answer(spec: str, pretrained: bool = True, arch: str | None = None) -> None:
    """For the CLI, before torch/timm are imported: raise the one-line ModelError when the
    weights ``spec`` needs are not cached and cannot be fetched (offline, or the endpoint
    does not answer the probe). Returns silently whenever it cannot be sure (the loader then decides)."""
    try:
        if spec.startswith(HF_HUB_PREFIX):
            if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?", spec.removeprefix(HF_HUB_PREFIX)):
                return  # the loader's message says what a hub name looks like
            w = hub_weights(spec, pretrained)
        elif pretrained and _looks_like_timm_name(spec, arch):
            w = _table_weights(spec)
            if w is None:
                return
        else:
            return
        hub_timeout()  # a bad setting is refused whether or not it is needed this time
        if _missing(w):
            if w.url is not None and not hub_offline():
                return  # a plain URL: the loader downloads it, bounded
            ensure_local_without_download(w)
    except ModelError:
        raise
    except Exception:  # never let the shortcut fail where the loader would succeed
        return


def ensure_local_without_download(w: Weights) -> None:
    """The part of :func:`ensure_local` that needs no download: offline, or an endpoint that does not answer."""
    if hub_offline():
        where = "Hugging Face" if w.url is None else "torch hub"
        raise ModelError(message(w, f"HF_HUB_OFFLINE is set and they are not in the local {where} cache"))
    seconds = hub_timeout()
    why = probe(endpoint(), min(PROBE_TIMEOUT, seconds))
    if why:
        raise ModelError(message(w, f"they are not in the local cache and the hub {endpoint()} cannot be reached ({why})"))


@contextlib.contextmanager
def _hub_offline_mode():
    """huggingface_hub reads the cache only (every file was made local before)."""
    hc = _constants()
    old = hc.HF_HUB_OFFLINE
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = old


def create_timm_model(name: str, pretrained: bool, **kwargs: Any):
    """``timm.create_model(name, pretrained, **kwargs)`` with every download done first, bounded, by
    :func:`ensure_local`; timm then reads the cache only. Raises the one-line ModelError when the
    weights are neither cached nor downloadable; timm's own errors (unknown tag, bad kwargs) pass through."""
    import timm

    hub = name.startswith(HF_HUB_PREFIX)
    if not (pretrained or hub):
        return timm.create_model(name, pretrained=False, **kwargs)
    w = hub_weights(name, pretrained) if hub else timm_weights(name)
    if w is None:  # unknown tag or no weights to fetch: timm says which
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    ensure_local(w)
    try:
        with _hub_offline_mode():
            return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (TypeError, RuntimeError):
        raise
    except Exception as e:  # a file the cache was expected to hold is not there (custom loaders): say what to do
        if isinstance(e, ModelError):
            raise
        raise ModelError(message(w, f"timm could not read them from the cache ({_why(e)})")) from None
