"""``stn-deploy run``: train (or load) -> export -> verify -> bench -> one report folder.

The folder is built beside its final place and renamed into it at the end, so a run that fails
half-way leaves no partial report; one run at a time writes a given folder (a lock file beside
it), and nothing this run did not make is removed (see :mod:`stn_deploy.io.folders`)::

    OUT/report.md, OUT/report.json      what was done, the figures, the verdict
    OUT/rectification.png               inputs and what the STN made of them
    OUT/latency.png, OUT/errors.png     latency vs batch size; |torch - runtime| histogram
    OUT/train/                          checkpoint.pt + metrics.json (when trained here)
    OUT/model/NAME.onnx, NAME.io.npz    the export and its golden bundle
    OUT/verify.json, OUT/bench.json     the full verify and bench results
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stn_deploy.errors import StnDeployError, one_line
from stn_deploy.io.atomic import (
    ensure_writable_dir,
    missing_dirs,
    remove_empty_dirs,
    write_text_atomic,
)
from stn_deploy.io.folders import clean_stale, new_work_folder, place_folder
from stn_deploy.io.locks import destination_lock

DEFAULT_BATCH_SIZES = (1, 8, 64, 256)


@dataclass
class RunOptions:
    """What ``stn-deploy run`` does; the defaults finish in a few minutes on 2 CPU cores."""

    model: str = "mnist-affine"  # zoo name (trained here), checkpoint file, or module:callable
    checkpoint: str | None = None  # weights for a zoo name: then nothing is trained
    input_shape: str | None = None  # C,H,W of a module:callable
    trust_factory: bool = False  # load a checkpoint that names a factory (code) all the same
    distortion: str = "rts"
    epochs: int = 5
    max_minutes: float | None = None
    seed: int = 0
    synthetic: bool = False  # generated digits instead of MNIST (tests, offline demos)
    data_dir: str | None = None  # train on the four IDX files here instead of the cache
    limit_train: int | None = None
    limit_test: int | None = None
    target: str = "ort-cpu"
    sampler: str | None = None  # None: the target's lowering
    precision: str = "fp32"  # fp16 / int8 (int8 calibrates on the MNIST cache)
    providers: str | None = None  # verify + bench runtimes; None: all available
    verify_count: int = 32  # images per generated input set (the reference evaluator is slow)
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    bench_duration: float = 0.5  # seconds per runtime x batch size
    compare: tuple[str, ...] = ("torch", "stock-export")
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def trains(self) -> bool:
        """Whether the model is trained here (a zoo name without weights) rather than loaded."""
        return self.checkpoint is None and ":" not in self.model and not Path(self.model).is_file()

    def check_data_dir(self) -> None:
        """``data_dir`` is read by training only, and not with generated digits."""
        if self.data_dir is None:
            return
        if self.synthetic:
            raise StnDeployError(
                "give {data_dir} (MNIST IDX files) or {synthetic=True}, not both",
                param=("data_dir", "synthetic"),
            )
        if not self.trains:
            raise StnDeployError(
                "{data_dir} applies only when {model} is trained here (a zoo name without "
                "{checkpoint})",
                param=("data_dir", "model", "checkpoint"),
            )


def _plot(fn, *args) -> str | None:
    """Draw a plot; without matplotlib say so in the report instead of failing the run."""
    try:
        fn(*args)
    except StnDeployError as exc:
        return str(exc)
    return None


def run_pipeline(
    opts: RunOptions,
    out: str | Path,
    *,
    force: bool = False,
    cache_dir: Path | None = None,
    progress: bool | None = None,
    log=print,
) -> RunReport:
    """Run every step into ``out`` and return the :class:`RunReport` (``to_dict()``:
    ``out/report.json``).

    ``report.passed`` is False when any runtime failed verification; the folder is written
    either way (the report says what failed), but nothing is written when a step errors.
    """
    out = Path(out)
    if out.exists() and not force:
        raise StnDeployError(
            f"{out} already exists: pass {{force=True}} to replace it", param="force"
        )
    if out.exists() and not out.is_dir():
        raise StnDeployError(f"{out} exists and is not a directory")
    parent = out.parent if str(out.parent) else Path(".")
    from stn_deploy.export.targets import get_target
    from stn_deploy.runtimes import parse_names

    parse_names(opts.providers)  # unknown names fail now, not after training
    get_target(opts.target)
    from stn_deploy.precision.convert import check_precision

    check_precision(opts.precision)
    from stn_deploy.bench.plan import check_batch_sizes
    from stn_deploy.timing import check_budget

    check_batch_sizes(opts.batch_sizes)  # as bench will, but before training
    check_budget(0, None, opts.bench_duration)
    if opts.input_shape is not None and ":" not in opts.model:  # a zoo name or checkpoint file
        raise StnDeployError(
            "{input_shape} applies only to a module:callable {model}",
            param=("input_shape", "model"),
        )
    opts.check_data_dir()
    made = missing_dirs(parent)
    ensure_writable_dir(parent)  # created if missing, as train does
    try:
        with destination_lock(out):  # one run per --out at a time
            report = _build(opts, out, force, cache_dir, progress, log)
    except BaseException:
        remove_empty_dirs(made)
        raise
    from stn_deploy.report.run_report import bench_headline

    for line in bench_headline(report.bench):
        log(line.replace("**", ""))
    log(f"verify: {'passed' if report.passed else 'FAILED'}; report: {out / 'report.md'}")
    return report


def _build(opts: RunOptions, out: Path, force: bool, cache_dir, progress, log) -> RunReport:
    """Under ``out``'s lock: undo what killed runs left, run every step in a work folder beside
    ``out`` and put it in place (:mod:`stn_deploy.io.folders`); the work folder is removed on
    any error, and an error names the final paths, not the work folder's."""
    for line in clean_stale(out):
        log(line)
    if os.path.lexists(out) and not force:
        raise StnDeployError(
            f"{out} already exists: pass {{force=True}} to replace it", param="force"
        )
    work = new_work_folder(out)
    try:
        report = _run(opts, work, cache_dir, progress, log)
        _write_reports(report.to_dict(), work, out)
        place_folder(work, out, replace=force)
    except StnDeployError as exc:
        raise StnDeployError(
            exc.template.replace(str(work), str(out)), param=exc.params
        ) from exc.__cause__
    except OSError as exc:
        where = str(exc.filename if exc.filename is not None else out)
        if exc.filename is None or where.startswith(str(work)):
            where = f"cannot write {where.replace(str(work), str(out))}"
        raise StnDeployError(f"{where}: {exc.strerror or one_line(exc)}") from exc
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return report


