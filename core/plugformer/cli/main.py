"""``plugformer <command> [overrides]``: dispatches to a command; user errors print one line.

Global options (before the command) are exported as environment variables so that every process of
a run (torchrun ranks, launcher workers) loads the same plugins.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable

from plugformer.errors import PlugformerError, did_you_mean

USAGE_HEAD = """\
usage: plugformer [global options] <command> [hydra overrides ...]

commands:
"""

USAGE_TAIL = """
global options:
  --allow-plugin NAME   load only the named plugins (repeatable; env PLUGFORMER_PLUGINS)
  --block-plugin NAME   do not load NAME (repeatable; env PLUGFORMER_BLOCK_PLUGINS)
  --no-autoload         load no plugin unless allowed (env PLUGFORMER_DISABLE_PLUGIN_AUTOLOAD=1)
  --strict-plugins      a plugin that fails to load is an error (env PLUGFORMER_STRICT_PLUGINS=1)
  --version             print the version

examples:
  plugformer train attention=sdpa position=rope precision=bf16 trainer.max_steps=200
  plugformer train -m attention=naive,sdpa position=learned,rope
  plugformer generate checkpoint=runs/<run>/checkpoints/last prompt="def main(" max_new_tokens=64
  plugformer train --help      (Hydra's help: every config group and its options)
"""


def _env_list_append(key: str, value: str) -> None:
    current = [v for v in os.environ.get(key, "").split(",") if v]
    os.environ[key] = ",".join([*current, value])


def _global_options(argv: list[str]) -> list[str]:
    """Consume global options; return the rest (command first)."""
    rest = list(argv)
    while rest and rest[0].startswith("--") and rest[0] not in ("--help",):
        opt = rest.pop(0)
        if opt in ("--allow-plugin", "--block-plugin"):
            if not rest:
                raise PlugformerError(f"{opt} needs a plugin name")
            _env_list_append("PLUGFORMER_PLUGINS" if opt == "--allow-plugin" else "PLUGFORMER_BLOCK_PLUGINS",
                             rest.pop(0))
        elif opt == "--no-autoload":
            os.environ["PLUGFORMER_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        elif opt == "--strict-plugins":
            os.environ["PLUGFORMER_STRICT_PLUGINS"] = "1"
        elif opt == "--version":
            from plugformer import __version__

            print(f"plugformer {__version__}")
            raise SystemExit(0)
        else:
            raise PlugformerError(f"unknown global option '{opt}'{did_you_mean(opt, GLOBAL_OPTIONS)}; "
                                  f"options: {', '.join(GLOBAL_OPTIONS)}")
    return rest


GLOBAL_OPTIONS = ["--allow-plugin", "--block-plugin", "--no-autoload", "--strict-plugins", "--version"]


#: command name -> (module under plugformer.cli, function taking the argument list, one-line help).
#: Modules are imported only when their command runs, so ``plugformer plugins`` stays fast.
COMMAND_TABLE: dict[str, tuple[str, str, str]] = {
    "train": ("hydra_commands", "train", "train a model (Hydra config 'train'; -m for sweeps)"),
    "generate": ("hydra_commands", "generate",
                 "sample text from a checkpoint: checkpoint=DIR prompt=... max_new_tokens=N"),
    "validate": ("hydra_commands", "validate", "compose and check a train config without building anything heavy"),
    "plugins": ("plugins_command", "run", "list every component family, implementation, provider and availability"),
    "tokenizer": ("tokenizer_command", "run",
                  "tokenizer train tokenizer=NAME [tokenizer.vocab_size=N] [data=...] out=DIR"),
    "finetune": ("finetune_command", "run", "fine-tune a checkpoint: checkpoint=DIR data=<task|file.jsonl> "
                                            "objective=sft|distill|dpo [adapter=lora]"),
    "prune": ("prune_command", "run",
              "magnitude-prune a checkpoint: checkpoint=DIR sparsity=0.3 [scope=global|layer] out=DIR"),
    "report": ("report_command", "run",
               "summarise a sweep directory: report.md, report.csv, report.png (loss curves)"),
    "consolidate": ("consolidate_command", "run",
                    "write one model.safetensors from a sharded (fsdp) checkpoint: checkpoint=DIR [out=DIR]"),
    "merge": ("merge_command", "run",
              "fold an adapter into a full checkpoint: checkpoint=DIR [adapter=DIR] out=DIR"),
    "quantize": ("quantize_command", "run",
                 "write a quantized checkpoint: checkpoint=DIR quantizer=int8|nf4|... out=DIR"),
    "import-hf": ("import_hf_command", "run",
                  "convert a local Hugging Face GPT-2/Llama model directory: DIR [out=DIR]"),
    "export-hf": ("export_hf_command", "run",
                  "write a transformers-loadable model directory: checkpoint=DIR out=DIR [adapter=DIR]"),
    "eval": ("eval_command", "run",
             "perplexity of a checkpoint: checkpoint=DIR [data=PATH|NAME] [split=val] [max_batches=N]"),
}
COMMANDS = tuple(COMMAND_TABLE)


def _command(name: str) -> Callable[[list[str]], int]:
    import importlib

    module, function, _ = COMMAND_TABLE[name]
    return getattr(importlib.import_module(f"plugformer.cli.{module}"), function)


def usage() -> str:
    """The top-level help: commands from :data:`COMMAND_TABLE`, then global options and examples."""
    width = max(len(n) for n in COMMAND_TABLE) + 2
    lines = [f"  {name:<{width}}{help_}" for name, (_, _, help_) in COMMAND_TABLE.items()]
    return USAGE_HEAD + "\n".join(lines) + "\n" + USAGE_TAIL


#: exit status after the reader of our output went away (``plugformer plugins | head -1``): 128 + SIGPIPE
EXIT_BROKEN_PIPE = 141
#: exit status of an operating-system failure (unwritable or impossible path, full disk, read-only file system)
EXIT_OS_ERROR = 1


def describe_os_error(exc: OSError) -> str:
    """One line for an operating-system failure: the path(s), what the system said, and its errno name."""
    import errno

    what = exc.strerror or str(exc)
    code = f" [{errno.errorcode[exc.errno]}]" if exc.errno in errno.errorcode else ""
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {what}{code}" if paths else f"{what}{code}"


def check_utf8_arguments(argv: list[str]) -> None:
    """Refuse an argument holding bytes that are not UTF-8 (Python keeps them as lone surrogates, which would
    fail later, deep in a tokenizer or a YAML writer), naming the byte and its offset."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as exc:
            raw = arg.encode("utf-8", "surrogateescape")
            offset = len(arg[:exc.start].encode("utf-8", "surrogateescape"))
            raise PlugformerError(f"argument {raw!r} is not valid UTF-8 (byte 0x{raw[offset]:02x} at offset "
                                  f"{offset}); pass text in UTF-8") from None


def _silence_stdout() -> None:
    """The reader of stdout is gone: point stdout at /dev/null so the interpreter's final flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``plugformer`` console script; returns the exit status. A user error is one line and
    status 2; an operating-system failure one line naming the path and status 1; a closed pipe is quiet."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        check_utf8_arguments(argv)
        rest = _global_options(argv)
        if not rest or rest[0] in ("-h", "--help", "help"):
            print(usage(), end="")
            return 0
        command, args = rest[0], rest[1:]
        if command not in COMMANDS:
            raise PlugformerError(f"unknown command '{command}'{did_you_mean(command, COMMANDS)}; "
                                  f"commands: {', '.join(COMMANDS)}")
        status = _command(command)(args)
        sys.stdout.flush()  # a closed pipe shows up here, not in the interpreter's shutdown
        return status
    except PlugformerError as exc:
        print(f"plugformer: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        print(f"plugformer: error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_OS_ERROR
    except KeyboardInterrupt:
        print("plugformer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
