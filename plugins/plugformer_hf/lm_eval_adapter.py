"""A plugformer checkpoint as an lm-evaluation-harness model: ``lm_eval`` model name ``plugformer``.

Importing this module registers :class:`PlugformerLM` in lm_eval's model registry (lm_eval has no
entry-point discovery for models), after which::

    import plugformer_hf.lm_eval_adapter  # noqa: F401
    lm_eval.simple_evaluate(model="plugformer", model_args="checkpoint=DIR", tasks=[...])

works for any task, including local YAML tasks over local files (``TaskManager(include_path=...)``);
``plugformer eval checkpoint=DIR tasks=NAME[,NAME] [tasks_dir=DIR]`` does exactly that. All three
request types are served: ``loglikelihood`` (multiple choice), ``loglikelihood_rolling`` (perplexity
tasks) and ``generate_until`` (generation tasks, greedy unless the task samples). Requests are scored
one at a time: simple and exact, meant for small local tasks rather than throughput.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from plugformer.generation import Generator, Sampling
from plugformer.checkpoint import load_model_for_inference
from plugformer import load_plugins
from plugformer.model import autocast

MODEL_NAME = "plugformer"
DEFAULT_MAX_GEN_TOKS = 256


@register_model(MODEL_NAME)
class PlugformerLM(LM):
    """Scores and generates with a plugformer checkpoint (plus an optional unmerged adapter)."""

    def __init__(self, checkpoint: str | Path, adapter: str | Path | None = None, device: str | None = None,
                 precision: str = "fp32", **_: Any):  # lm_eval also passes batch_size, max_batch_size
        super().__init__()
        loaded = load_model_for_inference(checkpoint, load_plugins().registries, adapter=adapter,
                                          device=device or "auto")
        self.model, self.tokenizer, self.device_ = loaded.model, loaded.tokenizer, loaded.device
        self.precision = precision
        self.max_length = int(loaded.config.model.max_seq_len or loaded.config.data.seq_len)
        self.generator = Generator(self.model, self.tokenizer, self.device_, precision)

    # -- scoring ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _logprobs(self, ids: list[int]) -> torch.Tensor:
        """(len(ids)-1, vocab) log-probabilities of each next token of ``ids`` (the last max_length+1 ids)."""
        tokens = torch.tensor([ids[-(self.max_length + 1):]], device=self.device_)
        with autocast(self.device_, self.precision):
            logits = self.model(tokens[:, :-1])
        return F.log_softmax(logits[0].float(), dim=-1)

    def _score(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        """(sum of log p(continuation | context), whether greedy decoding would produce it)."""
        ids = (context or [self.tokenizer.eos_id]) + continuation
        logprobs = self._logprobs(ids)[-len(continuation):]
        target = torch.tensor(continuation, device=logprobs.device)
        picked = logprobs.gather(-1, target[:, None]).squeeze(-1)
        return float(picked.sum()), bool((logprobs.argmax(-1) == target).all())

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of context and continuation as one text would tokenize (trailing context spaces move to
        the continuation, which is how tokenizers with a space-prefix convention see them)."""
        spaces = len(context) - len(context.rstrip(" "))
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.tokenizer.encode(context + continuation)
        context_ids = self.tokenizer.encode(context) if context else []
        return whole[:len(context_ids)], whole[len(context_ids):]

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        results = []
        for request in requests:
            context, continuation = request.args
            results.append(self._score(*self._encode_pair(context, continuation)))
        return results

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        results = []
        for request in requests:
            ids = self.tokenizer.encode(request.args[0])
            windows = map(make_disjoint_window, get_rolling_token_windows(
                token_list=ids, prefix_token=self.tokenizer.eos_id, max_seq_len=self.max_length, context_len=1))
            results.append(sum(self._score(context, target)[0] for context, target in windows))
        return results

    # -- generation -------------------------------------------------------------------------------
    def generate_until(self, requests: list[Any]) -> list[str]:
        prompts, samplings, stops = [], [], []
        for request in requests:
            context, kwargs = request.args
            kwargs = dict(kwargs or {})
            until = kwargs.get("until") or []
            stops.append([until] if isinstance(until, str) else list(until))
            sample = bool(kwargs.get("do_sample", False)) and float(kwargs.get("temperature", 0.0)) > 0
            samplings.append(Sampling(max_new_tokens=int(kwargs.get("max_gen_toks", DEFAULT_MAX_GEN_TOKS)),
                                      temperature=float(kwargs.get("temperature", 1.0)) if sample else 0.0,
                                      top_p=kwargs.get("top_p") if sample else None,
                                      seed=int(kwargs.get("seed", 0))))
            prompts.append(self.tokenizer.encode(context))
        results = []
        for completion, until in zip(self.generator.generate(prompts, samplings, crop_prompts=True), stops):
            text = self.tokenizer.decode(completion.tokens)
            for stop in until:
                text = text.split(stop)[0]
            results.append(text)
        return results

def run_tasks(checkpoint: str | Path, tasks: list[str], tasks_dir: str | Path | None = None,
              limit: int | None = None, adapter: str | Path | None = None, device: str = "auto") -> dict[str, Any]:
    """lm_eval's ``simple_evaluate`` on ``tasks`` (found in lm_eval's catalogue and in ``tasks_dir``)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(tasks_dir) if tasks_dir else None)
    model = PlugformerLM(checkpoint, adapter=adapter, device=device)
    return lm_eval.simple_evaluate(model=model, tasks=tasks, task_manager=manager, limit=limit,
                                   log_samples=False, bootstrap_iters=0)
