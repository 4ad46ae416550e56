"""A result is reused only when config, code, data and library versions are the same: every dvc.yaml declares
the package files each stage may run and the raw data it reads; the fingerprint covers all four; MLflow runs
carry the parts as tags."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from deepsweep import provenance

DVC_FILES = [ROOT / "dvc.yaml", *sorted((ROOT / "pipelines").glob("*/dvc.yaml"))]


@pytest.mark.parametrize("dvc_file", DVC_FILES, ids=[str(p.relative_to(ROOT)) for p in DVC_FILES])
def test_every_module_a_stage_runs_is_a_dependency_of_it(dvc_file):
    stages = yaml.safe_load(dvc_file.read_text())["stages"]
    for name, stage in stages.items():
        missing = provenance.uncovered(name, stage["deps"], dvc_file.parent)
        assert not missing, f"{dvc_file}: stage {name} runs {missing} but does not depend on them (make pipelines)"


def test_the_import_closure_sees_lazy_imports():
    # pretrain imports lightning-heavy task modules inside functions; finetune's own module is not pretrain's.
    pretrain = {p.relative_to(provenance.PACKAGE_DIR).as_posix() for p in provenance.stage_modules("pretrain")}
    assert {"stages/pretrain.py", "tasks/common.py", "tasks/reconstruct.py", "training/mlflow_logger.py", "factory.py"} <= pretrain
    assert "stages/finetune.py" not in pretrain and "stages/evaluate.py" not in pretrain
    # A missing dependency is reported by file.
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["pretrain"]["deps"]
    assert provenance.uncovered("pretrain", [d for d in deps if d != "src/deepsweep/factory.py"], ROOT) == [
        "src/deepsweep/factory.py"]


def test_pipelines_with_raw_data_depend_on_it():
    stages = yaml.safe_load((ROOT / "pipelines/mnist_lenet/dvc.yaml").read_text())["stages"]
    data = [d for d in stages["prepare"]["deps"] if not d.startswith("../../src/")]
    assert data == ["fetched.json"]
    # ... fetched.json (the files' sha256, which prepare checks every file against) is the output of the stage
    # that fetches them, so DVC runs that stage first. Not the raw folder: DVC would refuse to run prepare where
    # it is missing (a clone, a cleaned data/), and prepare fetches what is missing itself.
    assert stages["fetch"]["outs"] == [{"fetched.json": {"cache": False}}]
    assert stages["fetch"]["cmd"] == "deepsweep fetch mnist --params params.yaml --manifest fetched.json"
    assert stages["fetch"]["params"] == ["data.name", "data.root"]


def test_fingerprint_covers_config_code_data_and_versions(compose, monkeypatch, tmp_path):
    base = provenance.fingerprint(compose())
    assert provenance.fingerprint(compose("logger.tracking_uri=sqlite:////elsewhere.db")) == base
    assert provenance.fingerprint(compose("seed=1")) != base
    assert provenance.fingerprint(compose("trainer.num_threads=1")) == base
    # Which device a job runs on is not what it computes, how many is (a data-parallel job splits each batch).
    assert provenance.fingerprint(compose("trainer.devices=[3]")) == base
    assert provenance.fingerprint(compose("trainer.devices=2", "trainer.strategy=ddp_spawn")) != provenance.fingerprint(
        compose("trainer.strategy=ddp_spawn"))
    # monkeypatch.context(), not monkeypatch.undo(): undo would also end this test's tracking isolation (conftest)
    with monkeypatch.context() as patch:
        patch.setattr(provenance, "source_digest", lambda: "edited-code")
        assert provenance.fingerprint(compose()) != base
    with monkeypatch.context() as patch:
        patch.setattr(provenance, "library_versions", lambda: "torch=9.9")
        assert provenance.fingerprint(compose()) != base
    # A catalog data set's bytes are its checksums (prepare verifies every file against them) ...
    from dataclasses import replace

    from deepsweep.data import downloads

    with_data = compose("data=ecg200")
    before = provenance.fingerprint(with_data)
    ecg = downloads.CATALOG["ecg200"]
    edited = replace(ecg, files=(replace(ecg.files[0], sha256="0" * 64), *ecg.files[1:]))
    with monkeypatch.context() as patch:
        patch.setitem(downloads.CATALOG, "ecg200", edited)
        assert provenance.fingerprint(with_data) != before
    # ... any other folder's are its files.
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.csv").write_text("1,2\n")
    with_data = compose("data=ecg200", "data.name=my_ecg", f"data.root={raw}")
    before = provenance.fingerprint(with_data)
    (raw / "a.csv").write_text("1,3\n")
    provenance._files_digest.cache_clear()
    assert provenance.fingerprint(with_data) != before


def test_a_package_edit_changes_the_source_digest(tmp_path, monkeypatch):
    package = tmp_path / "deepsweep"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(provenance, "PACKAGE_DIR", package)
    provenance.source_digest.cache_clear()
    try:
        first = provenance.source_digest()
        (package / "a.py").write_text("x = 2\n")
        provenance.source_digest.cache_clear()
        assert provenance.source_digest() != first
    finally:
        provenance.source_digest.cache_clear()


def test_every_run_carries_the_provenance_tags(compose):
    import mlflow

    from deepsweep.tracking.runs import start_run

    cfg = compose()
    with start_run(cfg, run_name="tagged") as run:
        pass
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["deepsweep.fingerprint"] == provenance.fingerprint(cfg)
    assert tags["deepsweep.source_digest"] == provenance.source_digest()
    assert tags["deepsweep.data_digest"] == "bundled"
    assert "torch=" in tags["deepsweep.versions"] and "lightning=" in tags["deepsweep.versions"]


def test_a_resumed_sweep_reruns_a_job_whose_code_changed(compose, monkeypatch, tmp_path):
    from deepsweep.stages.pipeline import RUN_FILE, finished_stage
    from deepsweep.utils.io import write_json

    cfg = compose()
    write_json(tmp_path / "prepare" / RUN_FILE, {"fingerprint": provenance.fingerprint(cfg), "metrics": {"a": 1.0}})
    assert finished_stage(cfg, tmp_path / "prepare") == {"a": 1.0}
    monkeypatch.setattr(provenance, "source_digest", lambda: "edited-code")
    assert finished_stage(cfg, tmp_path / "prepare") is None


def test_tracking_uri_credentials_never_reach_params():
    import mlflow

    from deepsweep.tracking.runs import log_params, redact

    assert redact("postgresql://me:s3cret@db:5432/mlflow") == "postgresql://me:***@db:5432/mlflow"
    assert redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    mlflow.set_experiment("credentials")
    with mlflow.start_run() as run:
        log_params({"logger.tracking_uri": "https://me:s3cret@mlflow.example:443", "seed": 0})
    params = mlflow.MlflowClient().get_run(run.info.run_id).data.params
    assert params["logger.tracking_uri"] == "https://me:***@mlflow.example:443"


def test_commands_a_stage_never_runs_are_not_its_dependencies():
    """`deepsweep stage` reaches main() and _cmd_stage(): the study, results and pipelines commands' lazy
    imports are no code of a stage, so editing a study leaves every pipeline up to date."""
    for stage in ("prepare", "pretrain", "finetune", "evaluate"):
        deps = provenance.stage_dependencies(stage)
        assert not any(d.startswith(("src/deepsweep/studies", "src/deepsweep/results.py", "src/deepsweep/pipelines.py"))
                       for d in deps), (stage, deps)
        assert "src/deepsweep/stages/pipeline.py" in deps and "src/deepsweep/cli" in deps


def test_ready_made_pipelines_depend_on_code_files_not_folders():
    """DVC applies no .dvcignore to a dependency outside a (sub)project: a folder there would count the
    __pycache__ Python writes into it, and every stage would turn stale at the first import."""
    for dvc_file in DVC_FILES[1:]:
        for name, stage in yaml.safe_load(dvc_file.read_text())["stages"].items():
            folders = [d for d in stage["deps"] if d.startswith("../../src/") and not d.endswith(".py")]
            assert not folders, (dvc_file, name, folders)
    assert "__pycache__/" in (ROOT / ".dvcignore").read_text().splitlines()  # the root's folder deps
