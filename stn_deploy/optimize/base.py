"""What a rewrite pass is, and the registry the passes add themselves to (no torch).

A pass is one module with a ``find(model) -> list[str]`` (its sites: one stable tensor name per
place the pattern matches) and a ``rewrite(model, sites) -> (model, n)`` (rewrite those sites,
all when ``sites`` is None, and say how many), registered with :func:`register`. Every pass is
named, marked exact or approximate, and states its bound: "exact" means the rewritten graph
computes the same float32 function up to the reordering of sums (what another runtime or CPU
does anyway), and each pass says which sums; an approximate pass says its error.

Example::

    from stn_deploy.optimize import get_pass
    model, n = get_pass("relu-before-maxpool").apply(model)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx

from stn_deploy.errors import StnDeployError

Rewrite = Callable[[onnx.ModelProto, "set[str] | None"], "tuple[onnx.ModelProto, int]"]


@dataclass(frozen=True)
class Pass:
    """One registered rewrite.

    Attributes:
        name: how the CLI, the metadata and :func:`get_pass` call it.
        exact: True when the result equals the original's up to :attr:`bound`.
        bound: what may differ, in words (bit-identical, or which sums are reordered).
        summary: the rewrite in one line.
        find: the sites where the pattern matches (stable tensor names), in graph order.
        rewrite: rewrites the given sites (None: all) of a copy; returns it and how many.
    """

    name: str
    exact: bool
    bound: str
    summary: str
    find: Callable[[onnx.ModelProto], list[str]]
    rewrite: Rewrite

    def apply(
        self, model: onnx.ModelProto, sites: set[str] | None = None
    ) -> tuple[onnx.ModelProto, int]:
        """The rewritten copy of ``model`` and the number of sites rewritten (``model`` itself
        is never changed)."""
        return self.rewrite(model, sites)


_REGISTRY: dict[str, Pass] = {}


def register(name: str, *, exact: bool, bound: str, summary: str) -> Callable[[Callable], Callable]:
    """Decorate a module's ``rewrite`` function; the module's ``find`` is looked up by name."""

    def deco(rewrite: Callable) -> Callable:
        import sys

        find = sys.modules[rewrite.__module__].find
        _REGISTRY[name] = Pass(name, exact, bound, summary, find, rewrite)
        return rewrite

    return deco


def all_passes() -> list[Pass]:
    """Every registered pass, in the order :func:`stn_deploy.optimize.optimize_model` tries
    them (the order of :data:`stn_deploy.optimize.passes.ORDER`)."""
    from stn_deploy.optimize import passes

    return [_REGISTRY[n] for n in passes.ORDER]


def get_pass(name: str) -> Pass:
    """The pass called ``name``; a one-line error naming the known ones otherwise."""
    from stn_deploy.optimize import passes  # noqa: F401 - registers them

    if name not in _REGISTRY:
        known = ", ".join(passes.ORDER)
        raise StnDeployError(f"unknown pass {name!r} in {{passes}}; known: {known}", param="passes")
    return _REGISTRY[name]
