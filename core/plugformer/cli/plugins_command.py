"""``plugformer plugins [family=NAME] [--capabilities] [--json]``: every family, implementation, provider
and availability; the loaded plugins and any that failed. Imports neither torch nor Hydra, so it answers in
well under a second. ``--family NAME`` is accepted for ``family=NAME``."""
from __future__ import annotations

import json
import sys

from plugformer import __version__
from plugformer.commands import parse_keyvalues
from plugformer.errors import PlugformerError, did_you_mean
from plugformer.plugins import PLUGIN_API_VERSION, api_text, load_plugins
from plugformer.registry import FAMILIES


USAGE = """\
usage: plugformer plugins [family=NAME] [--capabilities] [--json]

Lists every component family, implementation, provider and availability, then the plugins (loaded,
failed with their error, or skipped).

  family=NAME      show only this family, with its interface (also --family NAME)
  --capabilities   show each implementation's declared capabilities
  --json           machine-readable output
"""
KEYS = ("family",)
FLAGS = ("capabilities", "json")


def run(args: list[str]) -> int:
    """Print the listing (or, with ``--json``, the same as JSON)."""
    if args and args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout)
        return 0
    opts = parse_keyvalues("plugins", args, KEYS, flags=FLAGS)
    family, capabilities = opts.get("family"), "capabilities" in opts
    host = load_plugins()
    families = [r for r in host.registries if family in (None, r.family)]
    if family and not families:
        raise PlugformerError(f"unknown family '{family}'{did_you_mean(family, FAMILIES)}; "
                              f"families: {', '.join(FAMILIES)}")
    if "json" in opts:
        print(json.dumps({
            "version": __version__, "plugins": host.manifest(),
            "components": {r.family: [{"name": e.name, "provider": e.provider, "version": e.version,
                                       "plugin": e.plugin, "target": str(e.target), "description": e.description,
                                       "available": e.availability()[0], "reason": e.availability()[1],
                                       "capabilities": e.capabilities} for e in r] for r in families}}, indent=1))
        return 0
    loaded = sum(r.status == "loaded" for r in host.records)
    failed = [r for r in host.records if r.status == "failed"]
    print(f"plugformer {__version__}: {loaded} plugin(s) loaded, {len(failed)} failed\n")
    for registry in families:
        print(f"{registry.family} — {registry.description}")
        if family and registry.interface:
            print(f"  interface: {registry.interface}")
        if not len(registry):
            print("  (none registered)")
        width = max((len(e.name) for e in registry), default=0)
        pwidth = max((len(e.provided_by) for e in registry), default=0)
        for e in registry:
            ok, reason = e.availability()
            status = "available" if ok else f"unavailable: {reason}"
            print(f"  {e.name:<{width}}  {e.provided_by:<{pwidth}}  {status:<10}  {e.description}")
        if capabilities and len(registry):
            print(_capability_table(list(registry)))
        print()
    print(f"plugins (entry-point group 'plugformer'; this core provides plugin API {api_text(PLUGIN_API_VERSION)}):")
    rows = [(r.name, f"{r.dist} {r.version}" + (f" [api {r.api}]" if r.api else ""), r.value,
             r.status + (f": {r.error}" if r.error else "")) for r in host.records]
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(3)]
    for row in rows:
        print("  " + "  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + "  " + row[3])
    return 0


def _cell(value: object) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, dict):  # a declaration such as hf_names: what it covers
        return ",".join(map(str, value)) or "-"
    return str(value)


def _capability_table(entries: list) -> str:
    """Rows: implementations; columns: every capability key any of them declares."""
    keys = sorted({k for e in entries for k in e.capabilities})
    if not keys:
        return "  (no capabilities declared)"
    rows = [["", *keys]] + [[e.name, *(_cell(e.capabilities.get(k, "-")) for k in keys)] for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(keys) + 1)]
    return "\n".join("  | " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows)
