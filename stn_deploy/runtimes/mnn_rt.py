"""MNN (the ``[mnn]`` extra): an ONNX file converted with MNNConvert, run by MNN's Module API
on the CPU in fp32 ("high" precision), with the runtime hint WINOGRAD_MEMORY_LEVEL = 0: MNN's
default Winograd 5x5 convolutions cost up to 2e-3, which the sampler magnifies. Outputs come
back converted to NCHW (MNN may hand them out NC4HW4). One thread unless asked: MNN's thread
pool took 136 ms per batch-1 call at 2 threads on a busy 2-core machine (0.24 ms at 1)."""

from __future__ import annotations

import numpy as np

from stn_deploy.runtimes.converted import ConvertedSession, require

#: MNN::Interpreter::HintMode::WINOGRAD_MEMORY_LEVEL (the Python binding takes the number)
WINOGRAD_MEMORY_LEVEL = 3


def check_available() -> None:
    require("MNN", "mnn", "mnn")


class MnnSession(ConvertedSession):
    FORMAT, RUNTIME, LIBRARY, DIST = "mnn", "mnn", "MNN", "mnn"

    @classmethod
    def check_installed(cls) -> None:
        check_available()

    def _load(self, conv):
        import MNN.nn as nn

        config = {"backend": "CPU", "precision": "high", "numThread": int(self.threads or 1)}
        manager = nn.create_runtime_manager((config,))
        manager.set_hint(WINOGRAD_MEMORY_LEVEL, 0)
        ins = [conv.record["names"][t["name"]] for t in conv.record["inputs"]]
        outs = [conv.record["names"][t["name"]] for t in conv.record["outputs"]]
        module = nn.load_module_from_file(
            str(conv.path("model")),
            ins,
            outs,
            runtime_manager=manager,
            shape_mutable=True,
            rearrange=True,
        )
        if module is None:
            raise RuntimeError(f"MNN could not read {conv.path('model')}")
        return module

    def _call(self, feeds):
        import MNN.expr as F

        args = []
        for spec in self.inputs:
            x = np.ascontiguousarray(feeds[spec.name], dtype=np.float32)
            args.append(F.const(x, list(x.shape), F.NCHW, F.float))
        results = self._loaded.forward(args)
        if not isinstance(results, (list, tuple)):
            results = [results]
        return {
            spec.name: np.array(F.convert(r, F.NCHW).read(), copy=True)
            for spec, r in zip(self.outputs, results, strict=True)
        }
