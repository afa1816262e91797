"""PyTorch eager as a runtime: the reference when a checkpoint or factory is given (needs torch).

It answers under the ONNX file's names: its inputs are the file's (``input_names``; fed to the
model's forward by position), its outputs the file's graph outputs (``output_names``), matched by
position to what the forward returns (a tensor, a tuple/list, or a dict: by key when the keys are
the file's names). ``theta`` and ``rectified`` of files exported with ``--expose-stn`` come from
the model's ``.stn``. :meth:`TorchSession.run_float64` runs a float64 copy of the model (the
inherent float32 error of an input, :mod:`stn_deploy.pytorch.reference64`).

Importing this module (the torch side's package does) registers :class:`TorchSession` as the
``torch`` runtime of :func:`stn_deploy.runtimes.open_session`; it does not import torch.
"""

from __future__ import annotations

import numpy as np

from stn_deploy.errors import StnDeployError
from stn_deploy.runtimes.base import RuntimeInfo, RuntimeSession, RuntimeUnavailable, TensorSpec
from stn_deploy.runtimes.registry import register_session_factory

STN_OUTPUTS = ("theta", "rectified")


class TorchSession(RuntimeSession):
    def __init__(
        self,
        loaded,
        *,
        output_names: list[str] | None = None,
        input_name: str = "image",
        input_names: list[str] | None = None,
        threads: int | None = None,
        device: str = "cpu",
        name: str = "torch",
    ) -> None:
        try:
            import torch
        except ImportError as exc:
            raise RuntimeUnavailable("torch is not installed") from exc
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeUnavailable("torch has no CUDA device here")
        if threads:
            torch.set_num_threads(int(threads))
        self.torch = torch
        self.device = torch.device(device)
        self.model = loaded.model.eval().to(self.device)
        self.loaded = loaded
        in_names = list(input_names or [input_name])
        shape = (None, *loaded.input_shape) if len(in_names) == 1 else None
        self.inputs = [TensorSpec(n, "float32", shape) for n in in_names]
        names = list(output_names or ["log_probs"])
        self._expose = any(n in STN_OUTPUTS for n in names) and hasattr(
            getattr(self.model, "stn", None), "forward_with_theta"
        )
        self._model64 = None
        self.outputs = [TensorSpec(n, "float32", None) for n in names]
        self.primary = device
        self.info = RuntimeInfo(
            name=name,
            library="torch",
            version=torch.__version__,
            device=device if device == "cpu" else torch.cuda.get_device_name(0),
            providers=(f"eager-{device}",),
            extra={"threads": torch.get_num_threads(), "source": loaded.source},
        )

    def forward(self, *xs, model=None):
        """Outputs in :attr:`outputs` order, as torch tensors (on the session's device)."""
        model = model or self.model
        names = [o.name for o in self.outputs]
        if self._expose:
            rect, theta = model.stn.forward_with_theta(*xs)
            by = {"theta": theta, "rectified": rect}
            if any(n not in by for n in names):
                logp = model.classify(rect)
            return tuple(by[n] if n in by else logp for n in names)
        out = model(*xs)
        if isinstance(out, dict):
            keys = [str(k) for k in out]
            out = (
                tuple(out[k] for k in names)
                if sorted(keys) == sorted(names)
                else tuple(out.values())
            )
        out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        if len(out) != len(names):
            raise StnDeployError(
                f"the torch model returns {len(out)} outputs, the ONNX file has {len(names)} "
                f"({names})"
            )
        return out

    def _tensors(self, feeds, dtype=None):
        self.check_feeds(feeds)
        xs = [np.ascontiguousarray(feeds[t.name]) for t in self.inputs]
        ts = [self.torch.from_numpy(x).to(self.device) for x in xs]
        return [t.to(dtype) if dtype is not None and t.is_floating_point() else t for t in ts]

    def run(self, feeds, output_names=None):
        xs = self._tensors(feeds)
        with self.torch.inference_mode():
            outs = self.forward(*xs)
        res = {o.name: t.detach().cpu().numpy() for o, t in zip(self.outputs, outs, strict=True)}
        return {n: res[n] for n in (output_names or res)}

    def run_float64(self, feeds) -> dict | None:
        """The outputs of a float64 copy of the model on ``feeds`` cast to float64 (None when
        the model cannot run in float64): float32's own error on these inputs is their
        difference from :meth:`run`'s."""
        from stn_deploy.pytorch.reference64 import double_copy, float64_outputs

        if self._model64 is None:
            self._model64 = double_copy(self.model) or False
        if self._model64 is False:
            return None
        xs = [x.cpu().numpy() for x in self._tensors(feeds)]
        m64 = self._model64
        outs = float64_outputs(m64, xs, lambda *t: self.forward(*t, model=m64))
        if outs is None or len(outs) != len(self.outputs):
            return None
        return {o.name: a for o, a in zip(self.outputs, outs, strict=True)}


register_session_factory("torch", TorchSession)
