#!/usr/bin/env python
"""Serving throughput: ``plugformer serve`` vs Hugging Face ``transformers serve --continuous-batching``.

The same tiny GPT-2 as ``generate_throughput.py`` (6 layers, d_model 384, 6 heads, vocab 8192, context 512,
seeded random weights, built and saved there by ``save_hf_model``) is imported with plugformer's ``import-hf``
and served twice, each a subprocess on a free loopback port, both started before any load and idle (no CPU)
while the other is measured:

- plugformer: ``python -m plugformer serve checkpoint=<imported> server.max_batch=64 device=cpu``;
- Hugging Face: ``transformers serve <hf dir> --continuous-batching --device cpu --dtype float32``, run by the
  Python of its own environment (``--hf-python``; ``transformers[serving]`` is not a plugformer dependency).

A load generator (httpx, asyncio) sends streamed ``POST /v1/completions`` requests to each: the same text
prompts (slices of Python standard-library sources, 100-800 characters: 20-370 tokens, mean about 115),
64 new tokens each, greedy (``temperature: 0``), never stopping at EOS (plugformer: ``ignore_eos: true``;
HF serve takes no ``ignore_eos``, so it gets ``generation_config: {"eos_token_id": -1}``), at concurrency
1, 16 and 64 (a closed loop: each of the N clients sends its next request when its last one ends; every
level has prompts of its own, so no prefix is cached from an earlier level). Each level runs four times,
plugformer, HF, HF, plugformer, on two prompt sets (the first and the last run share one, the middle two the
other), so a drift in the machine's speed (other tenants' load) weighs on both sides alike; a side's figures
pool its two runs. For each side and level
it prints output tokens/s (completion tokens of the level / its wall time), time to first token p50 (the
first chunk with text), latency p50/p99 (to the end of the stream), tokens per CPU-second of the server's
processes, and the plugformer/HF ratios.

Set up the HF environment once (``benchmarks/.venv-hf-serve``, gitignored; the same torch and transformers
versions as this environment's, torch's CPU build as this environment has it)::

    python benchmarks/serve_throughput.py --setup-hf-venv
    # which runs: python -m venv benchmarks/.venv-hf-serve &&
    #   benchmarks/.venv-hf-serve/bin/pip install 'transformers[serving]==<ours>' 'torch==<ours>'

then::

    python benchmarks/serve_throughput.py --quick                  # smoke run: a few requests per level, 16 tokens
    python benchmarks/serve_throughput.py --threads 2 --json serve.json   # the full run
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_throughput import cpu_name, save_hf_model, stdlib_texts  # noqa: E402  (the engine benchmark's model)

HF_VENV = Path(__file__).resolve().parent / ".venv-hf-serve"
LEVELS = (1, 16, 64)
#: the issue's target at concurrency 16 and 64: plugformer tokens/s >= 1.5x HF's, p99 latency no worse than HF's
TARGET_RATIO, TARGET_LEVELS = 1.5, (16, 64)


@dataclass
class Settings:
    """The workload: concurrency levels, requests per level, new tokens, prompt sizes (in characters)."""

    levels: tuple[int, ...] = LEVELS
    requests: dict[int, int] = field(default_factory=lambda: {1: 16, 16: 64, 64: 128})
    max_tokens: int = 64
    min_chars: int = 100
    max_chars: int = 800
    warmup: int = 4

    @classmethod
    def quick(cls) -> Settings:
        return cls(requests={1: 3, 16: 16, 64: 64}, max_tokens=16, warmup=2)


@dataclass
class Side:
    """One server under test: how to start it, when it is ready, and what its requests carry."""

    name: str
    command: list[str]
    env: dict[str, str]
    ready_path: str
    model: str
    extra_body: dict[str, Any]


@dataclass
class Reply:
    """One streamed completion as the client saw it."""

    ttft_s: float | None = None
    latency_s: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    text: str = ""
    error: str | None = None


# -- the servers -----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server subprocess in its own process group (HF serve starts a model process of its own), its output in
    a log file; stopped with SIGTERM, then SIGKILL to the whole group."""

    def __init__(self, side: Side, port: int, log: Path):
        self.side, self.port, self.log = side, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float) -> float:
        """Start it and wait until ``ready_path`` answers 200; the seconds that took."""
        import httpx

        t0 = time.perf_counter()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.side.command, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.side.env, start_new_session=True)
        while time.perf_counter() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.side.name} server exited with {self.proc.returncode} before it was ready; "
                                 f"the end of its log ({self.log}):\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.side.ready_path, timeout=2).status_code == 200:
                    return time.perf_counter() - t0
            time.sleep(0.25)
        self.stop()
        raise SystemExit(f"{self.side.name} server not ready after {timeout_s:.0f} s; the end of its log ({self.log}):"
                         f"\n{self.tail()}")

    def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGTERM, up to ``grace_s`` to exit, then SIGKILL; the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        code = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):  # the model process HF serve started, or a hung server
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        return code

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) used so far by the server's process group (HF serve's model process
        included), from /proc; None where there is no /proc. Tokens per CPU-second compare the servers'
        efficiency on a machine that other jobs share, where wall-clock figures swing."""
        if self.proc is None or not Path("/proc").is_dir():
            return None
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == self.proc.pid:  # the process group: the server's own session
                    total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


def plugformer_side(checkpoint: Path, port: int, env: dict[str, str]) -> Side:
    command = [sys.executable, "-m", "plugformer", "serve", f"checkpoint={checkpoint}", f"server.port={port}",
               "server.max_batch=64", "device=cpu"]
    return Side("plugformer", command, env, "/ready", "default", {"ignore_eos": True})


def hf_side(hf_python: Path, hf_dir: Path, port: int, env: dict[str, str]) -> Side:
    command = [str(hf_python), "-m", "transformers.cli.transformers", "serve", str(hf_dir), "--continuous-batching",
               "--device", "cpu", "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port)]
    env = {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    # eos_token_id -1 matches no token: continuous batching's own "no EOS" value
    return Side("HF", command, env, "/health", str(hf_dir), {"generation_config": json.dumps({"eos_token_id": -1})})


# -- the load generator ----------------------------------------------------------------------------------
def prompt_texts(count: int, s: Settings, seed: int) -> list[str]:
    """``count`` distinct seeded slices of standard-library sources, ``min_chars``-``max_chars`` long, each
    starting at a line at a random place (so, in practice, no two share a prefix the prefix cache could reuse)."""
    texts = [t for t in stdlib_texts(4_000_000) if len(t) > 2 * s.max_chars]
    rng = random.Random(seed)
    prompts: list[str] = []
    while len(prompts) < count:
        text = rng.choice(texts)
        start = text.find("\n", rng.randrange(len(text) - s.max_chars - 1)) + 1
        piece = text[start:start + rng.randint(s.min_chars, s.max_chars)]
        if piece.strip() and piece not in prompts:
            prompts.append(piece)
    return prompts


async def stream_completion(client: Any, url: str, body: dict[str, Any]) -> Reply:
    """Send one streamed completion and read its SSE events to the end (``[DONE]`` or the stream's close)."""
    reply = Reply()
    t0 = time.perf_counter()
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                reply.error = f"HTTP {response.status_code}: {(await response.aread()).decode(errors='replace')[:200]}"
                return reply
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    reply.error = str(event["error"])[:200]
                    break
                for choice in event.get("choices") or []:
                    if choice.get("text"):
                        if reply.ttft_s is None:
                            reply.ttft_s = time.perf_counter() - t0
                        reply.text += choice["text"]
                    reply.finish_reason = choice.get("finish_reason") or reply.finish_reason
                if event.get("usage"):
                    reply.prompt_tokens = event["usage"].get("prompt_tokens")
                    reply.completion_tokens = event["usage"].get("completion_tokens")
    except Exception as e:  # a failed request is counted and shown, not fatal to the run
        reply.error = f"{type(e).__name__}: {e}"[:200]
    reply.latency_s = time.perf_counter() - t0
    return reply


async def run_level(base_url: str, side: Side, prompts: list[str], concurrency: int,
                    max_tokens: int) -> tuple[float, list[Reply]]:
    """``concurrency`` clients in a closed loop over ``prompts``; (wall seconds, the replies in prompt order)."""
    import httpx

    url = base_url + "/v1/completions"
    replies: list[Reply | None] = [None] * len(prompts)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(prompts)):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(600.0)) as client:
        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                body = {"model": side.model, "prompt": prompts[i], "max_tokens": max_tokens, "temperature": 0,
                        "stream": True, "stream_options": {"include_usage": True}, **side.extra_body}
                replies[i] = await stream_completion(client, url, body)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return wall, [r for r in replies if r is not None]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(wall: float, cpu_s: float | None, replies: list[Reply], max_tokens: int) -> dict[str, Any]:
    ok = [r for r in replies if r.error is None]
    tokens = sum(r.completion_tokens or 0 for r in ok)
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    latency = [r.latency_s for r in ok]
    return {"requests": len(replies), "errors": len(replies) - len(ok),
            "first_errors": [r.error for r in replies if r.error][:3],
            "short": sum(1 for r in ok if r.completion_tokens != max_tokens),
            "wall_s": wall, "completion_tokens": tokens, "tokens_per_s": tokens / wall, "server_cpu_s": cpu_s,
            "tokens_per_cpu_s": tokens / cpu_s if cpu_s else math.nan,
            "ttft_p50_s": statistics.median(ttft) if ttft else math.nan,
            "latency_p50_s": statistics.median(latency) if latency else math.nan,
            "latency_p99_s": percentile(latency, 99) if latency else math.nan,
            "prompt_tokens": [r.prompt_tokens for r in replies], "texts": [r.text for r in replies],
            "ttft_s": [r.ttft_s for r in replies], "latency_s": [r.latency_s for r in replies]}


