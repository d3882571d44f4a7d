"""A study's settings in one picklable object: what every job needs, wherever it runs."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from satkit import settings as S
from satkit.attacks import AttackParams
from satkit.data import DataRequest, default_eps
from satkit.errors import ParameterError
from satkit.jobs import DEFAULT_BATCH_SIZE, AttackJob
from satkit.limits import BATCH_SIZE, CHUNK, N_BOOT, K
from satkit.matrix.sat import DEFAULT_EPS_S
from satkit.models import ModelOptions, model_display_name
from satkit.study.layout import StudyDir, slug


def default_models(zoo_set: str = S.ZOO_SET) -> list[str]:
    """A named set of the built-in digits zoo (``satkit zoo list --set``); the default study's is "default"."""
    from satkit.models import zoo

    return [f"digits/{n}" for n in zoo.zoo_set(zoo_set)]


@dataclass(frozen=True)
class StudyConfig:
    """Everything a study run and its jobs need; build it with :meth:`create` (defaults filled, inputs checked).

    Every default is :mod:`satkit.settings`'s; every field that changes an output is recorded in
    ``study.json`` (:class:`satkit.study.layout.StudySettings`), so the report's rerun command reproduces it.
    The sampling plan is ``precision``: None runs the whole (``--n``) sample at once; a number W adds
    ``chunk`` images at a time until every off-diagonal interval's half-width is <= W (:mod:`satkit.study.adaptive`).
    """

    out: str
    models: tuple[str, ...]
    data: DataRequest = field(default_factory=DataRequest)
    params: AttackParams = field(default_factory=AttackParams)
    batch_size: int | str = DEFAULT_BATCH_SIZE  # or "auto"; None: the device's default
    amp: str = S.AMP
    model_options: ModelOptions | None = None
    per_sample: bool = True  # keep per-sample outcomes (needed by ci and by adaptive studies)
    compile: bool = False
    eps_s: float = DEFAULT_EPS_S  # SAT floor, percent
    k: int | None = None  # clusters (None: eigengap)
    ci: float | None = None  # bootstrap interval level in sat_long.csv (adaptive: the level bounded, default CI_LEVEL)
    n_boot: int = S.N_BOOT  # bootstrap resamples of those intervals
    analyses: bool = True
    cluster_method: str = S.CLUSTER_METHOD  # paper | njw (satkit.analysis.cluster)
    precision: float | None = None  # adaptive sampling: the widest half-width to reach, log units
    chunk: int = S.CHUNK  # adaptive sampling: images per chunk

    @classmethod
    def create(cls, models: list[str] | tuple[str, ...] | None = None, out: str | Path = S.STUDY_DIR, *,
               zoo_set: str | None = None, data: str = S.DATA, n: int | None = None, data_seed: int = S.DATA_SEED,
               canvas: int | None = None, labels: str | None = None, params: AttackParams | None = None,
               **settings: Any) -> "StudyConfig":
        """The resolver: a value given here wins; else one that follows from another setting (the models from
        ``zoo_set``, eps from the data source: :func:`satkit.data.default_eps`); else :mod:`satkit.settings`."""
        if zoo_set is not None and models:
            raise ParameterError("zoo_set picks the models: give either a zoo set or model names, not both")
        models = tuple(models) if models else tuple(default_models(zoo_set or S.ZOO_SET))
        params = params if params is not None else AttackParams(eps=default_eps(data))
        cfg = cls(out=str(Path(out)), models=models, data=DataRequest(data, n, data_seed, canvas, labels), params=params,
                  **settings)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        from satkit.matrix.sat import check_eps_s

        if not self.models:
            raise ParameterError("a study needs at least one model")
        twice = [m for m, c in Counter(self.models).items() if c > 1]
        if twice:
            raise ParameterError(f"the model list names {twice[0]} twice")
        by_name: dict[str, str] = {}
        for m in self.models:
            name = self.name(m)
            if name in by_name:
                raise ParameterError(f"{by_name[name]} and {m} both get the name '{name}' in the matrix; "
                                     "rename one of the files (the name is the file's stem)")
            by_name[name] = m
        slugs = Counter(slug(m) for m in self.models)
        clash = [m for m in self.models if slugs[slug(m)] > 1]
        if clash:
            raise ParameterError(f"{clash[0]} and {clash[1]} map to the same file name in the study directory; rename one")
        check_eps_s(self.eps_s)
        if self.ci is not None and not 0 < self.ci < 1:
            raise ParameterError(f"ci must be in (0, 1), e.g. 0.95; got {self.ci}")
        if (self.ci is not None or self.precision is not None) and not self.per_sample:
            raise ParameterError("per_sample must stay on: intervals (ci, precision) are computed from per-sample outcomes")
        N_BOOT.check(self.n_boot)
        if self.ci is not None or self.precision is not None:  # enough resamples for the level's tails, before any work
            from satkit.matrix.sat import check_bootstrap

            check_bootstrap(self.ci if self.ci is not None else S.CI_LEVEL, self.n_boot, self.params.seed)
        if self.precision is not None:
            p = self.precision
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p <= 0:
                raise ParameterError(f"precision must be a positive number of log units (e.g. 0.2), got {p}")
            CHUNK.check(self.chunk)
            if len(self.models) < 2:
                raise ParameterError("precision needs at least two models (it bounds the off-diagonal cells)")
        from satkit.analysis.cluster import METHODS

        if self.cluster_method not in METHODS:
            raise ParameterError(f"unknown clustering method '{self.cluster_method}'; use {' or '.join(METHODS)}")
        K.check_optional(self.k)
        if self.batch_size is not None and self.batch_size != "auto":  # None: the device's default
            BATCH_SIZE.check(self.batch_size)

    @property
    def dir(self) -> StudyDir:
        return StudyDir(self.out)

    def name(self, spec: str) -> str:
        return model_display_name(spec, self.model_options)

    def attack_job(self, spec: str) -> AttackJob:
        return AttackJob(model=spec, data=self.data, params=self.params, model_options=self.model_options,
                         batch_size=self.batch_size, amp=self.amp, compile=self.compile)
