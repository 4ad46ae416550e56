"""Run ``deepsweep ARGS`` in this fresh interpreter and print, as JSON, each watched module it imported with the
chain of calls that imported it first. Not a test module: run as a script (tests/faults/test_kill.py runs every
stage this way, as DVC does, and checks FORBIDDEN)."""

from __future__ import annotations

import importlib.abc
import json
import sys
import traceback

# stage -> modules it must not import on tensor data (digits). Lightning costs 3-6 s of start-up, torch-geometric
# about 2 s, matplotlib about half a second, torchmetrics about 1.9 s with what it pulls in (python -X importtime
# -m deepsweep stage NAME).
# The training stages need Lightning, and Lightning itself imports torchmetrics (to read its version), which
# imports matplotlib and scipy where they are installed: not deepsweep's to cut without patching them.
FORBIDDEN = {
    "prepare": ("lightning", "torch_geometric", "matplotlib", "torchmetrics", "tensorboard"),
    "pretrain": ("torch_geometric", "tensorboard"),
    "finetune": ("torch_geometric", "tensorboard"),
    "evaluate": ("lightning", "torch_geometric", "tensorboard", "torchmetrics"),
}
WATCHED = ("lightning", "torch_geometric", "matplotlib", "torchmetrics", "tensorboard", "sklearn", "scipy")
first: dict[str, list[str]] = {}


class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in WATCHED and top not in first:
            first[top] = [f"{f.filename.rsplit('site-packages/', 1)[-1].rsplit('src/', 1)[-1]}:{f.lineno} {f.name}"
                          for f in traceback.extract_stack()[:-1] if "importlib" not in f.filename
                          and not f.filename.startswith("<")]
        return None


if __name__ == "__main__":
    sys.meta_path.insert(0, Watch())
    from deepsweep.cli.main import main

    code = main(sys.argv[1:])
    print(json.dumps({"rc": code, "imported": first}))
