"""Command-line entry points. Thin on purpose: they parse, validate, and call a stage or the pipeline."""
