"""``plugformer <command> [overrides]``: dispatches to a command; user errors print one line.

Commands come from one table (:mod:`plugformer.commands`): the core's (:mod:`plugformer.cli.table`) and
those plugins add through ``plugformer_register_commands``. A core command runs without loading plugins
first; any other name loads them to find it.

Global options (before the command) are exported as environment variables so that every process of
a run (torchrun ranks, launcher workers) loads the same plugins.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable

from plugformer.cli.table import CORE_COMMANDS
from plugformer.commands import Commands
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


#: the core's command names (``plugformer --help`` also lists the commands plugins add)
COMMANDS = tuple(name for name, _, _ in CORE_COMMANDS)


def command_table() -> Commands:
    """Every command: the core's, then those the loaded plugins registered (loads plugins; no torch)."""
    from plugformer.plugins import load_plugins

    return load_plugins().commands


def usage(commands: Commands | None = None) -> str:
    """The top-level help: every command (a plugin's with its provider), then global options and examples."""
    commands = command_table() if commands is None else commands
    width = max(len(c.name) for c in commands) + 2
    lines = [f"  {c.name:<{width}}{c.help}" + ("" if c.is_core else f"  [{c.provider}: {c.plugin}]")
             for c in commands]
    return USAGE_HEAD + "\n".join(lines) + "\n" + USAGE_TAIL


def _command(name: str) -> Callable[[list[str]], int]:
    """The function of command ``name``: a core command without loading plugins, else from the table."""
    if name in COMMANDS:
        from plugformer.commands import Command

        target, help_ = next((t, h) for n, t, h in CORE_COMMANDS if n == name)
        return Command(name, target, help_).load()
    return command_table().get(name).load()


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
