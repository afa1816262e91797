"""The ``stn-deploy`` command line: a thin layer over the Python API.

This package holds only the group (:func:`main`, its one-line error handling) and the list of
commands; each command lives in its own module, a few lines over one API function, and the
options they share (the command-line grammar, see the README) are in :mod:`.options`.

Heavy modules (torch, onnx) are imported inside the commands, so ``--help`` is instant and the
runtime-side commands work where torch is not installed. Every :class:`StnDeployError` becomes
a one-line ``Error: ...`` and exit status 1; a bad option or argument is one line and exit 2.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import click

from stn_deploy import __version__
from stn_deploy.errors import StnDeployError


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"stn-deploy, version {__version__}")
        ctx.exit()


def _version_option() -> click.Option:
    return click.Option(
        ["--version", "-V"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_print_version,
        help="Show the version and exit.",
    )


class _UsageError(click.ClickException):
    """A bad option or argument, shown on one line like every other error (exit status 2)."""

    exit_code = 2


def _add_version(cmd: click.Command) -> None:
    """--version on a command and, for a subgroup, on each of its commands."""
    cmd.params.append(_version_option())
    for sub in getattr(cmd, "commands", {}).values():
        _add_version(sub)


class _Group(click.Group):
    """A click group that gives every command --version and turns StnDeployError and click's
    usage errors into one-line errors."""

    group_class = type  # subgroups are _Group too

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        _add_version(cmd)
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context):
        try:
            with _one_line_warnings():
                return super().invoke(ctx)
        except click.UsageError as exc:
            if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):
                raise  # `stn-deploy data` alone shows its help
            where = exc.ctx.command_path if exc.ctx is not None else "stn-deploy"
            raise _UsageError(f"{exc.format_message()} (see `{where} --help`)") from None
        except StnDeployError as exc:
            # the library names parameters (runtimes); the user typed flags (--runtimes). One
            # line, never a traceback or the chained cause (exc.__cause__ is for Python callers)
            from stn_deploy.cli.options import cli_message

            raise click.ClickException(cli_message(exc, ctx.invoked_subcommand)) from None
        except ModuleNotFoundError as exc:
            # an optional dependency this command needs (torch for train/export, ...)
            top = (exc.name or "").split(".")[0]
            if top not in _EXTRA_FOR:
                raise
            sub = ctx.invoked_subcommand or "this command"
            raise click.ClickException(
                f"`stn-deploy {sub}` needs {top}, which is not installed: "
                f"pip install 'stn-deploy[{_EXTRA_FOR[top]}]'"
            ) from None


@contextlib.contextmanager
def _one_line_warnings():
    """While a command runs, a warning that stn-deploy itself issues (a deprecation, a note)
    is one ``Warning: ...`` line on stderr instead of Python's two-line source excerpt."""
    original = warnings.showwarning
    package = str(Path(__file__).resolve().parent.parent)

    def show(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(package):
            click.echo(f"Warning: {message}", err=True)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


#: optional dependency (top-level module) -> the extra that installs it
_EXTRA_FOR = {"torch": "torch", "onnxruntime": "cpu", "openvino": "openvino", "matplotlib": "plots"}

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", "-V", prog_name="stn-deploy")
def main() -> None:
    """Train, export, verify and benchmark Spatial Transformer Networks for edge runtimes."""


# --------------------------------------------------------------------------- the commands
from stn_deploy.cli.bench import bench_cmd  # noqa: E402
from stn_deploy.cli.convert import convert_cmd  # noqa: E402
from stn_deploy.cli.data import data_group  # noqa: E402
from stn_deploy.cli.evaluate import evaluate_cmd  # noqa: E402
from stn_deploy.cli.export import export_cmd  # noqa: E402
from stn_deploy.cli.inspect import inspect_cmd  # noqa: E402
from stn_deploy.cli.lower import lower_cmd  # noqa: E402
from stn_deploy.cli.models import models_cmd  # noqa: E402
from stn_deploy.cli.optimize import optimize_cmd  # noqa: E402
from stn_deploy.cli.quantize import quantize_cmd  # noqa: E402
from stn_deploy.cli.run import run_cmd  # noqa: E402
from stn_deploy.cli.train import train_cmd  # noqa: E402
from stn_deploy.cli.verify import verify_cmd  # noqa: E402

for _cmd in (
    models_cmd,
    data_group,
    train_cmd,
    evaluate_cmd,
    export_cmd,
    inspect_cmd,
    lower_cmd,
    optimize_cmd,
    convert_cmd,
    quantize_cmd,
    verify_cmd,
    bench_cmd,
    run_cmd,
):
    main.add_command(_cmd)


if __name__ == "__main__":  # pragma: no cover
    main()
