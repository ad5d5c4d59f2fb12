"""One owner for the on-disk layout: every file name of a run directory or checkpoint is spelled once, in
plugformer.checkpoint.layout, and only the checkpoint package writes a model's weights file. A module that
spells ``"config.yaml"`` itself, or calls safetensors' ``save_file`` on the model file, fails here."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from plugformer.checkpoint import layout

ROOT = Path(__file__).parents[2]
OWNER = ROOT / "core" / "plugformer" / "checkpoint"
#: Hugging Face's own file names, spelled like plugformer's (another format's layout, read and written by the
#: plugformer_hf plugin): allowed once, as a named constant of that plugin
FOREIGN = {ROOT / "plugins" / "plugformer_hf" / "import_hf.py": {"model.safetensors"}}
FILE_NAMES = {value: name for name, value in vars(layout).items()
              if name.endswith("_FILE") and isinstance(value, str)}


def sources() -> list[Path]:
    files = [*sorted((ROOT / "core").rglob("*.py")), *sorted((ROOT / "plugins").rglob("*.py"))]
    return [f for f in files if not f.is_relative_to(OWNER)]


def docstring_nodes(tree: ast.AST) -> set[int]:
    """Bare string statements (docstrings, and strings used as comments) may name files."""
    return {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def test_the_scan_sees_the_code_base():
    found = sources()
    assert len(found) > 50 and ROOT / "core" / "plugformer" / "training" / "trainer.py" in found
    assert {"config.yaml", "model.safetensors", "summary.json", "metrics.jsonl", "plugins.json",
            "quantization.json"} <= set(FILE_NAMES)


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | \
        {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)} | \
        {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def spelled_file_names(tree: ast.AST) -> list[ast.Constant]:
    """String constants equal to a layout file name, docstrings aside."""
    allowed = docstring_nodes(tree)
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and n.value in FILE_NAMES and id(n) not in allowed]


def model_file_writes(tree: ast.AST) -> list[ast.Call]:
    """Calls of safetensors' ``save_file`` whose arguments name the model file."""
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func == "save_file" and {"MODEL_FILE", layout.MODEL_FILE} & set().union(*map(_names, node.args)):
                calls.append(node)
    return calls


def test_layout_file_names_are_spelled_only_in_the_layout_module():
    offenders = [f"{file.relative_to(ROOT)}:{node.lineno}: {node.value!r} (use plugformer.checkpoint."
                 f"{FILE_NAMES[node.value]})"
                 for file in sources() for node in spelled_file_names(ast.parse(file.read_text(encoding="utf-8")))
                 if node.value not in FOREIGN.get(file, ())]
    assert not offenders, "\n".join(offenders)


def test_only_the_checkpoint_package_writes_the_model_file():
    offenders = [f"{file.relative_to(ROOT)}:{node.lineno}"
                 for file in sources() for node in model_file_writes(ast.parse(file.read_text(encoding="utf-8")))]
    assert not offenders, f"save_file on the model file outside plugformer.checkpoint: {offenders}"


@pytest.mark.parametrize("snippet, caught", [
    ('CONFIG = "config.yaml"\n', True),
    ('def f():\n    """Reads config.yaml."""\n    return 1\n', False),
    ('save_file(t, str(d / MODEL_FILE))\n', True),
    ('save_file(t, str(d / "model.safetensors"), metadata)\n', True),
    ('save_file(t, str(d / "optimizer.safetensors"))\n', False),
])
def test_the_checks_catch_what_they_are_meant_to(snippet, caught):
    tree = ast.parse(snippet)
    assert bool(spelled_file_names(tree) or model_file_writes(tree)) is caught
