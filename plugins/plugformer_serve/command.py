"""``plugformer serve checkpoint=C [server.*=...] [embedder=NAME] [rag.index=DIR]``: load the checkpoint into the
engine and serve it; with an embedder also ``/v1/embeddings``, with an index retrieval-augmented chat.

Every value is checked before the model loads; a bad one is a one-line error (exit 2).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from plugformer import ConfigError
from plugformer.commands import component_nodes, parse_keyvalues, positive_int

USAGE = """usage: plugformer serve checkpoint=DIR [server.host=127.0.0.1] [server.port=8000]
       [server.api_key=KEY|[K1,K2]] [server.model_name=default] [server.adapters={name: DIR}]
       [server.timeout_s=600] [server.grace_s=30]
       [server.max_body_bytes=1000000] [server.max_batch=64] [server.kv_cache_tokens=N] [server.max_waiting=1024]
       [server.name=openai] [device=auto] [precision=fp32|bf16] [draft=DIR]
       [embedder=NAME] [embedder.KEY=VALUE ...] [server.embedding_model=NAME] [server.embedding_max_inputs=2048]
       [server.embedding_max_chars=32768] [server.embedding_workers=1] [server.embedding_max_waiting=64]
       [rag.index=DIR] [rag.k=4] [rag.template=TEXT] [search.KEY=VALUE ...]
