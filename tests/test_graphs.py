"""Graph families (torch-geometric) against hand computation, and the graph pipeline on KarateClub/Cora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import requires_shared
from deepsweep.config import ConfigError
from deepsweep.factory import build, build_model, check_compatible
from deepsweep.stages.pipeline import execute


def test_gcn_propagation_matches_the_formula(compose):
    # Path graph 0 - 1 - 2 (edges both ways).
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    model = build_model(compose("data=karate", "model=gcn", "model.hidden_dims=[3]"), (2,), 2)
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
    model = build_model(compose("data=karate", *overrides), (data.num_features,), 4)
    if "lstm" in overrides[-1]:
        order = data.edge_index[1].argsort()  # the LSTM aggregator wants edges sorted by target
        data.edge_index = data.edge_index[:, order]
    assert model(data.x, data.edge_index).shape == (34, 4)
    assert model.encoder(data.x, data.edge_index).shape == (34, model.feature_dim)


def test_init_reaches_torch_geometric_convs(compose):
    torch.manual_seed(0)
    model = build_model(compose("data=karate", "model=gcn", "model.hidden_dims=[256]", "init=he_normal"), (400,), 4)
    weight = model.encoder.convs[0].lin.weight
    assert weight.var().item() == pytest.approx(2 / 400, rel=0.05)
    zeros = build_model(compose("data=karate", "model=gat", "init=zeros"), (10,), 4)
    assert torch.all(zeros.encoder.convs[0].lin.weight == 0)


def test_kinds_must_agree(compose):
    with pytest.raises(ConfigError, match="model=mlp does not read graph data labelled with a class per input .data=karate.; models for it: gat, gcn, sage"):
        check_compatible(compose("data=karate"))
    with pytest.raises(ConfigError, match="pretrain=autoencoder does not apply to graph data.*: dgi, gae, none"):
        check_compatible(compose("data=karate", "model=gcn"))
    with pytest.raises(ConfigError, match="model=gcn does not read tensor data labelled with a class per input .data=digits.; models for it: dcgan, inception, lenet, mlp, resnet, vgg"):
        check_compatible(compose("model=gcn"))
    with pytest.raises(ValueError, match="dropconnect: graph convolutions have no dense layer"):
        build_model(compose("data=karate", "model=gcn", "regularizer=dropconnect"), (10,), 4)


@pytest.mark.parametrize("pretrain", ["gae", "dgi"])  # vgae's mechanics: test_graph_autoencoder_trains_on_...
def test_karate_pipeline_end_to_end(compose, tmp_path, pretrain):
    cfg = compose("data=karate", "model=gcn", f"pretrain={pretrain}", "pretrain.epochs=5", "trainer.max_epochs=30",
                  "optimizer.lr=0.01")
    artifacts = tmp_path / "artifacts"
    for stage in ("prepare", "pretrain", "finetune", "evaluate"):
        execute(stage, cfg, artifacts)
    metrics = json.loads((artifacts / "evaluate" / "metrics.json").read_text())
    assert {"accuracy", "f1_macro", "roc_auc", "loss", "probe_accuracy", "probe_f1_macro", "probe_roc_auc"} <= set(metrics)
    assert metrics["probe_accuracy"] > 1 / 4  # the embeddings separate the karate clubs better than chance
    # The graph autoencoders hold out 10% of the edges and score them (pretrain stage) against as many non-edges.
    assert ({"link_roc_auc", "link_average_precision"} <= set(metrics)) == (pretrain != "dgi")
    assert (artifacts / "evaluate" / "node_embedding.png").stat().st_size > 0
    meta = json.loads((artifacts / "prepare" / "meta.json").read_text())
    assert meta["sizes"] == {"train": 4, "val": 15, "test": 15}
    # How alike the trained encoder makes the nodes: the mean cosine distance over all pairs, as the N x N
    # matrix gives it.
    from deepsweep import factory
    from deepsweep.data.loaders import PreparedData

    data = PreparedData.load(artifacts / "prepare")
    model = factory.build_model(cfg, data.input_shape, data.num_classes)
    model.load_state_dict(torch.load(artifacts / "finetune" / "model.pt", weights_only=True)["state_dict"])
    x, edge_index, _, _ = next(iter(data.loader("test")))
    with torch.inference_mode():
        units = torch.nn.functional.normalize(model.encoder.eval()(x, edge_index).double(), dim=1)
    distance = 1 - units @ units.T
    n = len(units)
    assert metrics["embedding_mad"] == pytest.approx(float(distance.sum() / (n * (n - 1))), rel=1e-9)
    assert 0 < metrics["embedding_mad"] < 2


def test_mean_average_distance_is_zero_for_alike_nodes_and_one_for_orthogonal_ones():
    from deepsweep.metrics import mean_average_distance

    assert mean_average_distance(torch.tensor([[1.0, 2.0]] * 5)) == pytest.approx(0.0, abs=1e-12)
    assert mean_average_distance(torch.eye(4)) == pytest.approx(1.0)


@requires_shared("planetoid")
def test_cora_public_split_read_without_writing_into_the_raw_folder(compose, tmp_path):
    from deepsweep.data.downloads import ensure

    shared = tmp_path / "planetoid"
    ensure("cora", shared)  # from the test mirror
    before = sorted(p.name for p in shared.rglob("*"))
    execute("prepare", compose("data=cora", "model=gcn", "pretrain=none", f"data.root={shared}"), tmp_path / "artifacts")
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


def _grid_graph():
    """A 3x3 grid, edges both ways: every node has 2 to 4 neighbours."""
    from torch_geometric.data import Data

    edges = []
    for r in range(3):
        for c in range(3):
            n = 3 * r + c
            if c < 2:
                edges += [(n, n + 1), (n + 1, n)]
            if r < 2:
                edges += [(n, n + 3), (n + 3, n)]
    return Data(x=torch.arange(9.0).unsqueeze(1), edge_index=torch.tensor(edges).t(), num_nodes=9)


def test_neighbor_sampler_respects_fanouts_and_edges():
    from torch_geometric.loader import NeighborLoader

    from deepsweep.data.sampling import sample_neighbors
    from deepsweep.internals import torch_neighbor_sampler

    torch.manual_seed(0)
    graph = _grid_graph()
    real = set(map(tuple, graph.edge_index.t().tolist()))
    loader = NeighborLoader(graph, [2, 1], batch_size=3, shuffle=True,
                            neighbor_sampler=torch_neighbor_sampler(sample_neighbors)(graph, [2, 1]))
    seen = set()
    for batch in loader:
        assert torch.equal(batch.x.flatten().long(), batch.n_id)  # features sliced for the sampled nodes
        assert set(map(tuple, batch.n_id[batch.edge_index].t().tolist())) <= real  # only real edges
        in_degree = torch.bincount(batch.edge_index[1], minlength=batch.num_nodes)
        assert (in_degree[: batch.batch_size] <= 2).all()  # hop 1: at most 2 neighbours per seed
        first_hop = batch.num_sampled_nodes[1]
        hop2 = in_degree[batch.batch_size : batch.batch_size + first_hop]
        assert (hop2 <= 1).all()  # hop 2: at most 1 neighbour per node first reached at hop 1
        assert len(set(batch.n_id.tolist())) == batch.num_nodes  # each node once
        seen.update(batch.n_id[: batch.batch_size].tolist())
    assert seen == set(range(9))  # an epoch seeds every node once


def test_neighbor_sampler_with_all_neighbours_gives_the_k_hop_subgraph():
    from torch_geometric.utils import k_hop_subgraph

    from deepsweep.data.sampling import sample_neighbors

    graph = _grid_graph()
    source, target = graph.edge_index
    row = source[target.argsort(stable=True)]  # CSC: in-neighbours grouped by target node
    colptr = torch.zeros(10, dtype=torch.long)
    colptr[1:] = torch.bincount(target, minlength=9).cumsum(0)
    node, src, dst, _, per_hop, _ = sample_neighbors(colptr, row, torch.tensor([0]), [-1, -1])
    subset, _, _, _ = k_hop_subgraph(0, 2, graph.edge_index, num_nodes=9)
    assert sorted(node.tolist()) == sorted(subset.tolist()) == [0, 1, 2, 3, 4, 6]
    assert per_hop == [1, 2, 3]
    # Edges into the seed and into its first-hop nodes: all of them, as messages for 2 convs.
    sampled = set(zip(node[src].tolist(), node[dst].tolist()))
    expected = {(s, d) for s, d in graph.edge_index.t().tolist() if d in (0, 1, 3)}
    assert sampled == expected
    with pytest.raises(ValueError, match="distinct"):
        sample_neighbors(colptr, row, torch.tensor([0, 0]), [1])


def test_random_walks_follow_edges():
    from deepsweep.data.sampling import random_walks

    graph = _grid_graph()
    source, target = graph.edge_index
    order = source.argsort()
    rowptr = torch.zeros(10, dtype=torch.long)
    rowptr[1:] = torch.bincount(source, minlength=9).cumsum(0)
    walks = random_walks(rowptr, target[order], torch.arange(9).repeat(20), 6)
    assert walks.shape == (180, 7) and torch.equal(walks[:, 0], torch.arange(9).repeat(20))
    real = set(map(tuple, graph.edge_index.t().tolist()))
    steps = set(map(tuple, walks.unfold(1, 2, 1).reshape(-1, 2).tolist()))
    assert steps <= real and len(steps) == len(real)  # every step is an edge; 180 walks use them all


def test_inductive_split_hides_unseen_nodes(compose, tmp_path):
    from deepsweep.data.loaders import PreparedData

    execute("prepare", compose("data=karate", "model=sage", "pretrain=none", "data.inductive=true"), tmp_path / "a")
    data = PreparedData.load(tmp_path / "a" / "prepare")
    x, edge_index, y, mask = next(iter(data.loader("train")))
    assert len(y) == 34 - 15 - 15 and int(mask.sum()) == 4  # val and test nodes are gone, with their edges
    assert int(edge_index.max()) < len(y)
    assert len(next(iter(data.loader("val")))[2]) == 34 - 15
    x, edge_index, y, mask = next(iter(data.loader("test")))
    assert len(y) == 34 and int(mask.sum()) == 15 and edge_index.shape[1] == 156
    assert (edge_index[1].diff() >= 0).all()  # sorted by target, as the LSTM aggregator needs


def test_neighbor_sampling_config_is_checked(compose):
    with pytest.raises(ConfigError, match=r"data.num_neighbors: 1 hop\(s\) \[5\] for model=sage with 2 graph convs"):
        check_compatible(compose("data=karate", "model=sage", "pretrain=none", "data.batch_size=8",
                                 "data.num_neighbors=[5]"))
    with pytest.raises(ConfigError, match="data.num_neighbors: .*an int >= 1, or -1"):
        check_compatible(compose("data=karate", "model=sage", "pretrain=none", "data.batch_size=8",
                                 "data.num_neighbors=[5,0]"))
    check_compatible(compose("data=karate", "model=sage", "pretrain=none", "data.batch_size=8",
                             "model.hidden_dims=[8,8]", "data.num_neighbors=[5,5,-1]"))


def test_random_walk_loss_prefers_embeddings_that_follow_the_graph():
    from deepsweep.tasks.graph_ssl import random_walk_loss

    torch.manual_seed(0)
    graph = _grid_graph()
    # Two well-separated clusters that cut the grid's edges at random vs. embeddings smooth over the grid.
    smooth = torch.stack([torch.arange(9.0) % 3, torch.arange(9.0) // 3], 1) - 1.0
    rough = torch.randn(9, 2) * smooth.norm(dim=1, keepdim=True).mean()
    kwargs = dict(walk_length=2, walks_per_node=50, num_negatives=5)
    assert random_walk_loss(3 * smooth, graph.edge_index, **kwargs) < random_walk_loss(3 * rough, graph.edge_index, **kwargs)


@pytest.mark.parametrize("overrides", [
    ["model=sage", "model.aggr=lstm", "pretrain=none"],  # the LSTM aggregator needs edges sorted by target
    ["model=sage", "pretrain=random_walk", "data.batch_size=8", "data.inductive=true"],
    ["model=gat", "pretrain=dgi", "data.batch_size=8"],
])
def test_karate_pipeline_with_sampling_and_inductive_split(compose, tmp_path, overrides):
    """Fine-tuning lowers the loss on the 4 labelled nodes, and evaluate scores that model on the 15
    test nodes: its metrics and confusion.csv match the saved model's own predictions there. (5 epochs
    on 4 labels are not enough to beat chance on the test nodes: not asserted.)"""
    import csv

    from sklearn.metrics import f1_score, roc_auc_score

    from deepsweep.data.loaders import PreparedData

    cfg = compose("data=karate", *overrides, "pretrain.epochs=3", "trainer.max_epochs=5")
    check_compatible(cfg)
    artifacts = tmp_path / "artifacts"
    results = {stage: execute(stage, cfg, artifacts) for stage in ("prepare", "pretrain", "finetune", "evaluate")}
    assert results["finetune"]["n_train_labels"] == 4  # sampled or not, training reads the 4 labelled nodes

    data = PreparedData.load(artifacts / "prepare")
    pretrained = artifacts / "pretrain" / "encoder.pt" if cfg.pretrain.name != "none" else None
    start = build_model(cfg, data.input_shape, data.num_classes, encoder=pretrained)  # where fine-tuning started
    tuned = build_model(cfg, data.input_shape, data.num_classes)
    tuned.load_state_dict(torch.load(artifacts / "finetune" / "model.pt", weights_only=True)["state_dict"])

    def outputs(model, split):
        x, edge_index, y, mask = next(iter(data.loader(split)))
        with torch.no_grad():
            return model.eval()(x, edge_index)[mask], y[mask]

    loss = lambda model: torch.nn.functional.cross_entropy(*outputs(model, "train")).item()  # noqa: E731
    assert loss(tuned) < loss(start)
    logits, y = outputs(tuned, "test")
    probs, predicted = logits.softmax(1), logits.argmax(1)
    evaluate = results["evaluate"]
    assert len(y) == 15
    assert evaluate["accuracy"] == pytest.approx((predicted == y).float().mean().item())
    assert evaluate["f1_macro"] == pytest.approx(f1_score(y, predicted, average="macro", labels=range(4)), abs=1e-6)
    assert evaluate["roc_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", labels=range(4)), abs=1e-6)
    with open(artifacts / "evaluate" / "confusion.csv", newline="") as fh:
        names = data.meta["class_names"]
        assert list(csv.reader(fh))[1:] == [[names[a], names[p]] for a, p in zip(y.tolist(), predicted.tolist())]


def test_graph_batch_size_gives_sampled_mini_batches(compose, tmp_path, monkeypatch):
    from deepsweep.data import loaders
    from deepsweep.data.loaders import PreparedData

    # One config for every stage: a stage refuses an input made from other values of its stage's params.
    cfg = compose("data=karate", "model=sage", "pretrain=dgi", "data.batch_size=8", "data.num_neighbors=[3,2]",
                  "pretrain.epochs=1", "trainer.max_epochs=1")
    execute("prepare", cfg, tmp_path / "a")
    data = PreparedData.load(tmp_path / "a" / "prepare")
    batches = list(data.loader("train", 8, shuffle=True, num_neighbors=[5, 5], all_nodes=True))
    assert len(batches) == 5 and sum(int(b[3].sum()) for b in batches) == 34  # every node seeds once
    assert len(list(data.loader("train", 8, num_neighbors=[5, 5]))) == 1  # the 4 labelled nodes
    assert len(data.loader("train", 0, num_neighbors=[5, 5])) == 1  # batch_size 0: the full graph

    made = []  # the stages hand data.num_neighbors to the loader, pretraining seeding from every node
    original = loaders.SampledGraphLoader.__init__

    def spy(self, view, batch_size, num_neighbors, shuffle, all_nodes):
        made.append((batch_size, num_neighbors, all_nodes))
        original(self, view, batch_size, num_neighbors, shuffle, all_nodes)

    monkeypatch.setattr(loaders.SampledGraphLoader, "__init__", spy)
    for stage in ("pretrain", "finetune"):
        execute(stage, cfg, tmp_path / "a")
    assert made == [(8, [3, 2], True), (8, [3, 2], False)]


def test_random_walk_settings_are_checked_by_name(compose, tmp_path):
    cfg = compose("data=karate", "model=sage", "pretrain=random_walk", "pretrain.task.walk_length=0")
    execute("prepare", cfg, tmp_path / "a")
    with pytest.raises(ConfigError, match="pretrain.task.walk_length: must be >= 1, got 0"):
        execute("pretrain", cfg, tmp_path / "a")


# --- link prediction (pretrain=gae / vgae with held-out edges) -------------------------------------------

def _karate_edges():
    from torch_geometric.datasets import KarateClub

    data = KarateClub()[0]
    return data.x, data.edge_index


def _pairs(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for a, b in edge_index.t().tolist()}


def test_link_split_leaves_no_held_out_edge_in_the_training_graph():
    from deepsweep.data.links import split_edges

    x, edge_index = _karate_edges()
    edges = _pairs(edge_index)
    assert len(edges) == 78
    split = split_edges(edge_index, 34, 0.05, 0.1, seed=3)
    train, val, test = _pairs(split.train_edge_index), _pairs(split.val_pos), _pairs(split.test_pos)
    # floor(5% of 78) and floor(10% of 78), as the paper's mask_test_edges; every edge in exactly one part.
    assert (split.val_pos.shape[1], split.test_pos.shape[1]) == (3, 7)
    assert train | val | test == edges and not (train & val or train & test or val & test)
    # The training graph holds each training edge both ways and nothing else (what the encoder propagates over).
    directed = {tuple(e) for e in split.train_edge_index.t().tolist()}
    assert directed == {(a, b) for a, b in train} | {(b, a) for a, b in train}
    # Negatives: as many as positives, distinct, no self-loop, no edge of the whole graph, val and test apart.
    neg_val, neg_test = _pairs(split.val_neg), _pairs(split.test_neg)
    assert (len(neg_val), len(neg_test)) == (3, 7)
    assert not (neg_val | neg_test) & edges and not neg_val & neg_test
    assert all(a != b for a, b in neg_val | neg_test)
    # A pure function of graph and seed (a resumed run holds out the same edges); another seed, other edges.
    again = split_edges(edge_index, 34, 0.05, 0.1, seed=3)
    assert all(torch.equal(getattr(split, f), getattr(again, f)) for f in ("train_edge_index", "test_pos", "test_neg"))
    assert _pairs(split_edges(edge_index, 34, 0.05, 0.1, seed=4).test_pos) != test


def test_pairwise_auc_is_roc_auc_with_ties():
    from sklearn.metrics import roc_auc_score

    from deepsweep.tasks.graph_ssl import pairwise_auc

    pos, neg = torch.tensor([0.9, 0.5, 0.5, 0.2]), torch.tensor([0.5, 0.1, 0.3])
    expected = roc_auc_score([1] * 4 + [0] * 3, torch.cat([pos, neg]).numpy())
    assert float(pairwise_auc(pos, neg)) == pytest.approx(expected)
    assert float(pairwise_auc(torch.tensor([1.0, 2.0]), torch.tensor([0.0]))) == 1.0


@pytest.mark.parametrize("method", ["gae", "vgae"])
def test_graph_autoencoder_trains_on_the_training_edges_only(compose, method):
    """Every graph the encoder propagates over during training and validation is the training graph; the
    codes come from a conv without activation (negative entries possible); VGAE's loss adds KL / nodes."""
    import random

    from deepsweep.data.links import split_edges
    from deepsweep.factory import build_task

    cfg = compose("data=karate", "model=gcn", f"pretrain={method}", "model.hidden_dims=[8]", "seed=5")
    x, edge_index = _karate_edges()
    model = build_model(cfg, (x.shape[1],), 4)
    task = build_task(cfg, cfg.pretrain.task, model, "pretrain")
    seen = []
    model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    batch = (x, edge_index, torch.zeros(34, dtype=torch.long), torch.ones(34, dtype=torch.bool))
    random.seed(0)  # negative sampling draws from Python's and torch's generators
    torch.manual_seed(0)
    task.train()
    loss = task.training_loss(batch).detach()
    task.eval()
    task.validation_batch(batch)
    scores = task.link_scores(batch)
    split = task.link_split(x, edge_index)
    held_out = _pairs(split.test_pos) | _pairs(split.val_pos)
    assert len(seen) == 3 and all(not _pairs(graph) & held_out for graph in seen)
    assert torch.equal(split.test_pos, split_edges(edge_index, 34, 0.05, 0.1, seed=5).test_pos)  # the run's seed
    assert scores["pos"].shape == (7,) and scores["neg"].shape == (7,)
    assert ((0 <= scores["pos"]) & (scores["pos"] <= 1)).all()
    z = task.objective.encode(x, split.train_edge_index)
    assert (z < 0).any()  # no ReLU on the codes: an inner product can score a non-edge below 1/2
    if method == "vgae":
        objective = task.objective
        random.seed(0)
        torch.manual_seed(0)
        task.train()
        with torch.no_grad():
            recon = objective.recon_loss(objective.encode(x, split.train_edge_index), split.train_edge_index)
            mu, logstd = objective.__mu__, objective.__logstd__
            kl = -0.5 * torch.mean(torch.sum(1 + 2 * logstd - mu ** 2 - logstd.exp() ** 2, dim=1))
        assert float(kl) > 0
        assert float(loss) == pytest.approx(float(recon + kl / 34), rel=1e-5)


