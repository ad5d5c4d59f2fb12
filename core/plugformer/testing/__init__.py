"""The conformance kit: the contract tests every component family's implementations must pass.

It ships with plugformer as a pytest plugin (entry point ``pytest11``), so any plugin package can run
it on its own components: ``pytest --plugformer-conformance --plugformer-provider=my-dist``. Nothing
here is imported by plugformer itself; importing this package imports neither torch nor the plugins.
See ``docs/conformance.md``.
"""
