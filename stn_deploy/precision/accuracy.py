"""Accuracy of an ONNX model on the distorted real MNIST test set, over any runtime session
(numpy only, no torch): test error, argmax agreement with a reference, batched prediction.

Example:
    >>> from stn_deploy.runtimes import open_session
    >>> x, y = distorted_test_set("rts", seed=0, mean=[0.1307], std=[0.3081])  # doctest: +SKIP
    >>> pred = predict(open_session("cpu", "exported/mnist-affine-native.onnx"), x)  # doctest: +SKIP
    >>> error_pct(pred, y)                                                    # doctest: +SKIP
    1.73
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stn_deploy.data import MnistArrays, load_mnist, make_split, normalise
from stn_deploy.errors import StnDeployError


def distorted_test_set(
    kind: str,
    seed: int,
    mean: list[float],
    std: list[float],
    *,
    data: MnistArrays | None = None,
    limit: int | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST test split distorted with ``kind`` and ``seed`` (the training seed gives the
    test set the model was evaluated on), normalised: ``x (N, 1, S, S)`` float32, ``y (N,)``."""
    data = data if data is not None else load_mnist(cache_dir=cache_dir)
    n = len(data.test_images) if limit is None else min(limit, len(data.test_images))
    x, y = make_split(data.test_images[:n], data.test_labels[:n], kind, seed, split="test")
    return normalise(x, mean, std), y


def predict(
    session: Any, x: np.ndarray, *, batch: int = 500, output: str | None = None
) -> np.ndarray:
    """Run ``session`` (a :class:`~stn_deploy.runtimes.RuntimeSession`) over ``x`` in batches;
    returns the first (or ``output``) output, concatenated: ``(N, classes)``."""
    if len(session.inputs) != 1:
        raise StnDeployError(f"predict feeds one input; the model takes {len(session.inputs)}")
    name = session.inputs[0].name
    out = output or session.outputs[0].name
    fixed = session.inputs[0].fixed_batch()
    step = fixed or batch
    parts = []
    for i in range(0, len(x), step):
        chunk = x[i : i + step]
        if fixed and len(chunk) != fixed:  # a static-batch model: pad the last chunk
            pad = np.zeros((fixed - len(chunk), *chunk.shape[1:]), chunk.dtype)
            parts.append(
                session.run({name: np.concatenate([chunk, pad])}, [out])[out][: len(chunk)]
            )
        else:
            parts.append(session.run({name: chunk}, [out])[out])
    return np.concatenate(parts)


def error_pct(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 test error in percent."""
    return 100.0 * float((scores.argmax(1) != labels).mean())


def agreement_pct(scores: np.ndarray, reference: np.ndarray) -> float:
    """Percent of rows whose argmax equals the reference's."""
    return 100.0 * float((scores.argmax(1) == reference.argmax(1)).mean())


def compare_accuracy(
    scores: np.ndarray, reference: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """Error of both, the drop in points, argmax agreement and max |Δ| of the scores."""
    err, ref_err = error_pct(scores, labels), error_pct(reference, labels)
    return {
        "images": int(len(labels)),
        "error_pct": round(err, 4),
        "reference_error_pct": round(ref_err, 4),
        "error_drop_points": round(err - ref_err, 4),
        "agreement_pct": round(agreement_pct(scores, reference), 4),
        "max_abs_diff": float(np.abs(scores.astype(np.float64) - reference).max()),
    }
