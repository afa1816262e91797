"""What goes in and out of an export (torch side): the golden inputs, the graph's input and
output names, the model's float dtype, and torch's reference outputs for the self-check.

Zoo models keep ``image`` -> ``log_probs``; a user's module gets its ``forward``'s parameter
names and ``output`` (or ``output_0..n`` / its dict keys), one input per per-sample shape.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch
from torch import nn

from stn_deploy.errors import StnDeployError
from stn_deploy.pytorch.models.loading import LoadedModel
from stn_deploy.pytorch.models.loading import float_dtype as model_dtype
from stn_deploy.pytorch.train import Normalizer


def golden_inputs(loaded: LoadedModel, count: int, seed: int) -> tuple[np.ndarray, str]:
    """``(count, C, H, W)`` normalised inputs: real distorted MNIST test images when the cache
    holds MNIST and the model was trained on it, else seeded uniform noise."""
    shape = tuple(loaded.config.input_shape)
    trained = loaded.config.extra.get("trained_on", {})
    norm = loaded.config.normalization
    kind = trained.get("distortion")
    pixels, source = None, f"seeded uniform noise (seed {seed})"
    if kind and shape[0] == 1:
        from stn_deploy.data import CANVAS, load_mnist, make_split

        if CANVAS.get(kind) == shape[1] == shape[2]:
            try:
                data = load_mnist()
            except StnDeployError:
                data = None
            if data is not None:
                tseed = trained.get("seed", 0)
                pixels, _ = make_split(
                    data.test_images[:count], data.test_labels[:count], kind, tseed, split="test"
                )
                source = (
                    f"the first {count} MNIST test images, {kind.upper()}-distorted (seed {tseed})"
                )
    if pixels is None:
        pixels = np.random.default_rng(seed).random((count, *shape), dtype=np.float32)
    return Normalizer.from_config(norm)(pixels).numpy(), source


def is_zoo(loaded: LoadedModel) -> bool:
    """Whether ``loaded`` is one of our zoo classifiers (or a checkpoint of one)."""
    from stn_deploy.pytorch.models.zoo import ZOO

    return loaded.config.arch in ZOO


def input_names_for(loaded: LoadedModel) -> list[str]:
    """The graph inputs' names: ``image`` for zoo models and our checkpoints, else the
    positional parameters of the module's ``forward`` (``x`` for most user modules), one per
    input shape (``input_<i>`` where a name cannot be read)."""
    count = len(loaded.input_shapes)
    if is_zoo(loaded):
        return ["image"]
    try:
        params = list(inspect.signature(loaded.model.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in params if p.kind in positional][:count]
    names = [n if n.isidentifier() and not n.startswith("_") else "" for n in names]
    names += [""] * (count - len(names))
    fallback = ["input"] if count == 1 else [f"input_{i}" for i in range(count)]
    return names if all(names) and len(set(names)) == count else fallback


def input_layout(loaded: LoadedModel) -> str:
    """What the inputs are, for the metadata: name, layout, dtype, per-sample shape."""
    dtype = str(model_dtype(loaded.model)).removeprefix("torch.")
    shapes = loaded.input_shapes
    parts = [
        f"{n}: {'NCHW' if len(sh) == 3 else 'NCDHW' if len(sh) == 4 else 'N,...'} {dtype} "
        f"{list(sh)}"
        for n, sh in zip(input_names_for(loaded), shapes, strict=True)
    ]
    return "; ".join(parts) + ", pixels in 0..1 then (x - mean) / std" * (len(shapes) == 1)


def flatten_outputs(outs: Any) -> tuple[list[str] | None, list[torch.Tensor]]:
    """A forward's result as (its own names: dict keys, else None) and its tensors in graph
    order; tensors, tuples/lists of tensors and dicts of tensors, else a one-line error."""
    if isinstance(outs, torch.Tensor):
        return None, [outs]
    if isinstance(outs, dict):
        keys, values = [str(k) for k in outs], list(outs.values())
    elif isinstance(outs, (tuple, list)):
        keys, values = None, list(outs)
    else:
        raise StnDeployError(
            f"the model returns {type(outs).__name__}: export needs a tensor, or a tuple, list "
            "or dict of tensors"
        )
    bad = [type(v).__name__ for v in values if not isinstance(v, torch.Tensor)]
    if bad or not values:
        raise StnDeployError(
            f"the model returns a {type(outs).__name__} holding {bad[0] if bad else 'nothing'}: "
            "export needs tensors (no nesting)"
        )
    return keys, values


def output_names_for(
    outs: Any,
    expose_stn: bool,
    override: list[str] | None = None,
    input_names: tuple[str, ...] | list[str] = ("image",),
    single: str = "log_probs",
) -> list[str]:
    """Graph output names: ``override``, else dict keys, ``output_0..n`` for a tuple/list,
    ``single`` for one tensor (``log_probs`` for a zoo classifier, ``output`` for a user's
    module; ``log_probs, theta, rectified`` with ``--expose-stn``)."""
    keys, values = flatten_outputs(outs)
    if override:
        if len(override) != len(values):
            raise StnDeployError(
                f"{{output_names}} gives {len(override)} names, the model has {len(values)} "
                "outputs",
                param="output_names",
            )
        names = list(override)
    elif expose_stn:
        names = ["log_probs", "theta", "rectified"]
    elif keys is not None:
        names = keys
    elif isinstance(outs, torch.Tensor):
        names = [single]
    else:
        names = [f"output_{i}" for i in range(len(values))]
    if len(set(names)) != len(names) or any(not n or "/" in n or n in input_names for n in names):
        what = "{output_names}" if override else "the model's output names"
        raise StnDeployError(
            f"{what} must be distinct, non-empty, without '/', not an input's name "
            f"({', '.join(input_names)}): "
            f"{names}",
            param="output_names",
        )
    return names


def golden_batch(
    loaded: LoadedModel, model: nn.Module, count: int, seed: int
) -> tuple[list[np.ndarray], str, Any]:
    """The golden inputs, one array per model input in the model's float dtype (the first as
    :func:`golden_inputs` makes it, any further ones seeded uniform noise), what they are, and
    torch's outputs on them (as the model returns)."""
    x, source = golden_inputs(loaded, count, seed)
    rng = np.random.default_rng(seed + 1)
    xs = [x, *(rng.random((count, *sh), dtype=np.float32) for sh in loaded.input_shapes[1:])]
    dtype = torch.empty((), dtype=model_dtype(model)).numpy().dtype
    xs = [a.astype(dtype) for a in xs]
    if len(xs) > 1:
        source += f"; the other {len(xs) - 1} input(s): seeded uniform noise (seed {seed + 1})"
    with torch.inference_mode():
        outs = model(*(torch.from_numpy(a) for a in xs))
    return xs, source, outs


def torch_reference(model: nn.Module, xs: list[np.ndarray], outs: list[torch.Tensor]):
    """torch's outputs for a self-check batch (one array per input): the golden batch ``xs``
    already has them (``outs``); any other batch is run once and kept, so the fp32 and the
    fp16/int8 checks share it."""
    done = {tuple(map(id, xs)): [o.detach().float().numpy() for o in outs]}

    def reference(arrays: list[np.ndarray]) -> list[np.ndarray]:
        key = tuple(map(id, arrays))
        if key not in done:
            with torch.inference_mode():
                got = flatten_outputs(model(*(torch.from_numpy(a) for a in arrays)))[1]
            done[key] = [o.detach().float().numpy() for o in got]
        return done[key]

    return reference
