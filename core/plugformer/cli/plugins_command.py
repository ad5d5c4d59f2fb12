"""``plugformer plugins``: every family, implementation, provider and availability; the loaded
plugins and any that failed. Imports neither torch nor Hydra, so it answers in well under a second."""
from __future__ import annotations

import argparse
import json

from plugformer import __version__
from plugformer.errors import PlugformerError, did_you_mean
from plugformer.plugins import PLUGIN_API_VERSION, api_text, load_plugins
from plugformer.registry import FAMILIES


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="plugformer plugins", description="List registered components and plugins.")
    p.add_argument("--family", help="show only this family, with its interface")
    p.add_argument("--capabilities", action="store_true", help="show each implementation's declared capabilities")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def run(args: list[str]) -> int:
    opts = _parser().parse_args(args)
    host = load_plugins()
    families = [r for r in host.registries if opts.family in (None, r.family)]
    if opts.family and not families:
        raise PlugformerError(f"unknown family '{opts.family}'{did_you_mean(opts.family, FAMILIES)}; "
                              f"families: {', '.join(FAMILIES)}")
    if opts.json:
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
        if opts.family and registry.interface:
            print(f"  interface: {registry.interface}")
        if not len(registry):
            print("  (none registered)")
        width = max((len(e.name) for e in registry), default=0)
        pwidth = max((len(e.provided_by) for e in registry), default=0)
        for e in registry:
            ok, reason = e.availability()
            status = "available" if ok else f"unavailable: {reason}"
            print(f"  {e.name:<{width}}  {e.provided_by:<{pwidth}}  {status:<10}  {e.description}")
        if opts.capabilities and len(registry):
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
    return str(value)


def _capability_table(entries: list) -> str:
    """Rows: implementations; columns: every capability key any of them declares."""
    keys = sorted({k for e in entries for k in e.capabilities})
    if not keys:
        return "  (no capabilities declared)"
    rows = [["", *keys]] + [[e.name, *(_cell(e.capabilities.get(k, "-")) for k in keys)] for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(keys) + 1)]
    return "\n".join("  | " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows)
