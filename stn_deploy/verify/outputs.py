"""What each output of the file is, from the model itself (onnx only): class scores, an image,
STN parameters, or a plain tensor.

Classifier statistics (argmax agreement, accuracy) are computed only for class scores. The kind
of an output comes, in this order, from

1. the ``stn_deploy.output_kinds`` metadata (JSON ``{name: kind}``), when the file declares it;
2. ``theta`` / ``rectified`` of ``--expose-stn`` files: STN parameters and an image;
3. its rank: 4-D or 5-D ``(N, C, ...)`` is an image (or a volume), never class scores;
4. a 2-D ``(N, K)`` output (K > 1) is class scores when the node producing it is a
   (Log)Softmax, or the file's ``class_labels`` metadata lists K labels, or its name says so
   (``log_probs``, ``logits``, ``probs``, ``scores``); any other 2-D output is a tensor.
"""

from __future__ import annotations

import json
from typing import Any

from stn_deploy.runtimes.base import onnx_specs

KINDS = ("class-scores", "image", "theta", "tensor")
SCORE_NAMES = ("log_probs", "logits", "probs", "probabilities", "scores")
SCORE_OPS = ("LogSoftmax", "Softmax")


def _declared(meta: dict[str, str]) -> dict[str, str]:
    try:
        d = json.loads(meta.get("output_kinds", "{}"))
    except (json.JSONDecodeError, TypeError):
        return {}
    return {str(k): str(v) for k, v in d.items() if v in KINDS} if isinstance(d, dict) else {}


def _num_classes(meta: dict[str, str]) -> int | None:
    try:
        return len(json.loads(meta["class_labels"]))
    except (KeyError, ValueError, TypeError):
        return None


def output_kinds(model: Any, meta: dict[str, str]) -> dict[str, str]:
    """``{output name: kind}`` for every graph output of ``model`` (see the module doc)."""
    declared = _declared(meta)
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    classes = _num_classes(meta)
    kinds = {}
    for spec in onnx_specs(model.graph.output):
        name, rank = spec.name, len(spec.shape) if spec.shape is not None else None
        if name in declared:
            kinds[name] = declared[name]
        elif name == "theta":
            kinds[name] = "theta"
        elif name == "rectified" or (rank is not None and rank >= 4):
            kinds[name] = "image"
        elif rank == 2 and _scores(name, spec.shape, producers.get(name), classes):
            kinds[name] = "class-scores"
        else:
            kinds[name] = "tensor"
    return kinds


def _scores(name: str, shape, producer: str | None, classes: int | None) -> bool:
    k = shape[1]
    if isinstance(k, int) and k > 0 and k < 2:
        return False
    if producer in SCORE_OPS:
        return True
    if classes is not None and isinstance(k, int) and k == classes:
        return True
    return name.lower() in SCORE_NAMES