Serves the checkpoint over the OpenAI API (/v1/completions, /v1/chat/completions, /v1/models) with /health,
/ready and /metrics; with an embedder (embedder=NAME, or the index's) also /v1/embeddings; with rag.index=DIR
chat completions answer from the k passages retrieved for the last user message. See docs/serving.md.
"""

#: server.* keys that size the engine rather than configure the server component
ENGINE_KEYS = ("max_batch", "kv_cache_tokens", "max_waiting")
SERVER_INTS = ("port", "max_body_bytes", "embedding_max_inputs", "embedding_max_chars", "embedding_workers",
               "embedding_max_waiting")
SERVER_FLOATS = ("timeout_s", "grace_s")
SERVER_STRINGS = ("host", "model_name", "embedding_model")
PRECISIONS = ("fp32", "bf16")
RAG_KEYS = ("rag.index", "rag.k", "rag.template")
KEYS = ("checkpoint", "device", "precision", "draft", "server.name", "server.api_key", "server.adapters",
        *(f"server.{k}" for k in (*SERVER_STRINGS, *SERVER_INTS, *SERVER_FLOATS, *ENGINE_KEYS)), *RAG_KEYS)


def _int(key: str, value: str, low: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"plugformer serve: {key}={value!r} is not a whole number") from None
    if number < low:
        raise ConfigError(f"plugformer serve: {key}={number} must be >= {low}")
    return number


def _float(key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"plugformer serve: {key}={value!r} is not a number") from None
    if number != number or number < 0:
        raise ConfigError(f"plugformer serve: {key}={value!r} must be a number >= 0")
    return number


def _yaml(key: str, value: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"plugformer serve: {key}={value!r} is not a valid value (YAML)") from None


def api_keys(value: str) -> str | list[str]:
    """``server.api_key``: one key, or ``[K1,K2]`` for several."""
    if not value.startswith("["):
        return value
    keys = _yaml("server.api_key", value)
    if not isinstance(keys, list) or not keys:
        raise ConfigError(f"plugformer serve: server.api_key={value!r} must be a key or a list [K1,K2]")
    return [str(k) for k in keys]


def adapter_dirs(value: str) -> dict[str, Path]:
    """``server.adapters={name: DIR, ...}``: each directory must exist."""
    mapping = _yaml("server.adapters", value)
    if not isinstance(mapping, dict) or not mapping:
        raise ConfigError(f"plugformer serve: server.adapters={value!r} must be a mapping {{name: DIR, ...}}")
    dirs = {}
    for name, directory in mapping.items():
        if not isinstance(name, str) or not name or not isinstance(directory, str):
            raise ConfigError(f"plugformer serve: server.adapters entry {name!r}: {directory!r} must be name: DIR")
        path = Path(directory).expanduser()
        if not path.is_dir():
            raise ConfigError(f"plugformer serve: server.adapters {name!r}: {path} is not a directory")
        dirs[name] = path
    return dirs


def retrieval_settings(values: dict[str, str], nodes: dict[str, dict | None]) -> dict[str, Any]:
    """``embedder`` (a config node; name ``recorded``: the index's), ``rag`` (``index``, ``k``, ``template``; None
    without ``rag.index``) and ``search`` (the retriever's search-time options), checked."""
    from plugformer.retrieval import RECORDED_EMBEDDER as RECORDED
    from plugformer.retrieval import DEFAULT_TEMPLATE, check_template

    search = nodes["search"]
    if search is None or search["name"] != "search":
        raise ConfigError("plugformer serve: search takes options only (search.nprobe=16), not search=NAME")
    options = {k: v for k, v in search.items() if k != "name"}
    rag = None
    if "rag.index" in values:
        index = Path(values["rag.index"]).expanduser()
        if not index.is_dir():
            raise ConfigError(f"plugformer serve: rag.index={index} is not a directory (build one with plugformer "
                              "index build)")
        template = check_template(values.get("rag.template", DEFAULT_TEMPLATE).replace("\\n", "\n"))
        rag = {"index": index, "k": positive_int("serve", values, "rag.k") or 4, "template": template}
    else:
        given = next((k for k in ("rag.k", "rag.template") if k in values), None) or \
            (f"search.{next(iter(options))}" if options else None)
        if given:
            raise ConfigError(f"plugformer serve: {given} is set but there is no index; add rag.index=DIR")
    embedder = nodes["embedder"]
    if rag is None and embedder is not None and embedder["name"] == RECORDED:
        if len(embedder) > 1:
            raise ConfigError(f"plugformer serve: embedder.{next(k for k in embedder if k != 'name')} is set but no "
                              "embedder is chosen; add embedder=NAME (or rag.index=DIR to use the index's)")
        embedder = None
    return {"embedder": embedder, "rag": rag, "search": options}


def parse(args: list[str]) -> dict[str, Any]:
    """The checked settings: ``checkpoint``, ``server`` (the server node), ``engine`` (knobs), ``adapters``, and
    what it retrieves with: ``embedder``, ``rag``, ``search`` (:func:`retrieval_settings`)."""
    from plugformer.retrieval import RECORDED_EMBEDDER as RECORDED

    rest, nodes = component_nodes("serve", args, ("embedder", "search"),
                                  defaults={"embedder": RECORDED, "search": "search"})
    values = parse_keyvalues("serve", rest, KEYS, required=("checkpoint",), positional="checkpoint")
    checkpoint = Path(values["checkpoint"]).expanduser()
    if not checkpoint.exists():
        raise ConfigError(f"plugformer serve: checkpoint={checkpoint} does not exist")
    precision = values.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise ConfigError(f"plugformer serve: precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    node: dict[str, Any] = {"name": values.get("server.name", "openai")}
    for key in SERVER_STRINGS:
        if f"server.{key}" in values:
            node[key] = values[f"server.{key}"]
    for key in SERVER_INTS:
        if f"server.{key}" in values:
            node[key] = _int(f"server.{key}", values[f"server.{key}"], 0 if key == "port" else 1)
    for key in SERVER_FLOATS:
        if f"server.{key}" in values:
            node[key] = _float(f"server.{key}", values[f"server.{key}"])
    if "server.api_key" in values:
        node["api_key"] = api_keys(values["server.api_key"])
    engine = {k: _int(f"server.{k}", values[f"server.{k}"], 1) for k in ENGINE_KEYS if f"server.{k}" in values}
    draft = values.get("draft")
    if draft is not None and not Path(draft).expanduser().exists():
        raise ConfigError(f"plugformer serve: draft={draft} does not exist")
    adapters = adapter_dirs(values["server.adapters"]) if "server.adapters" in values else {}
    return {"checkpoint": checkpoint, "server": node, "engine": engine, "adapters": adapters,
            "device": values.get("device", "auto"), "precision": precision, "draft": draft,
            **retrieval_settings(values, nodes)}


def load_retrieval(settings: dict[str, Any], server: Any, registries: Any) -> Any:
    """The :class:`~plugformer_serve.served_retrieval.ServedRetrieval` the settings ask for (None: neither an
    embedder nor an index), loaded before the model so a bad index or embedder fails first."""
    import inspect

    from plugformer_serve.embeddings import embedding_model_name
    from plugformer_serve.served_retrieval import load_served_retrieval

    rag = settings["rag"]
    if settings["embedder"] is None and rag is None:
        return None
    if "retrieval" not in inspect.signature(server.serve).parameters:
        raise ConfigError(f"plugformer serve: server.name={settings['server']['name']!r} does not serve embeddings "
                          "or retrieval-augmented chat (embedder=, rag.index=); use server.name=openai")
    retrieval = load_served_retrieval(registries, settings["embedder"], rag["index"] if rag else None,
                                      k=rag["k"] if rag else 4, search_options=settings["search"],
                                      **({"template": rag["template"]} if rag else {}))
    if retrieval is not None and retrieval.embedder is not None:
        embedding_model_name(settings["server"].get("embedding_model"), retrieval.embedder_name,
                             [settings["server"].get("model_name", "default"), *settings["adapters"]])
    return retrieval


def run(args: list[str]) -> int:
    """Parse and check, build the server, load the engine, serve until SIGTERM/Ctrl-C."""
    if args and args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    settings = parse(args)
    from plugformer import get_registries
    from plugformer.build import build
    from plugformer.engine import Engine
    from plugformer_serve.chat import checkpoint_template

    registries = get_registries()
    server = build(registries, "server", settings["server"])  # bad server.* values fail before the model loads
    retrieval = load_retrieval(settings, server, registries)
    template = checkpoint_template(settings["checkpoint"])
    if settings["adapters"] and not hasattr(Engine, "add_adapter"):
        raise ConfigError("plugformer serve: server.adapters needs multi-adapter serving "
                          "(Engine.add_adapter), which this plugformer does not have")
    engine = Engine.from_checkpoint(settings["checkpoint"], registries=registries, device=settings["device"],
                                    precision=settings["precision"], draft=settings["draft"], **settings["engine"])
    for name, directory in settings["adapters"].items():
        engine.add_adapter(name, directory)
    model_name = settings["server"].get("model_name", "default")
    extras = ""
    if retrieval is not None and retrieval.embedder is not None:
        extras += f"; embeddings {settings['server'].get('embedding_model') or retrieval.embedder_name!r}"
    if retrieval is not None and retrieval.index is not None:
        extras += f"; chat retrieves {retrieval.k} passages from {settings['rag']['index']}"

    def ready(address: str) -> None:
        print(f"plugformer serve: {model_name!r} from {settings['checkpoint']} on {address} (OpenAI API at "
              f"{address}/v1){extras}", flush=True)

    server.serve(engine, chat_template=template, adapters=list(settings["adapters"]), ready=ready,
                 **({"retrieval": retrieval} if retrieval is not None else {}))
    print("plugformer serve: stopped", file=sys.stderr, flush=True)
    return 0


__all__ = ["KEYS", "USAGE", "load_retrieval", "parse", "retrieval_settings", "run"]
