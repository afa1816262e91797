"""PyTorch eager as a runtime: the reference when a checkpoint or factory is given (needs torch).

It answers to the same output names as our exports: ``log_probs`` and, for models exported with
``--expose-stn``, ``theta`` and ``rectified``. Any other single-output model answers with its
one output under whatever name the ONNX file gives it.

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
        shape = (None, *loaded.input_shape)
        self.inputs = [TensorSpec(input_name, "float32", shape)]
        names = list(output_names or ["log_probs"])
        if any(n in STN_OUTPUTS for n in names) and not hasattr(self.model, "stn"):
            raise StnDeployError(
                f"the ONNX file has outputs {names} but the torch model has no .stn to expose"
            )
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

    def forward(self, x):
        """Outputs in :attr:`outputs` order, as torch tensors (on the session's device)."""
        names = [o.name for o in self.outputs]
        if any(n in STN_OUTPUTS for n in names):
            rect, theta = self.model.stn.forward_with_theta(x)
            by = {"theta": theta, "rectified": rect}
            if any(n not in by for n in names):
                logp = self.model.classify(rect)
            return tuple(by[n] if n in by else logp for n in names)
        out = self.model(x)
        out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        if len(out) != len(names):
            raise StnDeployError(
                f"the torch model returns {len(out)} outputs, the ONNX file has {len(names)}"
            )
        return out

    def run(self, feeds, output_names=None):
        self.check_feeds(feeds)
        (x,) = feeds.values()
        with self.torch.inference_mode():
            outs = self.forward(self.torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        res = {o.name: t.detach().cpu().numpy() for o, t in zip(self.outputs, outs, strict=True)}
        return {n: res[n] for n in (output_names or res)}


register_session_factory("torch", TorchSession)
