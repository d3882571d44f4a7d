"""docs/errors.md's tables, generated from the tests' case lists (run: python -m tests.errors_doc > docs/errors.md)."""

from __future__ import annotations

import importlib

SECTIONS = [
    ("tests.test_bad_inputs", "Bad inputs", "missing, empty, truncated or foreign files; data and models that do not fit; option values"),
    ("tests.test_bad_outputs", "Outputs that would destroy something",
     "an output that is an input (same path or same inode), two outputs on one file, devices and FIFOs, unwritable paths"),
    ("tests.test_bad_files", "Files that are damaged or edited",
     "satkit files verified against themselves on read: pixels beyond the recorded eps, labels out of range, duplicate ids, a fingerprint that does not match"),
    ("tests.test_bad_models", "Models that do not fit the data, studies that cannot work",
     "checked with one forward pass and the study's settings before any work"),
    ("tests.test_bad_numbers", "Numbers that would give a wrong result",
     "transfer tables with impossible counts, SAT matrices out of range, option values that would give NaN or inf"),
]

HEAD = """# Errors

Bad input never produces a traceback or a wrong number. Every error a user can
cause is one line on stderr, `satkit: error: <what is wrong>; <what to do>`,
exit code 2, and no output file is created or changed: inputs and outputs are
checked before work starts, an output may never be one of the inputs (same
path or same inode) or a device, and outputs are written atomically (temporary
file in the same directory, then rename; a replaced file keeps its mode).
Interrupted runs (Ctrl-C) exit with 130; a closed pipe (`| head`) ends quietly
with 141, like coreutils.

Unexpected exceptions (bugs) keep their traceback so they can be reported.

## Model files never run code

`tests/test_untrusted_models.py` builds hostile model files (`tests/hostile.py`:
`.pt2` archives with a pickled weight, pickled sample inputs, an opaque
constant, the legacy layout; `.pt2` programs that write a file through
`aten.from_file`, run guard code or evaluate a shape expression; a TorchScript
model that writes a file; pickles as `.pt`, `.pth`, `.bin`, `.safetensors`; a
`torch.save` archive; a fake TorchScript archive) and passes each to every
command that loads a model (`attack`, `transfer`, `logits`, `approx` as the new
model, as a known model and named in a study's `study.json`, `distill
--teacher`, `study`): exit 2, one line, the payload never runs, no output.
Each crafted file is checked to be really hostile: plain torch runs its code.
`tests/test_export_check.py` tries each `.pt2` check on its own (in-place writes
into inputs and buffers, custom and higher-order operators, zip bombs).
With `--allow-code-execution` (old name `--allow-pickle`) the user opts in and
the file's code runs. Which formats run code: [formats.md](formats.md#model-files-which-formats-run-code).

## Tested cases

Each table is generated from a test module's `CASES` list; each case runs
through the CLI and asserts exit code 2, one line, the words listed, no
traceback, and that pre-existing outputs are untouched.
"""


def render() -> str:
    out = [HEAD]
    for mod, title, what in SECTIONS:
        cases = importlib.import_module(mod).CASES
        out.append(f"\n### {title} (`{mod.split('.')[-1]}.py`, {len(cases)} cases)\n\n{what}.\n")
        out.append("| case | command (abridged) | message contains |\n|---|---|---|")
        for cid, args, words in cases:
            cmd = " ".join(args).replace("{d}/", "").replace("{out}", "OUT").replace("|", "\\|")
            words_ = ", ".join(w.replace("|", "\\|") for w in words)
            out.append(f"| `{cid}` | `satkit {cmd}` | {words_} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
