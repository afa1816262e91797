"""Training loop: progress, per-epoch evaluation, atomic checkpoints, resume, metrics and picture.

Deterministic for a given seed on CPU: the distorted training set of each epoch, the shuffle
order and the torch RNG (dropout) all derive from ``seed`` and the epoch number, and
``resume`` restores the optimiser, schedule and RNG state so a resumed run continues exactly
as an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import stn_deploy
from stn_deploy.data import (
    CANVAS,
    MNIST_MEAN,
    MNIST_STD,
    load_mnist,
    make_split,
    normalise,
    synthetic_mnist,
)
from stn_deploy.errors import StnDeployError
from stn_deploy.io.atomic import ensure_writable_dir, write_text_atomic
from stn_deploy.io.folders import removes_new_folder
from stn_deploy.pytorch.models.checkpoint import save_checkpoint
from stn_deploy.pytorch.models.loading import (
    LoadedModel,
    load_checkpoint,
    load_factory,
    model_from_config,
    zoo_config,
)
from stn_deploy.pytorch.models.stn import SpatialTransformer
from stn_deploy.pytorch.models.zoo import ZOO, count_parameters
from stn_deploy.pytorch.train_options import DEFAULT_EPOCHS, TrainOptions
from stn_deploy.report.png import save_rectification_png

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
PICTURE = "rectification.png"


@dataclass
class Normalizer:
    """The input normalisation a model's config prescribes: ``(pixels - mean) / std`` per channel
    (:func:`stn_deploy.data.normalise`, as torch tensors)."""

    mean: np.ndarray  # (C, 1, 1)
    std: np.ndarray

    @classmethod
    def from_config(cls, normalization: dict[str, list[float]]) -> Normalizer:
        shape = (-1, 1, 1)
        return cls(
            np.asarray(normalization["mean"], np.float32).reshape(shape),
            np.asarray(normalization["std"], np.float32).reshape(shape),
        )

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        """``(N, C, H, W)`` 0..1 pixels -> the normalised model input."""
        return torch.from_numpy(normalise(x, self.mean.ravel(), self.std.ravel()))

    def display(self, x: torch.Tensor) -> np.ndarray:
        """Back to 0..1 pixels for pictures (``(N, C, H, W)``)."""
        return (x.detach().cpu().numpy() * self.std + self.mean).clip(0, 1)


def machine_info() -> dict[str, Any]:
    """A short description of where a training run was measured (the bench's, plus torch)."""
    from stn_deploy.bench.machine import cpu_model

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


#: Options that set a zoo model's arguments; a factory sets its own.
ZOO_ONLY = ("dropout", "mode", "padding_mode", "align_corners", "out_size")


def _build(opts: TrainOptions, canvas: int) -> LoadedModel:
    norm = {"mean": [MNIST_MEAN], "std": [MNIST_STD]}
    if opts.model in ZOO:
        sampler_args = {
            "mode": opts.mode,
            "padding_mode": opts.padding_mode,
            "align_corners": opts.align_corners,
            "out_size": opts.out_size,
        }
        if ZOO[opts.model].transform == "none":
            if any(v is not None for v in sampler_args.values()):
                raise StnDeployError(
                    f"model {opts.model!r} has no STN: sampler options do not apply"
                )
            sampler_args = {}
        config = zoo_config(
            opts.model, in_size=canvas, normalization=norm, dropout=opts.dropout, **sampler_args
        )
        return LoadedModel(model_from_config(config, opts.model), config, source=opts.model)
    given = [k for k in ZOO_ONLY if getattr(opts, k) is not None]
    if given:
        raise StnDeployError(
            f"{{{given[0]}}} applies to zoo models only; set it in your factory", param=given[0]
        )
    loaded = load_factory(opts.model, (1, canvas, canvas))
    loaded.config.normalization = norm
    loaded.config.class_labels = [str(i) for i in range(10)]
    return loaded


def _is_loc(name: str) -> bool:
    return "localization." in name or "fc_loc." in name


def _loc_parameters(model: torch.nn.Module, param: str) -> list[torch.nn.Parameter]:
    """The localisation nets' parameters; an error naming ``param`` when there are none."""
    loc = [p for n, p in model.named_parameters() if _is_loc(n)]
    if not loc:
        raise StnDeployError(f"{{{param}}}: this model has no localisation net", param=param)
    return loc


def _param_groups(opts: TrainOptions, model: torch.nn.Module):
    """One group, or two when the localisation nets train at ``loc_lr_scale`` times the lr."""
    if opts.loc_lr_scale == 1.0:
        return model.parameters()
    loc = _loc_parameters(model, "loc_lr_scale")
    ids = {id(p) for p in loc}
    rest = [p for p in model.parameters() if id(p) not in ids]
    return [{"params": rest, "lr": opts.lr}, {"params": loc, "lr": opts.lr * opts.loc_lr_scale}]


def _make_optimizer(opts: TrainOptions, model: torch.nn.Module, steps_per_epoch: int):
    params = _param_groups(opts, model)
    if opts.optimizer == "sgd":
        opt = torch.optim.SGD(
            params, lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay
        )
    else:
        opt = torch.optim.Adam(params, lr=opts.lr, weight_decay=opts.weight_decay)
    total = opts.epochs * steps_per_epoch
    if opts.schedule == "step":
        if opts.step_epochs > 0:
            milestones = list(range(opts.step_epochs, opts.epochs, opts.step_epochs))
        else:
            milestones = sorted({max(1, opts.epochs // 2), max(1, (3 * opts.epochs) // 4)})
        sched = torch.optim.lr_scheduler.MultiStepLR(
            opt, [m * steps_per_epoch for m in milestones], opts.gamma
        )
    elif opts.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    elif opts.schedule == "onecycle":
        max_lr = [g["lr"] for g in opt.param_groups]
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total)
    else:
        sched = None
    return opt, sched


def _scheduler_state(scheduler) -> dict[str, Any]:
    """The scheduler's state in types ``torch.load(weights_only=True)`` accepts (no Counter)."""
    return {
        k: (dict(v) if isinstance(v, Counter) else v) for k, v in scheduler.state_dict().items()
    }


def _load_scheduler(scheduler, state: dict[str, Any]) -> None:
    scheduler.load_state_dict(state)
    if isinstance(getattr(scheduler, "milestones", None), dict):
        scheduler.milestones = Counter(scheduler.milestones)


def evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000
) -> dict[str, float]:
    """Test loss, error % and accuracy % of ``model`` on normalised ``x (N, C, H, W)``, labels ``y (N,)``."""
    model.eval()
    loss, correct = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            out = model(x[i : i + batch_size])
            loss += F.cross_entropy(out, y[i : i + batch_size], reduction="sum").item()
            correct += (out.argmax(1) == y[i : i + batch_size]).sum().item()
    n = max(1, len(x))
    return {
        "test_loss": loss / n,
        "test_error": 100.0 * (1 - correct / n),
        "test_accuracy": 100.0 * correct / n,
    }


def _load_data(opts: TrainOptions, cache_dir: Path | None):
    if opts.synthetic:
        n_train = opts.limit_train or 512
        n_test = opts.limit_test or 256
        return synthetic_mnist(n_train=n_train, n_test=n_test, seed=opts.seed)
    return load_mnist(opts.data_dir, cache_dir=cache_dir)


def _limit(images: np.ndarray, labels: np.ndarray, n: int | None):
    return (images, labels) if n is None else (images[:n], labels[:n])


def _resume_options(stored: TrainOptions, given: TrainOptions) -> TrainOptions:
    """The stored run's options; only the budget, threads and (constant-lr runs) epochs may change."""
    if given.epochs is not None and given.epochs != stored.epochs:
        if stored.schedule != "none":
            raise StnDeployError(
                f"this run was planned for {stored.epochs} epochs with a {stored.schedule} schedule; "
                "resume continues it as planned (drop {epochs}, or start a new run)",
                param="epochs",
            )
        stored.epochs = given.epochs
    stored.max_minutes = given.max_minutes
    stored.threads = given.threads
    return stored


def _resume(ckpt_path: Path, given: TrainOptions, trust_factory: bool):
    """The interrupted run at ``ckpt_path``: its model, its options (see :func:`_resume_options`).

    A run of a factory resumes when ``given.model`` names that same factory or with
    ``trust_factory``: the checkpoint alone may not make stn-deploy run code.
    """
    if not ckpt_path.is_file():
        raise StnDeployError(f"nothing to resume: {ckpt_path} does not exist")
    named = given.model if given.model not in ZOO else None  # the default is a zoo name
    resumed = load_checkpoint(ckpt_path, trust_factory=trust_factory, arch=named)
    train_state = resumed.train_state
    if not train_state or "options" not in train_state:
        raise StnDeployError(f"{ckpt_path} holds no training state to resume from")
    stored = TrainOptions(**json.loads(train_state["options"]))
    if stored.model != resumed.config.arch:
        raise StnDeployError(
            f"{ckpt_path} is inconsistent: trained as {stored.model!r}, holds {resumed.config.arch!r}"
        )
    return resumed, _resume_options(stored, given)


@dataclass
class TrainResult:
    """What :func:`train` did; ``to_dict()`` is ``metrics.json``."""

    stn_deploy: str
    model: str
    params: int
    config: dict[str, Any]
    options: dict[str, Any]
    history: list[dict[str, Any]]
    final: dict[str, float]  # test_error, test_accuracy, test_loss
    epochs_run: int
    train_seconds: float
    stopped_early: str | None
    data: str
    machine: dict[str, Any]
    checkpoint: str
    picture: str | None = None  # the rectification picture's file name (models with an STN)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.picture is None:
            del d["picture"]
        return d


class ThetaRecorder:
    """Identity regularisation: records every spatial transformer's θ during a training forward
    pass and gives ``weight * mean((θ - θ_identity)²)`` over all of them (0 with no weight)."""

    def __init__(self, model: torch.nn.Module, weight: float) -> None:
        self.weight = float(weight)
        self.thetas: list[tuple[torch.Tensor, torch.Tensor]] = []
        stns = [m for m in model.modules() if isinstance(m, SpatialTransformer)]
        if self.weight and not stns:
            raise StnDeployError(
                "{theta_reg}: this model has no spatial transformer", param="theta_reg"
            )
        if self.weight:
            for stn in stns:
                stn.fc_loc.register_forward_hook(self._hook(stn.transform.identity()))

    def _hook(self, identity: torch.Tensor):
        def record(module, inputs, theta):
            if module.training:
                self.thetas.append((theta, identity))

        return record

    def penalty(self) -> torch.Tensor | float:
        """The penalty of the forward pass just run; clears the record."""
        if not self.thetas:
            return 0.0
        total = sum(((t - i.to(t.dtype)) ** 2).mean() for t, i in self.thetas)
        self.thetas = []
        return self.weight * total


def _set_trainable(opts: TrainOptions, model: torch.nn.Module, epoch: int) -> None:
    """Warm-up: freeze the localisation nets (or the rest) for the first epochs."""
    if not (opts.freeze_loc_epochs or opts.freeze_classifier_epochs):
        return
    param = "freeze_loc_epochs" if opts.freeze_loc_epochs else "freeze_classifier_epochs"
    _loc_parameters(model, param)  # an error if there is nothing to freeze
    for name, p in model.named_parameters():
        if _is_loc(name):
            p.requires_grad_(epoch >= opts.freeze_loc_epochs)
        else:
            p.requires_grad_(epoch >= opts.freeze_classifier_epochs)


@dataclass
class _Run:
    """A training run being set up or under way."""

    opts: TrainOptions
    loaded: LoadedModel
    norm: Normalizer
    x_test: torch.Tensor
    y_test: torch.Tensor
    train_images: np.ndarray
    train_labels: np.ndarray
    kind: str
    data_source: str
    optimizer: Any
    scheduler: Any
    steps_per_epoch: int
    theta: ThetaRecorder


@removes_new_folder("out")  # a run that fails before writing anything leaves no empty folder
def train(
    opts: TrainOptions,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    cache_dir: Path | None = None,
    progress: bool | None = None,
    log=print,
    trust_factory: bool = False,
) -> TrainResult:
    """Train ``opts.model`` on distorted MNIST, writing checkpoint, metrics and picture to ``out``.

    ``trust_factory``: with ``resume``, continue a run whose checkpoint names a factory (code)
    even though ``opts.model`` does not name it.

    Returns a :class:`TrainResult`; ``to_dict()`` is what ``out/metrics.json`` holds.
    """
    out = Path(out)
    ckpt_path = out / CHECKPOINT
    start_epoch, history, train_state, resumed = 0, [], None, None
    if resume:
        resumed, opts = _resume(ckpt_path, opts, trust_factory)
        train_state = resumed.train_state
        start_epoch = int(train_state["epoch"])
        history = json.loads(train_state["history"])
    elif ckpt_path.exists() and not force:
        raise StnDeployError(
            f"{out} already holds a run: pass {{resume=True}} to continue it or {{force=True}} "
            "to start over",
            param=("resume", "force"),
        )
    elif opts.epochs is None:
        opts.epochs = DEFAULT_EPOCHS
    opts.validate()
    ensure_writable_dir(out)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    run = _set_up(opts, resumed, train_state, cache_dir, log)

    t_start = time.perf_counter()
    trained_seconds = sum(h["seconds"] for h in history)
    stopped = None
    for epoch in range(start_epoch, opts.epochs):
        record = _train_epoch(run, epoch, progress)
        history.append(record)
        log(
            f"epoch {epoch + 1}/{opts.epochs}: train loss {record['train_loss']:.4f}, "
            f"test error {record['test_error']:.2f}% ({record['seconds']:.1f} s, {record['images_per_s']:.0f} img/s)"
        )
        _save(run, ckpt_path, epoch, history)
        if opts.max_minutes is not None:
            elapsed = trained_seconds + time.perf_counter() - t_start
            if elapsed + record["seconds"] > opts.max_minutes * 60 and epoch + 1 < opts.epochs:
                stopped = f"time budget of {opts.max_minutes} min reached after epoch {epoch + 1}"
                log(stopped)
                break
    result = _result(run, history, stopped, out)
    write_text_atomic(out / METRICS, json.dumps(result.to_dict(), indent=2))
    return result


def _set_up(
    opts: TrainOptions,
    resumed: LoadedModel | None,
    train_state: dict[str, Any] | None,
    cache_dir: Path | None,
    log,
) -> _Run:
    """Data, model (built, or the resumed one with its optimiser, schedule and RNG state),
    normalised test set."""
    kind = opts.distortion.lower()
    canvas = CANVAS[kind]
    data = _load_data(opts, cache_dir)
    train_images, train_labels = _limit(data.train_images, data.train_labels, opts.limit_train)
    test_images, test_labels = _limit(data.test_images, data.test_labels, opts.limit_test)
    torch.manual_seed(opts.seed)
    loaded = resumed if resumed is not None else _build(opts, canvas)  # resume: no code runs twice
    model, config = loaded.model, loaded.config
    norm = Normalizer.from_config(config.normalization)
    tx, ty = make_split(test_images, test_labels, kind, opts.seed, split="test")
    x_test, y_test = norm(tx), torch.from_numpy(ty).long()
    config.extra = {"trained_on": {"distortion": kind, "seed": opts.seed, "data": data.source}}
    if opts.epoch_images is not None and opts.epoch_images > len(train_images):
        raise StnDeployError(
            f"{{epoch_images}} is {opts.epoch_images}, the training set has {len(train_images)}",
            param="epoch_images",
        )
    steps_per_epoch = math.ceil((opts.epoch_images or len(train_images)) / opts.batch_size)
    optimizer, scheduler = _make_optimizer(opts, model, steps_per_epoch)
    if train_state is not None:
        model.load_state_dict(resumed.model.state_dict())
        optimizer.load_state_dict(train_state["optimizer"])
        if scheduler is not None and "scheduler" in train_state:
            _load_scheduler(scheduler, train_state["scheduler"])
        torch.set_rng_state(train_state["torch_rng"])
    log(
        f"training {opts.model} ({count_parameters(model):,} params) on {kind.upper()} MNIST "
        f"{len(train_images)} train / {len(test_images)} test, {canvas}x{canvas}, data: {data.source}"
    )
    return _Run(
        opts,
        loaded,
        norm,
        x_test,
        y_test,
        train_images,
        train_labels,
        kind,
        data.source,
        optimizer,
        scheduler,
        steps_per_epoch,
        ThetaRecorder(model, opts.theta_reg),
    )


def _train_epoch(run: _Run, epoch: int, progress: bool | None) -> dict[str, Any]:
    """One epoch on its freshly distorted training set, then the test set: the history record."""
    opts, model, optimizer, scheduler = run.opts, run.loaded.model, run.optimizer, run.scheduler
    t_epoch = time.perf_counter()
    images, labels = run.train_images, run.train_labels
    if opts.epoch_images is not None:  # a fresh subset of the training set every epoch
        pick = np.random.default_rng([opts.seed, epoch, 1]).permutation(len(images))
        pick = np.sort(pick[: opts.epoch_images])
        images, labels = images[pick], labels[pick]
    x_np, y_np = make_split(images, labels, run.kind, opts.seed, split="train", epoch=epoch)
    order = np.random.default_rng([opts.seed, epoch]).permutation(len(x_np))
    x_all, y_all = run.norm(x_np), torch.from_numpy(y_np).long()
    _set_trainable(opts, model, epoch)
    model.train()
    seen, loss_sum, correct = 0, 0.0, 0
    bar = tqdm(
        range(run.steps_per_epoch),
        desc=f"epoch {epoch + 1}/{opts.epochs}",
        disable=(None if progress is None else not progress),
        leave=False,
        unit="batch",
    )
    for step in bar:
        idx = torch.from_numpy(order[step * opts.batch_size : (step + 1) * opts.batch_size])
        xb, yb = x_all[idx], y_all[idx]
        optimizer.zero_grad(set_to_none=True)
        out_b = model(xb)
        loss = F.cross_entropy(out_b, yb)
        if not torch.isfinite(loss):
            raise StnDeployError(
                f"training diverged at epoch {epoch + 1}: loss is {loss.item()}; lower {{lr}}",
                param="lr",
            )
        (loss + run.theta.penalty()).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        seen += len(yb)
        loss_sum += loss.item() * len(yb)
        correct += (out_b.argmax(1) == yb).sum().item()
        if step % 20 == 0 or step == run.steps_per_epoch - 1:
            rate = seen / max(1e-9, time.perf_counter() - t_epoch)
            bar.set_postfix(
                loss=f"{loss_sum / seen:.4f}",
                acc=f"{100 * correct / seen:.2f}%",
                img_s=f"{rate:.0f}",
            )
    bar.close()
    train_seconds = time.perf_counter() - t_epoch
    metrics = evaluate(model, run.x_test, run.y_test)
    return {
        "epoch": epoch + 1,
        "train_loss": loss_sum / seen,
        "train_accuracy": 100.0 * correct / seen,
        **metrics,
        "lr": optimizer.param_groups[0]["lr"],
        "seconds": time.perf_counter() - t_epoch,
        "images_per_s": seen / train_seconds,
    }


def _save(run: _Run, ckpt_path: Path, epoch: int, history: list[dict[str, Any]]) -> None:
    """The checkpoint after ``epoch``, with what resuming needs."""
    train_state = {
        "epoch": epoch + 1,
        "options": json.dumps(asdict(run.opts)),
        "history": json.dumps(history),
        "optimizer": run.optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    if run.scheduler is not None:
        train_state["scheduler"] = _scheduler_state(run.scheduler)
    save_checkpoint(ckpt_path, run.loaded.model, run.loaded.config, train_state)


def _result(
    run: _Run, history: list[dict[str, Any]], stopped: str | None, out: Path
) -> TrainResult:
    """The run's metrics (and its rectification picture, written to ``out``)."""
    model, config = run.loaded.model, run.loaded.config
    final = dict(history[-1]) if history else evaluate(model, run.x_test, run.y_test)
    result = TrainResult(
        stn_deploy=stn_deploy.__version__,
        model=config.arch,
        params=count_parameters(model),
        config=json.loads(config.to_json()),
        options=asdict(run.opts),
        history=history,
        final={k: final[k] for k in ("test_error", "test_accuracy", "test_loss")},
        epochs_run=len(history),
        train_seconds=sum(h["seconds"] for h in history),
        stopped_early=stopped,
        data=run.data_source,
        machine=machine_info(),
        checkpoint=CHECKPOINT,
    )
    stn = getattr(model, "stn", None)
    if stn is not None and hasattr(model, "rectify"):
        n = min(run.opts.picture_count, len(run.x_test))
        model.eval()
        with torch.inference_mode():
            rect = model.rectify(run.x_test[:n])
        save_rectification_png(
            run.norm.display(run.x_test[:n])[:, 0], run.norm.display(rect)[:, 0], out / PICTURE
        )
        result.picture = PICTURE
    return result
