"""``stn-deploy inspect ONNX``: what an ONNX file holds and which runtimes it suits."""

from __future__ import annotations

import json
from pathlib import Path

import click

from stn_deploy.cli.options import Command, json_option


@click.command("inspect", cls=Command)
@click.argument("model", metavar="ONNX", type=click.Path(dir_okay=False, path_type=Path))
@json_option("Print JSON for machines.")
def inspect_cmd(model: Path, as_json: bool) -> None:
    """What an ONNX file holds: opsets, inputs/outputs, metadata, op histogram, the grid-sample
    lowering it carries, and which target runtimes it suits (and why not)."""
    from stn_deploy.inspect_onnx import format_report, inspect_model

    info = inspect_model(model)
    click.echo(json.dumps(info, indent=2) if as_json else format_report(info))
