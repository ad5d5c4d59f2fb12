"""The kit's contract test modules, one per family; collected only with ``--plugformer-conformance``."""
