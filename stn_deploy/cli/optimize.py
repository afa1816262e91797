"""The ``stn-deploy optimize`` command (added to the main group in :mod:`stn_deploy.cli`)."""

from __future__ import annotations

from pathlib import Path

import click

from stn_deploy.cli.options import Command, batch_sizes_option, threads_option


def _passes(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    from stn_deploy.errors import StnDeployError
    from stn_deploy.optimize import get_pass

    names = tuple(v.strip() for v in value.split(","))
    try:
        for n in names:
            get_pass(n)
    except StnDeployError as exc:
        raise click.BadParameter(str(exc).replace("passes", "--passes", 1)) from None
    return names


@click.command("optimize", cls=Command)
@click.argument("src", metavar="ONNX", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("dst", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--mode",
    type=click.Choice(("exact", "auto", "none")),
    default="exact",
    show_default=True,
    help="exact: the default exact passes for the runtime, each checked for parity; auto: every "
    "exact pass timed site by site on the runtime, the fastest set at parity kept; none: copy.",
)
@click.option(
    "--runtime",
    type=click.Choice(("cpu", "openvino")),
    default="cpu",
    show_default=True,
    help="Runtime to check parity on and (auto) to time on: ORT CPU or OpenVINO CPU.",
)
@batch_sizes_option("1,64", "Comma-separated batch sizes auto times at.")
@click.option("--passes", default=None, callback=_passes, metavar="NAMES",
              help="Comma-separated passes to consider [default: by --mode].")  # fmt: skip
@threads_option("Runtime intra-op threads while timing.")
def optimize_cmd(
    src: Path,
    dst: Path,
    mode: str,
    runtime: str,
    batch_sizes: tuple[int, ...],
    passes: tuple[str, ...] | None,
    threads: int | None,
) -> None:
    """Rewrite the ONNX file with exact graph passes (Relu before MaxPool, the affine grid as one
    Gemm, phase Conv+MaxPool, batch-chunked 1-channel convs, Conv+BN folding, constant
    folding) and write OUT atomically, the passes and timings in its metadata."""
    from stn_deploy.optimize import optimize_file

    record = optimize_file(
        src, dst, mode, runtime=runtime, batch_sizes=batch_sizes, passes=passes,
        threads=threads or 2,
    )  # fmt: skip
    click.echo(f"{record.describe()}\nwrote {dst}")
