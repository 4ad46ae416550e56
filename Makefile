# deepsweep: `make run` runs the default pipeline end to end; `make test` runs the test suite.
# Both create .venv on first use (Python 3.11, torch pinned to the CPU build, see README for GPUs).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# DVC stages call `deepsweep`: put the venv first on PATH for every recipe and its children.
export PATH := $(BIN):$(PATH)

.PHONY: venv run test bench sweep ui params pipelines clean cora-seeds citeseer-seeds link-seeds uncertainty augment word2vec infogan vanishing pretraining anomaly studies results results-quick losses attention segmentation-losses

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, found {sys.version.split()[0]}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# This machine's pip config lists optional local wheel folders; their absence is not news.
	@# pip byte-compiles what it installs one file after another (torch alone is thousands of files); compiling
	@# afterwards on every core is the same bytecode sooner: a fresh venv here took 188 s, 95 s + 51 s this way.
	@# Like pip, a file that does not compile (a package's template, say) is left to Python at import.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile -e '.[test]' 2>&1 | { grep -v '^WARNING: Location' || true; }
	$(BIN)/python -m compileall -qq -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
	touch $@

run: venv
	test -d .dvc || dvc init --quiet
	dvc repro
	@echo
	@echo "Test metrics (DVC): artifacts/evaluate/metrics.json"
	@dvc metrics show artifacts/evaluate/metrics.json
	@echo "Plots (confusion matrix, ROC curve): dvc plots show artifacts/evaluate/confusion.csv artifacts/evaluate/roc.csv artifacts/evaluate/confusion_matrix.png artifacts/evaluate/roc_curve.png"
	@echo "MLflow runs are in $(CURDIR)/mlflow.db. Open the UI with:"
	@echo "  $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --port 5000"

test: venv
	$(BIN)/python -m pytest -q -n 3 --dist worksteal tests

# Training overhead vs a hand-written loop, start-up, sweep throughput, stage and pipeline costs -> docs/benchmarks.md
bench: venv
	$(BIN)/python -m deepsweep.bench

# Example sweep: init x regularizer, jobs in parallel, one MLflow parent run.
sweep: venv
	$(BIN)/deepsweep run -m init=xavier_uniform,he_normal regularizer=dropout,l2

ui: venv
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --port 5000

params: venv
	$(BIN)/deepsweep params

# Rewrite the root dvc.yaml's code deps and every ready-made pipeline (dvc.yaml from the root's stages, params.yaml
# from its experiment): run after changing dvc.yaml, conf/ or the package's imports. A new one:
# mkdir pipelines/<experiment>; touch pipelines/<experiment>/dvc.yaml; make pipelines
pipelines: venv
	$(BIN)/deepsweep pipelines

# Rerun every ready-made pipeline (dvc repro -f: their dvc.lock and metrics.json too), the baselines and the sweeps
# the README quotes, and rewrite README's result tables from their outputs (56 minutes on this 2-core machine).
results: venv
	test -d .dvc || dvc init --quiet
	$(BIN)/deepsweep results

# The quick rows (default pipeline, ECG200 with and without pretraining, digits DAE; a few minutes), checked
# against README without changing it: exit 1 names every cell that differs.
results-quick: venv
	test -d .dvc || dvc init --quiet
	$(BIN)/deepsweep results --quick

clean:
	rm -rf artifacts outputs multirun mlruns mlartifacts mlflow.db dvc_plots

# Cora against the published numbers: 10 seeds each of GCN, GAT, DGI-pretrained GraphSAGE and inductive
# GraphSAGE with random-walk, DGI or no pretraining, as
# deepsweep sweeps (reports in outputs/sweeps/<experiment>/sweep_report.md; README quotes them).
cora-seeds: venv
	for e in cora_gcn cora_gat cora_sage_pretrained; do \
	  $(BIN)/deepsweep run -m experiment=$$e 'seed=range(0,10)' hydra.sweep.dir=outputs/sweeps/$$e; done
	$(BIN)/deepsweep run -m experiment=cora_sage_inductive pretrain=random_walk,dgi,none 'seed=range(0,10)' \
	  hydra.sweep.dir=outputs/sweeps/cora_sage_inductive

