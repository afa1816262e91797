"""The command-line grammar: one option decorator per concept, parsed and validated once.

- A **torch model** is the positional ``MODEL`` of train, evaluate, export and run: a zoo name,
  a checkpoint file, or a ``module:callable`` / ``file.py:callable`` factory; ``--weights FILE``
  gives a zoo name (or a factory) its trained weights, ``--input-shape C,H,W`` a factory its input.
- An **ONNX file** is the positional argument of inspect, lower, verify, bench and quantize; their
  torch reference is ``--reference MODEL`` (same syntax, same ``--weights``/``--input-shape``).
- An option that does not apply, or conflicts with another, is a usage error (exit 2, one line).
- Old spellings are hidden :class:`AliasOption` s: they still work and print one
  ``Warning: OLD is deprecated: use NEW`` line on stderr.

Only click and light, torch-free modules are imported here (``--help`` stays instant).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from stn_deploy.errors import StnDeployError

GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
DEFAULT_MODEL = "mnist-affine"
LOWERINGS = ("native", "portable", "custom", "ort-contrib")


# --------------------------------------------------------------------------- deprecated aliases
class AliasOption(click.Option):
    """A hidden, deprecated spelling of another parameter (``target``, a parameter name). Its
    value replaces the target's after parsing (:class:`Command`), with one warning line."""

    def __init__(self, *args, target: str, use: str, **kw):
        kw.setdefault("hidden", True)
        super().__init__(*args, **kw)
        self.target = target
        self.use = use  # how the new spelling is written in the warning


class Command(click.Command):
    """A command whose :class:`AliasOption` values are moved onto their targets after parsing:
    giving an old and a new spelling (or two old ones) of one thing is a usage error."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        for target in dict.fromkeys(p.target for p in self.params if isinstance(p, AliasOption)):
            given = [
                p
                for p in self.params
                if (p.name == target or getattr(p, "target", None) == target)
                and ctx.get_parameter_source(p.name) in GIVEN
            ]
            if len(given) > 1:
                names = ", ".join(_flag(p) for p in given)
                raise click.UsageError(
                    f"give only one of {names} (one option, old spellings)", ctx=ctx
                )
            for p in self.params:
                if getattr(p, "target", None) == target:
                    value = ctx.params.pop(p.name, None)
                    if p in given:
                        click.echo(f"Warning: {_flag(p)} is deprecated: use {p.use}", err=True)
                        ctx.params[target] = value
                        ctx.set_parameter_source(target, ParameterSource.COMMANDLINE)
        return rest


def _flag(param: click.Parameter) -> str:
    if isinstance(param, click.Argument):
        return (param.metavar or param.name or "").upper()
    return max(param.opts, key=len)


def alias(*decls: str, target: str, use: str, **kw) -> Callable:
    """A hidden deprecated option ``decls[0]`` standing for parameter ``target``."""
    name = target + "__" + decls[0].lstrip("-").replace("-", "_")
    return click.option(*decls, name, cls=AliasOption, target=target, use=use, **kw)


def usage_error(message: str | StnDeployError) -> click.UsageError:
    """A usage error (exit 2); a StnDeployError's parameters are written as flags."""
    if isinstance(message, StnDeployError):
        message = cli_message(message)
    return click.UsageError(message, ctx=click.get_current_context(silent=True))


