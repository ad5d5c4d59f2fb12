"""plugformer's Hydra configs, shipped inside the framework as ``plugformer.conf`` (see setup.py)."""