# CiteSeer against Kipf & Welling (2017): the cora_gcn recipe, 10 seeds (README, "CiteSeer"). Its files are
# not in the offline test mirror: prepare downloads them when missing (or from DEEPSWEEP_DATA_MIRROR).
citeseer-seeds: venv
	$(BIN)/deepsweep run -m experiment=citeseer_gcn 'seed=range(0,10)' hydra.sweep.dir=outputs/sweeps/citeseer_gcn

# Link prediction on Cora against Kipf & Welling (2016): GAE and VGAE, 10 seeds each (README, "Link prediction").
link-seeds: venv
	$(BIN)/deepsweep run -m experiment=cora_gae pretrain=gae,vgae 'seed=range(0,10)' hydra.sweep.dir=outputs/sweeps/cora_gae

# Uncertainty on digits (README, "Uncertainty"): an MLP with dropout 0.5, 5 seeds, each scored alone and by
# Monte Carlo dropout (20 passes); the sweep report averages the seeds into a deep ensemble.
uncertainty: venv
	$(BIN)/deepsweep run -m regularizer=dropout regularizer.dropout=0.5 evaluate.mc_dropout_passes=20 pretrain=none \
	  trainer.max_epochs=40 'seed=range(0,5)' hydra.sweep.dir=outputs/sweeps/uncertainty

# Augmentation on Fashion-MNIST with 1,000 training images (README, "Augmentation"): LeNet, shift x flip x
# cutout, 2 seeds each.
augment: venv
	$(BIN)/deepsweep run -m data=fashion_mnist data.train_subset=1000 model=lenet pretrain=none trainer.max_epochs=150 \
	  data.augment.shift=0,2 data.augment.hflip=false,true data.augment.cutout=0,8 seed=0,1 \
	  hydra.sweep.dir=outputs/sweeps/augment

# word2vec against next-token pretraining and none, SMS Spam LSTM fine-tuned on 10% of the labels, 3 seeds each
# (README, "word2vec").
word2vec: venv
	$(BIN)/deepsweep run -m experiment=sms_spam_lstm pretrain=word2vec,next_step,none finetune.label_fraction=0.1 \
	  seed=0,1,2 hydra.sweep.dir=outputs/sweeps/word2vec

# InfoGAN on MNIST 20k (README, "InfoGAN"): the inferred category against the digit, 3 seeds.
infogan: venv
	$(BIN)/deepsweep run -m experiment=mnist_infogan seed=0,1,2 hydra.sweep.dir=outputs/sweeps/infogan

# The loss group compared on digits: every option, no pretraining, 3 seeds (README, "Losses compared").
losses: venv
	$(BIN)/deepsweep run -m loss=cross_entropy,label_smoothing,focal,multi_margin,mse pretrain=none seed=0,1,2 \
	  hydra.sweep.dir=outputs/sweeps/losses

# Attention against none as sources grow (README, "Attention"): reversal of 4-40 letters, GRU seq2seq, one job
# per attention; evaluate scores exact match by source length.
attention: venv
	$(BIN)/deepsweep run -m experiment=translation_dates data.task=reverse data.min_len=4 data.max_len=40 \
	  model.attention=none,bahdanau,luong trainer.max_epochs=10 hydra.sweep.dir=outputs/sweeps/attention

# Segmentation losses on the shapes (README, "Segmentation"): per-pixel cross-entropy, soft Dice, focal; 2 seeds.
segmentation-losses: venv
	$(BIN)/deepsweep run -m experiment=shapes_unet loss=cross_entropy,dice,focal seed=0,1 \
	  hydra.sweep.dir=outputs/sweeps/segmentation_losses

# Three studies by their old target names (each is `deepsweep study <name>`: its sweep, then its page in
# docs/studies/ with figures and verdict): memory over sequence length (RNN, LSTM, GRU), every pretraining
# method against none, and anomaly detection by a class left out of pretraining.
vanishing: venv
	$(BIN)/deepsweep study vanishing_gradients
pretraining: venv
	$(BIN)/deepsweep study pretraining
anomaly: venv
	$(BIN)/deepsweep study anomaly

# Every study in turn (`deepsweep study --list`), each rewriting its page in docs/studies/.
studies: venv
	for name in $$($(BIN)/deepsweep study --list | cut -d: -f1); do $(BIN)/deepsweep study $$name; done
