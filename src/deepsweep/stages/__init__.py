"""Pipeline stages: prepare -> pretrain -> finetune -> evaluate. Each stage is a function of the
config and its upstream outputs; :mod:`deepsweep.stages.pipeline` runs them for DVC and for Hydra."""
