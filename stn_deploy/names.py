"""Comma-separated names (the ``runtimes``, ``inputs`` and ``compare`` parameters, and the CLI's
``--runtimes``, ``--inputs``, ``--compare``; no torch).

>>> unique_names("cpu, openvino,cpu", str.strip)
['cpu', 'openvino']
>>> unique_names("cpu,,openvino", str.strip, "runtimes")
Traceback (most recent call last):
stn_deploy.errors.StnDeployError: runtimes has an empty item: 'cpu,,openvino'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from stn_deploy.errors import StnDeployError


def split_items(spec: str | Iterable[str], what: str | None = None) -> list[str]:
    """The stripped items of a comma-separated ``spec`` (or of a sequence). An empty or blank
    string, or an empty item (``1,,2``, ``golden,``), is an error naming ``what`` (the
    parameter, e.g. ``runtimes``: its ``param``; None: "the list"); an empty sequence is just
    empty."""
    items = spec.split(",") if isinstance(spec, str) else [str(i) for i in spec]
    stripped = [i.strip() for i in items]
    shown = "the list" if what is None else "{" + what + "}"
    if isinstance(spec, str) and not any(stripped):
        raise StnDeployError(f"{shown} is empty", param=what)
    if not all(stripped):
        raise StnDeployError(f"{shown} has an empty item: {spec!r}", param=what)
    return stripped


def unique_names(
    spec: str | Iterable[str], name_of: Callable[[str], str], what: str | None = None
) -> list[str]:
    """The items of :func:`split_items` (``what`` names the parameter in its errors), each turned
    into its name by ``name_of`` (which raises for an unknown one), duplicates dropped, in the
    given order."""
    names: list[str] = []
    for item in split_items(spec, what):
        name = name_of(item)
        if name not in names:
            names.append(name)
    return names
