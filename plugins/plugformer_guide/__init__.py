"""Structured output: the ``llguidance`` guide (JSON schema, JSON object, regex, choice and Lark grammar
constraints as per-step token masks, computed by the llguidance library).

Registration only: nothing here imports torch or llguidance (see ``plugformer_register``); the target,
schema and availability check are strings resolved on first use.
"""
from plugformer import hookimpl

plugformer_api = "1.1"  # the plugformer plugin API this package targets


@hookimpl
def plugformer_register(registries):
    registries.guide.register(
        "llguidance", "plugformer_guide.llguidance:LLGuidance", schema="plugformer_guide.schemas:LLGuidanceConfig",
        description="token masks from the llguidance grammar library (Earley parser over a token trie)",
        capabilities={"devices": ["cpu", "cuda"],
                      "kinds": ["json_schema", "json_object", "regex", "choice", "grammar"]},
        available="plugformer_guide.availability:llguidance_available")
