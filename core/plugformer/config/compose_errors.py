"""Turns Hydra/OmegaConf composition errors into one line naming the bad key or value and the choices."""
from __future__ import annotations

import re
from typing import Any

from plugformer.errors import UnknownComponentError, did_you_mean, unknown_components
from plugformer.registry import Registries


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _root_cause(exc: BaseException) -> BaseException:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _group_options(group: str) -> list[str]:
    """The options of config group ``group`` in the search path Hydra is composing with now."""
    from hydra.core.global_hydra import GlobalHydra

    return list(GlobalHydra.instance().config_loader().get_group_options(group))


def describe(exc: Exception, overrides: list[str], registries: Registries, keys_of: Any) -> str:
    """One line for a failed compose. ``keys_of(key)`` lists the keys beside ``key``, or None."""
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        options = list(exc.options or [])
        if group in registries.families():
            choices = {name: "config file" for name in options}
            choices.update({e.name: e.provided_by for e in registries[group]})
            first = UnknownComponentError(group, option, choices, registries.failure_lines())
            from plugformer.config.validate import unknown_choices  # every unknown name, in override order

            return str(unknown_components([*unknown_choices(overrides, registries, _group_options), first]))
        return f"no config '{option}' in group '{group}'{did_you_mean(option, options)}; options: {', '.join(options)}"
    message = str(exc)
    bad_key = re.search(r"Could not override '([^']+)'", message)
    if bad_key:
        path = bad_key.group(1)
        parent, _, leaf = path.rpartition(".")
        keys = keys_of(path) or []
        where = f"'{parent}'" if parent else "the top level"
        return (f"unknown config key '{path}'{did_you_mean(leaf, keys)}; keys of {where}: "
                f"{', '.join(keys) or 'none'}")
    merge = re.search(r"Error merging override (\S+)", message)
    if merge:
        return f"bad value in '{merge.group(1)}': {_first_line(_root_cause(exc))}"
    cause = _root_cause(exc)
    detail = f": {_first_line(cause)}" if cause is not exc else ""
    return f"{_first_line(exc)}{detail}"
