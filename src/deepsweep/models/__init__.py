"""Model families: plain ``nn.Module``s split into an ``encoder`` (input -> features) and a ``head``
(features -> class logits). Tasks train them; pretraining trains the encoder alone."""
