"""Load a model from anything a user may name: a zoo name, a checkpoint file, or ``module:factory``."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stn_deploy.errors import StnDeployError, one_line
from stn_deploy.pytorch.models.checkpoint import ModelConfig, check_state_dict, read_checkpoint
from stn_deploy.pytorch.models.zoo import ZOO, build_model, resolve_args
from stn_deploy.shapes import parse_shape

FACTORY_RE = re.compile(r"^(?P<module>[^:]+):(?P<attr>[A-Za-z_][A-Za-z0-9_.]*)$")


@dataclass
class LoadedModel:
    """A model in eval mode with the config that says how to feed it."""

    model: nn.Module
    config: ModelConfig
    source: str
    train_state: dict[str, Any] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The (first) input's per-sample shape."""
        return tuple(self.config.input_shape)

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        """Every input's per-sample shape, in ``forward``'s order (one for most models)."""
        more = self.config.extra.get("input_shapes")
        return [tuple(s) for s in more] if more else [self.input_shape]


@contextmanager
def _cwd_importable(enabled: bool):
    """Let a factory the user typed import modules of the current directory, for this call only."""
    cwd = str(Path.cwd())
    if not enabled or "" in sys.path or cwd in sys.path:
        yield
        return
    sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if cwd in sys.path:
            sys.path.remove(cwd)


