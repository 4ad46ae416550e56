"""MLflow tracking: where runs go, what they record, and how sweeps group their jobs."""
