"""Which operators do real classifiers' torch.export programs call, and are they all on satkit's allow-list?

Exports timm architectures (random init, no download) and the digits zoo with a dynamic batch
dimension, in the default export IR and after ``run_decompositions()``, and prints every
operator that ``satkit.models.export_check`` would refuse. Run it after a torch upgrade:

    python scripts/export_ops.py                  # the paper's 69 models + common timm families + zoo
    python scripts/export_ops.py resnet18 vit_tiny_patch16_224

Exit code 1 when some operator is outside the list. About 10 minutes on 2 CPU cores for all.
"""

from __future__ import annotations

import csv
import sys
import time
import warnings
from pathlib import Path

import torch

from satkit.errors import ModelError
from satkit.models.export_check import check_graph_module

ROOT = Path(__file__).resolve().parent.parent
EXTRA = ["resnet18", "vit_tiny_patch16_224", "convnext_atto", "efficientnet_b0", "mobilenetv3_small_100", "regnetx_002",
         "densenet121", "swin_tiny_patch4_window7_224", "levit_128", "mixer_b16_224", "vgg11", "ghostnet_100",
         "inception_v3", "deit_tiny_patch16_224", "mobilevit_xxs", "efficientformer_l1", "poolformer_s12", "nfnet_l0",
         "hrnet_w18_small"]
ZOO = ["digits/resnet-s1", "digits/vit-s1", "digits/convnext-s1", "digits/mixer-s1", "digits/convmixer-s1",
       "digits/mobilenet-s1"]


def build(name: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    if name.startswith("digits/"):
        from satkit.models import load_model

        lm = load_model(name)
        return lm.module.model, tuple(lm.module.cfg.input_size)
    import timm

    m = timm.create_model(name.split(".")[0], pretrained=False)
    return m, tuple(m.pretrained_cfg.get("input_size", (3, 224, 224)))


def main(names: list[str]) -> int:
    warnings.filterwarnings("ignore")
    refused, failed = {}, []
    for name in names:
        t = time.time()
        try:
            model, size = build(name)
            batch = torch.export.Dim("batch", min=1, max=4096)
            ep = torch.export.export(model.eval(), (torch.zeros(2, *size),), dynamic_shapes=({0: batch},))
            programs = [("export IR", ep), ("core ATen", ep.run_decompositions())]
        except Exception as e:  # an architecture torch cannot export is not the allow-list's concern
            failed.append(name)
            print(f"{name}: not exportable here ({type(e).__name__}: {str(e)[:100]})", flush=True)
            continue
        for ir, prog in programs:
            try:
                check_graph_module(prog.graph_module, name)
            except ModelError as e:
                refused.setdefault(name, []).append(f"{ir}: {str(e).split(': ', 1)[1][:120]}")
        print(f"{name}: {'REFUSED' if name in refused else 'ok'} ({time.time() - t:.1f} s)", flush=True)
    for name, why in refused.items():
        for w in why:
            print(f"refused {name} ({w})")
    print(f"{len(names) - len(failed) - len(refused)} ok, {len(refused)} refused, {len(failed)} not exportable")
    return 1 if refused else 0


if __name__ == "__main__":
    if len(sys.argv) > 1:
        todo = sys.argv[1:]
    else:
        cards = csv.DictReader(open(ROOT / "satkit" / "cards" / "paper69.csv", encoding="utf-8"))
        todo = ZOO + EXTRA + [r["Model name"] for r in cards]
    sys.exit(main(todo))