def _import_factory(ref: str):
    m = FACTORY_RE.match(ref)
    if not m:
        raise StnDeployError(
            f"factory reference must look like 'package.module:callable', got {ref!r}"
        )
    module_name, attr = m["module"], m["attr"]
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise StnDeployError(f"factory file not found: {path}")
            # registered under a name of its own (never a real module's, e.g. a file "os.py"),
            # so code in it that looks itself up (@dataclass, pickle, typing) finds itself
            name = f"_stn_deploy_factory_{abs(hash(str(path.resolve())))}_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
        else:
            module = importlib.import_module(module_name)
    except StnDeployError:
        raise
    except Exception as exc:  # user code: any failure becomes one line
        raise StnDeployError(
            f"cannot import factory module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise StnDeployError(
                f"factory {ref!r}: module {module_name!r} has no attribute {attr!r}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise StnDeployError(f"factory {ref!r} is not callable")
    return obj


def float_dtype(model: nn.Module) -> torch.dtype:
    """The float dtype ``model`` computes in: its first floating parameter's (else buffer's),
    float32 for a model with neither."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def check_input_shape(model: nn.Module, shape, origin: str) -> None:
    """Run ``model`` once on zeros of ``(2, *shape)`` in its float dtype (a list of shapes:
    one tensor each); a failure is a one-line error naming the shape."""
    model.eval()
    shapes = shape if shape and isinstance(shape[0], (tuple, list)) else [shape]
    try:
        with torch.inference_mode():
            out = model(*(torch.zeros(2, *s, dtype=float_dtype(model)) for s in shapes))
    except Exception as exc:
        shown = "; ".join(str(tuple(s)) for s in shapes)
        raise StnDeployError(
            f"{origin} does not accept input shape {shown}: {one_line(exc)}"
        ) from exc
    values = list(out.values()) if isinstance(out, dict) else out
    if isinstance(values, (tuple, list)) and values:
        if all(isinstance(v, torch.Tensor) for v in values):
            return  # several outputs: export names them (dict keys, output_0..n)
    if not isinstance(out, torch.Tensor):
        raise StnDeployError(
            f"{origin} must return a tensor, or a tuple, list or dict of tensors; it returned "
            f"{type(out).__name__}"
        )


def _per_sample_shape(
    model: nn.Module, dims: tuple[int, ...], origin: str, check: bool
) -> tuple[int, ...]:
    """The per-sample input shape from the dims given: ``C,H,W``; ``N,C,H,W`` or a volume's
    ``C,D,H,W`` (four dims: the image reading first, the volume when the model refuses it);
    ``N,C,D,H,W``. Unchecked (a stored config), the dims are the per-sample shape already."""
    if not check:
        return dims
    if len(dims) == 5:
        dims = dims[1:]
    if len(dims) != 4:
        check_input_shape(model, dims, origin)
        return dims
    try:
        check_input_shape(model, dims[1:], origin)
        return dims[1:]
    except StnDeployError as image_error:
        try:
            check_input_shape(model, dims, origin)
        except StnDeployError:
            raise image_error from None
        return dims


def _call_factory(ref: str, cwd_on_path: bool) -> nn.Module:
    with _cwd_importable(cwd_on_path):
        fn = _import_factory(ref)
        try:
            model = fn()
        except Exception as exc:
            raise StnDeployError(f"factory {ref!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise StnDeployError(
            f"factory {ref!r} returned {type(model).__name__}, expected a torch.nn.Module"
        )
    return model


def _load_multi_input_factory(ref: str, input_shape: str, cwd_on_path: bool) -> LoadedModel:
    """A factory whose ``forward`` takes several tensors: ``--input-shape "3,32,32;2,3"`` gives
    each one's per-sample shape (no batch), in order."""
    shapes = [parse_shape(p, ndim=None, drop_batch=False) for p in input_shape.split(";")]
    if any(s is None for s in shapes):
        raise StnDeployError(
            f"input shapes must be ';'-separated per-sample shapes like 3,32,32;2,3, got "
            f"{input_shape!r}",
            param="input_shape",
        )
    model = _call_factory(ref, cwd_on_path)
    check_input_shape(model, shapes, f"factory model {ref!r}")
    config = ModelConfig(
        arch=ref,
        args={},
        input_shape=list(shapes[0]),
        extra={"input_shapes": [list(s) for s in shapes]},
    )
    return LoadedModel(model.eval(), config, source=ref)


def load_factory(
    ref: str, input_shape, *, check: bool = True, cwd_on_path: bool = True
) -> LoadedModel:
    """Call a user's ``module:callable`` (no arguments) and check it runs on ``input_shape``.

    ``cwd_on_path``: while importing and calling it, the current directory is importable (as
    for ``python -m``), as a user typing ``my_pkg.nets:make`` in their project expects; off for
    a factory named by a file rather than by the user.
    """
    if isinstance(input_shape, str) and ";" in input_shape:
        return _load_multi_input_factory(ref, input_shape, cwd_on_path)
    dims = parse_shape(input_shape, ndim=None, drop_batch=False)
    if dims is None:
        raise StnDeployError(
            f"factory {ref!r} needs an input shape ({{input_shape}} C,H,W)", param="input_shape"
        )
    if len(dims) not in (3, 4, 5):
        raise StnDeployError(
            f"input shape must be C,H,W (or N,C,H,W; C,D,H,W or N,C,D,H,W for a volume), got "
            f"{input_shape!r}",
            param="input_shape",
        )
    model = _call_factory(ref, cwd_on_path)
    shape = _per_sample_shape(model, dims, f"factory model {ref!r}", check)
    config = ModelConfig(arch=ref, args={}, input_shape=list(shape))
    return LoadedModel(model.eval(), config, source=ref)


def model_from_config(
    config: ModelConfig,
    origin: str,
    *,
    trust_factory: bool = False,
    user_factory: str | None = None,
) -> nn.Module:
    """Rebuild the (untrained) module a config describes.

    A zoo ``arch`` is built. A factory ``arch`` is code named by a file (``origin``), so it runs
    only when the user named the same factory (``user_factory``, imported as one they typed) or
    passed ``trust_factory`` (imported without putting the current directory on ``sys.path``).
    """
    arch = config.arch
    if not isinstance(arch, str) or not isinstance(config.args, dict):
        raise StnDeployError(f"{origin}: config 'arch' must be a string and 'args' an object")
    if arch in ZOO:
        return build_model(arch, **config.args)
    if not FACTORY_RE.match(arch):
        raise StnDeployError(f"{origin}: unknown architecture {arch!r}")
    typed = user_factory is not None and user_factory == arch
    if not (typed or trust_factory):
        raise StnDeployError(
            f"{origin} names factory {arch!r}, which would run code; "
            "pass {trust_factory=True} if you trust it",
            param="trust_factory",
        )
    return load_factory(arch, config.input_shape, check=False, cwd_on_path=typed).model


def load_checkpoint(
    path: str | Path, *, trust_factory: bool = False, arch: str | None = None
) -> LoadedModel:
    """Load a checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``).

    ``arch``: the model the caller names (a zoo name or their own factory); the checkpoint must
    hold it. A checkpoint holding a factory loads only when ``arch`` names that factory or with
    ``trust_factory=True``: a factory is code (see :func:`model_from_config`).
    """
    payload = read_checkpoint(path)
    origin = f"checkpoint {path}"
    config = ModelConfig.from_json(payload["config"], origin)
    if arch is not None and config.arch != arch:
        raise StnDeployError(f"checkpoint {path} holds {config.arch!r}, not {arch!r}")
    model = model_from_config(config, origin, trust_factory=trust_factory, user_factory=arch)
    check_state_dict(model, payload["state_dict"], origin)
    model.load_state_dict(payload["state_dict"])
    return LoadedModel(
        model.eval(), config, source=str(path), train_state=payload.get("train_state")
    )


def zoo_config(name: str, *, normalization=None, class_labels=None, **args) -> ModelConfig:
    """The config of zoo model ``name`` with its arguments resolved."""
    full = resolve_args(name, **args)
    shape = [full["in_channels"], full["in_size"], full["in_size"]]
    return ModelConfig(
        arch=name,
        args=full,
        input_shape=shape,
        normalization=normalization or {"mean": [0.0] * shape[0], "std": [1.0] * shape[0]},
        class_labels=list(class_labels)
        if class_labels
        else [str(i) for i in range(full["num_classes"])],
    )


def load_model(
    source: str,
    *,
    checkpoint: str | Path | None = None,
    input_shape=None,
    trust_factory: bool = False,
    **zoo_args,
) -> LoadedModel:
    """Resolve ``source`` wherever a model is expected.

    - a zoo name (``mnist-affine``), with ``checkpoint`` for trained weights;
    - a checkpoint path (``runs/x/checkpoint.pt``): one that names a factory loads only with
      ``trust_factory=True`` (a factory is code);
    - a factory ``package.module:callable`` or ``path/to/file.py:callable`` with ``input_shape``,
      or with ``checkpoint`` for its trained weights (the checkpoint must name that factory).
    """
    is_file = Path(source).suffix in (".pt", ".pth") or Path(source).is_file()
    if input_shape is not None and (source in ZOO or is_file or checkpoint is not None):
        owner = f"zoo model {source!r}" if source in ZOO and checkpoint is None else "a checkpoint"
        raise StnDeployError(
            f"{{input_shape}} does not apply to {owner}, which has its own input shape: it is "
            "for a module:callable factory without a checkpoint",
            param="input_shape",
        )
    if checkpoint is not None and (source in ZOO or (FACTORY_RE.match(source) and not is_file)):
        return load_checkpoint(checkpoint, trust_factory=trust_factory, arch=source)
    if source in ZOO:
        config = zoo_config(source, **zoo_args)
        return LoadedModel(model_from_config(config, source).eval(), config, source=source)
    if is_file:
        if checkpoint is not None:
            raise StnDeployError(
                f"{source} is a checkpoint itself: {{checkpoint}} goes with a zoo name or a "
                "factory",
                param="checkpoint",
            )
        return load_checkpoint(source, trust_factory=trust_factory)
    if FACTORY_RE.match(source):
        return load_factory(source, input_shape)
    raise StnDeployError(
        f"unknown model {source!r}: expected a zoo name ({', '.join(ZOO)}), a checkpoint file, "
        "or a module:callable factory"
    )
