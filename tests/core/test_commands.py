"""Plugins add CLI commands through ``plugformer_register_commands``; names are taken once, the core's first;
every non-Hydra command reads ``key=value`` arguments with the one shared parser."""
from __future__ import annotations

import pytest

from plugformer import PlugformerError, hookimpl
from plugformer.cli.table import CORE_COMMANDS
from plugformer.commands import Commands, parse_keyvalues
from plugformer.plugins import LoadSettings, PluginHost


def load(*eps) -> PluginHost:
    host = PluginHost()
    host.load_entry_points(list(eps), LoadSettings())
    return host


def commands_hook(*entries: tuple[str, object, str]):
    """A ``plugformer_register_commands`` hook registering ``(name, target, help)`` entries in order."""

    @hookimpl
    def plugformer_register_commands(commands):
        for name, target, help_ in entries:
            commands.register(name, target, help_)

    return plugformer_register_commands


def test_the_core_commands_are_in_the_table_before_any_plugin():
    host = load()
    assert host.commands.names() == [name for name, _, _ in CORE_COMMANDS]
    assert all(c.is_core and c.provider == "plugformer" for c in host.commands)


def test_a_plugin_command_is_listed_with_its_provider_and_imported_only_when_run(fake_plugin, module_file):
    target = module_file("hello_cmd_impl", """
        def hello(args):
            print("hello", *args)
            return 7
    """)
    host = load(fake_plugin("fake_hello", "hello", dist="hello-dist", version="2.0",
                            plugformer_register_commands=commands_hook(("hello", f"{target}:hello", "say hi"))))
    command = host.commands.get("hello")
    assert (command.provider, command.version, command.plugin, command.help) == ("hello-dist", "2.0", "hello",
                                                                                 "say hi")
    import sys

    assert target not in sys.modules  # registration strings are lazy
    assert command.load()(["x"]) == 7


def test_a_plugin_cannot_take_a_core_command_and_the_core_keeps_it(fake_plugin):
    host = load(fake_plugin("fake_clash", "clash", dist="clash-dist",
                            plugformer_register_commands=commands_hook(("train", "clash.cli:train", "mine"),)))
    record = host.records[-1]
    assert record.status == "failed"
    assert "command 'train' is registered twice" in record.error
    assert "the core (plugformer)" in record.error and "clash-dist 1.0" in record.error
    assert host.commands.get("train").is_core


def test_the_second_plugin_to_claim_a_name_loses_naming_both_packages(fake_plugin):
    first = fake_plugin("fake_serve_a", "serve_a", dist="serve-a",
                        plugformer_register_commands=commands_hook(("serve", "a.cli:serve", "serve A")))
    second = fake_plugin("fake_serve_b", "serve_b", dist="serve-b",
                         plugformer_register_commands=commands_hook(("other", "b.cli:other", "other"),
                                                                   ("serve", "b.cli:serve", "serve B")))
    host = load(first, second)
    assert host.commands.get("serve").provider == "serve-a"
    assert "other" not in host.commands  # everything the losing plugin registered is removed again
    failed = {r.name: r for r in host.records}["serve_b"]
    assert failed.status == "failed" and "serve-a 1.0" in failed.error and "serve-b 1.0" in failed.error


def test_a_command_target_must_be_a_lazy_string(fake_plugin):
    host = load(fake_plugin("fake_eager", "eager", plugformer_register_commands=commands_hook(
        ("eager", print, "imported already"))))
    assert host.records[-1].status == "failed" and "lazy 'module:function'" in host.records[-1].error


def test_an_unknown_command_is_one_line_with_a_did_you_mean():
    table = Commands()
    table.register("train", "m:f", "t")
    table.register("generate", "m:g", "g")
    with pytest.raises(PlugformerError, match="unknown command 'trian' \\(did you mean 'train'\\?\\); commands: "
                                              "train, generate"):
        table.get("trian")


@pytest.mark.parametrize("args, expected", [
    (["checkpoint=a", "out=b"], {"checkpoint": "a", "out": "b"}),
    (["DIR", "out=b"], {"dir": "DIR", "out": "b"}),
    (["DIR", "--out", "b"], {"dir": "DIR", "out": "b"}),
    (["--out=b", "--json"], {"out": "b", "json": "true"}),
])
def test_the_shared_parser_reads_key_values_long_options_and_flags(args, expected):
    keys = ("checkpoint", "dir", "out")
    assert parse_keyvalues("demo", args, keys, positional="dir", flags=("json",)) == expected


@pytest.mark.parametrize("args, message", [
    (["ouy=b"], "plugformer demo has no option 'ouy' (did you mean 'out'?)"),
    (["out=b", "out=c"], "'out' given twice"),
    (["out="], "'out=' needs a value"),
    (["--out"], "--out needs a value"),
    (["--jsn"], "has no option '--jsn'"),
    (["bare"], "takes key=value arguments, got 'bare'"),
    ([], "needs out=..."),
])
def test_the_shared_parser_refuses_bad_arguments_in_one_line(args, message):
    with pytest.raises(PlugformerError) as info:
        parse_keyvalues("demo", args, ("out",), required=("out",), flags=("json",))
    assert message in str(info.value) and "\n" not in str(info.value)