def start_and_warm(server: ServerProcess, prompts: list[str], start_timeout_s: float) -> float:
    """Start a server and send it the warm-up requests; the seconds it took to be ready."""
    print(f"{server.side.name}: starting: {' '.join(server.side.command)}", flush=True)
    ready = server.start(start_timeout_s)
    print(f"{server.side.name}: ready in {ready:.1f} s on {server.url}", flush=True)
    _, warm = asyncio.run(run_level(server.url, server.side, prompts, 2, 8))
    failed = [r.error for r in warm if r.error]
    if failed:
        raise SystemExit(f"{server.side.name}: the warm-up requests failed: {failed[0]}\n"
                         f"the end of its log ({server.log}):\n{server.tail()}")
    return ready


def load_levels(servers: dict[str, ServerProcess], s: Settings, prompts: dict[Any, list[str]]) -> dict[str, dict]:
    """Every concurrency level, as the runs plugformer, HF, HF, plugformer (prompt sets 0, 0, 1, 1): per
    side and level, the two runs pooled (:func:`summarize` of their summed wall and CPU time and all replies,
    prompt set 0's first)."""
    order = [("plugformer", 0), ("HF", 0), ("HF", 1), ("plugformer", 1)]
    levels: dict[str, dict] = {name: {} for name in servers}
    for c in s.levels:
        runs: dict[str, list[tuple[float, float | None, list[Reply]]]] = {name: [] for name in servers}
        for name, half in order:
            server = servers[name]
            cpu = server.cpu_seconds()
            wall, replies = asyncio.run(run_level(server.url, server.side, prompts[c, half], c, s.max_tokens))
            cpu_s = server.cpu_seconds() - cpu if cpu is not None else None
            runs[name].append((wall, cpu_s, replies))
            tokens = sum(r.completion_tokens or 0 for r in replies)
            print(f"  {name} concurrency {c:>3}, prompt set {half}: {len(replies)} requests in {wall:.1f} s, "
                  f"{tokens / wall:,.1f} tokens/s, server CPU {cpu_s or math.nan:.1f} s, "
                  f"errors {sum(1 for r in replies if r.error)}", flush=True)
        for name, pair in runs.items():
            cpus = [cpu for _, cpu, _ in pair]
            levels[name][c] = summarize(sum(wall for wall, _, _ in pair),
                                        None if None in cpus else sum(cpus),  # type: ignore[arg-type]
                                        [r for _, _, replies in pair for r in replies], s.max_tokens)
    return levels


