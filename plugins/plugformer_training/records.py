"""Fine-tuning records from JSONL files: ``{"prompt", "response"}``, chat ``{"messages": [...]}``,
preference pairs ``{"prompt", "chosen", "rejected"}`` or, for ``objective=contrastive``, texts to embed in pairs
``{"query", "positive"[, "negative"]}``, one JSON object per line.

The held-out split is ``val_path`` when given, else the records whose prompt hashes below
``val_fraction`` (so repeated prompts always land on the same side and the splits never share one).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from plugformer import ConfigError
from plugformer.interfaces import SPLITS, TextSource
from plugformer.training import record_kind


def prompt_key(record: dict[str, Any]) -> str:
    """What identifies a record's question: its prompt, or a chat's messages before the last answer."""
    if "messages" in record:
        messages = list(record["messages"])
        while messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
            messages.pop()
        return json.dumps(messages, sort_keys=True)
    return str(record.get("prompt", record.get("query", "")))  # query: a contrastive pair's


def _score(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file, each checked to be one of the three record kinds."""
    out = []
    with path.open("rb") as fh:
        offset = 0
        for n, raw in enumerate(fh, start=1):
            start, offset = offset, offset + len(raw)
            if n == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a byte-order mark
                raw, start = raw[3:], start + 3
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset "
                                  f"{start + exc.start} (convert the file to UTF-8)") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{path}:{n}: expected a JSON object, got {type(record).__name__}")
            record_kind(record, f"{path}:{n}")
            out.append(record)
    return out


class JsonlRecords(TextSource):
    """Records from ``config.path`` (train, minus the held-out share) and ``config.val_path``."""

    has_records = True

    def __init__(self, config: Any):
        super().__init__(config)
        raw = str(getattr(config, "path", "") or "")
        if raw in ("", "???"):
            raise ConfigError("data.path is required: set data.path=<records .jsonl file> (or data=<file.jsonl>)")
        self.path = Path(raw).expanduser().resolve()
        self.val_path = Path(config.val_path).expanduser().resolve() if config.val_path else None
        for p in (self.path, self.val_path):
            if p is not None and not p.is_file():
                raise ConfigError(f"records file {str(p)!r} does not exist")
        if not 0.0 <= float(config.val_fraction) < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {config.val_fraction!r}")

    @cached_property
    def _splits(self) -> dict[str, list[dict[str, Any]]]:
        records = read_jsonl(self.path)
        if self.val_path is not None:
            val = read_jsonl(self.val_path)
            held = {prompt_key(r) for r in val}
            return {"train": [r for r in records if prompt_key(r) not in held], "val": val}
        fraction = float(self.config.val_fraction)
        is_val = [_score(prompt_key(r)) < fraction for r in records]
        if fraction > 0 and not any(is_val) and len(records) > 1:  # tiny files still get a held-out record
            lowest = min(range(len(records)), key=lambda i: _score(prompt_key(records[i])))
            is_val = [prompt_key(r) == prompt_key(records[lowest]) for r in records]
        return {"train": [r for r, v in zip(records, is_val) if not v],
                "val": [r for r, v in zip(records, is_val) if v]}

    def records(self, split: str) -> Iterator[dict[str, Any]]:
        if split not in SPLITS:
            raise ConfigError(f"unknown split '{split}'; splits: {', '.join(SPLITS)}")
        yield from self._splits[split]

    def documents(self, split: str) -> Iterator[str]:
        """Each record as plain text: its prompt followed by its (chosen) response, or a chat's contents."""
        for r in self.records(split):
            if "messages" in r:
                yield "\n".join(str(m.get("content", "")) for m in r["messages"])
            elif "query" in r and "prompt" not in r:  # a contrastive pair: its texts
                yield "\n".join(str(r[k]) for k in ("query", "positive", "negative") if r.get(k) is not None)
            else:
                yield str(r["prompt"]) + str(r.get("response", r.get("chosen", "")))

    def fingerprint(self) -> str:
        parts = []
        for p in (self.path, self.val_path):
            if p is not None:
                st = p.stat()
                parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
        return "jsonl:" + "|".join(parts) + f":{self.config.val_fraction}"
