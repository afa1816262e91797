"""LiteRT (``ai-edge-litert``, the ``[litert]`` extra): an ONNX file converted with onnx2tf
(:mod:`stn_deploy.convert.tflite`; its NHWC input is fed from the NCHW arrays here), run through
the model's ``serving_default`` signature with XNNPACK. onnx2tf sometimes fixes a batch of 1
inside the file (a Reshape that fails above batch 1): the session then feeds one image per call
(said in ``info.extra["batch_per_call"]``); when XNNPACK cannot take a file at all, the
interpreter without default delegates runs it."""

from __future__ import annotations

import numpy as np

from stn_deploy.runtimes.converted import ConvertedSession, require


def check_available() -> None:
    require("ai_edge_litert", "litert", "litert")


class LiteRtSession(ConvertedSession):
    FORMAT, RUNTIME, LIBRARY, DIST = "tflite", "litert", "ai-edge-litert", "ai-edge-litert"

    @classmethod
    def check_installed(cls) -> None:
        check_available()

    def _load(self, conv):
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(conv.path("model")), num_threads=int(self.threads or 2))
        interp.allocate_tensors()
        self._xnnpack = True
        return interp

    def _fallback(self):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self._xnnpack = False
        self._loaded = Interpreter(
            model_path=str(self.converted.path("model")),
            num_threads=int(self.threads or 2),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        self.info.extra["delegate"] = "none (XNNPACK failed to reshape)"

    def _call(self, feeds):
        try:
            return self._invoke(feeds)
        except RuntimeError as exc:
            error = exc
        n = next(iter(feeds.values())).shape[0]
        if n > 1 and self.batch != 1:  # onnx2tf fixed a batch of 1 somewhere: one image per call
            try:
                out = self._per_image(feeds)
            except RuntimeError:
                pass
            else:
                self.batch = 1
                self.info.extra["batch_per_call"] = f"1 (batch {n} failed: {str(error)[:120]})"
                return out
        if self._xnnpack:
            self._fallback()
            return self._call(feeds)
        raise error

    def _per_image(self, feeds):
        parts = [
            self._invoke({k: v[i : i + 1] for k, v in feeds.items()})
            for i in range(len(next(iter(feeds.values()))))
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _invoke(self, feeds):
        rec = self.converted.record
        layouts = {t["name"]: t["layout"] for t in rec["inputs"]}
        interp = self._loaded
        runner = interp.get_signature_runner(
            rec["runtime_settings"].get("signature", "serving_default")
        )
        ins = runner.get_input_details()
        args = {}
        for spec in self.inputs:
            x = feeds[spec.name]
            if layouts.get(spec.name) == "NHWC":
                x = x.transpose(0, 2, 3, 1)
            args[rec["names"][spec.name]] = np.ascontiguousarray(
                x, dtype=ins[rec["names"][spec.name]]["dtype"]
            )
        res = runner(**args)
        return {
            spec.name: np.array(res[rec["names"][spec.name]], copy=True) for spec in self.outputs
        }
