"""check_compatible reads each option's data kind from the source (factory.declared_kind) instead of importing
its class: the two must agree for every option, and checking must not import Lightning."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra.utils import get_class

from deepsweep import factory
from deepsweep.config import compose, options


def _targets():
    for group, path in (("data", ""), ("model", ""), ("pretrain", "task")):
        for option in options(group):
            node = compose([f"{group}={option}"])[group]
            node = node.get(path) if path else node
            if node is not None and node.get("_target_"):
                yield f"{group}={option}", node["_target_"]


@pytest.mark.parametrize("option, target", list(_targets()))
def test_declared_kind_is_the_class_kind(option, target):
    from deepsweep.kinds import declared

    assert factory.declared_kind(target) == getattr(get_class(target), "kind", "tensor"), option
    if option.startswith("pretrain="):  # what the up-front pretrain.anomaly_class check reads
        assert declared(target, "scores_anomalies") is getattr(get_class(target), "scores_anomalies"), option


def test_checking_compatibility_imports_no_task_class():
    code = ("import sys; from deepsweep.config import compose; from deepsweep.factory import check_compatible;"
            "check_compatible(compose(['pretrain=vae', 'pretrain.anomaly_class=1'])); check_compatible(compose(['data=cora', 'model=gcn', 'pretrain=gae']));"
            "print(sorted(m for m in ('lightning', 'torch_geometric', 'deepsweep.tasks.variational') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
