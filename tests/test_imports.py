"""Pay only for what runs: each DVC stage, run as `deepsweep stage NAME` in a fresh interpreter, imports no heavy
library it does not use. A failure names the module and the chain of calls that imported it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

# stage -> modules it must not import on tensor data (digits). Lightning costs 3-6 s of start-up, torch-geometric
# about 2 s, matplotlib and torchmetrics about half a second each (python -X importtime -m deepsweep stage NAME).
# The training stages need Lightning, and Lightning itself imports torchmetrics (to read its version), which
# imports matplotlib and scipy where they are installed: not deepsweep's to cut without patching them.
FORBIDDEN = {
    "prepare": ("lightning", "torch_geometric", "matplotlib", "torchmetrics", "tensorboard"),
    "pretrain": ("torch_geometric", "tensorboard"),
    "finetune": ("torch_geometric", "tensorboard"),
    "evaluate": ("lightning", "torch_geometric", "tensorboard"),
}


def test_each_stage_imports_only_what_it_uses(tmp_path):
    """The four stages in order (each reads the one before), each in its own interpreter as DVC runs them."""
    params = subprocess.run([sys.executable, "-m", "deepsweep", "params", "pretrain=autoencoder", "pretrain.epochs=1",
                             "trainer.max_epochs=1", "-o", "-"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    (tmp_path / "params.yaml").write_text(params)
    env = {**os.environ, "DEEPSWEEP_ROOT": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    wrong = []
    for stage, forbidden in FORBIDDEN.items():
        result = subprocess.run([sys.executable, str(Path(__file__).with_name("import_watch.py")), "stage", stage,
                                 "--params", str(tmp_path / "params.yaml"), "--artifacts", str(tmp_path / "artifacts")],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["rc"] == 0 and (tmp_path / "artifacts" / stage / "run.json").is_file()
        wrong += [f"stage {stage} imported {module} through:\n    " + "\n    ".join(reversed(chain[-12:]))
                  for module, chain in report["imported"].items() if module in forbidden]
    assert not wrong, "\n".join(wrong)
