"""``--lowering-sweep`` (``sampler_sweep``): the same model in each grid-sample lowering, benched side by side.

With a checkpoint or factory the caller gives an ``export`` callable (its torch exporter, as
``exported/build.py`` uses it) and every lowering is exported from the model; without one the given ONNX file is rewritten by ``lower_model``
(torch-free), which can make every lowering from a file that still holds a sampler op (native,
custom, ort-contrib), at the file's opset (at least each lowering's minimum), but none from a
portable one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stn_deploy.errors import StnDeployError

#: (lowering, export target, sampler, opset, inline), as in exported/build.py
LOWERINGS = (
    ("native", "ort-cpu", "native", 17, False),
    ("portable", "generic", "portable", 11, False),
    ("custom", "ort-cpu", "custom", 17, False),
    ("custom-inline", "openvino", "custom", 16, True),
    ("ort-contrib", "ort-cpu", "ort-contrib", 11, False),
)


@dataclass
class Variant:
    """One lowering of the model: its file, or why it could not be made."""

    lowering: str
    path: Path | None
    reason: str = ""


def make_variants(
    model_path: str | Path,
    out_dir: str | Path,
    *,
    export: Callable[..., Any] | None = None,
    skip: str | None = None,
) -> list[Variant]:
    """Each lowering of the model in ``out_dir`` (lowering ``skip``, the given file's own, is
    left out). A lowering that cannot be made is a Variant with ``path=None`` and the reason.

    ``export(path, *, target, lowering, opset, inline)`` (given by a torch-side caller) writes
    each lowering from the torch model; without it the file at ``model_path`` is rewritten."""
    out_dir = Path(out_dir)
    variants: list[Variant] = []
    for lowering, target, sampler, opset, inline in LOWERINGS:
        if lowering == skip:
            continue
        path = out_dir / f"sweep-{lowering}.onnx"
        try:
            if export is not None:
                export(path, target=target, lowering=sampler, opset=opset, inline=inline)
            else:
                _lower_file(model_path, path, sampler, None, inline)  # the file's opset
        except StnDeployError as exc:
            variants.append(Variant(lowering, None, str(exc)))
            continue
        variants.append(Variant(lowering, path))
    return variants


def _lower_file(src: str | Path, dst: Path, sampler: str, opset: int | None, inline: bool) -> None:
    from stn_deploy.export.lower import lower_file

    summary = lower_file(src, dst, sampler, opset=opset, inline=inline)
    if summary.nodes_rewritten == 0:
        dst.unlink(missing_ok=True)
        raise StnDeployError(
            "the file holds no GridSample/AffineGrid to rewrite (a checkpoint or factory "
            "exports every lowering from torch)"
        )
