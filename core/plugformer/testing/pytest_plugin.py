"""pytest entry point of the conformance kit (``pytest11`` group, so it loads in every pytest run).

Because it loads everywhere, it stays inert and cheap unless ``--plugformer-conformance`` is given:
it only adds options and a marker, and imports neither torch nor any plugin. When enabled it adds
the kit's contract modules to the paths pytest collects, and parametrizes every test carrying the
``plugformer_contract`` marker over the selected registered implementations.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

#: where the contract test modules live
CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"

#: the contract module that covers each family (``schema`` covers every family of the registry)
FAMILY_MODULES: dict[str, str] = {
    "attention": "test_attention_contract.py",
    "position": "test_position_contract.py",
    "tokenizer": "test_tokenizer_contract.py",
    "norm": "test_layers_contract.py",
    "mlp": "test_layers_contract.py",
    "optimizer": "test_optim_contract.py",
    "scheduler": "test_optim_contract.py",
    "objective": "test_objective_contract.py",
    "data": "test_data_contract.py",
    "guide": "test_guide_contract.py",
    "embedder": "test_embedder_contract.py",
    "retriever": "test_retriever_contract.py",
}
SCHEMA_MODULE = "test_schema_contract.py"
MARKER = "plugformer_contract"


def pytest_addoption(parser: pytest.Parser) -> None:
    """The kit's switches; all default to "off / everything" so the plugin changes nothing by itself."""
    group = parser.getgroup("plugformer", "plugformer conformance kit")
    group.addoption("--plugformer-conformance", action="store_true", default=False,
                    help="run plugformer's contract tests on the registered components")
    group.addoption("--plugformer-family", default="", metavar="F1,F2",
                    help="only these families (attention, position, tokenizer, norm, mlp, optimizer, "
                         "scheduler, objective, data, ...); default: all")
    group.addoption("--plugformer-only", default="", metavar="NAME,FAMILY:NAME",
                    help="only the implementations with these registry names")
    group.addoption("--plugformer-provider", default="", metavar="DIST",
                    help="only components registered by this distribution (e.g. your plugin package)")


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker; when the kit is enabled, validate the options and add the contract paths.

    With no paths on the command line only the kit runs (not the project's testpaths); paths given
    explicitly are kept, and the kit runs alongside them.
    """
    config.addinivalue_line("markers", f"{MARKER}(*families, needs=(), declares=(), configured=True, "
                                       "available=True, properties=False): a conformance-kit contract test, "
                                       "parametrized over the selected implementations of ``families``")
    if not config.getoption("plugformer_conformance"):
        return
    from plugformer.testing.selection import KitOptions

    options = KitOptions.from_config(config)
    options.check()
    populated = options.populated_families()
    modules = {FAMILY_MODULES[f] for f in populated if f in FAMILY_MODULES} | {SCHEMA_MODULE}
    paths = [str(CONTRACTS_DIR / name) for name in sorted(modules)]
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        config.args = [*config.args, *(p for p in paths if p not in config.args)]
    else:
        config.args = paths


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize contract tests (those with the marker) over the registered implementations."""
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None:
        return
    from plugformer.testing.selection import parametrize

    parametrize(metafunc, marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Run contract tests with one torch thread: their tensors are tiny, and extra intra-op threads only
    add synchronisation (10-100x slower on a busy machine). Other tests are left untouched."""
    if item.get_closest_marker(MARKER) is None:
        return (yield)
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return (yield)
    finally:
        torch.set_num_threads(saved)


def pytest_report_header(config: pytest.Config) -> Any:
    """Say what the kit will test, so a run's log shows the selection."""
    if not config.getoption("plugformer_conformance"):
        return None
    from plugformer.testing.selection import KitOptions

    return KitOptions.from_config(config).describe()
