"""The ``stn-deploy convert`` command (added to the main group in :mod:`stn_deploy.cli`)."""

from __future__ import annotations

from pathlib import Path

import click

from stn_deploy.cli.options import Command

FORMAT_CHOICES = ("tflite", "ncnn", "mnn", "iree")


@click.command("convert", cls=Command)
@click.argument("src", metavar="ONNX", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--to",
    "to",
    required=True,
    type=click.Choice(FORMAT_CHOICES),
    help="tflite: onnx2tf (LiteRT); ncnn: pnnx; mnn: MNNConvert; iree: iree-import-onnx + "
    "iree-compile (llvm-cpu, this CPU).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the artifacts and conversion.json [default: NAME-FORMAT beside the file].",
)
@click.option(
    "--onnx2tf",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The onnx2tf executable (its own environment; `make onnx2tf`) [default: "
    "$STN_DEPLOY_ONNX2TF, else onnx2tf on PATH].",
)
@click.option("--force", is_flag=True, help="Replace an existing --out folder.")
def convert_cmd(src: Path, to: str, out: Path | None, onnx2tf: Path | None, force: bool) -> None:
    """Convert the ONNX file for an edge runtime (LiteRT, ncnn, MNN, IREE) with the runtime's
    own converter, run on a copy of the file with fp32 settings, and write the artifacts and a
    conversion record (tool, version, options, input layout) into one folder, all at once.

    Example: stn-deploy convert exported/mnist-affine-native.onnx --to mnn --out build/mnn
    """
    from stn_deploy.convert import convert_model

    if onnx2tf is not None and to != "tflite":
        from stn_deploy.cli.options import usage_error

        raise usage_error("--onnx2tf applies only with --to tflite")
    click.echo(
        convert_model(src, to, out, onnx2tf=onnx2tf, force=force, check=_load_check(to)).describe()
    )


def _load_check(fmt: str):
    """The runtime's load check of the converted folder, when that runtime is installed."""
    from stn_deploy.convert import RUNTIME_OF
    from stn_deploy.runtimes import availability, open_session

    runtime = RUNTIME_OF[fmt]
    if not availability(runtime).available:
        return None
    return lambda converted: open_session(runtime, converted.folder)
