"""Plugins import plugformer only through its public modules (``plugformer.PUBLIC_MODULES``, described in
docs/plugins.md "Public API"): the first-party plugins and the example third-party plugin prove that the
public API is enough to write one."""
from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

import plugformer

ROOT = Path(__file__).resolve().parents[2]
SCANNED = [ROOT / "plugins", ROOT / "docs" / "examples" / "plugformer-example-plugin"]

def _is_submodule(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def private_imports(path: Path, source: str | None = None) -> list[str]:
    """``file:line: module`` for every import of a plugformer module outside ``PUBLIC_MODULES``, including
    ``from plugformer import <private submodule>`` and private (``_``) names."""
    tree = ast.parse(source if source is not None else path.read_text(), filename=str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            used = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            used = [node.module]
            if node.module in plugformer.PUBLIC_MODULES:  # `from plugformer import errors` imports a module too
                used += [f"{node.module}.{a.name}" for a in node.names
                         if a.name.startswith("_") and a.name != "__version__"
                         or _is_submodule(f"{node.module}.{a.name}")]
        else:
            continue
        for module in used:
            if module.split(".")[0] == "plugformer" and module not in plugformer.PUBLIC_MODULES:
                bad.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{node.lineno}: {module}")
    return bad


def test_plugins_import_only_the_public_api():
    files = [f for d in SCANNED for f in sorted(d.rglob("*.py"))]
    assert len(files) > 50, "the scan found too few files: did the plugins move?"
    bad = [line for f in files for line in private_imports(f)]
    assert not bad, ("plugins import plugformer internals (import from a module in plugformer.PUBLIC_MODULES "
                     "instead, see docs/plugins.md 'Public API'):\n" + "\n".join(bad))


@pytest.mark.parametrize(("code", "found"), [
    ("from plugformer.model.transformer import SelfAttention", "plugformer.model.transformer"),
    ("import plugformer.registry", "plugformer.registry"),
    ("def f():\n    from plugformer.errors import ConfigError", "plugformer.errors"),
    ("from plugformer import errors", "plugformer.errors"),
    ("from plugformer.model import _private", "plugformer.model._private"),
])
def test_a_private_import_is_named_with_file_and_line(code, found, tmp_path):
    assert private_imports(tmp_path / "plugin.py", code) == [f"{tmp_path / 'plugin.py'}:{code.count(chr(10)) + 1}: "
                                                              f"{found}"]


@pytest.mark.parametrize("code", [
    "from plugformer import ConfigError, hookimpl, __version__", "import plugformer", "import plugformer.interfaces",
    "from plugformer.model import SelfAttention", "from plugformer import interfaces", "import torch",
    "from . import schemas",
])
def test_public_imports_pass(code, tmp_path):
    assert private_imports(tmp_path / "plugin.py", code) == []


def test_every_public_module_exists_and_is_documented():
    missing = [m for m in plugformer.PUBLIC_MODULES if not _is_submodule(m)]
    assert not missing, f"PUBLIC_MODULES names modules that do not exist: {missing}"
    docs = (ROOT / "docs" / "plugins.md").read_text()
    section = docs.split("## Public API", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(plugformer[\w.]*)` \|", section, flags=re.M)
    assert listed == list(plugformer.PUBLIC_MODULES)
