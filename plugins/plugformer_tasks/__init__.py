"""Built-in fine-tuning tasks: seeded generators of problems with one exact answer (arithmetic, string
transformations), so SFT, distillation, DPO and pruning get an exact-match score without downloads.

Each task is a ``data`` source with records (``{"prompt", "response"}``, or preference pairs with
``format=preference``) and documents (prompt and answer as plain text, for ``plugformer train``).
Registration only: nothing heavy is imported here.
"""
from plugformer import hookimpl

plugformer_api = "1.1"  # the plugformer plugin API this package targets
_SCHEMAS = "plugformer_tasks.schemas"


@hookimpl
def plugformer_register(registries):
    registries.data.register(
        "addition", "plugformer_tasks.source:AdditionTask", schema=f"{_SCHEMAS}:AdditionConfig",
        description="task: 'a+b=' → the sum (digits=2: 12+35= → 47); held-out problems never in train",
        capabilities={})
    registries.data.register(
        "reverse", "plugformer_tasks.source:ReverseTask", schema=f"{_SCHEMAS}:ReverseConfig",
        description="task: 'rev abc=' → 'cba' (lowercase strings of min_len..max_len letters)",
        capabilities={})
    registries.data.register(
        "uppercase", "plugformer_tasks.source:UppercaseTask", schema=f"{_SCHEMAS}:UppercaseConfig",
        description="task: 'up abc=' → 'ABC' (lowercase strings of min_len..max_len letters)",
        capabilities={})
    registries.data.register(
        "facts_qa", "plugformer_tasks.facts_qa:FactsQATask", schema=f"{_SCHEMAS}:FactsQAConfig",
        description="task: fictional facts; RAG prompt (gold + distractor passages) + question → ' answer'; "
                    "held-out entities never in train",
        capabilities={})