def test_link_prediction_needs_one_whole_graph(compose):
    from deepsweep.config import validate

    validate(compose("data=cora", "model=gcn", "pretrain=gae"))
    with pytest.raises(ConfigError, match=r"pretrain\.task\.link_test_fraction.*data\.inductive=false"):
        validate(compose("data=cora", "model=gcn", "pretrain=gae", "data.inductive=true"))
    with pytest.raises(ConfigError, match=r"pretrain\.task\.link_val_fraction.*data\.batch_size=0"):
        validate(compose("data=cora", "model=sage", "pretrain=vgae", "data.batch_size=64"))
    validate(compose("data=cora", "model=sage", "pretrain=vgae", "data.batch_size=64",
                     "pretrain.task.link_val_fraction=0", "pretrain.task.link_test_fraction=0"))


def test_each_planetoid_option_reads_the_set_it_names(compose):
    """Its name tags the runs and meta.json: another Planetoid set under it would be recorded under its name."""
    from deepsweep.config import ConfigError, validate

    with pytest.raises(ConfigError, match="data.name_in_source: 'CiteSeer' is not allowed; allowed: the set the "
                                          "option names \\(data=cora: Cora, data=citeseer: CiteSeer, "
                                          "data=pubmed: PubMed\\)"):
        validate(compose("data=cora", "model=gcn", "pretrain=none", "data.name_in_source=CiteSeer"))
    with pytest.raises(ConfigError, match="data.name_in_source: 'Cora' is not allowed"):
        validate(compose("data=citeseer", "model=gcn", "pretrain=none", "data.name_in_source=Cora"))
    with pytest.raises(ConfigError, match="data.name_in_source: 'CiteSeer' is not allowed"):
        validate(compose("data=pubmed", "model=gcn", "pretrain=none", "data.name_in_source=CiteSeer"))


