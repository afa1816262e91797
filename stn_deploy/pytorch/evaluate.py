"""Evaluate a checkpoint on a distorted MNIST test set (needs torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from stn_deploy.data import CANVAS, load_mnist, make_split, synthetic_mnist
from stn_deploy.errors import StnDeployError
from stn_deploy.pytorch.models.loading import LoadedModel, load_checkpoint
from stn_deploy.pytorch.train import Normalizer, evaluate


@dataclass
class EvalResult:
    """What :func:`evaluate_model` measured; ``to_dict()`` is ``evaluate --json``."""

    model: str  # the architecture
    source: str  # checkpoint path or factory
    distortion: str
    seed: int
    images: int
    data: str  # where the test images came from
    test_loss: float
    test_error: float  # %
    test_accuracy: float  # %

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_model(
    loaded: LoadedModel,
    *,
    distortion: str | None = None,
    seed: int | None = None,
    data_dir: str | Path | None = None,
    cache_dir: Path | None = None,
    synthetic: bool = False,
    limit_test: int | None = None,
) -> EvalResult:
    """Test loss and error % of a loaded model on the (seed-fixed) distorted test set.

    The distortion and seed default to those the model was trained with (none and 0 when
    unknown); the input is normalised with the model's config.
    """
    trained = loaded.config.extra.get("trained_on", {})
    kind = (distortion or trained.get("distortion") or "none").lower()
    seed = trained.get("seed", 0) if seed is None else seed
    canvas = CANVAS[kind]
    shape = tuple(loaded.config.input_shape)
    if shape[1:] != (canvas, canvas):
        raise StnDeployError(
            f"{loaded.source} takes {shape[1]}x{shape[2]} inputs, the {kind.upper()} test set is "
            f"{canvas}x{canvas}"
        )
    data = (
        synthetic_mnist(n_test=limit_test or 256, seed=seed)
        if synthetic
        else load_mnist(data_dir, cache_dir=cache_dir)
    )
    images, labels = data.test_images, data.test_labels
    if limit_test is not None:
        images, labels = images[:limit_test], labels[:limit_test]
    x, y = make_split(images, labels, kind, seed, split="test")
    xt = Normalizer.from_config(loaded.config.normalization)(x)
    metrics = evaluate(loaded.model, xt, torch.from_numpy(y).long())
    return EvalResult(
        model=loaded.config.arch,
        source=loaded.source,
        distortion=kind,
        seed=seed,
        images=len(y),
        data=data.source,
        **metrics,
    )


def evaluate_checkpoint(checkpoint: str | Path, *, trust_factory: bool = False, **kw) -> EvalResult:
    """:func:`evaluate_model` on the model in ``checkpoint`` (``trust_factory``: see load_checkpoint)."""
    return evaluate_model(load_checkpoint(checkpoint, trust_factory=trust_factory), **kw)
