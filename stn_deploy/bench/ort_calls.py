"""How a benchmark calls an ONNX Runtime session: plain ``run``, IO binding, or a CUDA graph.

IO binding (``--io-binding``) keeps the input and outputs on the execution provider's device:
the input is copied there once as an ``OrtValue``, ORT allocates the outputs there, and each
timed call is ``run_with_iobinding`` plus ``synchronize_outputs`` (so the time includes the
device work, not only its launch). A CUDA graph (``--cuda-graph``, CUDA EP with
``enable_cuda_graph``) needs fixed input and output addresses: both are pre-allocated on the
device with the shapes of one plain run, and the first ``run_with_iobinding`` captures the
graph that later calls replay. One session per batch size, since a graph has fixed shapes.

Example (on a machine with the CUDA EP):
    >>> s = open_session("cuda", "m.onnx")                                   # doctest: +SKIP
    >>> call = iobinding_call(s.sess, "cuda", {"image": x}, ["log_probs"])    # doctest: +SKIP
    >>> call()                                                                # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from stn_deploy.errors import StnDeployError, one_line

#: the EPs whose device memory ORT's IO binding addresses as "cuda"
DEVICE_OF_EP = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}
#: EPs that capture CUDA graphs, with the provider option that turns it on
CUDA_GRAPH_OPTION = {
    "CUDAExecutionProvider": {"enable_cuda_graph": "1"},
    "TensorrtExecutionProvider": {"trt_cuda_graph_enable": "1"},
}


def io_binding_reason(ep: str) -> str | None:
    """Why IO binding on device memory does not apply to ``ep`` (None: it does)."""
    if ep in DEVICE_OF_EP:
        return None
    return (
        f"device-resident inputs (IO binding) need a GPU execution provider (cuda, tensorrt); "
        f"{ep} runs on host memory"
    )


def cuda_graph_reason(ep: str) -> str | None:
    """Why a CUDA graph does not apply to ``ep`` (None: it does)."""
    if ep in CUDA_GRAPH_OPTION:
        return None
    return f"CUDA graphs need the CUDA or TensorRT execution provider, not {ep}"


def _bound_call(
    sess: Any,
    device: str,
    feeds: dict[str, np.ndarray],
    bind_outputs: Callable[[Any, Any, list], None],
    what: str,
) -> Callable[[], None]:
    """A call of ``sess`` through an IO binding: the inputs copied once to ``device`` (0), the
    outputs bound by ``bind_outputs(ort, binding, held)``; ``what`` names it in errors."""
    import onnxruntime as ort

    try:
        binding = sess.io_binding()
        held: list = []  # the OrtValues must outlive the binding
        for name, arr in feeds.items():
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr), device, 0)
            held.append(value)
            binding.bind_ortvalue_input(name, value)
        bind_outputs(ort, binding, held)
    except Exception as exc:
        raise StnDeployError(f"{what} on {device} failed: {one_line(exc)}") from exc

    def call(binding=binding, held=held) -> None:
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()

    # what the last call wrote, copied to numpy in output order (to check it; never timed)
    call.outputs = binding.copy_outputs_to_cpu  # type: ignore[attr-defined]
    return call


def iobinding_call(
    sess: Any, device: str, feeds: dict[str, np.ndarray], output_names: list[str]
) -> Callable[[], None]:
    """A call of ``sess`` (an ``onnxruntime.InferenceSession``) with the inputs copied once to
    ``device`` (0) and outputs left there by ORT."""

    def outputs(ort, binding, held) -> None:
        for name in output_names:
            binding.bind_output(name, device, 0)

    return _bound_call(sess, device, feeds, outputs, "IO binding")


def cuda_graph_call(
    sess: Any,
    device: str,
    feeds: dict[str, np.ndarray],
    output_shapes: dict[str, tuple[tuple[int, ...], np.dtype]],
) -> Callable[[], None]:
    """A call that replays a CUDA graph of ``sess`` (made with the EP's CUDA-graph option).

    ``output_shapes`` maps each output to (shape, dtype), from one plain run at this batch
    size. The first call (a warm-up call) captures the graph.
    """

    def outputs(ort, binding, held) -> None:
        for name, (shape, dtype) in output_shapes.items():
            value = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, device, 0)
            held.append(value)
            binding.bind_ortvalue_output(name, value)

    return _bound_call(sess, device, feeds, outputs, "binding for a CUDA graph")
