"""``--trust-factory``: the opt-in of every command that loads a checkpoint.

A checkpoint's config may name a ``module:callable`` or ``file.py:callable`` factory, which is
code; stn-deploy runs it only when the user says so on the command line.
"""

from __future__ import annotations

import click

TRUST_FACTORY_HELP = (
    "Load a checkpoint whose config names a module:callable or file.py:callable factory, "
    "which runs that code (without it only zoo checkpoints load, or ones whose factory you "
    "name yourself as the model)."
)

trust_factory_option = click.option("--trust-factory", is_flag=True, help=TRUST_FACTORY_HELP)