@dataclass
class RunReport:
    """What ``stn-deploy run`` did; ``to_dict()`` is ``report.json`` (``rectification_png`` is
    left out when no picture was drawn)."""

    options: dict[str, Any]
    steps: dict[str, Any] = field(default_factory=dict)  # per step: seconds and what it made
    notes: list[str] = field(default_factory=list)
    rectification_png: str | None = None
    model: dict[str, Any] = field(default_factory=dict)  # arch, source
    verify: dict[str, Any] = field(default_factory=dict)  # the verify JSON
    errors_png: str | None = None
    bench: dict[str, Any] = field(default_factory=dict)  # the bench JSON
    latency_png: str | None = None
    passed: bool = False  # every runtime passed verification
    machine: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.rectification_png is None:
            del d["rectification_png"]
        return d


@dataclass
class _Step:
    """What every step of a run shares."""

    opts: RunOptions
    work: Path
    cache_dir: Any
    progress: bool | None
    log: Any
    report: RunReport


def _run(opts, work: Path, cache_dir, progress, log) -> RunReport:
    from stn_deploy.bench.machine import machine_description

    t0 = time.perf_counter()
    ctx = _Step(opts, work, cache_dir, progress, log, RunReport(options=asdict(opts)))
    from stn_deploy.pytorch.side import torch_side

    loaded = _train_or_load(ctx)  # 1. train or load
    onnx_path = _export_step(ctx, loaded)  # 2. export with the target's lowering
    side = torch_side(loaded)  # the torch model as verify and bench take it
    passed = _verify_step(ctx, side, onnx_path)  # 3. verify against torch on every runtime
    _bench_step(ctx, side, onnx_path)  # 4. bench with the torch baselines in the same run
    ctx.report.passed = passed
    ctx.report.machine = machine_description()
    ctx.report.seconds = time.perf_counter() - t0
    return ctx.report


