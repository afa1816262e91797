"""Comma-separated names given on the command line (``--providers``, ``--inputs``, ``--compare``;
no torch).

>>> unique_names("cpu, openvino,,cpu", str.strip)
['cpu', 'openvino']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


def unique_names(spec: str | Iterable[str], name_of: Callable[[str], str]) -> list[str]:
    """The items of a comma-separated ``spec`` (or of a sequence), blank ones skipped, each
    turned into its name by ``name_of`` (which raises for an unknown one), duplicates dropped,
    in the given order."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in items:
        if not item.strip():
            continue
        name = name_of(item)
        if name not in names:
            names.append(name)
    return names
