"""Graph families (torch-geometric) against hand computation, and the graph pipeline on KarateClub/Cora."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import SHARED_DATA, requires_shared
from deepsweep.config import ConfigError
from deepsweep.factory import check_compatible, create_model
from deepsweep.stages.pipeline import execute


def test_gcn_propagation_matches_the_formula(compose):
    # Path graph 0 - 1 - 2 (edges both ways).
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    model = create_model(compose("data=karate", "model=gcn", "model.hidden_dims=[3]"), (2,), 2)
    conv = model.encoder.convs[0]
    a_hat = torch.tensor([[1.0, 1, 0], [1, 1, 1], [0, 1, 1]])  # A + I
    d = a_hat.sum(1).pow(-0.5).diag()
    expected = d @ a_hat @ d @ x @ conv.lin.weight.T + conv.bias
    assert torch.allclose(conv(x, edge_index), expected, atol=1e-6)


@pytest.mark.parametrize("overrides", [["model=gcn"], ["model=gat"], ["model=sage"], ["model=sage", "model.aggr=max"],
                                       ["model=sage", "model.aggr=lstm"], ["model=gcn", "model.hidden_dims=[8,8]",
                                                                           "model.residual=true"]])
def test_graph_families_give_node_logits(compose, overrides):
    from torch_geometric.datasets import KarateClub

    data = KarateClub()[0]
    model = create_model(compose("data=karate", *overrides), (data.num_features,), 4)
    if "lstm" in overrides[-1]:
        order = data.edge_index[1].argsort()  # the LSTM aggregator wants edges sorted by target
        data.edge_index = data.edge_index[:, order]
    assert model(data.x, data.edge_index).shape == (34, 4)
    assert model.encoder(data.x, data.edge_index).shape == (34, model.feature_dim)


def test_init_reaches_torch_geometric_convs(compose):
    torch.manual_seed(0)
    model = create_model(compose("data=karate", "model=gcn", "model.hidden_dims=[256]", "init=he_normal"), (400,), 4)
    weight = model.encoder.convs[0].lin.weight
    assert weight.var().item() == pytest.approx(2 / 400, rel=0.05)
    zeros = create_model(compose("data=karate", "model=gat", "init=zeros"), (10,), 4)
    assert torch.all(zeros.encoder.convs[0].lin.weight == 0)


def test_kinds_must_agree(compose):
    with pytest.raises(ConfigError, match="model=mlp does not read graph data .data=karate.; models for it: gat, gcn, sage"):
        check_compatible(compose("data=karate"))
    with pytest.raises(ConfigError, match="pretrain=autoencoder does not apply to graph data.*: dgi, gae, none"):
        check_compatible(compose("data=karate", "model=gcn"))
    with pytest.raises(ConfigError, match="model=gcn does not read tensor data .data=digits.; models for it: dcgan, lenet, mlp, resnet"):
        check_compatible(compose("model=gcn"))
    with pytest.raises(ValueError, match="dropconnect: graph convolutions have no dense layer"):
        create_model(compose("data=karate", "model=gcn", "regularizer=dropconnect"), (10,), 4)


@pytest.mark.parametrize("pretrain", ["gae", "dgi"])
def test_karate_pipeline_end_to_end(compose, tmp_path, pretrain):
    cfg = compose("data=karate", "model=gcn", f"pretrain={pretrain}", "pretrain.epochs=5", "trainer.max_epochs=30",
                  "optimizer.lr=0.01")
    artifacts = tmp_path / "artifacts"
    for stage in ("prepare", "pretrain", "finetune", "evaluate"):
        execute(stage, cfg, artifacts)
    metrics = json.loads((artifacts / "evaluate" / "metrics.json").read_text())
    assert {"accuracy", "f1_macro", "roc_auc", "loss", "probe_accuracy", "probe_f1_macro", "probe_roc_auc"} <= set(metrics)
    assert metrics["probe_accuracy"] > 1 / 4  # the embeddings separate the karate clubs better than chance
    assert (artifacts / "evaluate" / "node_embedding.png").stat().st_size > 0
    meta = json.loads((artifacts / "prepare" / "meta.json").read_text())
    assert meta["sizes"] == {"train": 4, "val": 15, "test": 15}


@requires_shared("planetoid")
def test_cora_public_split_read_without_writing_shared(compose, tmp_path):
    shared = SHARED_DATA / "planetoid"
    before = sorted(p.name for p in shared.rglob("*"))
    execute("prepare", compose("data=cora", "model=gcn", "pretrain=none"), tmp_path / "artifacts")
    meta = json.loads((tmp_path / "artifacts" / "prepare" / "meta.json").read_text())
    assert meta["sizes"] == {"train": 140, "val": 500, "test": 1000}
    assert meta["num_nodes"] == 2708 and meta["num_edges"] == 10556 and meta["input_shape"] == [1433]
    assert sorted(p.name for p in shared.rglob("*")) == before


def test_label_fraction_on_graph_masks(compose, tmp_path):
    from deepsweep.data.loaders import PreparedData

    execute("prepare", compose("data=karate", "model=gcn", "pretrain=none"), tmp_path / "a")
    data = PreparedData.load(tmp_path / "a" / "prepare")
    assert data.loader("train").num_labels == 4
    assert data.loader("val", label_fraction=0.5).num_labels < data.loader("val").num_labels
