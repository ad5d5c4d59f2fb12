"""Names of the special tokens every trainable tokenizer reserves, and the names loaders look for.

One place, so ``bpe``/``wordpiece``/``unigram`` agree with each other and the ``hf`` loader finds the
tokens in files they wrote.
"""
from __future__ import annotations

EOS = "<|endoftext|>"  # ends a document; generation stops at it
PAD = "<pad>"  # fills short sequences in a batch
MASK = "<mask>"  # what masked-language-model objectives put in place of hidden tokens
UNK = "<unk>"  # only for models that need one (WordPiece); never a control token
SPECIALS = [EOS, PAD, MASK]  # reserved, in this id order, by every trainable tokenizer

#: common spellings of each role in tokenizers trained elsewhere, most specific first
CANDIDATES: dict[str, tuple[str, ...]] = {
    "eos": (EOS, "</s>", "<eos>", "<|end_of_text|>", "<|eot_id|>", "<|im_end|>", "[SEP]", "[EOS]"),
    "pad": (PAD, "[PAD]", "<|pad|>", "<|padding|>", "<|finetune_right_pad_id|>"),
    "mask": (MASK, "[MASK]", "<|mask|>"),
}
