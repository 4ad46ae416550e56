"""Datasets: sources that read real files into arrays, the prepared splits on disk, and a fast
in-memory batch loader."""