def stop(server: ServerProcess) -> int | None:
    code = server.stop()
    how = "killed" if code is None else f"ended by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    print(f"{server.side.name}: stopped ({how})", flush=True)
    return code


# -- report ----------------------------------------------------------------------------------------------
def compare(pf: dict[str, Any], hf: dict[str, Any]) -> dict[str, Any]:
    """plugformer/HF ratios per level, outputs equal to HF's, and whether the issue's target is met."""
    out = {}
    for c, a in pf["levels"].items():
        b = hf["levels"][c]
        out[c] = {"tokens_per_s_ratio": a["tokens_per_s"] / b["tokens_per_s"] if b["tokens_per_s"] else math.nan,
                  "latency_p99_ratio": a["latency_p99_s"] / b["latency_p99_s"],
                  "ttft_p50_ratio": a["ttft_p50_s"] / b["ttft_p50_s"],
                  "tokens_per_cpu_s_ratio": a["tokens_per_cpu_s"] / b["tokens_per_cpu_s"],
                  "texts_equal": sum(x == y for x, y in zip(a["texts"], b["texts"])),
                  "prompt_tokens_equal": sum(x == y for x, y in zip(a["prompt_tokens"], b["prompt_tokens"]))}
        if c in TARGET_LEVELS:
            out[c]["target_met"] = (out[c]["tokens_per_s_ratio"] >= TARGET_RATIO
                                    and a["latency_p99_s"] <= b["latency_p99_s"])
    return out


