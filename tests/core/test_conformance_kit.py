"""The conformance kit (``pytest --plugformer-conformance``): every built-in passes it, a broken
third-party component fails it by name, the selection options restrict it, and without the flag the
pytest plugin does nothing (and imports no torch). Attention variants that are not exact softmax
attention pass the self-consistency cases and are exempt from "equals the reference"; broken ones fail."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from plugformer.interfaces import Attention, causal_mask
from plugformer.plugins import ENV_ALLOW, ENV_BLOCK, ENV_DISABLE_AUTOLOAD, ENV_STRICT
from plugformer.registry import Entry

BUILTIN_FAMILIES = ("attention", "position", "tokenizer", "norm", "mlp", "optimizer", "scheduler", "objective",
                    "data", "guide", "server", "embedder")


def run_pytest(cwd: Path, *args: str, site: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m pytest ARGS`` in ``cwd`` (no ini file there), plugin switches cleared."""
    env = {k: v for k, v in os.environ.items() if k not in (ENV_ALLOW, ENV_BLOCK, ENV_DISABLE_AUTOLOAD, ENV_STRICT)}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=env,
                          check=False, capture_output=True, text=True, timeout=600)


def outcomes(junit: Path) -> dict[str, Counter[str]]:
    """family → Counter of outcomes (passed/failed/skipped) from a JUnit XML report."""
    found: dict[str, Counter[str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        if "[" not in name:
            continue
        family = name.split("[", 1)[1].split(":", 1)[0]
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        found.setdefault(family, Counter())[kind] += 1
    return found


@pytest.mark.slow
def test_every_builtin_passes_the_kit(tmp_path: Path) -> None:
    junit = tmp_path / "kit.xml"
    proc = run_pytest(tmp_path, "--plugformer-conformance", "--plugformer-provider=plugformer",
                      "--import-mode=importlib", "-q", f"--junitxml={junit}")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    counts = outcomes(junit)
    for family in BUILTIN_FAMILIES:
        assert counts.get(family, Counter())["passed"] > 0, f"no passing {family} contract test: {counts}"
    assert not any(c["failure"] or c["error"] for c in counts.values())


@pytest.fixture
def leaky_site(tmp_path: Path) -> Path:
    """An installed-looking distribution ``leaky-attention`` whose backend ignores causal masking."""
    site = tmp_path / "site"
    (site / "leaky_attention").mkdir(parents=True)
    (site / "leaky_attention" / "__init__.py").write_text(textwrap.dedent('''
        from plugformer import hookimpl

        @hookimpl
        def plugformer_register(registries):
            registries.attention.register(
                "leaky", "leaky_attention.attn:Leaky", description="forgets the causal mask",
                capabilities={"causal": True, "bidirectional": True, "kv_cache": True})
    '''))
    (site / "leaky_attention" / "attn.py").write_text(textwrap.dedent('''
        import torch.nn.functional as F
        from plugformer.interfaces import Attention

        class Leaky(Attention):
            def forward(self, q, k, v, *, causal, attn_bias=None, q_offset=0):
                groups = q.shape[1] // k.shape[1]
                k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
                return F.scaled_dot_product_attention(q, k, v)  # every query sees every key
    '''))
    info = site / "leaky_attention-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: leaky-attention\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[plugformer]\nleaky = leaky_attention\n")
    return site


@pytest.mark.slow
def test_a_broken_third_party_backend_fails_by_name(leaky_site: Path, tmp_path: Path) -> None:
    """Its own test suite runs alongside the kit (paths given), restricted to its distribution."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_own.py").write_text("def test_own_suite_still_runs():\n    pass\n")
    junit = tmp_path / "leaky.xml"
    proc = run_pytest(project, "--plugformer-conformance", "--plugformer-provider=leaky_attention", ".",
                      "-q", "-rf", f"--junitxml={junit}", site=leaky_site)
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-2000:]
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert any("test_causal_queries_ignore_later_keys[attention:leaky]" in line for line in failed), proc.stdout[-4000:]
    assert any("test_kv_cache_decoding_matches_full_recomputation[attention:leaky]" in line for line in failed)
    assert not any("bidirectional" in line for line in failed), failed  # the claim it does honour passes
    assert "attention 'leaky' from leaky-attention 0.1" in proc.stdout
    counts = outcomes(junit)
    assert set(counts) == {"attention"}, counts  # only its provider's components
    assert "test_own_suite_still_runs" in junit.read_text()


def test_only_restricts_the_implementations(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, "--plugformer-conformance", "--plugformer-family=attention",
                      "--plugformer-only=sdpa", "--collect-only", "-q")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    assert ids and all("[attention:sdpa" in line for line in ids), ids


def test_unknown_names_are_usage_errors(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, "--plugformer-conformance", "--plugformer-only=sdpx", "--collect-only")
    assert proc.returncode == 4 and "sdpx" in proc.stderr, proc.stderr
    proc = run_pytest(tmp_path, "--plugformer-conformance", "--plugformer-family=attentoin", "--collect-only")
    assert proc.returncode == 4 and "attentoin" in proc.stderr, proc.stderr


def test_the_plugin_is_inert_without_the_flag(tmp_path: Path) -> None:
    probe = ("import sys, plugformer.testing.pytest_plugin; "
             "assert 'torch' not in sys.modules, 'importing the pytest plugin imports torch'")
    assert subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True).returncode == 0
    proc = run_pytest(tmp_path, "--collect-only", "-q")
    assert proc.returncode == 5 and "no tests" in proc.stdout, proc.stdout  # 5: nothing collected


# -- attention variants: self-consistency for all, "equals the reference" for exact softmax only ----------
class CosineAttention(Attention):
    """A deliberately non-softmax-of-q·k variant: softmax over scaled cosine similarities (plus bias), with
    GQA, causal offsets, dropout. It honours every self-consistency property and differs from the reference."""

    def forward(self, q, k, v, *, causal, attn_bias=None, q_offset=0):
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, 1).float(), v.repeat_interleave(groups, 1).float()
        scores = 5.0 * F.normalize(q.float(), dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)
        if attn_bias is not None:
            scores = scores + attn_bias.float()
        if causal:
            scores = scores.masked_fill(~causal_mask(q.shape[2], k.shape[2], q_offset, q.device), float("-inf"))
        weights = F.dropout(torch.softmax(scores, -1), self.dims.dropout, self.training)
        return (weights @ v).to(q.dtype)


class PeekingAttention(CosineAttention):
    """Broken: a causal query also sees the next token."""

    def forward(self, q, k, v, *, causal, attn_bias=None, q_offset=0):
        return super().forward(q, k, v, causal=causal, attn_bias=attn_bias, q_offset=q_offset + 1 if causal else 0)


class RowMixingAttention(CosineAttention):
    """Broken: every sequence's values leak into the others (a batch-wide mean)."""

    def forward(self, q, k, v, *, causal, attn_bias=None, q_offset=0):
        return super().forward(q, k, v + v.mean(0, keepdim=True), causal=causal, attn_bias=attn_bias, q_offset=q_offset)


VARIANT_CAPABILITIES = {"devices": ["cpu"], "dtypes": ["float32"], "causal": True, "bidirectional": True,
                        "kv_cache": True, "attention_bias": True, "padding_mask": True, "gqa": True}


def attention_contract_results(cls: type, **capabilities: Any) -> dict[str, str]:
    """Run every attention contract test that applies to an entry of ``cls`` in this process:
    test name → ``passed`` or ``failed: <message>`` (tests whose capabilities it lacks are left out)."""
    from plugformer.testing.contracts import test_attention_contract as contract

    entry = Entry("variant", "attention", cls, "variant-dist", "0.1", capabilities=capabilities,
                  interface="plugformer.interfaces:Attention")
    results = {}
    for name, fn in vars(contract).items():
        marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "plugformer_contract"]
        if not name.startswith("test_") or not marks:
            continue
        needs = marks[0].kwargs.get("needs", ())
        if not all(capabilities.get(n) for n in needs):
            continue
        try:
            fn(entry)
            results[name] = "passed"
        except AssertionError as exc:
            results[name] = f"failed: {exc}"
    return results


