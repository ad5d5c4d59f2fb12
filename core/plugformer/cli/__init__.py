"""The ``plugformer`` command line. Importing it does not import torch or Hydra."""
