"""Training options (no torch: the CLI reads its defaults from here)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from stn_deploy.data.distortions import CANVAS
from stn_deploy.errors import StnDeployError

DEFAULT_EPOCHS = 10
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("none", "step", "cosine", "onecycle")
ZOO_NAMES = (
    "mnist-affine",
    "mnist-attention",
    "mnist-projective",
    "mnist-tps",
    "mnist-affine-series",
    "mnist-affine-parallel",
    "mnist-cnn",
    "paper-cnn",
    "paper-st-cnn",
    "paper-st-cnn-projective",
    "paper-st-cnn-tps",
)


@dataclass
class TrainOptions:
    """Everything that defines a training run (stored in the checkpoint for ``resume``)."""

    model: str = "mnist-affine"
    distortion: str = "rts"
    epochs: int | None = None  # None: DEFAULT_EPOCHS, or the stored run's with resume
    batch_size: int = 128
    lr: float = 0.003
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "onecycle"
    step_epochs: int = 0  # 0: decay at 1/2 and 3/4 of the run (step schedule)
    gamma: float = 0.1
    seed: int = 0
    mode: str | None = None
    padding_mode: str | None = None
    out_size: int | None = None  # the STN's output side (None: the model's, 28)
    align_corners: bool | None = None
    dropout: float | None = None  # None: the model's default (0.5, the tutorial's)
    loc_lr_scale: float = 1.0  # the localisation nets' lr relative to lr
    theta_reg: float = 0.0  # weight of the mean squared distance of θ from the identity
    freeze_loc_epochs: int = 0  # first epochs with the localisation nets frozen (STN = identity)
    freeze_classifier_epochs: int = 0  # first epochs with only the localisation nets training
    data_dir: str | None = None
    synthetic: bool = False
    limit_train: int | None = None
    epoch_images: int | None = None  # images per epoch, a fresh subset each epoch (None: all)
    limit_test: int | None = None
    max_minutes: float | None = None
    threads: int | None = None
    picture_count: int = 32
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.epochs is None or self.epochs < 1:
            raise StnDeployError(
                f"{{epochs}} must be at least 1, got {self.epochs}", param="epochs"
            )
        if self.batch_size < 1:
            raise StnDeployError(
                f"{{batch_size}} must be at least 1, got {self.batch_size}", param="batch_size"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise StnDeployError(f"{{lr}} must be a positive number, got {self.lr}", param="lr")
        if not (self.loc_lr_scale > 0 and math.isfinite(self.loc_lr_scale)):
            raise StnDeployError(
                f"{{loc_lr_scale}} must be a positive number, got {self.loc_lr_scale}",
                param="loc_lr_scale",
            )
        if self.epoch_images is not None and self.epoch_images < 1:
            raise StnDeployError(
                f"{{epoch_images}} must be at least 1, got {self.epoch_images}",
                param="epoch_images",
            )
        if not (self.theta_reg >= 0 and math.isfinite(self.theta_reg)):
            raise StnDeployError(
                f"{{theta_reg}} must be a non-negative number, got {self.theta_reg}",
                param="theta_reg",
            )
        for name in ("freeze_loc_epochs", "freeze_classifier_epochs"):
            if getattr(self, name) < 0:
                raise StnDeployError(
                    f"{{{name}}} must be 0 or more, got {getattr(self, name)}", param=name
                )
        if self.freeze_loc_epochs and self.freeze_classifier_epochs:
            raise StnDeployError(
                "{freeze_loc_epochs} and {freeze_classifier_epochs} exclude each other: "
                "a warm-up trains one part while the other waits",
                param=("freeze_loc_epochs", "freeze_classifier_epochs"),
            )
        if self.optimizer not in OPTIMIZERS:
            raise StnDeployError(
                f"unknown optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}"
            )
        if self.schedule not in SCHEDULES:
            raise StnDeployError(
                f"unknown schedule {self.schedule!r}: expected one of {', '.join(SCHEDULES)}"
            )
        if self.distortion.lower() not in CANVAS:
            raise StnDeployError(
                f"unknown distortion {self.distortion!r}: expected one of {', '.join(CANVAS)}"
            )
        if self.model not in ZOO_NAMES and ":" not in self.model:
            raise StnDeployError(
                f"unknown model {self.model!r}: expected one of {', '.join(ZOO_NAMES)} or module:callable"
            )
