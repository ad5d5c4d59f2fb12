"""``plugformer eval``: perplexity that agrees with the trainer's validation and with transformers, and the
lm-evaluation-harness adapter scoring exactly like lm_eval's own Hugging Face model."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

EOS = "<|endoftext|>"
TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog, hello world.\n" for i in range(60))


def tiny_gpt2(directory: Path):
    """A random 2-layer GPT-2 (transformers) with a BPE tokenizer.json fitted on TEXT, saved in ``directory``."""
    transformers = pytest.importorskip("transformers", reason="needs transformers (pip install .[hf])")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    directory.mkdir(parents=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(directory / "tokenizer.json"))
    eos = tok.token_to_id(EOS)
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                     bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(directory)
    return model, tok


@pytest.fixture
def gpt2_checkpoint(tmp_path):
    """(the transformers model, its tokenizer, the imported plugformer checkpoint directory)."""
    from plugformer_hf.import_hf import import_hf

    model, tok = tiny_gpt2(tmp_path / "hf")
    return model, tok, import_hf(tmp_path / "hf", tmp_path / "ckpt").out


@pytest.mark.slow
def test_eval_of_a_text_file_matches_the_loss_transformers_computes(cli, tmp_path, gpt2_checkpoint):
    hf_model, tok, ckpt = gpt2_checkpoint
    (tmp_path / "corpus.txt").write_text(TEXT)
    proc = cli("eval", f"checkpoint={ckpt}", "data=corpus.txt", "seq_len=32", "batch_size=3", "out=result.json")
    result = json.loads((tmp_path / "result.json").read_text())
    assert f"perplexity {result['perplexity']:.3f}" in proc.stdout and result["split"] == "all"
    # independently: the file's tokens (one document, then eos) in windows of 33, scored by transformers
    ids = tok.encode(TEXT).ids + [tok.token_to_id(EOS)]
    windows = (len(ids) - 1) // 32
    with torch.no_grad():
        losses = [F.cross_entropy(hf_model(torch.tensor([ids[i * 32:i * 32 + 32]])).logits[0],
                                  torch.tensor(ids[i * 32 + 1:i * 32 + 33])) for i in range(windows)]
    expected = float(torch.stack(losses).mean())
    print(f"\neval loss {result['loss']:.6f} vs transformers {expected:.6f} over {result['tokens']} tokens")
    assert (result["windows"], result["tokens"]) == (windows, windows * 32)
    assert result["loss"] == pytest.approx(expected, abs=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(expected), rel=1e-4)


@pytest.mark.slow
def test_eval_on_the_training_data_reproduces_the_trainers_validation_loss(cli, runs, tmp_path):
    cli("train", *runs.tiny, "trainer.max_steps=3", "trainer.eval_every=0", "trainer.batch_size=4",
        "trainer.eval_batches=2", "hydra.run.dir=run")
    val_loss = [r["val_loss"] for r in runs.metrics(tmp_path / "run") if "val_loss" in r][-1]
    proc = cli("eval", "checkpoint=run", "batch_size=4", "max_batches=2", "out=result.json")
    result = json.loads((tmp_path / "result.json").read_text())
    assert "split=val" in proc.stdout and result["windows"] == 8
    assert result["loss"] == pytest.approx(val_loss, abs=1e-4)
    again = cli("eval", "checkpoint=run", "batch_size=4", "max_batches=2", "out=result.json", check=False)
    assert again.returncode == 2 and "out=result.json already exists" in again.stderr, again.stderr
    assert json.loads((tmp_path / "result.json").read_text()) == result  # the earlier result is kept


def test_eval_rejects_bad_arguments_in_one_line(cli, tmp_path):
    for args, message in ((["checkpoint=x", "split=vall"], "split='vall' (did you mean 'val'?)"),
                          (["checkpoint=x", "max_batches=0"], "max_batches must be >= 1"),
                          (["checkpoint=x", "limit=3"], "limit only apply with tasks="),
                          (["checkpoint=x", "bogus=1"], "has no option 'bogus'"),
                          (["checkpoint=missing"], "not a plugformer checkpoint directory")):
        proc = cli("eval", *args, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1


TASKS = {
    "tiny_choice": """\
task: tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {dir}/choice.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""",
    "tiny_rolling": """\
task: tiny_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {dir}/text.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: bits_per_byte
""",
    "tiny_generate": """\
task: tiny_generate
dataset_path: json
dataset_kwargs:
  data_files:
    test: {dir}/choice.jsonl
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{choices[answer]}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
""",
}
CHOICES = [{"question": "the quick brown", "choices": [" fox", " dog", " world"], "answer": 0},
           {"question": "hello", "choices": [" world", " fox"], "answer": 0},
           {"question": "line 3: the lazy", "choices": [" dog", " fox", " line"], "answer": 0}]


@pytest.mark.slow
def test_lm_eval_adapter_scores_like_lm_evals_own_hf_model(cli, tmp_path, gpt2_checkpoint, monkeypatch):
    pytest.importorskip("lm_eval", reason="needs lm-evaluation-harness (pip install .[lm_eval])")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from plugformer_hf.export_hf import export_hf
    from plugformer_hf.lm_eval_adapter import PlugformerLM

    _, _, ckpt = gpt2_checkpoint
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "choice.jsonl").write_text("".join(json.dumps(d) + "\n" for d in CHOICES))
    (tasks / "text.jsonl").write_text("".join(json.dumps({"text": line + "\n"}) + "\n"
                                              for line in TEXT.splitlines()[:4]))
    for name, yaml in TASKS.items():
        (tasks / f"{name}.yaml").write_text(yaml.format(dir=tasks))
    manager = TaskManager(include_path=str(tasks))
    names = sorted(TASKS)

    def evaluate(model):
        return lm_eval.simple_evaluate(model=model, tasks=names, task_manager=manager, log_samples=True,
                                       bootstrap_iters=0)

    ours = evaluate(PlugformerLM(ckpt, device="cpu"))
    export_hf(ckpt, tmp_path / "exported")
    theirs = evaluate(HFLM(pretrained=str(tmp_path / "exported"), dtype="float32", device="cpu", batch_size=1))
    for task in names:
        mine, reference = ours["samples"][task], theirs["samples"][task]
        assert len(mine) == len(reference) > 0
        for a, b in zip(mine, reference, strict=True):
            for x, y in zip(a["resps"], b["resps"], strict=True):
                if isinstance(y[0], tuple):  # (loglikelihood, is_greedy)
                    assert x[0][0] == pytest.approx(y[0][0], abs=1e-4) and x[0][1] == y[0][1]
                elif isinstance(y[0], float):  # rolling loglikelihood
                    assert x[0] == pytest.approx(y[0], abs=1e-3)
                else:  # generated text
                    assert x == y
        for metric, value in theirs["results"][task].items():
            if isinstance(value, float):
                assert ours["results"][task][metric] == pytest.approx(value, rel=1e-5, abs=1e-4), (task, metric)

    proc = cli("eval", f"checkpoint={ckpt}", "tasks=tiny_choice", f"tasks_dir={tasks}", "out=lm.json",
               env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert "tiny_choice" in proc.stdout and "acc" in proc.stdout
    assert json.loads((tmp_path / "lm.json").read_text())["results"]["tiny_choice"]["acc,none"] == \
        pytest.approx(ours["results"]["tiny_choice"]["acc,none"])
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
