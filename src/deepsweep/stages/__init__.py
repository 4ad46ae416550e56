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