def _train_or_load(ctx: _Step):
    """The model: trained here (a zoo name without weights) or loaded."""
    from stn_deploy.pytorch.models.loading import load_model

    opts, work, report = ctx.opts, ctx.work, ctx.report
    t = time.perf_counter()
    if opts.trains:
        from stn_deploy.pytorch.train import train
        from stn_deploy.pytorch.train_options import TrainOptions

        topts = TrainOptions(
            model=opts.model,
            distortion=opts.distortion,
            epochs=opts.epochs,
            seed=opts.seed,
            synthetic=opts.synthetic,
            data_dir=opts.data_dir,
            limit_train=opts.limit_train,
            limit_test=opts.limit_test,
            max_minutes=opts.max_minutes,
            threads=opts.threads,
        )
        metrics = train(
            topts, work / "train", cache_dir=ctx.cache_dir, progress=ctx.progress, log=ctx.log
        )
        loaded = load_model(str(work / "train" / "checkpoint.pt"))
        report.steps["train"] = {
            "seconds": time.perf_counter() - t,
            "epochs": metrics.epochs_run,
            "test_error": metrics.final["test_error"],
            "distortion": opts.distortion,
            "data": metrics.data,
            "checkpoint": "train/checkpoint.pt",
        }
        if metrics.picture:
            shutil.copyfile(work / "train" / metrics.picture, work / "rectification.png")
            report.rectification_png = "rectification.png"
    else:
        loaded = load_model(
            opts.model,
            checkpoint=opts.checkpoint,
            input_shape=opts.input_shape,
            trust_factory=opts.trust_factory,
        )
        report.steps["load"] = {"source": loaded.source, "seconds": time.perf_counter() - t}
        if _save_rectification(loaded, work / "rectification.png", opts, ctx.cache_dir):
            report.rectification_png = "rectification.png"
    report.model = {"arch": loaded.config.arch, "source": loaded.source}
    return loaded


def _export_step(ctx: _Step, loaded) -> Path:
    """The ONNX file (with its golden bundle) in ``work/model``."""
    from stn_deploy.pytorch.exporter import export_model

    opts, t = ctx.opts, time.perf_counter()
    (ctx.work / "model").mkdir()
    precision_options = {}
    if opts.precision == "int8":
        from stn_deploy.precision.calibration import CalibrationSpec

        # calibrate on what the model was trained on: generated digits for --synthetic runs
        precision_options["calibration"] = CalibrationSpec(seed=opts.seed, synthetic=opts.synthetic)
    summary = export_model(
        loaded,
        ctx.work / "model",
        target=opts.target,
        lowering=opts.sampler,
        precision=opts.precision,
        precision_options=precision_options,
        seed=opts.seed,
    )
    onnx_path = Path(summary.path)
    ctx.report.steps["export"] = {
        "seconds": time.perf_counter() - t,
        "file": f"model/{onnx_path.name}",
        "target": summary.target,
        "lowering": summary.lowering,
        "precision": opts.precision,
        "opset": summary.opset,
        "nodes": summary.nodes,
        "bytes": summary.bytes,
    }
    ctx.log(f"exported {onnx_path.name} ({summary.lowering}, opset {summary.opset})")
    return onnx_path


