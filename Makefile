# deepsweep: `make run` runs the default pipeline end to end; `make test` runs the test suite.
# Both create .venv on first use (Python 3.11, torch pinned to the CPU build, see README for GPUs).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# DVC stages call `deepsweep`: put the venv first on PATH for every recipe and its children.
export PATH := $(BIN):$(PATH)

.PHONY: venv run test bench sweep ui params pipelines clean cora-seeds vanishing pretraining anomaly results results-quick losses

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, found {sys.version.split()[0]}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# This machine's pip config lists optional local wheel folders; their absence is not news.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 | { grep -v '^WARNING: Location' || true; }
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
	$(BIN)/python -m pytest -q -n 2 tests

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

# The loss group compared on digits: every option, no pretraining, 3 seeds (README, "Losses compared").
losses: venv
	$(BIN)/deepsweep run -m loss=cross_entropy,label_smoothing,focal,multi_margin,mse pretrain=none seed=0,1,2 \
	  hydra.sweep.dir=outputs/sweeps/losses

# Memory over growing sequence length: RNN vs LSTM vs GRU on the first-bit task, 3 seeds each
# (report in outputs/sweeps/vanishing_gradients/sweep_report.md; README quotes it).
vanishing: venv
	$(BIN)/deepsweep run -m experiment=vanishing_gradients model=rnn,lstm,gru data.length=10,25,50,100 seed=0,1,2 \
	  hydra.sweep.dir=outputs/sweeps/vanishing_gradients

# Every pretraining method against none on digits, same MLP, split and 10% of the labels, 3 seeds:
# linear-probe and fine-tuned test metrics (report in outputs/sweeps/pretraining/sweep_report.md; README quotes it).
PRETRAIN_METHODS := none,autoencoder,denoising_autoencoder,sparse_autoencoder,tied_autoencoder,stacked_autoencoder,vae,dbn,gan,wgan_gp,cgan
pretraining: venv
	$(BIN)/deepsweep run -m pretrain=$(PRETRAIN_METHODS) pretrain.epochs=30 finetune.label_fraction=0.1 \
	  trainer.max_epochs=100 seed=0,1,2 hydra.sweep.dir=outputs/sweeps/pretraining

# Anomaly detection on digits: each digit in turn left out of pretraining, scored by reconstruction error
# (autoencoders), -ELBO (VAE) or free energy (DBN); ROC-AUC of the score on the test split.
anomaly: venv
	$(BIN)/deepsweep run -m pretrain=autoencoder,denoising_autoencoder,vae,dbn 'pretrain.anomaly_class=range(0,10)' \
	  pretrain.epochs=30 trainer.max_epochs=1 hydra.sweep.dir=outputs/sweeps/anomaly