# --------------------------------------------------------------------------- parameters -> flags
#: library parameter name (the ``param`` of a StnDeployError, see stn_deploy.errors) -> the
#: flag (or positional) that sets it on the command line
FLAGS: dict[str, str] = {
    "atol": "--atol",
    "batch_size": "--batch-size",
    "batch_sizes": "--batch-sizes",
    "bench_duration": "--duration",
    "bisect": "--bisect",
    "cache_dir": "--cache-dir",
    "check": "--no-check",
    "calibration.count": "--calibration-count",
    "calibration.distortion": "--distortion",
    "calibration.seed": "--seed",
    "check_error_stat": "--check-error-stat",
    "checkpoint": "--weights",
    "compare": "--compare",
    "count": "--count",
    "data_dir": "--data-dir",
    "dropout": "--dropout",
    "dst": "--out",
    "duration": "--duration",
    "epochs": "--epochs",
    "exporter": "--exporter",
    "force": "--force",
    "input_shape": "--input-shape",
    "inputs": "--inputs",
    "iters": "--iters",
    "keep_fp32": "--keep-fp32",
    "loaded": "--reference",
    "loc_lr_scale": "--loc-lr-scale",
    "freeze_loc_epochs": "--freeze-loc-epochs",
    "epoch_images": "--epoch-images",
    "freeze_classifier_epochs": "--freeze-classifier-epochs",
    "theta_reg": "--theta-reg",
    "lowering": "--lowering",
    "lowering_sweep": "--lowering-sweep",
    "lr": "--lr",
    "model": "MODEL",
    "opset": "--opset",
    "optimize": "--optimize",
    "output_names": "--output-names",
    "providers": "--runtimes",
    "quantile": "--quantile",
    "reference": "--reference",
    "reference_model": "--reference-onnx",
    "resume": "--resume",
    "rtol": "--rtol",
    "runtimes": "--runtimes",
    "sampler": "--lowering",
    "sampler_sweep": "--lowering-sweep",
    "seed": "--seed",
    "strict": "--strict",
    "strict_placement": "--strict-placement",
    "synthetic": "--synthetic",
    "threads": "--threads",
    "torch": "--reference",
    "torch_side": "--reference",
    "trust_factory": "--trust-factory",
    "warmup": "--warmup",
    "weights": "--weights",
}
#: command -> the entries of :data:`FLAGS` that differ there
COMMAND_FLAGS: dict[str, dict[str, str]] = {
    "bench": {"strict": "--fail-on-error"},
    "convert": {"to": "--to", "out": "--out", "onnx2tf": "--onnx2tf"},
    "lower": {"dst": "OUT"},
    "optimize": {"dst": "OUT", "mode": "--mode", "runtime": "--runtime", "passes": "--passes"},
    "train": {
        "mode": "--mode",
        "padding_mode": "--padding-mode",
        "align_corners": "--align-corners",
        "out_size": "--out-size",
    },
}


def flags_for(command: str | None) -> dict[str, str]:
    """:data:`FLAGS` as the command ``command`` (its name, e.g. ``bench``) spells them."""
    return {**FLAGS, **COMMAND_FLAGS.get(command or "", {})}


def cli_message(exc: StnDeployError, command: str | None = None) -> str:
    """``exc``'s message on one line, its parameters written as the flags of ``command``
    (default: the command being run)."""
    if command is None:
        ctx = click.get_current_context(silent=True)
        command = ctx.command.name if ctx is not None else None
    return exc.render(flags_for(command)).replace("\n", " ")