def _verify_step(ctx: _Step, side, onnx_path: Path) -> bool:
    """Verify against torch (``side``, a TorchSide) on every runtime; whether all passed."""
    from stn_deploy.report.error_plot import save_error_histogram
    from stn_deploy.verify import verify_model

    opts, report, t = ctx.opts, ctx.report, time.perf_counter()
    vrep = verify_model(
        onnx_path,
        torch_side=side,
        runtimes=opts.providers,
        count=opts.verify_count,
        seed=opts.seed,
        threads=opts.threads,
    )
    vdict = vrep.to_dict()
    report.steps["verify"] = {"seconds": time.perf_counter() - t, "passed": vrep.passed}
    report.verify = vdict
    note = _plot(save_error_histogram, vdict, ctx.work / "errors.png")
    report.errors_png = None if note else "errors.png"
    if note:
        report.notes.append(f"error histogram not drawn: {note}")
    ctx.log(
        f"verify: {'passed' if vrep.passed else 'FAILED'} ({', '.join(r.name + ' ' + r.status for r in vrep.runtimes)})"
    )
    return vrep.passed


def _bench_step(ctx: _Step, side, onnx_path: Path) -> None:
    """Bench with torch (``side``, a TorchSide, and its stock export) as baselines in the same
    run."""
    from stn_deploy.bench import bench_model
    from stn_deploy.report.latency_plot import save_latency_plot

    opts, report, t = ctx.opts, ctx.report, time.perf_counter()
    compare = tuple(opts.compare)
    if "stock-export" in compare and not _has("onnxscript"):
        compare = tuple(c for c in compare if c != "stock-export")
        report.notes.append(
            "stock-export baseline skipped: torch.onnx.export(dynamo=True) needs onnxscript "
            "(pip install onnxscript)"
        )
    bres = bench_model(
        onnx_path,
        runtimes=opts.providers,
        batch_sizes=tuple(opts.batch_sizes),
        duration=opts.bench_duration,
        threads=opts.threads,
        compare=compare,
        torch_side=side,
        progress=ctx.progress if ctx.progress is not None else True,
    )
    bdict = bres.to_dict()
    report.steps["bench"] = {"seconds": time.perf_counter() - t}
    report.bench = bdict
    note = _plot(save_latency_plot, bdict, ctx.work / "latency.png")
    report.latency_png = None if note else "latency.png"
    if note:
        report.notes.append(f"latency plot not drawn: {note}")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _save_rectification(loaded, path: Path, opts: RunOptions, cache_dir) -> bool:
    """The tutorial picture for a loaded model with an STN, on the images it was trained on."""
    import torch

    from stn_deploy.pytorch.exporter import golden_inputs
    from stn_deploy.pytorch.train import Normalizer
    from stn_deploy.report.png import save_rectification_png

    if not hasattr(loaded.model, "rectify") or loaded.input_shape[0] != 1:
        return False
    x, _ = golden_inputs(loaded, 32, opts.seed)
    norm = Normalizer.from_config(loaded.config.normalization)
    with torch.inference_mode():
        rect = loaded.model.eval().rectify(torch.from_numpy(x))
    save_rectification_png(norm.display(torch.from_numpy(x))[:, 0], norm.display(rect)[:, 0], path)
    return True


def _write_reports(report: dict[str, Any], work: Path, out: Path) -> None:
    """report.json/.md, verify.json, bench.json, with paths as they will be after the rename."""
    from stn_deploy.report.run_report import format_run_report

    def final(text: str) -> str:
        return text.replace(str(work), str(out))

    for name, value in (("verify", report["verify"]), ("bench", report["bench"])):
        write_text_atomic(work / f"{name}.json", final(json.dumps(value, indent=2)))
    report = json.loads(final(json.dumps(report, default=str)))
    write_text_atomic(work / "report.json", json.dumps(report, indent=2))
    write_text_atomic(work / "report.md", format_run_report(report))
