"""The README cannot drift from the CLI: every ``stn-deploy ...`` command in its bash blocks (and
in its inline code, and the Makefile's) names a command that exists, options that command has
(current spellings, not deprecated aliases) and no more positional arguments than it takes; the
Python example's imports resolve and its verify/bench keywords exist. Nothing is run."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import shlex
from pathlib import Path

import click
import pytest

from stn_deploy.cli import main
from stn_deploy.cli.options import AliasOption

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, flags=re.M | re.S)


def shell_commands(text: str) -> list[list[str]]:
    """The ``stn-deploy`` invocations of a shell snippet, as argument lists (comments dropped,
    continuation lines joined, ``&&`` / ``;`` / ``|`` chains split)."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        cmd: list[str] = []
        for tok in [*tokens, ";"]:
            if tok in ("&&", "||", ";", "|"):
                if cmd and cmd[0] == "stn-deploy":
                    out.append(cmd[1:])
                cmd = []
            else:
                cmd.append(tok)
    return out


BASH = [c for b in blocks("bash") for c in shell_commands(b)]
INLINE = [
    span.split()[1:]
    for span in re.findall(r"`(stn-deploy [^`]+)`", README)
    if not span.split()[1].isupper()  # `stn-deploy COMMAND --help`
]


def resolve(args: list[str]) -> tuple[click.Command, list[str], str]:
    """The click command ``args`` names (through groups), the rest of the arguments, its name."""
    cmd: click.Command = main
    path = []
    while isinstance(cmd, click.Group):
        assert args, f"stn-deploy {' '.join(path)}: no subcommand"
        name, args = args[0], args[1:]
        assert name in cmd.commands, f"stn-deploy {' '.join(path)}: no command {name!r}"
        cmd, path = cmd.commands[name], [*path, name]
    return cmd, args, " ".join(path)


def options_of(cmd: click.Command) -> dict[str, click.Option]:
    return {
        o: p
        for p in cmd.params
        if isinstance(p, click.Option)
        for o in (*p.opts, *p.secondary_opts)
    }


def check_command(args: list[str]) -> None:
    cmd, rest, name = resolve(args)
    opts = options_of(cmd)
    positional = 0
    i = 0
    while i < len(rest):
        tok = rest[i]
        i += 1
        if tok.startswith("-") and tok != "-":
            flag = tok.split("=", 1)[0]
            assert flag in opts, f"stn-deploy {name}: no option {flag}"
            param = opts[flag]
            assert not isinstance(param, AliasOption), (
                f"stn-deploy {name}: {flag} is deprecated (use {param.use})"
            )
            if not (param.is_flag or param.count) and "=" not in tok:
                assert i < len(rest), f"stn-deploy {name}: {flag} needs a value"
                i += 1
        else:
            positional += 1
    arguments = [p for p in cmd.params if isinstance(p, click.Argument)]
    most = sum(p.nargs for p in arguments) if all(p.nargs > 0 for p in arguments) else 10**6
    least = sum(p.nargs for p in arguments if p.required)
    if "--help" not in rest and "--version" not in rest:
        assert least <= positional <= most, (
            f"stn-deploy {name}: {positional} positional arguments, takes {least} to {most}"
        )


def test_the_readme_has_commands_to_check():
    assert len(BASH) >= 20 and {a[0] for a in BASH} >= {
        "data", "models", "train", "evaluate", "export", "verify", "bench", "quantize", "run",
        "inspect",
    }  # fmt: skip


@pytest.mark.parametrize("args", BASH, ids=[" ".join(a)[:60] for a in BASH])
def test_bash_block_command_exists_with_its_options(args):
    check_command(args)


@pytest.mark.parametrize("args", INLINE, ids=[" ".join(a)[:60] for a in INLINE])
def test_inline_command_names_existing_options(args):
    """Inline spans are grammar sketches (``[--opset N]``, ``a|b``): only the command and the
    ``--options`` they name are checked."""
    cmd, rest, name = resolve(args)
    opts = options_of(cmd)
    for flag in re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", " ".join(rest)):
        assert flag in opts, f"stn-deploy {name}: no option {flag}"
        assert not isinstance(opts[flag], AliasOption), f"{flag} is deprecated"


def test_make_run_is_what_the_readme_says():
    make = (ROOT / "Makefile").read_text()
    lines = [
        ln.strip().replace("$(CLI)", "stn-deploy").replace("$(OUT)", "runs/main")
        for ln in make.split("\nrun:", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    ]
    for line in lines:
        for args in shell_commands(line):
            check_command(args)
    said = re.search(r"`make run` is `(stn-deploy run [^`]+)`", README.replace("\n", " "))
    assert said and said[1] in lines, (said and said[1], lines)


def test_python_example_imports_and_keywords_exist():
    from stn_deploy.bench import BenchOptions
    from stn_deploy.verify import VerifyOptions

    (code,) = blocks("python")
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
    allowed = {
        "verify_model": {f.name for f in dataclasses.fields(VerifyOptions)},
        "bench_model": {f.name for f in dataclasses.fields(BenchOptions)} | {"torch_side"},
    }
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert {c.func.id for c in calls} >= set(allowed)
    for c in calls:
        if c.func.id in allowed:
            unknown = {k.arg for k in c.keywords} - allowed[c.func.id]
            assert not unknown, f"{c.func.id}() has no keyword {unknown}"
