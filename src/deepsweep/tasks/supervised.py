"""Which supervised task fine-tuning fits: one per kind of label the prepared data holds (``meta.json``)."""

from __future__ import annotations

from deepsweep.tasks.classify import ClassifyTask, NodeClassifyTask
from deepsweep.tasks.segment import SegmentTask
from deepsweep.tasks.translate import TranslateTask

BY_TARGET: dict[str, type[ClassifyTask]] = {"class": ClassifyTask, "mask": SegmentTask, "tokens": TranslateTask}


def task_for(kind: str, target: str = "class") -> type[ClassifyTask]:
    """The supervised task for prepared data of ``kind`` whose labels are ``target``: a class per input (per
    node of a graph), a class per pixel (``mask``), an output sequence (``tokens``)."""
    if kind == "graph":
        return NodeClassifyTask
    return BY_TARGET[target]
