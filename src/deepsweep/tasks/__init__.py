"""Tasks: one LightningModule per learning objective. A task wraps any family (a plain nn.Module),
so families and objectives compose instead of multiplying."""