@pytest.mark.parametrize("option,folder", [("citeseer", "CiteSeer"), ("pubmed", "PubMed")])
def test_planetoid_files_come_from_planetoids_urls_to_where_its_loader_reads_them(compose, tmp_path, option, folder):
    from deepsweep.data.downloads import CATALOG, PLANETOID_URL, RawDataset
    from deepsweep.data.graphs import PLANETOID_FILES

    cfg = compose(f"data={option}", "model=gcn", "pretrain=none", f"data.root={tmp_path}")
    catalog: RawDataset = CATALOG[option]
    names = [f"ind.{option}.{part}" for part in PLANETOID_FILES]
    assert [raw.name for raw in catalog.files] == [f"{folder}/raw/{n}" for n in names]
    assert [raw.url for raw in catalog.files] == [PLANETOID_URL + n for n in names]
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}/{folder}/raw lacks the Planetoid file"):
        build(cfg.data).raw_dir()


def _write_planetoid(raw: Path, prefix: str, train: int, unlabelled: int, test_ids: list[int], classes: int):
    """Planetoid's "ind" files (pickles of scipy CSR features and one-hot labels, a graph dict, the test ids in
    the file's order); returns the test rows' features as written (tx)."""
    import pickle

    import numpy as np
    import scipy.sparse as sp

    labelled = train + 500 + unlabelled  # allx: training, the 500 validation nodes PyG takes next, the rest
    rng = np.random.default_rng(0)

    def features(n: int):
        return sp.csr_matrix(rng.integers(0, 2, (n, 8)).astype(np.float32) + np.eye(n, 8, dtype=np.float32))

    def one_hot(n: int):
        return np.eye(classes, dtype=np.int64)[np.arange(n) % classes]

    allx, ally = features(labelled), one_hot(labelled)
    tx = features(len(test_ids))
    parts = {"x": allx[:train], "y": ally[:train], "allx": allx, "ally": ally, "tx": tx, "ty": one_hot(len(test_ids)),
             "graph": {i: [i + 1] for i in range(max(test_ids))}}
    raw.mkdir(parents=True)
    for part, value in parts.items():
        (raw / f"ind.{prefix}.{part}").write_bytes(pickle.dumps(value))
    (raw / f"ind.{prefix}.test.index").write_text("".join(f"{i}\n" for i in test_ids))
    return torch.tensor(tx.toarray())


