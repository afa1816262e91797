"""Runtime names, what is available here and why not, and opening a session by name.

Names: ``cpu``, ``cuda``, ``tensorrt``, ... (ONNX Runtime execution providers, short or full
EP name), ``openvino`` (the OpenVINO runtime, CPU), ``reference`` (onnx's reference evaluator),
``torch`` (PyTorch eager; needs a checkpoint or factory), and the edge runtimes that run a
converted model (:mod:`.converted`): ``litert``, ``ncnn``, ``mnn``, ``iree``. The torch session is not made here
(nothing here imports the torch side): the torch side registers its factory with
:func:`register_session_factory` when its package is imported, and a caller may also give one
(``open_session("torch", ..., session_factory=...)``).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stn_deploy.errors import StnDeployError
from stn_deploy.names import unique_names
from stn_deploy.runtimes import ort as ort_rt
from stn_deploy.runtimes.base import RuntimeSession, RuntimeUnavailable

#: runtimes running a converted model -> module and session class (see :mod:`.converted`)
EDGE = {
    "litert": ("litert_rt", "LiteRtSession"),
    "ncnn": ("ncnn_rt", "NcnnSession"),
    "mnn": ("mnn_rt", "MnnSession"),
    "iree": ("iree_rt", "IreeSession"),
}
NON_ORT = ("openvino", "reference", "torch", *EDGE)

#: runtime name -> ``factory(loaded, **options)`` opening a session of a runtime that lives
#: outside this package (``torch``: registered by the torch side)
_SESSION_FACTORIES: dict[str, Callable[..., RuntimeSession]] = {}


def register_session_factory(name: str, factory: Callable[..., RuntimeSession]) -> None:
    """Let :func:`open_session` open runtime ``name`` (``torch``) with ``factory(loaded,
    output_names=..., threads=..., **options)``."""
    _SESSION_FACTORIES[name] = factory


@dataclass(frozen=True)
class Availability:
    name: str
    available: bool
    reason: str = ""


def canonical(name: str) -> str:
    """The runtime name for ``name`` ('CUDAExecutionProvider' -> 'cuda'); unknown is an error."""
    n = name.strip()
    if n.lower() in NON_ORT:
        return n.lower()
    ep = ort_rt.ep_for(n) or ort_rt.ep_for(n.lower())
    if ep is not None:
        return ort_rt.short_name(ep)
    eps = [e for e in ort_rt.known_eps() if e not in ort_rt.NOT_COMPUTE]
    known = sorted({*NON_ORT, *(ort_rt.short_name(e) for e in eps)})
    raise StnDeployError(f"unknown runtime/provider {name!r}: choose from {', '.join(known)}")


def parse_names(spec: str | None) -> list[str] | None:
    """``"cpu, cuda,openvino"`` -> canonical names (duplicates dropped); None/'all' -> None;
    an empty list or item is an error."""
    if spec is None or spec.strip().lower() == "all":
        return None
    return unique_names(spec, canonical, "runtimes")


def availability(name: str) -> Availability:
    """Whether runtime ``name`` can run here, and if not, why (never raises for a known name)."""
    name = canonical(name)
    try:
        if name == "openvino":
            from stn_deploy.runtimes.openvino_rt import check_available

            check_available()
        elif name == "reference":
            import onnx.reference  # noqa: F401  (ships with onnx)
        elif name in EDGE:
            importlib.import_module(f"stn_deploy.runtimes.{EDGE[name][0]}").check_available()
        elif name == "torch":
            if importlib.util.find_spec("torch") is None:
                raise RuntimeUnavailable("torch is not installed")
        else:
            ort_rt.check_available(ort_rt.ep_for(name))
    except RuntimeUnavailable as exc:
        return Availability(name, False, str(exc))
    return Availability(name, True)


def default_names(include_torch: bool = False) -> list[str]:
    """Every runtime that may be available here, in a stable order: ORT EPs, openvino,
    reference (and torch when asked)."""
    eps = [ort_rt.short_name(e) for e in ort_rt.available_eps()] or ["cpu"]
    order = ["cpu", "cuda", "tensorrt"]
    eps = sorted(dict.fromkeys(eps), key=lambda n: (order.index(n) if n in order else 9, n))
    return [*eps, "openvino", "reference", *(["torch"] if include_torch else [])]


def open_session(
    name: str,
    model: str | Path | Any,
    *,
    loaded: Any = None,
    threads: int | None = None,
    opt_level: str | None = None,
    output_names: list[str] | None = None,
    session_factory: Callable[..., RuntimeSession] | None = None,
    **options: Any,
) -> RuntimeSession:
    """Open ``model`` (an ONNX path or ModelProto) on runtime ``name``.

    ``loaded`` (the torch side's loaded model) is needed for ``torch``, which answers with
    ``output_names``; the session comes from ``session_factory(loaded, ...)`` or the factory the
    torch side registered (:func:`register_session_factory`). Raises :class:`RuntimeUnavailable` with the reason when the
    runtime cannot run here, StnDeployError when the model cannot be loaded.
    """
    name = canonical(name)
    if name == "torch":
        if loaded is None:
            raise StnDeployError(
                "the torch runtime needs the torch model ({loaded})", param="loaded"
            )
        factory = session_factory or _SESSION_FACTORIES.get("torch")
        if factory is None:
            raise RuntimeUnavailable("the torch runtime needs the torch side of stn-deploy loaded")
        return factory(loaded, output_names=output_names, threads=threads, **options)
    if name == "openvino":
        from stn_deploy.runtimes.openvino_rt import OpenVinoSession

        return OpenVinoSession(model, threads=threads, **options)
    if name in EDGE:
        module, cls = EDGE[name]
        session = getattr(importlib.import_module(f"stn_deploy.runtimes.{module}"), cls)
        return session(model, name=name, threads=threads, **options)
    if name == "reference":
        from stn_deploy.runtimes.reference import ReferenceSession

        return ReferenceSession(model)
    import onnx

    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif not isinstance(model, bytes):
        from stn_deploy.runtimes.base import load_onnx

        load_onnx(model)  # one-line errors for missing/corrupt files before ORT sees them
    return ort_rt.OrtSession(
        model, ort_rt.ep_for(name), name=name, threads=threads, opt_level=opt_level, **options
    )
