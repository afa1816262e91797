"""The torch model as the runtime side needs it: one :class:`TorchSide`, built by the torch side.

verify and bench never import torch. A caller that has a torch model (``stn-deploy verify
--reference``, ``stn-deploy bench --reference``, the ``run`` pipeline, your own script) builds
one :class:`TorchSide` with :func:`stn_deploy.pytorch.torch_side` and passes the same object to
both: ``verify_model(..., torch_side=side)`` (torch as the reference, ``--bisect`` against a
re-export) and ``bench_model(..., torch_side=side)`` (the ``torch`` and ``stock-export``
baselines, ``--lowering-sweep`` exported from the model). This module imports neither torch nor
the torch side.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stn_deploy.runtimes.base import RuntimeSession


@dataclass(frozen=True)
class TorchSide:
    """A torch model as callables, built by the caller (:func:`stn_deploy.pytorch.torch_side`).

    Attributes:
        input_shape: per-image input shape ``(C, H, W)`` of the model.
        open_session: ``open_session(output_names=None, threads=None, input_names=None)`` ->
            torch eager as a :class:`~stn_deploy.runtimes.RuntimeSession` taking inputs under
            ``input_names`` (the ONNX file's, fed to the model by position; default
            ``image``) and answering with those output names (default ``log_probs``): verify's
            reference, bench's ``torch`` baseline. A session with ``run_float64(feeds)`` (the
            model in float64) lets verify gate on float32's inherent error
            (:mod:`stn_deploy.verify.inherent`); ``input_names`` may be left out of a
            hand-written ``open_session``.
        export: ``export(path, **export_args)`` writes our export of the model (the keywords of
            ``export_model``: ``target``, ``lowering``, ``opset``, ``inline``, ...) with a small
            golden bundle; bench's lowering sweep and :meth:`reexport` use it.
        stock_export: ``stock_export(path)`` writes the stock ``torch.onnx.export`` of the model
            to ``path`` and returns it (StnDeployError when it cannot): bench's ``stock-export``.
        source: where the model came from (checkpoint path, zoo name or factory), for messages.
        distortion: the MNIST variant the model was trained on, if known (verify's ``mnist``
            input set is distorted the same way).
        input_shapes: every input's per-sample shape, in ``forward``'s order, for a model with
            several inputs (empty: the one ``input_shape``); see :attr:`shapes`.
    """

    input_shape: tuple[int, ...]
    open_session: Callable[..., RuntimeSession]
    export: Callable[..., Any]
    stock_export: Callable[[Path], Path]
    source: str = ""
    distortion: str | None = None
    input_shapes: tuple[tuple[int, ...], ...] = ()

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """Every input's per-sample shape (``(input_shape,)`` for a one-input model)."""
        return tuple(self.input_shapes) or (tuple(self.input_shape),)

    def reexport(self, export_args: Mapping[str, Any]) -> Any:
        """The model exported again with ``export_args`` (an ONNX file's ``export_args``
        metadata) into a temporary directory, as an ``onnx.ModelProto`` (``verify --bisect``
        tells a wrong file from a wrong runtime with it)."""
        import onnx

        args = dict(export_args)
        if "sampler" in args:  # files record the lowering under its old key (byte-identical)
            args["lowering"] = args.pop("sampler")
        with tempfile.TemporaryDirectory(prefix="stn-deploy-reexport-") as tmp:
            path = Path(tmp) / "reexport.onnx"
            self.export(path, **args)
            return onnx.load(str(path))