def test_citeseer_places_its_unsorted_test_rows_and_pads_the_ids_they_skip(compose, tmp_path):
    """CiteSeer's test index is unsorted and skips 15 ids of its range: each test row lands on the node its id
    names, and the skipped ids become zero-feature nodes outside every split that keep their edges, as in Kipf &
    Welling's loader (torch-geometric's Planetoid reads CiteSeer so)."""
    test_ids = [527, 520, 529, 523, 521, 528, 524, 526]  # 522 and 525 skipped
    tx = _write_planetoid(tmp_path / "CiteSeer" / "raw", "citeseer", train=12, unlabelled=8, test_ids=test_ids,
                          classes=6)
    cfg = compose("data=citeseer", "model=gcn", "pretrain=none", f"data.root={tmp_path}")
    graph, meta = build(cfg.data).load()
    assert meta["num_classes"] == 6 and meta["sizes"] == {"train": 12, "val": 500, "test": 8}
    assert meta["num_nodes"] == 530 and meta["input_shape"] == [8]
    for row, node in enumerate(test_ids):  # row-normalized features, as data=citeseer asks
        assert torch.allclose(graph["x"][node], tx[row] / tx[row].sum()), node
    skipped = torch.tensor([522, 525])
    assert not graph["test_mask"][skipped].any() and graph["x"][skipped].abs().sum() == 0
    assert all(((graph["edge_index"] == node).any(dim=0)).any() for node in (522, 525))


