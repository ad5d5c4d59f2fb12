"""Fuzz-style: every numeric option of every registered schema (each component of each family, and the train,
generate and finetune configs themselves), set just outside its declared range, is refused by the CLI in one
line naming every bad key, with exit status 2. The cases run through ``plugformer.cli.main.main`` in one
subprocess (a fresh process per value would take half an hour), several values per composition; a few also
run as the real console command."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import typing

import pytest

from plugformer.config.ranges import Range, field_range, is_numeric
from plugformer.config.schema import COMPONENT_GROUPS, FinetuneConfig, GenerateConfig, TrainConfig
from plugformer.config.store import node_class
from plugformer.testing.construct import required_fields

#: what each top-level schema is composed by, with the values it needs to compose at all
TOP_LEVEL = {"validate": (TrainConfig, []), "generate": (GenerateConfig, ["checkpoint=/nowhere"]),
             "finetune": (FinetuneConfig, ["checkpoint=/nowhere"])}

RUNNER = r"""
import contextlib, io, json, sys
from plugformer.cli.main import main

results = []
for args in json.load(sys.stdin):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(args)
        except BaseException as exc:  # noqa: BLE001 -- the test reports it
            rc = f"raised {type(exc).__name__}: {exc}"
    results.append({"args": args, "rc": rc, "stderr": err.getvalue()})
print(json.dumps(results))
"""


def _is_int(hint: typing.Any) -> bool:
    return hint is int or any(_is_int(a) for a in typing.get_args(hint))


def outside(rng: Range, integer: bool) -> list[typing.Any]:
    """Values just outside ``rng`` on each bounded side, and NaN for a float."""
    values = [rng.ge - 1 if rng.ge is not None else None, rng.gt, rng.le + 1 if rng.le is not None else None, rng.lt]
    values = [v for v in values if v is not None]
    values = [int(math.floor(v)) if integer else float(v) for v in values]
    return values + ([] if integer else [math.nan])


def spelled(value: typing.Any, as_list: bool) -> str:
    text = "nan" if isinstance(value, float) and math.isnan(value) else repr(value)
    return f"[{text}]" if as_list else text


def bad_values(schema: type, prefix: str = "") -> dict[str, list[str]]:
    """``{key: [override, ...]}``: each numeric field (nested dataclasses too) set just outside its range."""
    found = {}
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        hint, rng = hints[f.name], field_range(f)
        if dataclasses.is_dataclass(hint):
            found.update(bad_values(hint, f"{prefix}{f.name}."))
        if not is_numeric(hint):
            continue
        assert rng is not None, f"{prefix}{f.name} declares no range"
        as_list = typing.get_origin(hint) in (list, typing.List)  # noqa: UP006
        found[f"{prefix}{f.name}"] = [f"{prefix}{f.name}={spelled(v, as_list)}" for v in outside(rng, _is_int(hint))]
    return found


def rounds(head: list[str], found: dict[str, list[str]]) -> list[tuple[list[str], list[str]]]:
    """Batches: round i sets every field to its i-th bad value at once (the error must name all of them), so
    a schema costs one composition per bad value of its most bounded field, not one per value."""
    most = max((len(v) for v in found.values()), default=0)
    batches = []
    for i in range(most):
        chosen = {key: values[i] for key, values in found.items() if i < len(values)}
        batches.append(([*head, *chosen.values()], list(chosen)))
    return batches


def all_cases(registries) -> list[tuple[list[str], list[str]]]:
    """(arguments, keys the one error line must name) covering every registered schema. Component entries
    of different families share compositions: the k-th composition picks the k-th entry of every family."""
    cases = []
    for command, (schema, needs) in TOP_LEVEL.items():
        own = {k: v for k, v in bad_values(schema).items() if k.split(".")[0] not in COMPONENT_GROUPS}
        cases += rounds([command, *needs], own)
    per_family = []
    for family in COMPONENT_GROUPS:
        batches = []
        for entry in registries[family]:
            head = [f"{family}={entry.name}", *(f"{family}.{k}=x" for k in required_fields(entry))]
            batches += rounds(head, bad_values(node_class(entry), f"{family}.")) or [(head, [])]
        per_family.append(batches)
    for k in range(max(len(b) for b in per_family)):
        chosen = [batches[k] for batches in per_family if k < len(batches)]
        args = ["validate", *(a for head, _ in chosen for a in head)]
        cases.append((args, [key for _, keys in chosen for key in keys]))
    return cases


def test_every_out_of_range_value_of_every_schema_is_one_line_and_exit_2(builtin_host, cache_dir, tmp_path):
    cases = all_cases(builtin_host.registries)
    assert sum(len(keys) for _, keys in cases) > 200  # every family contributes
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps([c[0] for c in cases]), cwd=tmp_path,
                          capture_output=True, text=True, timeout=900, env={"PLUGFORMER_CACHE": str(cache_dir),
                                                                            "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    bad = []
    for (args, keys), result in zip(cases, json.loads(proc.stdout)):
        lines = [line for line in result["stderr"].splitlines() if line.strip()]
        named = len(lines) == 1 and all(f"{key}=" in lines[0] or f"{key}[0]=" in lines[0] for key in keys)
        if not (result["rc"] == 2 and named and lines[0].startswith("plugformer: error: ")):
            bad.append(f"{' '.join(args)} -> rc={result['rc']} {result['stderr'][-800:]!r}")
    assert not bad, f"{len(bad)} of {len(cases)} cases:\n" + "\n".join(bad[:20])


@pytest.mark.parametrize("args, expected", [
    (["validate", "model.n_heads=0"], "model.n_heads=0 must be >= 1"),
    (["validate", "tokenizer.vocab_size=10000000000"], "tokenizer.vocab_size=10000000000 must be in [1, 1048576]"),
    (["generate", "checkpoint=/nowhere", "temperature=nan"], "temperature=nan must be >= 0"),
    (["validate", "+model.extra=1"], "unknown config key 'model.extra'"),
])
def test_the_console_command_refuses_in_one_line(cli, args, expected):
    proc = cli(*args, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr
