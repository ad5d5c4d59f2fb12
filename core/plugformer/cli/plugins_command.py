"""``plugformer plugins``: every family, implementation, provider and availability; the loaded
plugins and any that failed. Imports neither torch nor Hydra, so it answers in well under a second."""
from __future__ import annotations

import argparse
import json

from plugformer import __version__
from plugformer.errors import PlugformerError, did_you_mean
from plugformer.plugins import load_plugins
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
            if opts.capabilities and e.capabilities:
                caps = ", ".join(f"{k}={v}" for k, v in sorted(e.capabilities.items()))
                print(f"  {'':<{width}}  capabilities: {caps}")
        print()
    print("plugins (entry-point group 'plugformer'):")
    for r in host.records:
        line = f"  {r.name:<12} {r.dist} {r.version}  {r.value}  {r.status}"
        print(line + (f": {r.error}" if r.error else ""))
    return 0
