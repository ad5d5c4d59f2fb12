"""Built-in tokenizers (byte, bpe, wordpiece, unigram, hf, sentencepiece) and text sources (stdlib, stdlib_pairs,
text).

Registration only: nothing here imports torch, ``tokenizers`` or ``sentencepiece`` (see
``plugformer_register``); targets and schemas are strings resolved on first use.
"""
from plugformer import hookimpl

plugformer_api = "1.1"  # the plugformer plugin API this package targets

_SCHEMAS = "plugformer_text.schemas"


@hookimpl
def plugformer_register(registries):
    tok = registries.tokenizer
    tok.register(
        "byte", "plugformer_text.byte_tokenizer:ByteTokenizer", schema=f"{_SCHEMAS}:ByteTokenizerConfig",
        description="raw UTF-8 bytes (ids 0-255) plus <eos>=256, <pad>=257, <mask>=258; nothing to train",
        capabilities={"lossless": True})
    tok.register(
        "bpe", "plugformer_text.bpe_tokenizer:BPETokenizer", schema=f"{_SCHEMAS}:BPETokenizerConfig",
        description="byte-level BPE trained on the train split with HF tokenizers (GPT-2 style)",
        capabilities={"lossless": True})
    tok.register(
        "wordpiece", "plugformer_text.wordpiece_tokenizer:WordPieceTokenizer",
        schema=f"{_SCHEMAS}:WordPieceTokenizerConfig",
        description="BERT-style WordPiece trained with HF tokenizers; drops whitespace layout (for encoders)",
        capabilities={"lossless": False})
    tok.register(
        "unigram", "plugformer_text.unigram_tokenizer:UnigramTokenizer", schema=f"{_SCHEMAS}:UnigramTokenizerConfig",
        description="SentencePiece-style Unigram with byte fallback, trained with HF tokenizers",
        capabilities={"lossless": False})  # exact except for the character U+2581, which decodes as a space
    tok.register(
        "hf", "plugformer_text.hf_file_tokenizer:HFFileTokenizer", schema=f"{_SCHEMAS}:HFFileTokenizerConfig",
        description="any pre-trained tokenizer.json file (tokenizer.path=...), used as it is",
        capabilities={"lossless": False})
    tok.register(
        "sentencepiece", "plugformer_text.sentencepiece_tokenizer:SentencePieceTokenizer",
        schema=f"{_SCHEMAS}:SentencePieceTokenizerConfig",
        description="a pre-trained SentencePiece .model file (tokenizer.path=...), used as it is",
        capabilities={"lossless": False}, available="plugformer_text.availability:sentencepiece_available")
    registries.data.register(
        "stdlib", "plugformer_text.stdlib_source:StdlibSource",
        schema=f"{_SCHEMAS}:StdlibSourceConfig",
        description="the running Python's standard-library .py sources (built-in offline corpus)",
        capabilities={})
    registries.data.register(
        "stdlib_pairs", "plugformer_text.stdlib_pairs:StdlibPairs",
        schema=f"{_SCHEMAS}:StdlibPairsConfig",
        description="docstring → function code pairs of the standard library, split by module (objective=contrastive)",
        capabilities={})
    registries.data.register(
        "text", "plugformer_text.text_source:TextFileSource",
        schema=f"{_SCHEMAS}:TextFileSourceConfig",
        description="your own .txt / .jsonl file or a directory of them",
        capabilities={})
