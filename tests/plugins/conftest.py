"""The end-to-end fixtures (``cli``: the real CLI in a subprocess, ``runs``, ``cache_dir``) for the plugin
tests that drive the command line, such as plugformer_hf's ``import-hf``/``export-hf``/``eval tasks=``."""
from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("plugformer_e2e_fixtures", Path(__file__).parents[1] / "e2e" /
                                               "conftest.py")
_e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_e2e)

cache_dir, cli, runs = _e2e.cache_dir, _e2e.cli, _e2e.runs
