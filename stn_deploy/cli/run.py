"""``stn-deploy run``: the main job in one command (a thin layer over :mod:`stn_deploy.pytorch.pipeline`)."""

from __future__ import annotations

from pathlib import Path

import click

from stn_deploy.bench.timer import MAX_DURATION
from stn_deploy.cli.trust import trust_factory_option
from stn_deploy.data.distortions import CANVAS
from stn_deploy.errors import StnDeployError
from stn_deploy.export.targets import TARGETS
from stn_deploy.pytorch.pipeline import DEFAULT_BATCH_SIZES, RunOptions

_D = RunOptions()


def _batch_sizes(ctx, param, value: str) -> tuple[int, ...]:
    from stn_deploy.bench.plan import check_batch_sizes  # the parser bench uses

    return tuple(check_batch_sizes(value))


@click.command("run")
@click.option(
    "--model",
    default=_D.model,
    show_default=True,
    help="Zoo name (trained here), a checkpoint file, or module:callable (loaded, not trained).",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Weights for a zoo or module:callable --model: skip training.",
)
@click.option("--input-shape", default=None, help="C,H,W input of a module:callable --model.")
@trust_factory_option
@click.option(
    "--distortion",
    type=click.Choice(list(CANVAS), case_sensitive=False),
    default=_D.distortion,
    show_default=True,
    help="MNIST variant to train on (and test with).",
)
@click.option("--epochs", type=click.IntRange(1, None), default=_D.epochs, show_default=True)
@click.option("--max-minutes", type=float, default=None, help="Stop training after this long.")
@click.option("--seed", type=int, default=_D.seed, show_default=True)
@click.option("--synthetic", is_flag=True, help="Generated digits instead of MNIST (offline).")
@click.option("--limit-train", type=click.IntRange(1, None), default=None)
@click.option("--limit-test", type=click.IntRange(1, None), default=None)
@click.option(
    "--target",
    type=click.Choice(list(TARGETS)),
    default=_D.target,
    show_default=True,
    help="Target runtime: picks the lowering (README table).",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8"]),
    default=_D.precision,
    show_default=True,
    help="Export precision; int8 is calibrated on MNIST training images (needs the cache).",
)
@click.option(
    "--providers",
    default=None,
    help="Runtimes to verify and bench on, e.g. cpu,openvino [default: all available].",
)
@click.option(
    "--batch-sizes",
    default=",".join(map(str, DEFAULT_BATCH_SIZES)),
    show_default=True,
    callback=_batch_sizes,
    help="Batch sizes to bench.",
)
@click.option(
    "--bench-duration",
    type=click.FloatRange(0.01, MAX_DURATION),
    default=_D.bench_duration,
    show_default=True,
    help=f"Seconds of timed calls per runtime and batch size (at most {MAX_DURATION:g}).",
)
@click.option(
    "--compare",
    default=",".join(_D.compare),
    show_default=True,
    help="Baselines timed in the same run: torch, stock-export (or 'none').",
)
@click.option("--threads", type=click.IntRange(1, None), default=None, help="Intra-op threads.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("runs/main"),
    show_default=True,
    help="Report folder (built aside and renamed into place at the end).",
)
@click.option("--force", is_flag=True, help="Replace an existing report folder.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def run_cmd(out: Path, force: bool, no_progress: bool, compare: str, **kw) -> None:
    """Train (or load) -> export -> verify -> bench, into one report folder.

    Writes OUT/report.md and report.json, the rectification, latency and error pictures, the
    checkpoint, the ONNX file with its golden bundle, and the full verify and bench results.
    Exit status 1 when any runtime fails verification.

    Example: stn-deploy run --epochs 5 --out runs/main --force
    """
    from stn_deploy.bench.plan import check_compare
    from stn_deploy.pytorch.pipeline import run_pipeline

    names = () if compare.strip().lower() == "none" else tuple(check_compare(compare))
    opts = RunOptions(compare=names, **kw)
    report = run_pipeline(opts, out, force=force, progress=not no_progress)
    if not report["passed"]:
        raise StnDeployError(f"verification failed: see {out / 'report.md'}")
