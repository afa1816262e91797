"""ncnn (the ``[ncnn]`` extra): an ONNX file converted with pnnx (fp32 weights), run with
fp16/bf16 storage, packing and arithmetic off (ncnn turns fp16 storage on for x86 CPUs with
F16C: 2e-2 off). ncnn has no batch dimension: one image per extractor, and the session loops
over the batch (the loop is part of every timed call). One thread unless asked: its OpenMP
pool took 688 ms per batch of 64 at 2 threads on a busy 2-core machine (71 ms at 1)."""

from __future__ import annotations

import numpy as np

from stn_deploy.runtimes.converted import ConvertedSession, require


def check_available() -> None:
    require("ncnn", "ncnn", "ncnn")


class NcnnSession(ConvertedSession):
    FORMAT, RUNTIME, LIBRARY, DIST = "ncnn", "ncnn", "ncnn", "ncnn"

    @classmethod
    def check_installed(cls) -> None:
        check_available()

    def _load(self, conv):
        import ncnn

        from stn_deploy.runtimes.stderr import captured_stderr

        net = ncnn.Net()
        opt = net.opt
        for flag, value in conv.record.get("runtime_settings", {}).items():
            if hasattr(opt, flag):
                setattr(opt, flag, value)
        opt.num_threads = int(self.threads or 1)  # OpenMP spins: see the module docstring
        with captured_stderr() as err:
            rc_param = net.load_param(str(conv.path("param")))
            rc_bin = net.load_model(str(conv.path("bin"))) if rc_param == 0 else -1
        if rc_param != 0 or rc_bin != 0:
            raise RuntimeError(err.last_line("load_param failed"))
        return net

    def _call(self, feeds):
        import ncnn

        names = self.converted.record["names"]
        ex = self._loaded.create_extractor()
        for spec in self.inputs:
            x = np.ascontiguousarray(feeds[spec.name][0], dtype=np.float32)
            ex.input(names[spec.name], ncnn.Mat(x).clone())
        out = {}
        for spec in self.outputs:
            rc, mat = ex.extract(names[spec.name])
            if rc != 0:
                raise RuntimeError(f"extract {names[spec.name]} failed ({rc})")
            arr = np.array(mat, copy=True)
            rest = [d for d in (spec.shape or ())[1:]]
            if rest and all(isinstance(d, int) and d > 0 for d in rest):
                arr = arr.reshape(rest)
            out[spec.name] = arr[None].astype(self.onnx_dtype(spec.name), copy=False)
        return out