def test_an_attention_variant_passes_the_self_consistency_cases_and_skips_the_reference():
    results = attention_contract_results(CosineAttention, **VARIANT_CAPABILITIES)
    assert all(r == "passed" for r in results.values()), results
    assert {"test_causal_queries_ignore_later_keys", "test_padded_keys_are_as_if_absent",
            "test_kv_cache_decoding_matches_full_recomputation", "test_grouped_query_heads_read_their_kv_head",
            "test_batch_rows_are_independent", "test_attention_bias_broadcasts_and_acts"} <= set(results)
    assert not any("reference" in name for name in results)  # it does not claim exact_softmax


def test_claiming_exact_softmax_holds_a_variant_to_the_reference():
    results = attention_contract_results(CosineAttention, **VARIANT_CAPABILITIES, exact_softmax=True)
    assert results["test_causal_matches_reference"].startswith("failed: attention 'variant' from variant-dist")
    assert results["test_causal_queries_ignore_later_keys"] == "passed"


def test_a_variant_that_peeks_at_the_next_token_fails_causality_and_decoding():
    results = attention_contract_results(PeekingAttention, **VARIANT_CAPABILITIES)
    assert "see later keys" in results["test_causal_queries_ignore_later_keys"]
    assert "incremental decoding" in results["test_kv_cache_decoding_matches_full_recomputation"]
    assert results["test_bidirectional_queries_see_every_key"] == "passed"


