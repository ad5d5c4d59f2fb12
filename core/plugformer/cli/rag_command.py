"""``plugformer rag index=DIR checkpoint=DIR question=TEXT``: answer a question from retrieved passages."""
from __future__ import annotations

import sys

from plugformer.commands import component_nodes, parse_keyvalues, positive_int
from plugformer.errors import ConfigError

USAGE = """\
usage: plugformer rag index=DIR checkpoint=DIR question=TEXT [k=4] [max_tokens=64] [temperature=0]
                      [seed=N] [template=TEXT] [device=auto] [search.KEY=VALUE ...] [embedder.KEY=VALUE ...]

Retrieves the k chunks of the index nearest the question, writes them as numbered passages into the
prompt (template, default "Passages:\\n{passages}\\nQuestion: {question}\\nAnswer:"; lower-ranked passages
are dropped if the prompt would not fit the model's context), generates the answer with the inference
engine, and prints it followed by its sources (passage number, chunk id, score).

example:
  plugformer index build out=idx/
  plugformer rag index=idx/ checkpoint=runs/qa/checkpoints/last question="What does the X200 weigh?"
"""


def _number(key: str, value: str, kind: type) -> float | int:
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"plugformer rag: {key}={value!r} must be a number") from None


def run(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    from plugformer.retrieval.components import RECORDED_EMBEDDER as RECORDED
    from plugformer.retrieval.components import embedder_override

    rest, nodes = component_nodes("rag", args, ("embedder", "search"),
                                  defaults={"search": "search", "embedder": RECORDED})
    if nodes["search"] is None or nodes["search"]["name"] != "search":
        raise ConfigError("plugformer rag: search takes options only (search.nprobe=16), not search=NAME")
    keys = ("index", "checkpoint", "question", "k", "max_tokens", "temperature", "seed", "template", "device")
    values = parse_keyvalues("rag", rest, keys, required=("index", "checkpoint", "question"))
    options = {k: v for k, v in nodes["search"].items() if k != "name"}
    k = positive_int("rag", values, "k") or 4
    max_tokens = positive_int("rag", values, "max_tokens") or 64
    temperature = float(_number("temperature", values.get("temperature", "0"), float))
    seed = int(_number("seed", values["seed"], int)) if "seed" in values else None
    from plugformer.retrieval.prompt import DEFAULT_TEMPLATE, check_template

    template = check_template(values.get("template", DEFAULT_TEMPLATE).replace("\\n", "\n"))

    from plugformer import load_plugins
    from plugformer.engine import Engine, SamplingParams
    from plugformer.retrieval import Index
    from plugformer.retrieval.rag import answer_questions

    registries = load_plugins().registries
    embedder = nodes["embedder"] if nodes["embedder"] != {"name": RECORDED} else None
    index = Index.open(values["index"], registries,
                       **({"embedder": embedder_override(values["index"], embedder)} if embedder else {}))
    engine = Engine.from_checkpoint(values["checkpoint"], registries=registries,
                                    device=values.get("device", "auto"), max_batch=1)
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
    answer = answer_questions(engine, index, [values["question"]], k=k, template=template, params=params,
                              **options)[0]
    if answer.dropped:
        print(f"plugformer: warning: {answer.dropped} of {answer.dropped + len(answer.sources)} retrieved passages did "
              f"not fit the model's context of {engine.context} tokens with max_tokens={max_tokens} and were left "
              "out of the prompt", file=sys.stderr)
    print(answer.text.strip())
    print("\nsources:" if answer.sources else "\nsources: none (no passage fit the prompt)")
    for number, source in enumerate(answer.sources, 1):
        print(f"  [{number}] {source.chunk.id}  (score {source.score:.4f})")
    return 0


__all__ = ["run"]