def report(pf: dict[str, Any], hf: dict[str, Any], ratios: dict[int, dict[str, Any]], s: Settings) -> None:
    print("=" * 112)
    print(f"streamed /v1/completions, {s.max_tokens} new tokens each, greedy, EOS ignored; closed loop of N clients")
    print(f"{'N':>3} {'requests':>8} | {'side':<10} {'tokens/s':>9} {'TTFT p50':>9} {'lat p50':>8} {'lat p99':>8} "
          f"{'errors':>6} {'short':>5} {'tokens/CPU-s':>12}")
    for c in s.levels:
        for name, side in (("plugformer", pf), ("HF", hf)):
            lv = side["levels"][c]
            print(f"{c:>3} {lv['requests']:>8} | {name:<10} {lv['tokens_per_s']:>9,.1f} {lv['ttft_p50_s']:>8.3f}s "
                  f"{lv['latency_p50_s']:>7.2f}s {lv['latency_p99_s']:>7.2f}s {lv['errors']:>6} {lv['short']:>5} "
                  f"{lv['tokens_per_cpu_s']:>12,.1f}")
        r = ratios[c]
        verdict = ""
        if "target_met" in r:
            verdict = (f"  target (>= {TARGET_RATIO}x tokens/s, p99 no worse): "
                       f"{'MET' if r['target_met'] else 'NOT met'}")
        print(f"{'':>3} {'':>8} | plugformer/HF: tokens/s {r['tokens_per_s_ratio']:.2f}x, TTFT p50 "
              f"{r['ttft_p50_ratio']:.2f}x, p99 latency {r['latency_p99_ratio']:.2f}x, tokens/CPU-s "
              f"{r['tokens_per_cpu_s_ratio']:.2f}x{verdict}")
        n = pf["levels"][c]["requests"]
        print(f"{'':>3} {'':>8} | completions equal to HF's: {r['texts_equal']}/{n}; "
              f"same prompt token count: {r['prompt_tokens_equal']}/{n}")
    for name, side in (("plugformer", pf), ("HF", hf)):
        for c in s.levels:
            if side["levels"][c]["first_errors"]:
                print(f"{name} errors at concurrency {c}: {side['levels'][c]['first_errors']}")
    print("(short: requests that did not get all their tokens; TTFT: to the first chunk with text; ratios of "
          "times below 1 favour plugformer; tokens/CPU-s: per second of CPU time of the server's processes, "
          "steadier than tokens/s on a shared machine)")


