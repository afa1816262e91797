"""``stn-deploy run [MODEL]``: the main job in one command (a thin layer over
:mod:`stn_deploy.pytorch.pipeline`)."""

from __future__ import annotations

from pathlib import Path

import click

from stn_deploy.cli.options import (
    DEFAULT_MODEL,
    Command,
    batch_sizes_option,
    cache_dir_option,
    check_model_source,
    compare_option,
    data_dir_option,
    distortion_option,
    duration_option,
    limit_test_option,
    limit_train_option,
    lowering_option,
    model_source,
    precision_option,
    progress_option,
    runtimes_option,
    seed_option,
    synthetic_option,
    threads_option,
    usage_error,
)
from stn_deploy.errors import StnDeployError
from stn_deploy.export.targets import TARGETS
from stn_deploy.pytorch.pipeline import DEFAULT_BATCH_SIZES, RunOptions
from stn_deploy.timing import MAX_DURATION, check_budget

_D = RunOptions()


@click.command("run", cls=Command)
@model_source(DEFAULT_MODEL, old_option=True)
@distortion_option(_D.distortion, "MNIST variant to train on (and test with).")
@click.option(
    "--epochs",
    type=click.IntRange(1),
    default=_D.epochs,
    show_default=True,
    help="Epochs to train a zoo-name MODEL without --weights.",
)
@click.option("--max-minutes", type=float, default=None, help="Stop training after this long.")
@seed_option(_D.seed, "Seeds training, the golden and verify inputs and int8 calibration.")
@synthetic_option
@limit_train_option
@limit_test_option
@data_dir_option
@cache_dir_option
@click.option(
    "--target",
    type=click.Choice(list(TARGETS)),
    default=_D.target,
    show_default=True,
    help="Target runtime: picks the lowering (README table).",
)
@lowering_option("Grid-sample lowering [default: the target's].")
@precision_option(
    _D.precision,
    ("fp32", "fp16", "int8"),
    "Export precision; int8 is calibrated on MNIST training images (needs the cache).",
)
@runtimes_option("Runtimes to verify and bench on, e.g. cpu,openvino [default: all available].")
@batch_sizes_option(",".join(map(str, DEFAULT_BATCH_SIZES)), "Batch sizes to bench.")
@duration_option(
    MAX_DURATION,
    _D.bench_duration,
    f"Seconds of timed calls per runtime and batch size (at most {MAX_DURATION:g}).",
)
@compare_option(",".join(_D.compare), "Baselines timed in the same run: torch, stock-export")
@threads_option("Intra-op threads.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("runs/main"),
    show_default=True,
    help="Report folder (built aside and renamed into place at the end).",
)
@click.option("--force", is_flag=True, help="Replace an existing report folder.")
@progress_option()
def run_cmd(
    out: Path,
    force: bool,
    progress: bool | None,
    cache_dir: Path | None,
    model: str,
    weights: Path | None,
    lowering: str | None,
    runtimes: str | None,
    duration: float,
    data_dir: Path | None,
    **kw,
) -> None:
    """Train (or load) MODEL -> export -> verify -> bench, into one report folder.

    MODEL (default mnist-affine) is trained here when it is a zoo name without --weights, and
    loaded otherwise (a checkpoint file, a zoo name with --weights, a module:callable factory).
    Writes OUT/report.md and report.json, the rectification, latency and error pictures, the
    checkpoint, the ONNX file with its golden bundle, and the full verify and bench results.
    Exit status 1 when any runtime fails verification.

    Example: stn-deploy run mnist-affine --epochs 5 --out runs/main --force
    """
    from stn_deploy.pytorch.pipeline import run_pipeline

    check_model_source(model, weights, kw["input_shape"], kw["trust_factory"])
    try:
        check_budget(0, None, duration)
    except StnDeployError as exc:
        raise usage_error(exc) from None
    opts = RunOptions(
        model=model,
        checkpoint=None if weights is None else str(weights),
        sampler=lowering,
        providers=runtimes,
        bench_duration=duration,
        data_dir=None if data_dir is None else str(data_dir),
        **kw,
    )
    try:
        opts.check_data_dir()
    except StnDeployError as exc:
        raise usage_error(exc) from None
    report = run_pipeline(opts, out, force=force, cache_dir=cache_dir, progress=progress)
    if not report.passed:
        raise StnDeployError(f"verification failed: see {out / 'report.md'}")
