"""The ``stn-deploy lower`` command (added to the main group in :mod:`stn_deploy.cli`)."""

from __future__ import annotations

from pathlib import Path

import click

SAMPLER_CHOICES = ("portable", "custom", "native", "ort-contrib")


@click.command("lower")
@click.argument("src", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--sampler",
    type=click.Choice(SAMPLER_CHOICES),
    required=True,
    help="portable: opset-11 standard ops; custom: stn_deploy.GridSample with a local "
    "function body; native: ONNX GridSample (opset 16+); ort-contrib: com.microsoft "
    "GridSample.",
)
@click.option(
    "--opset",
    type=click.IntRange(1, None),
    default=None,
    help="Default-domain opset of the output (default: the input's, at least 11 for "
    "portable/custom and 16 for native).",
)
@click.option(
    "--inline",
    is_flag=True,
    help="With --sampler custom: write the function bodies in place.",
)
def lower_cmd(src: Path, dst: Path, sampler: str, opset: int | None, inline: bool) -> None:
    """Rewrite the GridSample and AffineGrid nodes of any ONNX model SRC into the chosen
    sampler form and write DST (atomically); everything else is left alone."""
    from stn_deploy.export.lower import format_summary, lower_file

    click.echo(format_summary(lower_file(src, dst, sampler, opset=opset, inline=inline)))
