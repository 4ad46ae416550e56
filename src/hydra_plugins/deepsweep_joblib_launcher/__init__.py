"""deepsweep's Hydra launcher plugin (Hydra instantiates launchers from the hydra_plugins namespace only)."""
