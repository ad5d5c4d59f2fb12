"""Built-in tokenizers (byte, bpe) and text sources (stdlib, text).

Registration only: nothing here imports torch or ``tokenizers`` (see ``plugformer_register``).
"""
from plugformer import hookimpl


@hookimpl
def plugformer_register(registries):
    registries.tokenizer.register(
        "byte", "plugformer_text.byte_tokenizer:ByteTokenizer",
        schema="plugformer_text.schemas:ByteTokenizerConfig",
        description="raw UTF-8 bytes (ids 0-255) plus <eos>=256; nothing to train",
        capabilities={})
    registries.tokenizer.register(
        "bpe", "plugformer_text.bpe_tokenizer:BPETokenizer",
        schema="plugformer_text.schemas:BPETokenizerConfig",
        description="byte-level BPE trained on the train split with HF tokenizers (GPT-2 style)",
        capabilities={})
    registries.data.register(
        "stdlib", "plugformer_text.stdlib_source:StdlibSource",
        schema="plugformer_text.schemas:StdlibSourceConfig",
        description="the running Python's standard-library .py sources (built-in offline corpus)",
        capabilities={})
    registries.data.register(
        "text", "plugformer_text.text_source:TextFileSource",
        schema="plugformer_text.schemas:TextFileSourceConfig",
        description="your own .txt / .jsonl file or a directory of them",
        capabilities={})
