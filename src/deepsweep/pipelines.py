"""The ready-made pipelines (``pipelines/<experiment>/``) and the root ``dvc.yaml``'s code dependencies,
generated so they cannot drift from ``conf/`` and the package.

* The root ``dvc.yaml`` is written by hand, but each stage's ``src/deepsweep`` deps are the files the
  stage may run (``provenance.stage_dependencies``).
* ``pipelines/<name>/`` is a DVC project of its own (``dvc init --subdir``): ready-made pipelines stay out of
  the root's ``dvc exp show`` and ``dvc plots``. Its ``dvc.yaml`` is the root's stages with paths from that
  folder, plus a ``fetch`` stage and the raw data as dependencies of ``prepare``; ``pipelines/<name>/params.yaml`` is
  ``deepsweep params experiment=<name>``.

``deepsweep pipelines`` rewrites all of them; ``deepsweep pipelines --check`` lists what differs (a test runs it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from omegaconf import OmegaConf

from deepsweep import paths
from deepsweep.config import compose, params_text, validate
from deepsweep.kinds import declared_target


def names() -> list[str]:
    return sorted(p.name for p in (paths.project_root() / "pipelines").iterdir() if (p / "dvc.yaml").is_file())


def root_dvc_yaml(text: str) -> str:
    """The root dvc.yaml with each stage's package deps replaced by the files it may run, and its params by
    ``stages.STAGE_PARAMS`` (what the stage's run.json records and the next stage checks)."""
    from deepsweep.provenance import stage_dependencies
    from deepsweep.stages import STAGE_PARAMS

    out: list[str] = []
    stage, block, replaced = None, None, set()
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and len(line) - len(line.lstrip(" ")) <= 2:
            # a stage's name, or a top-level key
            match = re.match(r"^  ([\w.-]+):$", line)
            stage, block, replaced = (match.group(1) if match else None), None, set()
        section = re.match(r"^    (\w+):", line)
        if section:
            block = section.group(1)
        # Only plain items are generated (a comment after one is not kept): a `- other.yaml:` params file, and its
        # keys, are kept as written.
        generated = {"deps": (r"^      - src/deepsweep", lambda: stage_dependencies(stage)),
                     "params": (r"^      - [\w.]+(\s+#.*)?$", lambda: STAGE_PARAMS[stage])}.get(block or "")
        if stage in STAGE_PARAMS and generated and re.match(generated[0], line):
            if block not in replaced:
                out += [f"      - {item}" for item in generated[1]()]
                replaced.add(block)
            continue
        out.append(line)
    return "\n".join(out) + "\n"


MANIFEST = "fetched.json"


def _files_from(dep: str) -> str:
    """A root code dependency as the lines of a ready-made pipeline's: one per Python file, paths from its
    folder. DVC applies no .dvcignore to a dependency outside the (sub)project, so a folder there would
    count the __pycache__ Python writes into it: every stage would turn stale at the first import."""
    root = paths.project_root()
    path = root / dep
    files = sorted(path.glob("*.py")) if path.is_dir() else [path]
    return "\n".join(f"      - ../../{f.relative_to(root)}" for f in files)


# evaluate's plots where the data labels more than a class per input (the root's are a classifier's).
TARGET_PLOTS = {
    "mask": "    plots:\n      - artifacts/evaluate/segmentation.png:\n          cache: false\n",
    "tokens": ("    plots:\n      - artifacts/evaluate/length.csv:\n          cache: false\n          template: bar_horizontal\n"
               "          x: exact_match\n          y: source_length\n      - artifacts/evaluate/attention.png:\n"
               "          cache: false\n"),
}


def pipeline_dvc_yaml(name: str, root_text: str) -> str:
    """``pipelines/<name>/dvc.yaml``: the root's stages, paths from that folder; for raw data, a first stage
    ``fetch`` (``deepsweep fetch``, whose output is the manifest of the verified files' sha256) as a dep of
    ``prepare`` (a data set outside the catalog: its folder)."""
    from deepsweep.data.downloads import CATALOG

    cfg = validate(compose([f"experiment={name}"]))
    stages = root_text[root_text.index("stages:"):]
    stages = re.sub(r"^      - (src/deepsweep\S*)$", lambda m: _files_from(m.group(1)), stages, flags=re.M)
    # A param of the root's data option that this one has not (data.augment of the image options): DVC
    # refuses a stage whose declared param is missing from params.yaml.
    absent = object()
    stages = re.sub(r"^      - ([a-z_]+\.[a-z_.]+)\n",
                    lambda m: "" if OmegaConf.select(cfg, m.group(1), default=absent) is absent else m.group(0),
                    stages, flags=re.M)
    target = declared_target(str(cfg.data._target_))
    if target != "class":  # evaluate writes the plots of what the data labels (stages/evaluate.py)
        start = stages.index("    plots:\n      - artifacts/evaluate/")
        end = stages.index("\n# ", start) + 1
        stages = stages[:start] + TARGET_PLOTS[target] + stages[end:]
    if cfg.data.get("root"):
        folder = paths.project_root() / "pipelines" / name
        # normpath, not resolve(): a symlinked data folder keeps the path the config gives (the same in every clone)
        data = Path(os.path.relpath(os.path.normpath(paths.home_root() / os.path.expanduser(cfg.data.root)), folder))
        # A fetched data set is a dependency through its manifest (the sha256 every file prepare reads must
        # match, and prepare fetches what is missing): the raw folder itself is not, since DVC refuses to run
        # a stage whose dependency is missing, and a clone, or a cleaned data/, has none.
        deps = [MANIFEST] if cfg.data.name in CATALOG else [str(data)]
        stages = re.sub(r"(  prepare:\n    cmd: [^\n]*\n    deps:\n)", "\\1" + "".join(f"      - {d}\n" for d in deps),
                        stages, count=1)
        if cfg.data.name in CATALOG:
            from deepsweep.provenance import stage_dependencies

            code = "".join(_files_from(dep) + "\n" for dep in stage_dependencies("fetch"))
            fetch = (f"  fetch:\n    cmd: deepsweep fetch {cfg.data.name} --params params.yaml --manifest {MANIFEST}\n"
                     f"    deps:\n{code}    params:\n      - data.name\n      - data.root\n"
                     f"    outs:\n      - {MANIFEST}:\n          cache: false\n")
            stages = stages.replace("stages:\n", "stages:\n" + fetch, 1)
    header = (f"# Experiment conf/experiment/{name}.yaml as a DVC pipeline: the root dvc.yaml's stages, paths from this\n"
              f"# folder, its own DVC project (dvc init --subdir, so `dvc exp show` at the root shows the root pipeline\n"
              f"# alone). fetch downloads and checks the raw data. Generated by `deepsweep pipelines`.\n"
              f"# Run: dvc --cd pipelines/{name} repro\n")
    return header + stages


def subproject(name: str) -> list[Path]:
    """The DVC project files of ``pipelines/<name>`` (``dvc init --subdir``), made if missing."""
    import subprocess
    import sys

    folder = paths.project_root() / "pipelines" / name
    files = [folder / ".dvc" / "config", folder / ".dvcignore"]
    if not all(p.is_file() for p in files):
        dvc = Path(sys.executable).with_name("dvc")
        subprocess.run([str(dvc) if dvc.exists() else "dvc", "init", "--subdir", "--quiet"], cwd=folder, check=True)
        files[0].write_text(SUBPROJECT_CONFIG)
        return files
    return []


# As the root's .dvc/config, without its Hydra integration (that composes the root's conf/ for `dvc exp run -S`;
# a ready-made pipeline's params.yaml is written by `deepsweep pipelines`).
SUBPROJECT_CONFIG = "[core]\n    analytics = false\n"


def expected_files() -> dict[Path, str]:
    root = paths.project_root()
    root_text = root_dvc_yaml((root / "dvc.yaml").read_text())
    files = {root / "dvc.yaml": root_text}
    for name in names():
        files[root / "pipelines" / name / "dvc.yaml"] = pipeline_dvc_yaml(name, root_text)
        files[root / "pipelines" / name / "params.yaml"] = params_text([f"experiment={name}"])
    return files


def drift() -> list[Path]:
    """Generated files whose committed text differs from what ``deepsweep pipelines`` writes, and ready-made
    pipelines that are not their own DVC project."""
    stale = [path for path, text in expected_files().items() if not path.is_file() or path.read_text() != text]
    return stale + [paths.project_root() / "pipelines" / name / ".dvc" for name in names()
                    if not (paths.project_root() / "pipelines" / name / ".dvc" / "config").is_file()]


def write() -> list[Path]:
    changed = [path for name in names() for path in subproject(name)]
    for path, text in expected_files().items():
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(path)
    return changed
