"""Config groups compose, params.yaml matches conf/, and bad input stops early with a clear message."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import ROOT, deepsweep_cli
from deepsweep.config import GROUPS, ConfigError, compose, flatten, load_params, options, validate


def test_params_yaml_is_the_composed_default():
    # DVC's Hydra composition (`dvc exp run -S`) rewrites params.yaml from conf/: they must agree.
    assert OmegaConf.to_container(load_params(ROOT / "params.yaml")) == OmegaConf.to_container(compose([]))


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes_validates_and_reads_the_same_without_hydra(group):
    """Every option of every group composes and validates; and config._reference, which reads option files
    directly (no Hydra at a stage's start-up; tests/faults/bad_input.py reads every option's fields through
    it), equals Hydra's composition of that option. One composition per option serves both checks."""
    from deepsweep import paths
    from deepsweep.config import _reference

    for option in options(group):
        choices = (f"{group}={option}",)
        composed = compose(list(choices))
        plain = OmegaConf.to_container(composed, resolve=True)
        assert validate(composed)[group].name == option
        direct = _reference(str(paths.conf_dir()), choices)
        assert direct[group] == plain[group], f"{group}={option}"
        assert direct["seed"] == plain["seed"] and direct["optimized_metric"] == plain["optimized_metric"]


def test_flat_params_for_mlflow():
    flat = flatten(compose(["init=xavier_uniform"]))
    assert flat["init.name"] == "xavier_uniform"
    assert flat["model.hidden_dims"] == [128, 64]
    assert not any(k.endswith("_target_") for k in flat)


def test_unknown_option_lists_allowed():
    with pytest.raises(Exception, match="(?s)model/nope.*dcgan.*gat.*gcn.*gru.*lenet.*lstm.*mlp.*resnet.*rnn.*sage.*transformer"):
        compose(["model=nope"])
    cfg = compose([])
    cfg.model.name = "nope"
    with pytest.raises(ConfigError, match="model.name: unknown model option 'nope'; allowed: dcgan, gat, gcn, gru, inception, lenet, lstm, mlp, resnet, rnn, sage, seq2seq, seq2seq_transformer, transformer, unet, vgg"):
        validate(cfg)


def test_misspelled_key_is_an_error():
    with pytest.raises(Exception, match="hiden_dims"):
        compose(["model.hiden_dims=[3]"])
    cfg = OmegaConf.to_container(compose([]))
    cfg["model"]["hiden_dims"] = [3]
    with pytest.raises(ConfigError, match=r"model\.hiden_dims: unknown key.*allowed keys: hidden_dims, name"):
        validate(cfg)


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(ConfigError, match=r"model\.hidden_dims\[0\]: expected int .* got str 'abc'"):
        validate(compose(["model.hidden_dims=[abc]"]))
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs: expected int"):
        validate(compose(["trainer.max_epochs=2.5"]))
    with pytest.raises(ConfigError, match=r"optimizer\.lr: expected float"):
        validate(compose(["optimizer.lr=fast"]))
    # A word field's words that Hydra reads as numbers: `trainer.precision=16` is the word 16 it lists.
    assert validate(compose(["trainer.precision=16"])).trainer.precision == 16
    with pytest.raises(ConfigError, match=r"trainer\.precision: 17 is not allowed; allowed: one of .*, 16, bf16"):
        validate(compose(["trainer.precision=17"]))


def test_missing_key_in_params_file(tmp_path):
    cfg = OmegaConf.to_container(compose([]))
    del cfg["optimizer"]["lr"]
    path = tmp_path / "params.yaml"
    path.write_text(OmegaConf.to_yaml(cfg))
    with pytest.raises(ConfigError, match=r"(?s)params.yaml.*optimizer\.lr: missing"):
        load_params(path)


