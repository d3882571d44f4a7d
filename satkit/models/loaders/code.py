"""TorchScript and pickled full models: programs, loaded only with ``allow_code`` (``--allow-code-execution``).

A TorchScript file carries code with every ATen operator at hand (``torch.from_file``
writes files); unpickling calls any Python function the file names. So both are
refused unless the user says they trust the file.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from satkit.errors import ModelError
from satkit.io.tensorfile import file_sha256
from satkit.models.loaders.plain import probe_num_classes, wrap_plain
from satkit.models.spec import ModelOptions, model_display_name, short
from satkit.models.wrapper import LoadedModel


def load(p: Path, spec: str, opts: ModelOptions) -> LoadedModel:
    is_script = False
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
        # TorchScript archives carry code/ and constants.pkl; torch.save archives only data.pkl
        is_script = any(re.search(r"(^|/)code/", n) for n in names) or any(n.endswith("constants.pkl") for n in names)
    if not opts.allow_code:
        what = "a TorchScript program" if is_script else "a pickled model (not TorchScript, torch.export or safetensors)"
        raise ModelError(
            f"{p} is {what}, and loading it runs code from the file: export it with torch.export to a .pt2 "
            f"or save its state dict as .safetensors and pass --arch, or pass --allow-code-execution only if you trust it"
        )
    if is_script:
        try:
            model = torch.jit.load(str(p), map_location="cpu")
        except Exception as e:
            raise ModelError(f"{p}: cannot load TorchScript ({short(e)})") from None
        kind = "torchscript"
    else:
        try:
            model = torch.load(str(p), map_location="cpu", weights_only=False)
        except Exception as e:
            raise ModelError(f"{p}: cannot unpickle ({short(e)})") from None
        if not isinstance(model, nn.Module):
            raise ModelError(f"{p}: unpickled a {type(model).__name__}, not a torch.nn.Module; for a state dict use --arch")
        kind = "pickle"
    model.eval()
    return LoadedModel(
        name=model_display_name(spec, opts), spec=spec, module=wrap_plain(model, opts),
        num_classes=probe_num_classes(opts), weights_id="sha256:" + file_sha256(p)[:16], kind=kind,
    )
