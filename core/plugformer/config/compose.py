"""Composing plugformer's Hydra configs outside of ``hydra.main``: what every command (and a plugin such
as ``plugformer_hf``) uses to turn overrides into a checked config.

- :func:`prepare` loads plugins and makes their configs visible to Hydra;
- :func:`compose_checked` composes a config and turns any composition failure into one line naming the
  bad key or value and the choices;
- :func:`split_args`, :func:`parse_overrides`, :func:`quote_free_text`, :func:`rename_keys` and
  :func:`sweep_dirname_excludes` read and rewrite command-line overrides before Hydra sees them.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from plugformer.errors import PlugformerError

if TYPE_CHECKING:
    from plugformer.plugins import PluginHost

CONFIG_MODULE = "plugformer.conf"
VERSION_BASE = "1.3"
#: Hydra flags followed by a value (the value is not an override)
_HYDRA_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                           "--experimental-rerun", "--info", "-i", "--package", "-p", "--cfg", "-c"}
#: flags that only ask Hydra for information, and user config dirs the pre-check cannot see
_INFORMATIONAL_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc",
                        "--config-dir", "-cd", "--config-path", "-cp")
#: keys never part of a sweep job's directory name
_UNNAMED_KEYS = {"resume", "device", "threads", "hydra.run.dir", "hydra.sweep.dir"}


def prepare() -> PluginHost:
    """Load plugins and make their configs visible to Hydra (idempotent)."""
    from plugformer.config.searchpath import register_search_path_plugin
    from plugformer.config.store import store_component_configs
    from plugformer.plugins import load_plugins

    host = load_plugins()
    store_component_configs(host.registries)
    register_search_path_plugin()
    return host


def split_args(args: list[str]) -> tuple[list[str], bool, bool]:
    """(overrides, multirun?, only-a-hydra-flag such as --help/--cfg?)"""
    overrides, multirun, informational, skip = [], False, False, False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("-m", "--multirun"):
            multirun = True
        elif a.startswith("-"):
            informational |= a in _INFORMATIONAL_FLAGS
            skip = a in _HYDRA_FLAGS_WITH_VALUE and a not in ("--info", "-i")
        else:
            overrides.append(a)
    return overrides, multirun, informational


def quote_free_text(args: list[str], keys: tuple[str, ...]) -> list[str]:
    """Quote the values of free-text keys (``prompt=def main(``) for Hydra's override grammar, so a
    prompt needs no extra shell quoting, and escape ``${`` so the text is never interpolated
    (``prompt='x ${name} y'`` is those characters). Values the user already quoted keep their quotes."""
    out = []
    for a in args:
        key, eq, value = a.partition("=")
        if eq and key in keys and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            a = f"{key}={value[0]}{_no_interpolation(value[1:-1])}{value[0]}"
        elif eq and key in keys:
            escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value).replace("'", "\\'")
            a = f"{key}='{_no_interpolation(escaped)}'"
        out.append(a)
    return out


def _no_interpolation(text: str) -> str:
    """``${`` escaped as ``\\${``, which OmegaConf reads as the two characters, never an interpolation
    (backslashes right before it are doubled first, so they stay backslashes)."""
    return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", text)


def rename_keys(args: list[str], renames: dict[str, str]) -> list[str]:
    """``adapter=DIR`` → ``adapter_dir=DIR``: a command-line key that would collide with a Hydra config
    group of the same name (``adapter`` is one for train) is given its schema name before Hydra parses it."""
    out = []
    for a in args:
        prefix = a[: len(a) - len(a.lstrip("+~"))]
        key, eq, value = a[len(prefix):].partition("=")
        out.append(f"{prefix}{renames[key]}{eq}{value}" if key in renames else a)
    return out


def parse_overrides(overrides: list[str]) -> list[Any]:
    """Hydra's parsed ``Override`` objects; a syntax error is one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as exc:
        raise PlugformerError(f"cannot parse overrides: {str(exc).splitlines()[0]}") from None


def sweep_dirname_excludes(overrides: list[str]) -> list[str]:
    """Keys left out of a sweep job's directory name: every key that is not swept (and hydra's own),
    so job directories are named by what varies, and re-running a sweep finds the same directories."""
    return sorted({o.key_or_group for o in parse_overrides(overrides) if not o.is_sweep_override()} |
                  _UNNAMED_KEYS)


def job_overrides(overrides: list[str]) -> list[str]:
    """``overrides`` without hydra.* keys and hydra/ groups (what composing the job's config needs)."""
    return [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]


def compose_checked(config_name: str, overrides: list[str], host: PluginHost) -> Any:
    """Compose ``config_name`` with ``overrides`` (hydra.* keys are dropped); raise one-line errors."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from plugformer.config.compose_errors import describe

    job = job_overrides(overrides)
    with initialize_config_module(config_module=CONFIG_MODULE, version_base=VERSION_BASE, job_name=config_name):
        try:
            cfg = compose(config_name, overrides=job)
        except Exception as exc:
            raise PlugformerError(describe(exc, job, host.registries,
                                           lambda key: _keys_beside(config_name, job, key))) from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise PlugformerError(f"missing required config value(s): {', '.join(missing)} "
                              f"(set them as {missing[0]}=...)")
    from plugformer.config.validate import check_composed

    check_composed(cfg, config_name, host.registries)  # unknown keys, _target_, ranges
    return cfg


def _keys_beside(config_name: str, job: list[str], bad_key: str) -> list[str] | None:
    """Keys of the node holding ``bad_key``, composed with only the group choices (inside an initialized
    Hydra context); None when that cannot be composed either."""
    from hydra import compose
    from omegaconf import OmegaConf

    def key(override: str) -> str:
        return override.split("=")[0].lstrip("+~")

    groups = [o for o in job if "." not in key(o) and key(o) != bad_key]
    parent = bad_key.rpartition(".")[0]
    try:
        node = compose(config_name, overrides=groups)
        node = OmegaConf.select(node, parent) if parent else node
    except Exception:
        return None
    return [str(k) for k in node.keys()] if hasattr(node, "keys") else None


__all__ = ["CONFIG_MODULE", "VERSION_BASE", "compose_checked", "job_overrides", "parse_overrides", "prepare",
           "quote_free_text", "rename_keys", "split_args", "sweep_dirname_excludes"]
