"""Pipeline stages: prepare -> pretrain -> finetune -> evaluate. Each stage is a function of the
config and its upstream outputs; :mod:`deepsweep.stages.pipeline` runs them for DVC and for Hydra."""

# stage -> the stages whose outputs it reads, in run order. Here, not in stages.pipeline, so that config
# validation can name the stages without importing what runs them.
STAGES: dict[str, tuple[str, ...]] = {
    "prepare": (),
    "pretrain": ("prepare",),
    "finetune": ("prepare", "pretrain"),
    "evaluate": ("prepare", "pretrain", "finetune"),
}

# stage -> the config keys its output depends on: the root dvc.yaml's `params:` of each stage (written from
# here by `deepsweep pipelines`), so `dvc repro` reruns what a change affects; and what each output's run.json
# records, so a stage run by hand refuses an upstream output made from other values of them.
STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "prepare": ("data",),
    "pretrain": ("seed", "data.augment", "model", "activation", "init", "regularizer", "optimizer", "scheduler",
                 "pretrain", "trainer.accelerator", "trainer.devices", "trainer.strategy", "trainer.precision",
                 "trainer.gradient_clip_val", "trainer.deterministic", "logger.layer_stats"),
    "finetune": ("seed", "data.batch_size", "data.augment", "model", "activation", "init", "regularizer", "loss",
                 "optimizer", "scheduler", "pretrain.name", "finetune", "trainer.max_epochs", "trainer.accelerator",
                 "trainer.devices", "trainer.strategy", "trainer.precision", "trainer.gradient_clip_val",
                 "trainer.deterministic", "logger.layer_stats"),
    # The linear probe rebuilds the encoder (as pretrained, or as initialized for pretrain=none).
    "evaluate": ("seed", "model", "activation", "init", "regularizer", "pretrain", "finetune.label_fraction",
                 "evaluate", "logger.figures", "logger.embedding_plot"),
}
