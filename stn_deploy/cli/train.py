"""``stn-deploy train [MODEL]``: train an STN on (distorted) MNIST."""

from __future__ import annotations

from pathlib import Path

import click

from stn_deploy.cli.options import (
    DEFAULT_MODEL,
    TRUST_FACTORY_HELP,
    Command,
    cache_dir_option,
    data_dir_option,
    distortion_option,
    limit_test_option,
    limit_train_option,
    model_argument,
    progress_option,
    seed_option,
    synthetic_option,
    threads_option,
    usage_error,
)
from stn_deploy.pytorch.train_options import DEFAULT_EPOCHS, OPTIMIZERS, SCHEDULES, TrainOptions

_D = TrainOptions()  # the CLI's defaults are the API's


@click.command("train", cls=Command)
@model_argument(DEFAULT_MODEL, old_option=True)
@distortion_option(
    _D.distortion,
    "The paper's MNIST variant: rotated, rotated-translated-scaled (42x42), projective, "
    "elastic, translated-cluttered (60x60).",
)
@click.option(
    "--epochs",
    type=int,
    default=None,
    help=f"Epochs to train [default: {DEFAULT_EPOCHS}; with --resume: the run's own].",
)
@click.option("--batch-size", type=int, default=_D.batch_size, show_default=True)
@click.option(
    "--lr", type=float, default=_D.lr, show_default=True, help="Learning rate (peak for onecycle)."
)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=_D.optimizer, show_default=True)
@click.option(
    "--momentum", type=float, default=_D.momentum, show_default=True, help="SGD momentum."
)
@click.option("--weight-decay", type=float, default=_D.weight_decay, show_default=True)
@click.option(
    "--schedule",
    type=click.Choice(SCHEDULES),
    default=_D.schedule,
    show_default=True,
    help="Learning-rate schedule (onecycle: warm up to --lr, then anneal to ~0).",
)
@click.option(
    "--step-epochs",
    type=int,
    default=_D.step_epochs,
    show_default=True,
    help="Step schedule: divide the lr by 1/gamma every N epochs (0: at 1/2 and 3/4 of the run).",
)
@click.option(
    "--gamma", type=float, default=_D.gamma, show_default=True, help="Step schedule factor."
)
@click.option(
    "--mode",
    type=click.Choice(["bilinear", "nearest", "bicubic"]),
    default=None,
    help="Sampler mode [model default: bilinear].",
)
@click.option(
    "--padding-mode",
    type=click.Choice(["zeros", "border", "reflection"]),
    default=None,
    help="Sampler padding [model default: zeros].",
)
@click.option(
    "--out-size",
    type=click.IntRange(4, 512),
    default=None,
    help="Side of the STN's output canvas, what the classifier sees [model default: 28]; "
    "a larger canvas keeps more of the zoomed-in digit.",
)
@click.option(
    "--loc-lr-scale",
    type=float,
    default=_D.loc_lr_scale,
    show_default=True,
    help="Learning rate of the STN localisation nets relative to --lr (the paper trains them slower).",
)
@click.option(
    "--theta-reg",
    type=click.FloatRange(0.0),
    default=_D.theta_reg,
    show_default=True,
    help="Identity regularisation: adds this times mean((theta - identity)^2) to the loss.",
)
@click.option(
    "--freeze-loc-epochs",
    type=click.IntRange(0),
    default=_D.freeze_loc_epochs,
    show_default=True,
    help="Warm-up: keep the localisation nets frozen (STN at identity) for the first N epochs.",
)
@click.option(
    "--freeze-classifier-epochs",
    type=click.IntRange(0),
    default=_D.freeze_classifier_epochs,
    show_default=True,
    help="Warm-up: train only the localisation nets for the first N epochs.",
)
@click.option(
    "--dropout",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=None,
    help="Dropout probability of the classifier [model default: 0.5, the tutorial's].",
)
@click.option(
    "--align-corners/--no-align-corners",
    default=None,
    help="Sampler align_corners [default: false].",
)
@seed_option(_D.seed, "Seeds data distortion, shuffling and init.")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run directory: checkpoint.pt, metrics.json, rectification.png.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the interrupted run in --out with its stored settings (only --max-minutes, "
    "--threads and, for --schedule none, --epochs may change).",
)
@click.option("--force", is_flag=True, help="Start over even if --out already holds a run.")
@click.option(
    "--trust-factory",
    is_flag=True,
    help="With --resume: " + TRUST_FACTORY_HELP + " Or name the same factory yourself as MODEL.",
)
@data_dir_option
@cache_dir_option
@synthetic_option
@limit_train_option
@limit_test_option
@click.option(
    "--epoch-images",
    type=click.IntRange(1),
    default=None,
    help="Images per epoch, drawn anew from the training set each epoch [default: all]; "
    "finer epochs fit a schedule to a time budget.",
)
@click.option(
    "--max-minutes",
    type=float,
    default=None,
    help="Stop after the epoch that would exceed this budget.",
)
@threads_option("torch intra-op threads [default: all cores].")
@progress_option()
def train_cmd(
    out: Path,
    resume: bool,
    force: bool,
    trust_factory: bool,
    cache_dir: Path | None,
    progress: bool | None,
    data_dir: Path | None,
    **kwargs,
) -> None:
    """Train MODEL (a zoo name or a module:callable factory; default mnist-affine) on
    (distorted) MNIST.

    Example: stn-deploy train mnist-affine --distortion rts --epochs 10 --out runs/rts
    """
    from stn_deploy.pytorch.train import train

    if trust_factory and not resume:
        raise usage_error("--trust-factory applies only with --resume")
    opts = TrainOptions(data_dir=str(data_dir) if data_dir else None, **kwargs)
    result = train(
        opts,
        out,
        resume=resume,
        force=force,
        cache_dir=cache_dir,
        progress=progress,
        log=click.echo,
        trust_factory=trust_factory,
    )
    final = result.final
    click.echo(
        f"done: test error {final['test_error']:.2f}% after {result.epochs_run} epochs "
        f"({result.train_seconds / 60:.1f} min); wrote {out / result.checkpoint}, {out / 'metrics.json'}"
        + (f", {out / result.picture}" if result.picture else "")
    )
