"""A small built-in text sample: several scripts, emoji, code and awkward whitespace. Plain data.

Tokenizers that must be fitted learn from it (:func:`plugformer.testing.construct.fitted_tokenizer`), and
round-trip tests encode it; it is small enough to fit a BPE in well under a second and varied enough to
catch byte/Unicode handling bugs.
"""
from __future__ import annotations

SAMPLES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog. It was 3:14 p.m. on 2024-05-06!",
    "Größenwahn ist keine Tugend; naïve café owners say «bonjour» — ça va?",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "東京は日本の首都です。漢字とひらがなとカタカナ。",
    "مرحبا بالعالم — नमस्ते दुनिया — Γειά σου Κόσμε — שלום עולם",
    "emoji: 🦊🚀👩‍👩‍👧‍👦 flags 🇫🇷🇯🇵 and a lone combining mark: e\u0301",
    "def fib(n: int) -> int:\n    \"\"\"Fibonacci.\"\"\"\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];  // dot\n}\r\n",
    "  leading spaces, trailing spaces   \n\n\ttabs\tand\u00a0no-break\u2003spaces  ",
    "{\"key\": [1, 2.5, null, true], \"path\": \"C:\\\\Users\\\\me\"} <tag attr='x'>&amp;</tag>",
)

#: texts to fit on: the samples, repeated so that frequency-thresholded trainers learn merges
FIT_TEXTS: tuple[str, ...] = SAMPLES * 8