def test_cli_rejects_bad_params_before_work(tmp_path):
    cfg = OmegaConf.to_container(compose([]))
    cfg["regularizer"]["dropout"] = "lots"
    (tmp_path / "params.yaml").write_text(OmegaConf.to_yaml(cfg))
    result = deepsweep_cli("stage", "prepare", "--params", str(tmp_path / "params.yaml"),
                           "--artifacts", str(tmp_path / "artifacts"))
    assert result.returncode == 2
    assert "regularizer.dropout: expected float" in result.stderr
    assert not (tmp_path / "artifacts").exists()


def test_missing_data_that_cannot_be_fetched_names_the_url(tmp_path):
    result = deepsweep_cli("params", "data=mnist", f"data.root={tmp_path}/nowhere", "-o", str(tmp_path / "p.yaml"))
    assert result.returncode == 0, result.stderr
    result = deepsweep_cli("stage", "prepare", "--params", str(tmp_path / "p.yaml"), "--artifacts", str(tmp_path / "a"),
                           env={"DEEPSWEEP_DATA_MIRROR": "http://127.0.0.1:9"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "deepsweep: error: http://127.0.0.1:9/mnist/raw/train-images-idx3-ubyte.gz: cannot download ([Errno 111] "
        "Connection refused); check $DEEPSWEEP_DATA_MIRROR (http://127.0.0.1:9), or place the file at "
        f"{tmp_path}/nowhere/train-images-idx3-ubyte.gz")
    assert not (tmp_path / "nowhere").exists() or not any((tmp_path / "nowhere").iterdir())
    # A whole run reports it the same way: the runner hands it past Hydra (which would print its traceback)
    # to the one-line report (a `deepsweep run` process of its own costs ~8 s of suite time).
    from deepsweep.cli.run import _stop_single_run
    from deepsweep.errors import DownloadError, Reported

    failure = DownloadError("http://127.0.0.1:9/mnist/raw/x.gz: cannot download")
    with pytest.raises(Reported) as reported:
        _stop_single_run(failure)
    assert reported.value.error is failure


def test_hydra_run_rejects_typo_before_training(tmp_path):
    result = deepsweep_cli("run", "optimizer.lrr=0.1", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode != 0
    assert "lrr" in result.stderr
    result = deepsweep_cli("run", "trainer.max_epochs=many", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode != 0
    assert "trainer.max_epochs: expected int" in result.stderr


def test_gpu_trainer_without_gpu_fails_early(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from deepsweep.stages.pipeline import execute

    with pytest.raises(ConfigError, match="trainer.accelerator=gpu: no CUDA device"):
        execute("prepare", compose(["trainer=gpu"]), tmp_path / "artifacts")


def test_bad_steps_per_call_stops_before_the_first_stage_writes(tmp_path):
    from deepsweep.stages.pipeline import execute

    with pytest.raises(ConfigError, match="trainer.steps_per_call: must be >= 1, got 0"):
        execute("prepare", compose(["trainer.steps_per_call=0"]), tmp_path / "artifacts")
    assert not (tmp_path / "artifacts" / "prepare").exists()


@pytest.mark.slow  # 20-45 s here: started first, so it does not leave a worker alone at the end
def test_ready_made_pipelines_match_the_root_stages_and_validate():
    from deepsweep import pipelines

    assert pipelines.names(), "no ready-made pipelines found"
    # dvc.yaml code deps, pipelines/*/dvc.yaml and params.yaml are what `deepsweep pipelines` writes.
    assert pipelines.drift() == [], "run `make pipelines` (deepsweep pipelines) and commit the result"
    for name in pipelines.names():
        load_params(ROOT / "pipelines" / name / "params.yaml")


def test_the_root_stages_declare_the_params_their_outputs_record():
    """dvc.yaml's params of each stage are stages.STAGE_PARAMS: what run.json records and the next stage checks."""
    from deepsweep import pipelines
    from deepsweep.stages import STAGE_PARAMS

    text = (ROOT / "dvc.yaml").read_text()
    declared = {name: stage["params"] for name, stage in yaml.safe_load(text)["stages"].items()}
    assert declared == {name: list(params) for name, params in STAGE_PARAMS.items()}
    # A param dropped from dvc.yaml by hand comes back with `deepsweep pipelines`.
    edited = text.replace("      - finetune.label_fraction\n", "", 1)
    assert edited != text and pipelines.root_dvc_yaml(edited) == text
    # A stage the generator does not know, a params file's keys in one it knows, a comment at the stages' level
    # and a top-level block after the stages with a params-like item: as written.
    extra = "  my-report.v2:\n    cmd: python report.py\n    params:\n      - report\n"
    with_extra = (text.replace("  pretrain:\n", extra + "  pretrain:\n", 1)
                  .replace("      - logger.embedding_plot\n", "      - logger.embedding_plot\n"
                           "      - other.yaml:\n          - threshold\n  # kept\n", 1)
                  + "artifacts:\n  model:\n    params:\n      - kept\n")
    assert pipelines.root_dvc_yaml(with_extra) == with_extra
    # A comment at the stages' level inside a stage does not end it: its params are still generated.
    commented = text.replace("    cmd: deepsweep stage evaluate\n", "  # the last stage\n    cmd: deepsweep stage evaluate\n")
    assert pipelines.root_dvc_yaml(commented.replace("      - logger.embedding_plot\n", "", 1)) == commented
    # A params item with a comment after it is generated once, not kept beside its generated copy.
    assert pipelines.root_dvc_yaml(text.replace("      - finetune.label_fraction\n",
                                                "      - finetune.label_fraction  # the probe's labels\n", 1)) == text


def test_each_experiment_names_itself_as_a_param():
    assert compose([])["experiment_name"] == "none"
    for name in options("experiment"):
        assert flatten(compose([f"experiment={name}"]))["experiment_name"] == name


def test_validation_lists_every_problem_and_a_refused_target_alone(compose):
    from deepsweep.config import ConfigError, validate

    # Problems of different keys, pretrain.optimizer's fields among them, are all reported at once.
    with pytest.raises(ConfigError) as problems:
        validate(compose("pretrain.optimizer.lr=-1", "trainer.max_epochs=0"))
    assert "pretrain.optimizer.lr: -1 is out of range" in str(problems.value)
    assert "trainer.max_epochs: 0 is out of range" in str(problems.value)
    # A _target_ no option file offers is refused alone: rules that ask what the data's class is cannot judge
    # the rest (data.batch_size=0 is allowed for graph data only).
    with pytest.raises(ConfigError) as refused:
        validate(compose("data=karate", "model=gcn", "pretrain=none", "data._target_=collections.Counter",
                         "trainer.max_epochs=0"))
    assert str(refused.value).startswith("data._target_: 'collections.Counter' is not allowed") and \
        "\n" not in str(refused.value)


def test_options_and_readmes_group_table_name_every_option(capsys):
    """`deepsweep options` and README's table of config groups list every option file, the ready-made
    experiments, searches and launchers included (README's experiment row had fallen four behind)."""
    import re

    from deepsweep.cli.main import LISTED_GROUPS, main
    from deepsweep.config import options

    assert main(["options"]) == 0
    listed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert list(listed) == list(LISTED_GROUPS)
    readme = (ROOT / "README.md").read_text()
    for group in LISTED_GROUPS:
        assert listed[group].split(", ") == options(group)
        row = re.search(rf"^\| `{re.escape(group)}` \| (.*) \|$", readme, re.M)
        assert row, f"README's table of config groups has no row for {group}"
        missing = [o for o in options(group) if f"`{o}`" not in row.group(1)]
        assert not missing, f"README's {group} row does not name {', '.join(missing)}"


@pytest.mark.parametrize("override,message", [
    ("modle=lenet", "modle: unknown top-level key (did you mean model?); allowed: data, model,"),
    ("optimizer.lrr=0.1", "optimizer.lrr: unknown key (not in conf/optimizer/adam.yaml) (did you mean lr?); "
                          "allowed keys: betas, lr, name, weight_decay"),
])
def test_a_key_not_in_the_config_names_the_keys_allowed_and_the_closest(override, message):
    """Hydra's own message ('To append to your config use +modle=lenet') led to a second error: the validator's
    comes first, with the closest key."""
    with pytest.raises(ConfigError) as refused:
        compose([override])
    assert str(refused.value).startswith(message)


def test_the_words_of_each_rule_are_those_the_module_that_reads_them_takes():
    import inspect

    from deepsweep import constraints as c
    from deepsweep.models import gnn, seq2seq, sequence
    from deepsweep.nn import generators, init, regularizers
    from deepsweep.tasks import adversarial, graph_ssl, rbm, reconstruct, sequence_ssl, variational

    assert c.INIT_SCHEMES == init.SCHEMES and c.DROPOUT_KINDS == regularizers.DROPOUT_KINDS
    assert c.GENERATORS == generators.GENERATORS and c.GENERATOR_OUTPUTS == generators.OUTPUTS
    assert c.RECURRENT_CELLS == tuple(sequence.CELLS) == tuple(seq2seq.DECODER_CELLS)
    assert c.RECURRENT_POOLING == sequence.POOLING and c.GRAPH_AGGREGATORS == gnn.AGGREGATORS
    assert c.NOISES == reconstruct.NOISES and c.LIKELIHOODS == variational.LIKELIHOODS and c.VISIBLE_UNITS == rbm.VISIBLE
    assert c.ADVERSARIAL_LOSSES == adversarial.LOSSES
    assert c.TASK_METHODS == {"GraphSelfSupervisedTask": graph_ssl.METHODS, "SequencePretrainTask": sequence_ssl.METHODS,
                              "Word2VecTask": sequence_ssl.WORD2VEC_METHODS}
    assert f"allowed: {', '.join(c.TRANSFORMER_POOLING)}" in inspect.getsource(sequence.Transformer)


@pytest.mark.parametrize("overrides, compositions", [
    # 7 points; a group choice (init) and a list (hidden_dims) are composed: 3 of those combinations occur.
    (["init=xavier_uniform,he_normal", "seed=range(0,4)", "optimizer.lr=0.001,0.01", "model.hidden_dims=[32],[64]"], 3),
    (["experiment=cora_gcn", "seed=0,1", "optimizer.lr=0.005,0.01", "data.batch_size=0"], 1),
    (["optimizer=momentum", "optimizer.momentum=0.5,0.9", "logger.experiment_name=a,b", "regularizer=dropout",
      "regularizer.dropout=0.1,0.5", "pretrain.anomaly_class=null,3", "trainer.deterministic=true,false"], 1),
])
def test_a_sweep_points_plain_values_are_set_on_one_composition_as_hydra_sets_them(overrides, compositions,
                                                                                   monkeypatch):
    """The up-front check composes each point that differs from another in plain values (seed, lr) once, not
    once a point: each point's config must still be the one Hydra composes for it."""
    from deepsweep import config
    from deepsweep.cli import main

    points = main._sweep_points(overrides)
    expected = [OmegaConf.to_container(compose(point)) for point in points]
    calls = []
    original = config.compose
    monkeypatch.setattr(config, "compose", lambda point: calls.append(point) or original(point))
    got = [OmegaConf.to_container(cfg) for cfg in main._point_configs(points)]
    assert got == expected
    assert len(calls) == compositions, calls


def test_a_plain_value_for_a_key_the_config_lacks_is_hydras_error():
    from deepsweep.cli import main

    points = main._sweep_points(["seed=0,1", "optimizer.momentum=0.9"])
    with pytest.raises(ConfigError, match="optimizer.momentum: unknown key"):
        list(main._point_configs(points))


def test_output_piped_into_a_reader_that_leaves_is_no_traceback():
    """`deepsweep options | head -1`: head exits after its line, and the next write finds the pipe closed."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # a reader that has left already: the first write fails as it fails after head's exit
    try:
        done = subprocess.run([sys.executable, "-m", "deepsweep", "options"], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 141 and "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
