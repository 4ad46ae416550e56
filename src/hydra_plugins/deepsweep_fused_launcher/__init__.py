"""deepsweep's fused launcher (``hydra/launcher=fused``): same-shape jobs trained as one stacked model."""
