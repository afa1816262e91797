"""The ``stn-deploy lower`` command (added to the main group in :mod:`stn_deploy.cli`)."""

from __future__ import annotations

from pathlib import Path

import click

from stn_deploy.cli.options import Command, lowering_option, opset_option, usage_error
from stn_deploy.export.lowerings import lowering_names

#: the lowerings ``stn-deploy lower`` can write, from the registry
SAMPLER_CHOICES = lowering_names(rewrites=True)


@click.command("lower", cls=Command)
@click.argument("src", metavar="ONNX", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dst", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
@lowering_option(
    "(required) portable: opset-11 standard ops; custom: stn_deploy.GridSample with a local "
    "function body; native: ONNX GridSample (opset 16+); ort-contrib: com.microsoft "
    "GridSample.",
    choices=SAMPLER_CHOICES,
)
@opset_option(
    "Default-domain opset of the output (default: the input's, at least 11 for "
    "portable/custom and 16 for native)."
)
@click.option(
    "--inline",
    is_flag=True,
    help="With --lowering custom: write the function bodies in place.",
)
def lower_cmd(src: Path, dst: Path, lowering: str | None, opset: int | None, inline: bool) -> None:
    """Rewrite the GridSample and AffineGrid nodes of any ONNX model (the ONNX file) into the
    chosen lowering and write OUT (atomically); everything else is left alone."""
    from stn_deploy.export.lower import lower_file

    if lowering is None:
        raise usage_error("Missing option '--lowering'")
    if inline and lowering != "custom":
        raise usage_error("--inline applies only with --lowering custom")
    click.echo(lower_file(src, dst, lowering, opset=opset, inline=inline).describe())