def test_pubmed_experiment_is_the_papers_recipe_on_pubmeds_files(compose, tmp_path):
    """experiment=pubmed_gcn reads PubMed's files (3 classes, 60 training papers in the real set) with Kipf &
    Welling's settings; its test ids are contiguous, so no node is padded."""
    test_ids = [512, 510, 513, 511]  # right after allx's rows: 6 training, 500 validation, 4 unlabelled papers
    tx = _write_planetoid(tmp_path / "PubMed" / "raw", "pubmed", train=6, unlabelled=4, test_ids=test_ids,
                          classes=3)
    cfg = compose("experiment=pubmed_gcn", f"data.root={tmp_path}")
    assert (cfg.data.name, cfg.init.scheme, cfg.regularizer.dropout, cfg.optimizer.lr, cfg.optimizer.weight_decay,
            cfg.model.name) == ("pubmed", "xavier_uniform", 0.5, 0.01, 5e-4, "gcn")
    graph, meta = build(cfg.data).load()
    assert meta["num_classes"] == 3 and meta["num_nodes"] == 514
    assert meta["sizes"] == {"train": 6, "val": 500, "test": 4}
    for row, node in enumerate(test_ids):
        assert torch.allclose(graph["x"][node], tx[row] / tx[row].sum()), node


@pytest.mark.parametrize("method", ["random_walk", "gae", "vgae"])
def test_graph_pretraining_adds_its_gradients_in_a_fixed_order(compose, method):
    """``z[index]``'s backward (``IndexBackward0``: ``index_put_`` with accumulate) adds rows with atomic float
    adds across CPU threads, unless deterministic algorithms are on, which Lightning turns off with
    trainer.deterministic false: random-walk pretraining did not repeat bit for bit, and cora_sage_inductive's
    accuracy moved between reruns (0.7870, 0.7880); torch-geometric's inner-product decoder (GAE, VGAE) reads
    codes the same way. Their gradients must go through ``index_select`` (``IndexSelectBackward0``: index_add_,
    in index order)."""
    from deepsweep.factory import build_task

    cfg = compose("data=karate", "model=gcn", f"pretrain={method}")
    task = build_task(cfg, cfg.pretrain.task, build_model(cfg, (8,), 4), "pretrain")
    torch.manual_seed(0)
    x, edge_index = torch.randn(40, 8), torch.randint(0, 40, (2, 160))
    loss = task.training_loss((x, edge_index, torch.zeros(40, dtype=torch.long), torch.ones(40, dtype=torch.bool)))
    seen, todo = set(), [loss.grad_fn]
    while todo:  # every backward node of the loss
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo += [child for child, _ in node.next_functions]
    names = {type(node).__name__ for node in seen}
    assert "IndexSelectBackward0" in names and "IndexBackward0" not in names
