"""Runtimes as runners (after Polygraphy's runners): a :class:`Runner` names a runtime and opens
it lazily, :func:`run_batched` runs one input set on an open session, :func:`placement` asks where
its nodes ran.

:func:`open_runtime` and :func:`availability` are module-level hooks: every part of verify opens
and probes runtimes through them, so a test can substitute a fake runtime in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stn_deploy.errors import StnDeployError, one_line
from stn_deploy.runtimes import Availability, RuntimeSession, open_session
from stn_deploy.runtimes import availability as _availability

#: runtimes that can stand in for torch on the non-golden inputs, in order of preference (and
#: the oracles of ``--bisect``)
SECONDARY = ("cpu", "reference")


def open_runtime(name: str, model: Any, **kw: Any) -> RuntimeSession:
    """Open ``model`` on runtime ``name`` (the hook every part of verify opens runtimes with)."""
    return open_session(name, model, **kw)


def availability(name: str) -> Availability:
    """Whether runtime ``name`` can run here (the hook every part of verify asks)."""
    return _availability(name)


def first_available(candidates=SECONDARY, *, besides: str | None = None) -> str | None:
    """The first of ``candidates`` other than ``besides`` that can run here."""
    return next((n for n in candidates if n != besides and availability(n).available), None)


@dataclass
class Runner:
    """A runtime to verify the model on; :meth:`activate` opens it (RuntimeUnavailable /
    StnDeployError when it cannot)."""

    name: str
    model: Any
    threads: int | None = None
    #: why it cannot run here ("" when it may): probed once, when the runtimes are chosen
    unavailable: str = ""

    def activate(self) -> RuntimeSession:
        return open_runtime(self.name, self.model, threads=self.threads)


def align_feeds(
    feeds: dict[str, np.ndarray], names: list[str], what: str
) -> tuple[dict[str, np.ndarray], str]:
    """``feeds`` under ``names`` (a model's inputs): by name when the names are the same, else
    by position with a one-line note saying so; a different number of inputs is an error."""
    if sorted(feeds) == sorted(names):
        return feeds, ""
    if len(feeds) != len(names):
        raise StnDeployError(
            f"{what} takes {len(names)} inputs {names}, the input sets have {len(feeds)} "
            f"{sorted(feeds)}"
        )
    pairs = list(zip(feeds, names, strict=True))
    note = (
        f"{what}: inputs matched by position (" + ", ".join(f"{a} -> {b}" for a, b in pairs) + ")"
    )
    return {b: feeds[a] for a, b in pairs}, note


def run_batched(session: RuntimeSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``feeds`` ``(N, ...)``; a model with a fixed batch size is run in chunks of it."""
    dtypes = {t.name: t.dtype for t in session.inputs}
    feeds = {  # an fp16 file with half-precision inputs gets them cast from float32
        k: v.astype(dtypes[k])
        if dtypes.get(k) in ("float16", "float32", "float64") and v.dtype != dtypes[k]
        else v
        for k, v in feeds.items()
    }
    batch = session.inputs[0].fixed_batch() if session.inputs else None
    n = next(iter(feeds.values())).shape[0]
    if not batch or batch == n:
        return session.run(feeds)
    if n % batch:
        raise StnDeployError(f"the model takes a fixed batch of {batch}; {n} inputs do not divide")
    parts = [
        session.run({k: v[i : i + batch] for k, v in feeds.items()}) for i in range(0, n, batch)
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def first_batch(session: RuntimeSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feeds`` cut to the session's fixed batch size (all of them when it has none)."""
    batch = session.inputs[0].fixed_batch() if session.inputs else None
    return {k: v[:batch] for k, v in feeds.items()} if batch else feeds


class PhaseError(StnDeployError):
    """A runtime failed in one phase (``load``, ``placement probe``, ``run``): one line naming
    the runtime and the phase, whatever the runtime raised."""

    def __init__(self, runtime: str, phase: str, exc: BaseException) -> None:
        self.runtime, self.phase = runtime, phase
        super().__init__(f"{phase} failed: {one_line(exc)}")


def guarded(runtime: str, phase: str, fn, *args: Any, **kw: Any) -> Any:
    """``fn(*args, **kw)``; anything it raises (a runtime's own exception types included, but
    not RuntimeUnavailable) becomes a :class:`PhaseError` naming ``runtime`` and ``phase``."""
    from stn_deploy.runtimes import RuntimeUnavailable

    try:
        return fn(*args, **kw)
    except (RuntimeUnavailable, PhaseError, KeyboardInterrupt):
        raise
    except Exception as exc:  # onnxruntime, openvino and numpy raise their own types
        raise PhaseError(runtime, phase, exc) from exc


def placement(session: RuntimeSession, feeds, strict: bool) -> dict[str, Any] | None:
    """The report's ``placement`` of ``session`` on ``feeds``: nodes not on its primary
    provider (``reported: False`` when the runtime does not say). A probe that fails raises
    :class:`PhaseError` (phase ``placement probe``)."""
    placed = guarded(session.info.name, "placement probe", session.placement, feeds)
    if placed is None:
        return {"reported": False, "primary": session.primary}
    fallbacks = [p for p in placed if p.provider != session.primary]
    return {
        "reported": True,
        "primary": session.primary,
        "nodes": len(placed),
        "fallbacks": [
            {"node": p.node, "op_type": p.op_type, "provider": p.provider} for p in fallbacks
        ],
        "strict": strict,
    }
