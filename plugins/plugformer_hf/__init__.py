"""Hugging Face interop as a plugin: ``plugformer import-hf`` (a local GPT-2/Llama model directory → a
plugformer checkpoint), ``plugformer export-hf`` (a checkpoint, with its LoRA adapter, → a directory
transformers and peft load) and ``plugformer lm-eval`` (lm-evaluation-harness tasks on a checkpoint, also
reached as ``plugformer eval checkpoint=DIR tasks=...``).

Registration only: no torch, transformers or lm_eval import here. How each component's parameters are
named in a Hugging Face model is declared by the plugin that provides the component (the ``hf_names``
capability, see :mod:`plugformer_hf.hf_mapping`), so a new position, norm or MLP plugin can export and
import without editing this package.
"""
from plugformer import hookimpl

plugformer_api = "1.1"  # the plugformer plugin API this package targets


@hookimpl
def plugformer_register_commands(commands):
    commands.register("import-hf", "plugformer_hf.import_hf_command:run",
                      "convert a local Hugging Face GPT-2/Llama model directory: DIR [out=DIR]")
    commands.register("export-hf", "plugformer_hf.export_hf_command:run",
                      "write a transformers-loadable model directory: checkpoint=DIR out=DIR [adapter=DIR]")
    commands.register("lm-eval", "plugformer_hf.lm_eval_command:run",
                      "lm-evaluation-harness tasks on a checkpoint: checkpoint=DIR tasks=NAME[,NAME] "
                      "[tasks_dir=DIR] [limit=N] (also plugformer eval ... tasks=...)")
