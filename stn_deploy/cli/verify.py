"""The ``stn-deploy verify`` command (added to the main group in :mod:`stn_deploy.cli`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from stn_deploy.cli.trust import trust_factory_option
from stn_deploy.errors import StnDeployError
from stn_deploy.verify.compare import ERROR_STATS
from stn_deploy.verify.tolerances import HELP as TOLERANCE_HELP


@click.command("verify")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--checkpoint",
    default=None,
    help="torch reference: a checkpoint file (or a zoo name + --weights). Without it (and "
    "without --factory) the reference is the golden bundle beside MODEL; no torch needed.",
)
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Trained weights when --checkpoint names a zoo model.",
)
@click.option("--factory", default=None, help="torch reference from a module:callable factory.")
@click.option(
    "--reference-model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Without torch: an ONNX file run on ORT CPU as the reference of the random/mnist/stress "
    "inputs, e.g. the fp32 file an int8/fp16 MODEL was made from (accuracy delta vs fp32; "
    "no golden bundle needed) "
    "[default: MODEL itself on ORT CPU, i.e. runtime parity].",
)
@click.option("--input-shape", default=None, help="C,H,W input of --factory (e.g. 1,42,42).")
@trust_factory_option
@click.option(
    "--providers",
    default=None,
    help="Runtimes to verify, comma-separated: cpu, cuda, tensorrt (any ONNX Runtime EP), "
    "openvino, reference (the onnx reference evaluator) [default: all; those not available "
    "here are skipped with the reason].",
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
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of generated inputs.")
@click.option("--threads", type=click.IntRange(1), default=None, help="Threads per runtime.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the report as JSON (schema stn-deploy/verify-v1).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a PNG histogram of |error| per runtime (needs the plots extra).",
)
def verify_cmd(
    model: Path,
    checkpoint: str | None,
    weights: Path | None,
    factory: str | None,
    input_shape: str | None,
    trust_factory: bool,
    providers: str | None,
    as_json: bool,
    plot: Path | None,
    **kw,
) -> None:
    """Run MODEL.onnx on several runtimes and compare every output with the reference: error
    statistics, argmax agreement, node placement; exit 0 only when every runtime passed.

    Example: stn-deploy verify exported/mnist-affine-native.onnx --providers cpu,openvino
    """
    from stn_deploy.runtimes import parse_names
    from stn_deploy.verify import format_table, verify_model
    from stn_deploy.verify.inputs import parse_kinds
    from stn_deploy.verify.tolerances import check_overrides

    loaded = None
    if checkpoint and factory:
        raise StnDeployError("give --checkpoint or --factory, not both")
    # cheap checks first: nothing is loaded or run when an argument is wrong
    if weights is not None and not checkpoint:
        raise StnDeployError("--weights applies only with --checkpoint naming a zoo model")
    if input_shape is not None and not factory:
        raise StnDeployError("--input-shape applies only with --factory")
    parse_names(providers)
    parse_kinds(kw["inputs"])
    check_overrides(**{k: kw[k] for k in ("atol", "rtol", "check_error_stat", "quantile")})
    if checkpoint or factory:
        try:
            from stn_deploy.pytorch.models.loading import load_model
        except ImportError:
            raise StnDeployError(
                "--checkpoint/--factory need torch, which is not installed: verify against the "
                "golden bundle instead (leave them out)"
            ) from None
        if factory:
            loaded = load_model(factory, input_shape=input_shape)
        else:
            loaded = load_model(checkpoint, checkpoint=weights, trust_factory=trust_factory)
    report = verify_model(model, loaded=loaded, runtimes=providers, **kw)
    d = report.to_dict()
    if plot is not None:
        from stn_deploy.report.error_plot import save_error_histogram

        save_error_histogram(d, plot)
    click.echo(json.dumps(d, indent=2) if as_json else format_table(d))
    if not report.passed:
        raise StnDeployError("verify failed: " + "; ".join(report.failures()))