# -- setup and main ----------------------------------------------------------------------------------------
def setup_hf_venv(venv: Path) -> int:
    """Create ``venv`` with ``transformers[serving]`` and torch at this environment's versions."""
    import torch
    import transformers

    torch_version = torch.__version__.split("+")[0]
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(venv / "bin" / "pip"), "install", f"transformers[serving]=={transformers.__version__}",
              f"torch=={torch_version}"]]
    for step in steps:
        print("+ " + " ".join(step), flush=True)
        if subprocess.run(step).returncode != 0:
            print(f"serve_throughput: error: {' '.join(step[:3])} failed (torch's CPU build may need pip's "
                  "--index-url of the torch CPU wheels)", file=sys.stderr)
            return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few requests per level and 16 new tokens (a smoke run)")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS/MKL_NUM_THREADS of both servers (default: torch's own choice)")
    p.add_argument("--requests-per-level", type=int, default=None,
                   help="requests at every concurrency level (default: 16, 64, 128; --quick: 3, 16, 64)")
    p.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrency levels")
    p.add_argument("--max-tokens", type=int, default=None, help="new tokens per request (default 64; --quick 16)")
    p.add_argument("--hf-python", default=str(HF_VENV / "bin" / "python"),
                   help="the Python of the environment with transformers[serving] (see --setup-hf-venv)")
    p.add_argument("--setup-hf-venv", action="store_true",
                   help=f"create {HF_VENV.name} next to this script (transformers[serving] and torch at this "
                        "environment's versions) and exit")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds a server may take to be ready")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--d-model", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--weight-noise", type=float, default=0.1,
                   help="std of the seeded noise added to every weight (as in generate_throughput.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="keep the HF directory, the checkpoint and the server logs here")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    args = p.parse_args(argv)
    if args.setup_hf_venv:
        return setup_hf_venv(HF_VENV)
    s = Settings.quick() if args.quick else Settings()
    try:
        s.levels = tuple(int(x) for x in args.levels.split(",") if x.strip())
    except ValueError:
        p.error(f"--levels {args.levels!r}: a comma-separated list of whole numbers, e.g. 1,16,64")
    for name, value in (("threads", args.threads), ("requests-per-level", args.requests_per_level),
                        ("max-tokens", args.max_tokens), *(("levels", c) for c in s.levels)):
        if value is not None and value < 1:
            p.error(f"--levels {args.levels}: every level must be >= 1" if name == "levels"
                    else f"--{name} {value}: must be >= 1")
    if not s.levels:
        p.error("--levels: name at least one concurrency level")
    s.requests = {c: args.requests_per_level or s.requests.get(c, 2 * c) for c in s.levels}
    s.max_tokens = args.max_tokens or s.max_tokens
    if s.max_chars // 2 + s.max_tokens > args.context:  # ~3.5 characters per token on Python sources
        p.error(f"--context {args.context} is too short for prompts of up to {s.max_chars} characters + "
                f"{s.max_tokens} new tokens")
    hf_python = Path(args.hf_python)
    if not hf_python.exists():
        p.error(f"--hf-python {hf_python} does not exist; create the HF environment first: "
                "python benchmarks/serve_throughput.py --setup-hf-venv")
    if args.workdir and Path(args.workdir).exists() and any(Path(args.workdir).iterdir()):
        p.error(f"--workdir {args.workdir} is not empty")

    import torch
    import transformers

    from plugformer_hf.import_hf import import_hf

    hf_versions = subprocess.run([str(hf_python), "-c", "import torch, transformers; "
                                  "print(torch.__version__, transformers.__version__)"],
                                 capture_output=True, text=True).stdout.split()
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    print("=" * 112)
    print("plugformer serving benchmark" + (" (--quick: a smoke run, not the issue's figures)" if args.quick else ""))
    print(f"model: GPT-2, layers={args.layers} d_model={args.d_model} heads={args.heads} vocab={args.vocab} "
          f"context={args.context}, seeded random weights (seed {args.seed}, noise {args.weight_noise}), fp32")
    print(f"CPU: {cpu_name()} (capability {torch.backends.cpu.get_cpu_capability()}, os.cpu_count={os.cpu_count()}); "
          f"server threads {args.threads or 'default'}; plugformer side: torch {torch.__version__}, transformers "
          f"{transformers.__version__}; HF side ({hf_python}): torch {' transformers '.join(hf_versions) or '?'}; "
          f"python {platform.python_version()}")
    print(f"levels {', '.join(map(str, s.levels))}; requests per level "
          f"{', '.join(str(s.requests[c]) for c in s.levels)}; {s.max_tokens} new tokens", flush=True)

    with contextlib.ExitStack() as stack:
        root = Path(args.workdir) if args.workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        save_hf_model(root / "hf", args)
        imported = import_hf(root / "hf", root / "plugformer")
        print(f"HF directory {root / 'hf'} imported with import-hf into {imported.out} "
              f"({imported.n_params:,} parameters) in {time.perf_counter() - t0:.1f} s", flush=True)
        texts = prompt_texts(s.warmup + 2 * sum(s.requests.values()), s, args.seed)
        prompts: dict[Any, list[str]] = {"warmup": texts[:s.warmup]}
        at = s.warmup
        for c in s.levels:  # each level and run pair its own prompts: no prefix-cache reuse across them
            for half in (0, 1):
                prompts[c, half], at = texts[at:at + s.requests[c]], at + s.requests[c]
        t0 = time.perf_counter()
        servers: dict[str, ServerProcess] = {}
        ready: dict[str, float] = {}
        try:
            port = free_port()
            servers["plugformer"] = ServerProcess(plugformer_side(imported.out, port, env), port,
                                                  root / "plugformer.log")
            ready["plugformer"] = start_and_warm(servers["plugformer"], prompts["warmup"], args.start_timeout)
            port = free_port()
            servers["HF"] = ServerProcess(hf_side(hf_python, root / "hf", port, env), port, root / "hf-serve.log")
            ready["HF"] = start_and_warm(servers["HF"], prompts["warmup"], args.start_timeout)
            levels = load_levels(servers, s, prompts)
        finally:
            codes = {name: stop(server) for name, server in servers.items()}
        pf = {"ready_s": ready["plugformer"], "levels": levels["plugformer"], "exit_code": codes["plugformer"]}
        hf = {"ready_s": ready["HF"], "levels": levels["HF"], "exit_code": codes["HF"]}
        ratios = compare(pf, hf)
        report(pf, hf, ratios, s)
        print(f"both servers, start to stop: {time.perf_counter() - t0:.0f} s")
    results = {"cpu": cpu_name(), "os_cpu_count": os.cpu_count(), "threads": args.threads, "quick": args.quick,
               "settings": asdict(s), "torch": torch.__version__, "transformers": transformers.__version__,
               "hf_side": hf_versions, "plugformer": pf, "hf": hf, "ratios": ratios,
               "target": {"ratio": TARGET_RATIO, "levels": TARGET_LEVELS}}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
