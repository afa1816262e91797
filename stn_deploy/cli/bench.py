"""The ``stn-deploy bench`` command (added to the main group in :mod:`stn_deploy.cli`).

Runs where torch is not installed: the input shape comes from the golden bundle beside the model
(or ``--input-shape``); only ``--compare``/``--reference`` need torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from stn_deploy.cli.options import (
    Command,
    alias,
    batch_sizes_option,
    compare_option,
    duration_option,
    json_option,
    load_reference,
    progress_option,
    reference_options,
    runtimes_option,
    threads_option,
    usage_error,
)
from stn_deploy.errors import StnDeployError
from stn_deploy.timing import MAX_DURATION, MAX_TIMED_CALLS, check_budget


def _check_args(
    runtimes: str | None,
    compare: tuple[str, ...] | None,
    reference: str | None,
    warmup: int,
    iters: int | None,
    duration: float | None,
) -> tuple[list[str], list[str]]:
    """The runtime names and baselines; usage errors for a bad budget or a baseline without
    ``--reference``."""
    from stn_deploy.bench.plan import runtime_names

    try:
        check_budget(warmup, iters, duration)
    except StnDeployError as exc:
        raise usage_error(exc) from None
    names = runtime_names(runtimes)
    baselines = list(compare or ())
    if (baselines or "torch" in names) and reference is None:
        which = f"--compare {baselines[0]}" if baselines else "--runtimes torch"
        raise usage_error(f"{which} needs the torch model: give --reference")
    return names, baselines


def _write_outputs(
    d: dict, json_out: Path | None, markdown: Path | None, plot: Path | None
) -> list[str]:
    """Write the JSON, Markdown and plot files asked for; returns their paths."""
    written: list[str] = []
    if json_out is not None:
        from stn_deploy.io.atomic import write_text_atomic

        write_text_atomic(json_out, json.dumps(d, indent=2) + "\n")
        written.append(str(json_out))
    if markdown is not None:
        from stn_deploy.bench import write_markdown

        write_markdown(d, markdown)
        written.append(str(markdown))
    if plot is not None:
        from stn_deploy.report.latency_plot import save_latency_plot

        save_latency_plot(d, plot)
        written.append(str(plot))
    return written


def _check_outputs(paths: list[Path | None], plot: Path | None) -> None:
    """Fail before benchmarking when a report cannot be written (or plotted)."""
    from stn_deploy.io.atomic import ensure_writable_dir

    for p in paths:
        if p is not None:
            if p.is_dir():
                raise StnDeployError(f"report path {p} is a directory, expected a file name")
            ensure_writable_dir(p.parent)
    if plot is not None:
        from stn_deploy.report.mpl import pyplot

        pyplot()


@click.command("bench", cls=Command)
@click.argument("model", metavar="ONNX", type=click.Path(dir_okay=False, path_type=Path))
@runtimes_option(
    "Runtimes, comma-separated: cpu, cuda, tensorrt (ORT providers), openvino, "
    "openvino-bf16 (OpenVINO in its default bf16 on CPUs that have it), litert, ncnn, mnn, "
    "iree (converted first), torch "
    "[default: every available one but the slow reference].",
    bench=True,
)
@batch_sizes_option("1,8,64,256")
@click.option(
    "--warmup",
    type=int,
    default=5,
    show_default=True,
    help=f"Untimed calls per row (at most {MAX_TIMED_CALLS:,}).",
)
@click.option(
    "--iters", type=int, default=None, help=f"Timed calls per row (at most {MAX_TIMED_CALLS:,})."
)
@duration_option(
    MAX_DURATION,
    None,
    f"Seconds of timed calls per row, at most {MAX_DURATION:g} s [default without --iters: "
    "about 1 s, 5-1000 calls].",
)
@threads_option()
@click.option(
    "--opt-level",
    type=click.Choice(["disable", "basic", "extended", "all"]),
    default=None,
    help="ONNX Runtime graph optimisation level [default: all].",
)
@click.option(
    "--io-binding",
    is_flag=True,
    help="Also time ORT GPU providers with device-resident inputs and outputs (IO binding).",
)
@click.option(
    "--cuda-graph", is_flag=True, help="Also time ORT CUDA/TensorRT with a captured CUDA graph."
)
@compare_option(
    None,
    "Baselines in the same run: torch (eager), stock-export (stock torch.onnx.export "
    "of the same model); need --reference",
)
@reference_options(
    "The torch model ONNX was exported from, for --compare, the torch runtime and "
    "--lowering-sweep: a checkpoint file, a zoo name with --weights, or a module:callable "
    "factory with --input-shape (which also sets the timed input shape: C,H,W, or one shape "
    "per input separated by ';' (\"3,64,64;6\"), default the reference's, else the golden "
    "bundle's)."
)
@click.option(
    "--lowering-sweep",
    is_flag=True,
    help="Also bench every other grid-sample lowering of the model (exported from "
    "--reference, else rewritten from ONNX).",
)
@alias("--sampler-sweep", target="lowering_sweep", use="--lowering-sweep", is_flag=True)
@click.option(
    "--interleave/--no-interleave",
    default=False,
    show_default=True,
    help="At each batch size the routes take ~20 ms turns instead of running one after the "
    "other (runtimes' spinning worker threads then slow each other: for experiments only).",
)
@click.option(
    "--fail-on-error",
    is_flag=True,
    help="A runtime that cannot run here or fails is an error, not a skip or failure row.",
)
@alias("--strict", target="fail_on_error", use="--fail-on-error", is_flag=True)
@json_option("Print the result as JSON, not a table.")
@click.option(
    "--json-out",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the JSON result to this file.",
)
@click.option(
    "--markdown",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write a Markdown report to this file.",
)
@click.option(
    "--plot",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write a PNG of latency vs batch size (needs matplotlib).",
)
@progress_option()
def bench_cmd(
    model: Path,
    runtimes: str | None,
    batch_sizes: tuple[int, ...],
    warmup: int,
    iters: int | None,
    duration: float | None,
    threads: int | None,
    opt_level: str | None,
    io_binding: bool,
    cuda_graph: bool,
    compare: tuple[str, ...] | None,
    reference: str | None,
    weights: Path | None,
    input_shape: str | None,
    trust_factory: bool,
    lowering_sweep: bool,
    interleave: bool,
    fail_on_error: bool,
    as_json: bool,
    json_out: Path | None,
    markdown: Path | None,
    plot: Path | None,
    progress: bool | None,
) -> None:
    """Latency of an ONNX model across runtimes and batch sizes, with baselines in the same run.

    Statistics per runtime x batch size: mean, p50, p90, p99, min, max, std (µs per call) and
    images/s. A runtime that cannot run here (e.g. cuda without a GPU) gets a skip row saying
    why; a model with a fixed batch runs its own size only.

    Example: stn-deploy bench exported/mnist-affine-native.onnx --batch-sizes 1,64
    --compare torch,stock-export --reference exported/mnist-affine-rts.pt --plot latency.png
    """
    from stn_deploy.bench import bench_model, format_table

    # cheap checks first: nothing is loaded or timed when an argument is wrong
    names, baselines = _check_args(runtimes, compare, reference, warmup, iters, duration)
    _check_outputs([json_out, markdown, plot], plot)
    loaded = load_reference(reference, weights, input_shape, trust_factory, input_shape_alone=True)
    side = None
    if loaded is not None:  # the torch side, loaded above: bench itself never imports it
        from stn_deploy.pytorch import torch_side

        side = torch_side(loaded)
    result = bench_model(
        model,
        runtimes=names,
        batch_sizes=batch_sizes,
        warmup=warmup,
        iters=iters,
        duration=duration,
        threads=threads,
        opt_level=opt_level,
        io_binding=io_binding,
        cuda_graph=cuda_graph,
        compare=baselines,
        torch_side=side,
        input_shape=input_shape,
        sampler_sweep=lowering_sweep,
        progress=progress,
        strict=fail_on_error,
        interleave=interleave,
    )
    d = result.to_dict()
    written = _write_outputs(d, json_out, markdown, plot if result.ok_rows() else None)
    click.echo(json.dumps(d, indent=2) if as_json else format_table(d))
    if not result.ok_rows():
        click.echo("note: nothing was measured (every row was skipped or failed)", err=True)
    if written and not as_json:
        click.echo(f"wrote {', '.join(written)}")
