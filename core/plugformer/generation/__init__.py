"""Generation: the one decoding path of plugformer.

- :func:`generate`: token-id prompts + :class:`Sampling` → :class:`Completion` (ids, finish reason);
  everything that decodes (``plugformer generate``, fine-tuning's exact match, the lm-eval adapter)
  calls it.
- :class:`Sampling`, :func:`filter_logits`, :func:`pick_next`: how each next token is chosen (greedy,
  or seeded temperature sampling with top-k / top-p).
- :class:`Generator`: a model and its tokenizer loaded from a checkpoint, continuing text prompts.
"""
from plugformer.generation.engine import Completion, FinishReason, context_length, fit_prompt, generate
from plugformer.generation.generator import Generator
from plugformer.generation.sampling import Sampling, filter_logits, pick_next, seeded_generator

__all__ = ["Completion", "FinishReason", "Generator", "Sampling", "context_length", "filter_logits", "fit_prompt",
           "generate", "pick_next", "seeded_generator"]
