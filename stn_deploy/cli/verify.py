"""The ``stn-deploy verify`` command (added to the main group in :mod:`stn_deploy.cli`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from stn_deploy.cli.options import (
    Command,
    alias,
    json_option,
    load_reference,
    reference_options,
    runtimes_option,
    seed_option,
    threads_option,
    usage_error,
)
from stn_deploy.errors import StnDeployError
from stn_deploy.verify.compare import ERROR_STATS
from stn_deploy.verify.tolerances import HELP as TOLERANCE_HELP


@click.command("verify", cls=Command)
@click.argument("model", metavar="ONNX", type=click.Path(dir_okay=False, path_type=Path))
@reference_options(
    "torch reference: a zoo name (with --weights), a checkpoint file or a module:callable "
    "factory (with --input-shape). Without it the reference is the golden bundle beside ONNX "
    "(no torch needed)."
)
@click.option(
    "--reference-onnx",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Without torch: an ONNX file run on ORT CPU as the reference of the random/mnist/stress "
    "inputs, e.g. the fp32 file an int8/fp16 ONNX was made from (accuracy delta vs fp32; "
    "no golden bundle needed) "
    "[default: ONNX itself on ORT CPU, i.e. runtime parity].",
)
@alias(
    "--reference-model",
    target="reference_onnx",
    use="--reference-onnx",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
)
@runtimes_option(
    "Runtimes to verify, comma-separated: cpu, cuda, tensorrt (any ONNX Runtime EP), "
    "openvino, reference (the onnx reference evaluator), and the edge runtimes litert, ncnn, "
    "mnn, iree (the file converted first, cached by its sha256) [default: the ORT EPs, "
    "openvino and reference; those not available here are skipped with the reason]."
)
@click.option(
    "--strict",
    is_flag=True,
    help="A runtime or input set named explicitly that is not available is an error.",
)
@click.option(
    "--atol", type=float, default=None, help="Absolute tolerance [default: per precision]."
)
@click.option(
    "--rtol", type=float, default=None, help="Relative tolerance [default: per precision]."
)
@click.option(
    "--check-error-stat",
    type=click.Choice(ERROR_STATS),
    default=None,
    help="elemwise: every element within atol or rtol; max/mean/median/quantile: that statistic "
    "of the abs error <= atol or of the rel error <= rtol (Polygraphy's meaning). Defaults per "
    f"precision: {TOLERANCE_HELP}.",
)
@click.option(
    "--quantile",
    type=click.FloatRange(0, 1),
    default=None,
    help="Quantile for --check-error-stat quantile [default: 0.99].",
)
@click.option(
    "--strict-placement",
    is_flag=True,
    help="Any node an ONNX Runtime EP did not take (fell back to CPU) fails the runtime.",
)
@click.option(
    "--bisect",
    is_flag=True,
    help="For a failing runtime, expose intermediate tensors and name the first node whose "
    "output diverges (against ORT CPU or the reference evaluator; with a torch reference also "
    "against a re-export of it, which tells a wrong file from a wrong runtime).",
)
@click.option(
    "--inputs",
    default=None,
    help="Input sets, comma-separated: golden, random, mnist (needs the MNIST cache), stress "
    "(rotated, shrunk, blown-up, edge, noise, checkerboard) [default: all that apply].",
)
@click.option(
    "--count",
    type=click.IntRange(1, 4096),
    default=8,
    show_default=True,
    help="Images per random/mnist/stress set.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Seconds of running per runtime; a runtime that would take longer runs on the first "
    "images of each input set that fit, with a note [default: 20 for the runtimes verified by "
    "default, no limit for runtimes named in --runtimes].",
)
@click.option(
    "--quiet",
    is_flag=True,
    help="No progress lines on stderr (one per runtime x input set; none with --json either).",
)
@seed_option(0, "Seed of generated inputs.")
@threads_option("Threads per runtime.")
@json_option("Print the report as JSON (schema stn-deploy/verify-v1).")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a PNG histogram of |error| per runtime (needs the plots extra).",
)
def verify_cmd(
    model: Path,
    reference: str | None,
    weights: Path | None,
    input_shape: str | None,
    trust_factory: bool,
    reference_onnx: Path | None,
    runtimes: str | None,
    as_json: bool,
    plot: Path | None,
    quiet: bool,
    **kw,
) -> None:
    """Run the ONNX file on several runtimes and compare every output with the reference: error
    statistics, argmax agreement, node placement; exit 0 only when every runtime passed.

    Example: stn-deploy verify exported/mnist-affine-native.onnx --runtimes cpu,openvino
    """
    from stn_deploy.verify import format_table, verify_model
    from stn_deploy.verify.inputs import parse_kinds
    from stn_deploy.verify.tolerances import check_overrides

    # cheap checks first: nothing is loaded or run when an argument is wrong
    if reference is not None and reference_onnx is not None:
        raise usage_error("give --reference (torch) or --reference-onnx, not both")
    try:
        parse_kinds(kw["inputs"])
        check_overrides(**{k: kw[k] for k in ("atol", "rtol", "check_error_stat", "quantile")})
    except StnDeployError as exc:
        raise usage_error(exc) from None
    loaded = load_reference(reference, weights, input_shape, trust_factory)
    side = None
    if loaded is not None:  # the torch side, loaded above: verify itself never imports it
        from stn_deploy.pytorch import torch_side

        side = torch_side(loaded)
    report = verify_model(
        model,
        torch_side=side,
        runtimes=runtimes,
        reference_model=reference_onnx,
        progress=None if quiet or as_json else (lambda line: click.echo(line, err=True)),
        **kw,
    )
    d = report.to_dict()
    if plot is not None:
        from stn_deploy.report.error_plot import save_error_histogram

        save_error_histogram(d, plot)
    click.echo(json.dumps(d, indent=2) if as_json else format_table(d))
    if not report.passed:
        raise StnDeployError("verify failed: " + "; ".join(report.failures()))
