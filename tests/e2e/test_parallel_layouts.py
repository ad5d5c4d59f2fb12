"""What each tensor-parallel rank holds and sees, checked on torch's fake process group (real DTensor
sharding, no-op collectives) in one process: the layouts the options promise, not just the loss."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    # rank 0 of a world of 2: build the model under each override set, run one forward and record the
    # local (this rank's) shapes of what chosen modules receive and return and of the embedding
    import json, sys
    import torch, torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore
    from plugformer.build import build
    from plugformer.config import compose_checked, prepare
    from plugformer.model import apply_transforms, build_model

    host = prepare()
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=2)
    local = lambda t: list(t.to_local().shape) if hasattr(t, "to_local") else list(t.shape)
    out = []
    for overrides in json.loads(sys.argv[1]):
        cfg = compose_checked("train", overrides, host)
        strategy = build(host.registries, "parallel", cfg.parallel)
        strategy.setup("cpu")
        torch.manual_seed(0)
        model = apply_transforms(build_model(cfg, host.registries, 512), strategy.transforms())
        seen = {}
        for name in ("blocks.0.norm_attn", "blocks.0.attn", "norm_f", "lm_head"):
            model.get_submodule(name).register_forward_hook(
                lambda m, a, o, name=name: seen.__setitem__(name, [local(a[0]), local(o)]))
        logits = model(torch.randint(0, 512, (2, 16)))
        out.append({"seen": seen, "logits": local(logits), "tok_emb": local(model.tok_emb.weight),
                    "tied": model.lm_head.weight is model.tok_emb.weight})
    print(json.dumps(out))
""")

pytestmark = pytest.mark.slow
BASE = ["model.n_layers=1", "model.d_model=32", "model.n_heads=4", "tokenizer=byte", "parallel=tp"]


def test_sequence_parallel_norms_see_half_the_sequence_and_vocab_parallel_halves_the_embedding():
    configs = [BASE, [*BASE, "parallel.sequence_parallel=true", "parallel.vocab_parallel=true"]]
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(configs)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plain, both = json.loads(proc.stdout.strip().splitlines()[-1])
    assert plain["seen"]["blocks.0.norm_attn"] == [[2, 16, 32], [2, 16, 32]]
    assert plain["tok_emb"] == [512, 32] and plain["tied"]
    assert both["seen"]["blocks.0.norm_attn"] == [[2, 8, 32], [2, 8, 32]]  # this rank's half of the sequence
    assert both["seen"]["norm_f"] == [[2, 8, 32], [2, 8, 32]]
    # (a forward hook sees the input after the pre-hooks) attention gathers the sequence at its input and
    # its row-parallel output is reduce-scattered back to this rank's half
    assert both["seen"]["blocks.0.attn"] == [[2, 16, 32], [2, 8, 32]]
    assert both["tok_emb"] == [256, 32] and both["tied"]  # half the vocabulary rows, head still tied
    assert both["seen"]["lm_head"] == [[2, 16, 32], [2, 16, 512]] and both["logits"] == [2, 16, 512]  # gathered
