"""``stn-deploy export MODEL``: a torch model to ONNX with a grid-sample lowering and a golden
I/O bundle."""

from __future__ import annotations

from pathlib import Path

import click

from stn_deploy.cli.options import (
    Command,
    check_model_source,
    lowering_option,
    model_source,
    opset_option,
    precision_option,
    seed_option,
    usage_error,
)
from stn_deploy.cli.quantize import build_precision_options, describe, precision_options
from stn_deploy.errors import StnDeployError
from stn_deploy.export.lowerings import lowering_names
from stn_deploy.export.targets import TARGETS as TARGET_NAMES


@click.command("export", cls=Command)
@model_source()
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="NAME.onnx, or a directory for <model>-<lowering>.onnx; NAME.io.npz goes beside it.",
)
@click.option(
    "--target",
    type=click.Choice(list(TARGET_NAMES)),
    default="ort-cpu",
    show_default=True,
    help="Runtime the file is for: picks opset and lowering (README table).",
)
@lowering_option(
    "Grid-sample lowering [default: the target's]. auto: time the candidates that match "
    "torch on the target's ONNX Runtime provider (ort-cpu, ort-cuda) and keep the fastest.",
    choices=(*lowering_names(rewrites=True), "auto"),
)
@opset_option("Override the target's opset.")
@click.option(
    "--inline", is_flag=True, help="With --lowering custom: write the function bodies in place."
)
@click.option("--expose-stn", is_flag=True, help="Add theta and the rectified image as outputs.")
@click.option(
    "--separable/--no-separable",
    default=True,
    show_default=True,
    help="Sample attention STNs (bilinear, zeros) exactly as two MatMuls instead of a sampler op.",
)
@click.option(
    "--static-batch", is_flag=True, help="Fix the batch dimension to 1 (default: dynamic)."
)
@click.option(
    "--exporter",
    type=click.Choice(["dynamo", "torchscript"]),
    default=None,
    help="torch's exporter: dynamo (torch.export with stn-deploy's translation table; the "
    "default at opset 16+) or torchscript (dynamo=False, deprecated upstream; the default "
    "below opset 16).",
)
@click.option(
    "--output-names",
    default=None,
    metavar="A,B,...",
    help="Graph output names [default: dict keys, output_0..n for tuples, log_probs].",
)
@click.option(
    "--optimize",
    type=click.Choice(["none", "exact", "auto"]),
    default=None,
    help="Graph rewrites (as `stn-deploy optimize`): exact passes, auto (timed on the target's "
    "runtime, kept where faster) or none [default: exact for fp32 ort-cpu files, else none].",
)
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Run the written file on ONNX Runtime CPU at batch 1 and the golden batch against "
    "torch before keeping it (--no-check: skip, recorded in the file's metadata).",
)
@click.option(
    "--golden-count",
    type=click.IntRange(1, 4096),
    default=8,
    show_default=True,
    help="Inputs in the golden bundle.",
)
@seed_option(0, "Seed of random golden inputs and of the int8 calibration set.")
@precision_option(
    "fp32",
    ("fp32", "fp16", "int8"),
    "Numeric precision of the file: int8 is calibrated on real MNIST training images "
    "(`stn-deploy data fetch`); θ, grid and sampler stay fp32 unless asked.",
)
@precision_options
def export_cmd(
    separable,
    model,
    weights,
    input_shape,
    trust_factory,
    out,
    target,
    lowering,
    opset,
    inline,
    expose_stn,
    static_batch,
    exporter,
    output_names,
    optimize,
    check,
    golden_count,
    seed,
    precision,
    **precision_kw,
) -> None:
    """Export MODEL to ONNX with stn-deploy's grid-sample lowering and a golden I/O bundle.

    MODEL is a checkpoint file, a zoo name with --weights, or a module:callable factory
    with --input-shape or --weights. A checkpoint naming a factory needs --trust-factory.

    Example: stn-deploy export runs/rts/checkpoint.pt --target tensorrt --out exported/
    """
    from stn_deploy.pytorch.exporter import ExportOptions, export_model
    from stn_deploy.pytorch.models.loading import load_model

    check_model_source(model, weights, input_shape, trust_factory)
    names = [n.strip() for n in output_names.split(",")] if output_names is not None else None
    if names is not None and not all(names):
        raise usage_error(f"--output-names has an empty name: {output_names!r}")
    options = build_precision_options(seed, precision_kw)
    loaded = load_model(
        model, checkpoint=weights, input_shape=input_shape, trust_factory=trust_factory
    )
    opts = ExportOptions(
        target=target,
        lowering=lowering,
        opset=opset,
        inline=inline,
        expose_stn=expose_stn,
        dynamic_batch=not static_batch,
        golden_count=golden_count,
        seed=seed,
        separable=separable,
        precision=precision,
        precision_options=options,
        check=check,
        exporter=exporter,
        output_names=names,
        optimize=optimize,
    )
    try:
        s = export_model(loaded, out, opts)
    except StnDeployError as exc:  # a bad --output-names (count, repeats) is a usage error
        if names is not None and exc.param == "output_names":
            raise usage_error(exc) from None
        raise
    _report(s, precision)


def _report(s, precision: str) -> None:
    """What the export did, for the terminal (``s``: the ExportResult)."""
    if s.auto:
        for cand, row in s.auto["candidates"].items():
            timing = (
                f"{row['batch1_us']:.0f} us at batch 1, {row['batch64_us']:.0f} us at batch 64"
                if "batch1_us" in row
                else row.get(
                    "skipped", f"not at parity (max abs diff {row.get('max_abs_diff', 0):.1e})"
                )
            )
            click.echo(
                f"auto: {cand:<12} {timing}{'  <- chosen' if cand == s.auto['chosen'] else ''}"
            )
    if precision != "fp32":
        click.echo(describe(s.precision_metadata))
    note = s.metadata.get("stn_deploy.self_check")
    if note:
        click.echo(f"note: self-check {note}")
    if s.samplers == 0:
        click.echo("note: the model has no grid sampler (no grid_sample): exported as plain ONNX")
    click.echo(
        f"wrote {s.path} ({s.lowering}, opset {s.opset}"
        f"{'' if precision == 'fp32' else ', ' + precision}, {s.nodes} nodes, "
        f"{s.bytes:,} bytes) and {s.golden_path} ({s.golden_source})"
    )