# --------------------------------------------------------------------------- validation
def validated(check: Callable[[Any, str], Any]) -> Callable:
    """A click callback running ``check(value, name)`` (a library validator; ``name`` is the
    parameter's library name, e.g. ``runtimes``): its StnDeployError becomes a usage error
    (exit 2) on one line, naming the flag as it was typed (an old spelling too)."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None or ctx.resilient_parsing:
            return value
        flag = _flag(param)
        name = getattr(param, "target", None) or param.name or flag
        try:
            return check(value, name)
        except StnDeployError as exc:
            text = exc.render({**flags_for(ctx.command.name), name: flag}).replace("\n", " ")
            if flag in text:
                raise click.UsageError(text, ctx=ctx) from None
            raise click.BadParameter(text, ctx=ctx, param=param) from None

    return callback


def _runtimes(bench: bool) -> Callable[[str, str], str | None]:
    def check(value: str, name: str) -> str | None:
        from stn_deploy.names import unique_names
        from stn_deploy.runtimes.registry import canonical

        if value.strip().lower() == "all":
            return None
        if bench:
            from stn_deploy.bench.plan import BENCH_ALIASES

            def name_of(item: str) -> str:
                low = item.strip().lower()
                return low if low in BENCH_ALIASES else canonical(item)

            return ",".join(unique_names(value, name_of, name))
        return ",".join(unique_names(value, canonical, name))

    return check


def runtimes_option(help: str, bench: bool = False) -> Callable:
    """``--runtimes`` (hidden deprecated ``--providers``): comma-separated runtime names."""
    cb = validated(_runtimes(bench))

    def deco(f):
        f = alias("--providers", target="runtimes", use="--runtimes", default=None, callback=cb)(f)
        return click.option("--runtimes", default=None, callback=cb, metavar="NAMES", help=help)(f)

    return deco


def _batch_sizes(value: str, name: str) -> tuple[int, ...]:
    from stn_deploy.bench.plan import check_batch_sizes

    return tuple(check_batch_sizes(value))


def batch_sizes_option(default: str, help: str = "Comma-separated batch sizes.") -> Callable:
    return click.option(
        "--batch-sizes",
        default=default,
        show_default=True,
        callback=validated(_batch_sizes),
        help=help,
    )


def _compare(value: str, name: str) -> tuple[str, ...]:
    from stn_deploy.bench.plan import check_compare

    return () if value.strip().lower() == "none" else tuple(check_compare(value))


def compare_option(default: str | None, help: str) -> Callable:
    """``--compare torch,stock-export`` or ``none``: the baselines, as a tuple."""
    return click.option(
        "--compare",
        default=default,
        show_default=default is not None,
        callback=validated(_compare),
        help=help + " ('none': no baselines).",
    )


def precision_option(default: str, allowed: tuple[str, ...], help: str) -> Callable:
    def check(value: str, name: str) -> str:
        from stn_deploy.precision.convert import check_precision

        return check_precision(value, allowed)

    return click.option(
        "--precision",
        default=default,
        show_default=True,
        metavar="|".join(allowed),
        callback=validated(check),
        help=help,
    )


def threads_option(help: str = "Intra-op threads [default: each runtime's].") -> Callable:
    return click.option("--threads", type=click.IntRange(1), default=None, help=help)


def seed_option(default: int | None = 0, help: str = "Random seed.") -> Callable:
    return click.option(
        "--seed", type=int, default=default, show_default=default is not None, help=help
    )


def opset_option(help: str) -> Callable:
    return click.option("--opset", type=click.IntRange(11), default=None, help=help)


def lowering_option(help: str, choices: tuple[str, ...] = LOWERINGS) -> Callable:
    """``--lowering`` (hidden deprecated ``--sampler``): how grid sampling reaches the file."""
    ty = click.Choice(choices)

    def deco(f):
        f = alias("--sampler", target="lowering", use="--lowering", type=ty, default=None)(f)
        return click.option("--lowering", type=ty, default=None, help=help)(f)

    return deco


def progress_option(
    help: str = "Progress bars on stderr [default: when stderr is a terminal].",
) -> Callable:
    return click.option("--progress/--no-progress", default=None, help=help)


def duration_option(max_duration: float, default: float | None, help: str) -> Callable:
    """``--duration`` seconds of timed calls per row (run's old ``--bench-duration`` too)."""
    ty = click.FloatRange(0.01, max_duration)

    def deco(f):
        f = alias("--bench-duration", target="duration", use="--duration", type=ty, default=None)(f)
        return click.option(
            "--duration", type=ty, default=default, show_default=default is not None, help=help
        )(f)

    return deco


def json_option(help: str = "Print JSON instead of a table.") -> Callable:
    return click.option("--json", "as_json", is_flag=True, help=help)


cache_dir_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where MNIST is cached [default: $STN_DEPLOY_CACHE or ~/.cache/stn-deploy].",
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
limit_train_option = click.option(
    "--limit-train",
    type=click.IntRange(1),
    default=None,
    help="Use only the first N training images.",
)
limit_test_option = click.option(
    "--limit-test", type=click.IntRange(1), default=None, help="Use only the first N test images."
)


def distortion_option(default: str | None, help: str) -> Callable:
    from stn_deploy.data.distortions import CANVAS

    return click.option(
        "--distortion",
        default=default,
        show_default=default is not None,
        type=click.Choice(list(CANVAS), case_sensitive=False),
        help=help,
    )


# --------------------------------------------------------------------------- model source
TRUST_FACTORY_HELP = (
    "Load a checkpoint whose config names a module:callable or file.py:callable factory, "
    "which runs that code (without it only zoo checkpoints load, or ones whose factory you "
    "name yourself as the model)."
)
WEIGHTS_HELP = "Trained weights (a checkpoint file) for a zoo-name or factory {}."
INPUT_SHAPE_HELP = (
    "C,H,W input of a module:callable factory {} (e.g. 1,42,42); several inputs: one shape "
    "per input separated by ';' (e.g. \"3,64,64;6\")."
)


def model_kind(source: str) -> str:
    """'checkpoint', 'factory' or 'zoo' (an unknown name is left to the loader to reject)."""
    p = Path(source)
    if p.suffix in (".pt", ".pth") or p.is_file():
        return "checkpoint"
    return "factory" if ":" in source else "zoo"


def check_model_source(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    trust_factory: bool = False,
    what: str = "MODEL",
) -> None:
    """The options that go with a torch model: one that does not apply is a usage error."""
    kind = model_kind(model)
    if weights is not None and kind == "checkpoint":
        raise usage_error(
            f"--weights does not apply: {what} {model} is a checkpoint file with its own weights"
        )
    if input_shape is not None and kind != "factory":
        raise usage_error(
            f"--input-shape does not apply: {what} {model} is a {kind}"
            + (" file" if kind == "checkpoint" else " name")
            + " with its own input shape (it is for a module:callable factory)"
        )
    if input_shape is not None and weights is not None:
        raise usage_error(
            "--input-shape does not apply with --weights: the checkpoint has its own input shape"
        )
    if trust_factory and kind != "checkpoint" and weights is None:
        raise usage_error(
            f"--trust-factory does not apply: {what} {model} is not a checkpoint and no "
            "--weights are given"
        )


def model_argument(default: str | None = None, old_option: bool = False) -> Callable:
    """The positional ``MODEL`` (a torch model). With ``default`` it is optional; with
    ``old_option`` the old ``--model NAME`` spelling is a hidden deprecated alias of it."""

    def deco(f):
        if old_option:
            f = alias("--model", target="model", use="the positional MODEL", default=None)(f)
        if default is None and not old_option:
            return click.argument("model")(f)  # (an explicit default=None would satisfy it)
        return click.argument("model", required=False, default=default)(f)

    return deco


def weights_options(whose: str, weights_alias: bool) -> Callable:
    """``--weights`` (with the old ``--checkpoint`` as a deprecated alias), ``--input-shape``
    and ``--trust-factory`` for the torch model ``whose`` names."""
    path = click.Path(dir_okay=False, path_type=Path)

    def deco(f):
        f = click.option("--trust-factory", is_flag=True, help=TRUST_FACTORY_HELP)(f)
        f = click.option("--input-shape", default=None, help=INPUT_SHAPE_HELP.format(whose))(f)
        if weights_alias:
            f = alias("--checkpoint", target="weights", use="--weights", type=path, default=None)(f)
        return click.option("--weights", type=path, default=None, help=WEIGHTS_HELP.format(whose))(
            f
        )

    return deco


def model_source(default: str | None = None, old_option: bool = False) -> Callable:
    """MODEL + --weights/--input-shape/--trust-factory (train has its own: see train.py)."""

    def deco(f):
        f = weights_options("MODEL", weights_alias=True)(f)
        return model_argument(default, old_option)(f)

    return deco


def reference_options(help: str) -> Callable:
    """``--reference MODEL`` (old ``--checkpoint``/``--factory`` as deprecated aliases) with
    its ``--weights``, ``--input-shape`` and ``--trust-factory``: the torch model an ONNX file
    is compared with."""

    def deco(f):
        f = weights_options("--reference", weights_alias=False)(f)
        f = alias("--factory", target="reference", use="--reference", default=None)(f)
        f = alias("--checkpoint", target="reference", use="--reference", default=None)(f)
        return click.option("--reference", metavar="MODEL", default=None, help=help)(f)

    return deco


def load_reference(
    reference: str | None,
    weights: Path | None,
    input_shape: str | None,
    trust_factory: bool,
    *,
    input_shape_alone: bool = False,
):
    """Check the reference options (usage errors) and load the torch model, or None.
    ``input_shape_alone``: ``--input-shape`` has a meaning without ``--reference`` (bench)."""
    if reference is None:
        for flag, value in (("--weights", weights), ("--trust-factory", trust_factory)):
            if value:
                raise usage_error(f"{flag} does not apply without --reference")
        if input_shape is not None and not input_shape_alone:
            raise usage_error("--input-shape does not apply without a factory --reference")
        return None
    if input_shape_alone and model_kind(reference) != "factory":
        input_shape_for_model = None  # bench: it overrides the timed input shape only
        check_model_source(reference, weights, None, trust_factory, what="--reference")
    else:
        input_shape_for_model = input_shape
        check_model_source(reference, weights, input_shape, trust_factory, what="--reference")
    try:
        from stn_deploy.pytorch.models.loading import load_model
    except ImportError:
        raise StnDeployError(
            "--reference needs torch, which is not installed: leave it out to use the golden "
            "bundle (pip install 'stn-deploy[torch]')"
        ) from None
    return load_model(
        reference,
        checkpoint=weights,
        input_shape=input_shape_for_model,
        trust_factory=trust_factory,
    )