def test_a_variant_that_mixes_batch_rows_fails_row_independence_and_padding():
    results = attention_contract_results(RowMixingAttention, **VARIANT_CAPABILITIES)
    assert "batch row 0 vs the row alone" in results["test_batch_rows_are_independent"]
    assert results["test_padded_keys_are_as_if_absent"].startswith("failed:")
    assert results["test_causal_queries_ignore_later_keys"] == "passed"


# -- ragged batches (plugin API 1.1): only for backends declaring ``ragged`` --------------------------------
class RaggedCosineAttention(CosineAttention):
    """The cosine variant taking ragged batches: per-row causal masks from a (B,) ``q_offset`` and the keys past
    each row's ``kv_lengths`` hidden, all as an additive bias."""

    def forward(self, q, k, v, *, causal, attn_bias=None, q_offset=0, kv_lengths=None):
        if kv_lengths is None and not isinstance(q_offset, torch.Tensor):
            return super().forward(q, k, v, causal=causal, attn_bias=attn_bias, q_offset=q_offset)
        keys = torch.arange(k.shape[2], device=q.device)
        positions = torch.as_tensor(q_offset, device=q.device).reshape(-1, 1, 1, 1) + \
            torch.arange(q.shape[2], device=q.device).reshape(1, 1, -1, 1)
        hidden = (keys > positions) if causal else torch.zeros_like(keys, dtype=torch.bool)
        if kv_lengths is not None:
            hidden = hidden | (keys >= kv_lengths.reshape(-1, 1, 1, 1))
        bias = torch.zeros(hidden.shape, device=q.device).masked_fill(hidden, float("-inf"))
        return super().forward(q, k, v, causal=False, attn_bias=bias if attn_bias is None else bias + attn_bias)


class FirstRowOffsetAttention(RaggedCosineAttention):
    """Broken: every row is masked as if it sat at the first row's position."""

    def forward(self, q, k, v, *, causal, attn_bias=None, q_offset=0, kv_lengths=None):
        if isinstance(q_offset, torch.Tensor):
            q_offset = int(q_offset[0])
        return super().forward(q, k, v, causal=causal, attn_bias=attn_bias, q_offset=q_offset, kv_lengths=kv_lengths)


class PaddingBlindAttention(RaggedCosineAttention):
    """Broken: ignores ``kv_lengths``, so padded keys count (visible to bidirectional queries)."""

    def forward(self, q, k, v, *, causal, attn_bias=None, q_offset=0, kv_lengths=None):
        return super().forward(q, k, v, causal=causal, attn_bias=attn_bias, q_offset=q_offset)


RAGGED_TESTS = {"test_ragged_rows_equal_each_row_alone", "test_ragged_rows_ignore_order_and_padding"}


def test_a_ragged_variant_passes_the_ragged_cases_and_others_are_not_asked():
    results = attention_contract_results(RaggedCosineAttention, **VARIANT_CAPABILITIES, ragged=True)
    assert RAGGED_TESTS <= set(results) and all(r == "passed" for r in results.values()), results
    assert not RAGGED_TESTS & set(attention_contract_results(CosineAttention, **VARIANT_CAPABILITIES))  # API 1.0


def test_a_variant_masking_every_row_at_the_first_rows_position_fails_by_row():
    results = attention_contract_results(FirstRowOffsetAttention, **VARIANT_CAPABILITIES, ragged=True)
    assert "ragged row 1 (q_offset=0, kv_length=3) vs the row alone" in results["test_ragged_rows_equal_each_row_alone"]
    assert results["test_kv_cache_decoding_matches_full_recomputation"] == "passed"  # int offsets are fine


def test_a_variant_ignoring_kv_lengths_fails_the_padding_case():
    results = attention_contract_results(PaddingBlindAttention, **VARIANT_CAPABILITIES, ragged=True)
    assert "more padding keys holding garbage" in results["test_ragged_rows_ignore_order_and_padding"]
    assert "causal=False" in results["test_ragged_rows_equal_each_row_alone"]
