"""IREE (the ``[iree]`` extra): an ONNX file imported at opset 17 and compiled for this CPU
(llvm-cpu), run on the ``local-task`` driver. ``to_host()`` returns a view of a buffer IREE
reuses on the next call, so every result is copied. Files with a GridSample node are refused at
conversion (IREE 3.13 miscompiles it; see :mod:`stn_deploy.convert.iree`)."""

from __future__ import annotations

import numpy as np

from stn_deploy.runtimes.converted import ConvertedSession, require

_THREADS_SET: list[int] = []


def check_available() -> None:
    require("iree.runtime", "iree", "iree")


def _config(threads: int | None):
    import iree.runtime as ireert

    if threads and not _THREADS_SET:  # the task topology is global: set once per process
        ireert.flags.parse_flags(f"--task_topology_max_group_count={int(threads)}")
        _THREADS_SET.append(int(threads))
    return ireert.Config("local-task")


class IreeSession(ConvertedSession):
    FORMAT, RUNTIME, LIBRARY, DIST = "iree", "iree", "iree.runtime", "iree-base-runtime"

    @classmethod
    def check_installed(cls) -> None:
        check_available()

    def _load(self, conv):
        import iree.runtime as ireert

        config = _config(self.threads)
        vm = ireert.VmModule.mmap(config.vm_instance, str(conv.path("module")))
        ctx = ireert.SystemContext(config=config, vm_modules=[vm])
        module = getattr(ctx.modules, vm.name)
        names = [n for n in vm.function_names if not n.startswith("__")]
        entry = conv.record.get("runtime_settings", {}).get("entry", "main_graph")
        fn = module[entry if entry in names else names[0]]
        return ctx, fn

    def _call(self, feeds):
        _ctx, fn = self._loaded
        args = [
            np.ascontiguousarray(feeds[t.name], dtype=self.onnx_dtype(t.name)) for t in self.inputs
        ]
        results = fn(*args)
        if not isinstance(results, (list, tuple)):
            results = [results]
        return {  # to_host() is a view of a buffer the next call reuses: copy it
            spec.name: np.array(r.to_host(), copy=True)
            for spec, r in zip(self.outputs, results, strict=True)
        }
