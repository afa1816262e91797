"""The ``stn-deploy bench`` command (added to the main group in :mod:`stn_deploy.cli`).

Runs where torch is not installed: the input shape comes from the golden bundle beside the model
(or ``--input-shape``); only ``--compare``/``--checkpoint``/``--factory`` need torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from stn_deploy.bench.timer import MAX_DURATION, MAX_TIMED_CALLS, check_budget
from stn_deploy.cli.trust import trust_factory_option
from stn_deploy.errors import StnDeployError


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


@click.command("bench")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--providers",
    default=None,
    help="Runtimes, comma-separated: cpu, cuda, tensorrt (ORT providers), openvino, "
    "openvino-bf16 (OpenVINO in its default bf16 on CPUs that have it), torch "
    "[default: every available one but the slow reference].",
)
@click.option(
    "--batch-sizes", default="1,8,64,256", show_default=True, help="Comma-separated batch sizes."
)
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
@click.option(
    "--duration",
    type=float,
    default=None,
    help=f"Seconds of timed calls per row, at most {MAX_DURATION:g} s [default without --iters: "
    "about 1 s, 5-1000 calls].",
)
@click.option(
    "--threads", type=int, default=None, help="Intra-op threads [default: each runtime's]."
)
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
@click.option(
    "--compare",
    default=None,
    help="Baselines in the same run: torch (eager), stock-export (stock torch.onnx.export "
    "of the same model); need --checkpoint or --factory.",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Checkpoint of the model, for --compare and --sampler-sweep.",
)
@click.option(
    "--factory", default=None, help="module:callable building the torch model (with --input-shape)."
)
@click.option(
    "--input-shape",
    default=None,
    help="C,H,W of one input [default: the checkpoint's, else the golden bundle's].",
)
@trust_factory_option
@click.option(
    "--sampler-sweep",
    is_flag=True,
    help="Also bench every other grid-sample lowering of the model (exported from "
    "--checkpoint/--factory, else rewritten from MODEL).",
)
@click.option(
    "--interleave/--no-interleave",
    default=False,
    show_default=True,
    help="At each batch size the routes take ~20 ms turns instead of running one after the "
    "other (runtimes' spinning worker threads then slow each other: for experiments only).",
)
@click.option("--strict", is_flag=True, help="Fail instead of writing a skip or failure row.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON, not a table.")
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
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr [default: when stderr is a terminal].",
)
def bench_cmd(
    model: Path,
    providers: str | None,
    batch_sizes: str,
    warmup: int,
    iters: int | None,
    duration: float | None,
    threads: int | None,
    opt_level: str | None,
    io_binding: bool,
    cuda_graph: bool,
    compare: str | None,
    checkpoint: Path | None,
    factory: str | None,
    input_shape: str | None,
    trust_factory: bool,
    sampler_sweep: bool,
    interleave: bool,
    strict: bool,
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
    --compare torch,stock-export --checkpoint exported/mnist-affine-rts.pt --plot latency.png
    """
    from stn_deploy.bench import bench_model, format_table, write_markdown
    from stn_deploy.bench.plan import check_batch_sizes, check_compare, runtime_names

    # cheap checks first: nothing is loaded or timed when an argument is wrong
    check_batch_sizes(batch_sizes)
    check_budget(warmup, iters, duration)
    names = runtime_names(providers)
    baselines = check_compare(compare)
    if checkpoint is not None and factory is not None:
        raise StnDeployError("give --checkpoint or --factory, not both")
    wants_torch = baselines or "torch" in names
    if wants_torch and checkpoint is None and factory is None:
        which = baselines[0] if baselines else "torch"
        raise StnDeployError(
            f"--compare {which} needs the torch model: give --checkpoint or --factory"
        )
    _check_outputs([json_out, markdown, plot], plot)
    loaded = None
    if checkpoint is not None or factory is not None:
        try:
            from stn_deploy.pytorch.models.loading import load_model
        except ImportError:
            raise StnDeployError(
                "--checkpoint/--factory need torch; without it bench runs the ONNX model only"
            ) from None
        loaded = (
            load_model(str(checkpoint), trust_factory=trust_factory)
            if checkpoint is not None
            else load_model(factory, input_shape=input_shape)
        )
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
        loaded=loaded,
        input_shape=input_shape,
        sampler_sweep=sampler_sweep,
        progress=progress,
        strict=strict,
        interleave=interleave,
    )
    d = result.to_dict()
    written: list[str] = []
    if json_out is not None:
        from stn_deploy.io.atomic import write_text_atomic

        write_text_atomic(json_out, json.dumps(d, indent=2) + "\n")
        written.append(str(json_out))
    if markdown is not None:
        write_markdown(d, markdown)
        written.append(str(markdown))
    if plot is not None and result.ok_rows():
        from stn_deploy.report.latency_plot import save_latency_plot

        save_latency_plot(d, plot)
        written.append(str(plot))
    click.echo(json.dumps(d, indent=2) if as_json else format_table(d))
    if not result.ok_rows():
        click.echo("note: nothing was measured (every row was skipped or failed)", err=True)
    if written and not as_json:
        click.echo(f"wrote {', '.join(written)}")
