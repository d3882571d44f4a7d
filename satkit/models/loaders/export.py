"""``.pt2``: a ``torch.export`` program, run only when it is pure tensor operators.

Without ``allow_code`` the archive is checked before torch parses it
(:func:`satkit.models.untrusted.check_pt2_archive`) and the loaded graph and its
guard code before the first call (:mod:`satkit.models.export_check`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from satkit.errors import ModelError
from satkit.io.tensorfile import file_sha256
from satkit.models.export_check import check_graph_module, check_guards
from satkit.models.loaders.plain import probe_num_classes, wrap_plain
from satkit.models.spec import ModelOptions, model_display_name, short
from satkit.models.untrusted import check_pt2_archive
from satkit.models.wrapper import LoadedModel


def load(p: Path, spec: str, opts: ModelOptions) -> LoadedModel:
    if not opts.allow_code:
        check_pt2_archive(p)  # before torch parses anything
    try:
        ep = torch.export.load(str(p))
    except Exception as e:
        raise ModelError(f"{p}: cannot load torch.export program ({short(e)})") from None
    if not opts.allow_code:
        check_graph_module(ep.graph_module, str(p))  # before the first call
        check_guards(getattr(ep, "_guards_code", None), str(p))  # exec()d by ep.module()
    try:
        model = ep.module()
    except Exception as e:
        raise ModelError(f"{p}: cannot load torch.export program ({short(e)})") from None
    return LoadedModel(
        name=model_display_name(spec, opts), spec=spec, module=wrap_plain(model, opts),
        num_classes=probe_num_classes(opts), weights_id="sha256:" + file_sha256(p)[:16], kind="export",
    )
