"""Checkpoints: a state_dict plus a JSON config that rebuilds the model, loaded with weights_only=True.

File layout (one ``torch.save`` archive, readable with ``torch.load(weights_only=True)``)::

    {"format": "stn-deploy/checkpoint-v1",
     "config": "<JSON text>",          # see ModelConfig
     "state_dict": {name: tensor},
     "train_state": {...}}             # optional: optimizer, scheduler, epoch, RNG (for --resume)

The config JSON holds ``arch`` (a zoo name or a ``module:callable`` factory), ``args`` (the
builder's keyword arguments), ``input_shape`` ``[C, H, W]``, ``normalization`` (per-channel
``mean``/``std`` applied to 0..1 pixels before the model) and ``class_labels``.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stn_deploy.errors import StnDeployError, one_line
from stn_deploy.io.atomic import atomic_path

FORMAT = "stn-deploy/checkpoint-v1"


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model and feed it correctly."""

    arch: str
    args: dict[str, Any]
    input_shape: list[int]
    normalization: dict[str, list[float]] = field(
        default_factory=lambda: {"mean": [0.0], "std": [1.0]}
    )
    class_labels: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, origin: str = "config") -> ModelConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StnDeployError(f"{origin}: config is not valid JSON ({exc.msg})") from exc
        if not isinstance(d, dict):
            raise StnDeployError(f"{origin}: config must be a JSON object")
        missing = [k for k in ("arch", "args", "input_shape") if k not in d]
        if missing:
            raise StnDeployError(f"{origin}: config lacks {', '.join(missing)}")
        known = {
            k: d[k]
            for k in ("arch", "args", "input_shape", "normalization", "class_labels", "extra")
            if k in d
        }
        return cls(**known)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: ModelConfig,
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and ``config`` to ``path`` atomically."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "config": config.to_json(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    if train_state is not None:
        payload["train_state"] = train_state
    buf = io.BytesIO()  # torch's own file writer loses the errno of a failed write (full disk)
    torch.save(payload, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return Path(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load the raw checkpoint dict (weights only: no code runs), with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise StnDeployError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad archive
        raise StnDeployError(
            f"cannot read checkpoint {path}: not a valid stn-deploy checkpoint "
            f"({one_line(exc, 200)})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise StnDeployError(
            f"cannot read checkpoint {path}: not a stn-deploy checkpoint (no '{FORMAT}' marker)"
        )
    for key in ("config", "state_dict"):
        if key not in payload:
            raise StnDeployError(f"cannot read checkpoint {path}: it has no {key!r}")
    return payload


def check_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], origin: str) -> None:
    """Raise naming the first key where ``state_dict`` and ``model`` disagree (missing, shape, extra)."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            raise StnDeployError(f"{origin} does not match its config: key {key!r} is missing")
        got = state_dict[key]
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(tensor.shape):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise StnDeployError(
                f"{origin} does not match its config: key {key!r} has shape {shape}, "
                f"the model expects {tuple(tensor.shape)}"
            )
    for key in state_dict:
        if key not in expected:
            raise StnDeployError(f"{origin} does not match its config: unexpected key {key!r}")
