"""Building blocks shared by every family: weight initialization, regularizing layers, layer factories."""
