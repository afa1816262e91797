"""The one exception type the CLI turns into a one-line message and a non-zero exit.

Errors name **parameters**, not command-line flags
--------------------------------------------------

The library is used from Python as much as from the command line, so a message never spells a
flag (``--runtimes``); it names the Python parameter at fault, as a placeholder in braces::

    raise StnDeployError(f"{{runtimes}} has an empty item: {spec!r}", param="runtimes")
    raise StnDeployError("... which would run code; pass {trust_factory=True} if you trust it",
                         param="trust_factory")

``param`` (a name, or a tuple of names when a message is about several, e.g.
``param=("iters", "duration")``) says which placeholders the message holds; only those are
rendered, so braces in the rest of the text (a dict, a user's file name) are left alone. A
placeholder is ``{name}`` or ``{name=VALUE}``:

- ``str(err)`` (:meth:`StnDeployError.render` with no table), what a Python caller sees, writes
  the placeholder without its braces: ``runtimes has an empty item: 'cpu,,x'``, ``pass
  trust_factory=True if you trust it``;
- the CLI renders it with its table of flags (``stn_deploy.cli.options.FLAGS``), writing the flag
  alone: ``--runtimes has an empty item: 'cpu,,x'``, ``pass --trust-factory if you trust it``.
  A name the table does not know keeps the Python rendering.

``err.param`` is the first name (the parameter at fault; None when the error is about no one
parameter), ``err.params`` all of them. Where a StnDeployError replaces a foreign exception it
is raised ``from exc``, so ``__cause__`` keeps the original for Python callers; the CLI prints
one line and never a traceback or the cause.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping


class StnDeployError(Exception):
    """A user-facing error: bad input, missing files, mismatched checkpoints.

    The message is shown as it is, on one line, without a traceback; ``param`` names the
    parameter(s) whose ``{name}`` placeholders it holds (see the module docstring).
    """

    def __init__(self, message: object = "", *, param: str | tuple[str, ...] | None = None):
        super().__init__(message)
        self.template = str(message)
        self.params: tuple[str, ...] = (param,) if isinstance(param, str) else tuple(param or ())
        self.param: str | None = self.params[0] if self.params else None

    def render(self, flags: Mapping[str, str] | Callable[[str], str | None] | None = None) -> str:
        """The message with each placeholder of :attr:`params` written as ``flags`` gives it
        (a mapping or a function from parameter name to flag; None or a missing name: the
        Python rendering, the placeholder without its braces)."""
        text = self.template
        lookup = flags.get if isinstance(flags, Mapping) else flags
        for name in self.params:
            flag = lookup(name) if lookup is not None else None

            def sub(m: re.Match[str], flag: str | None = flag) -> str:
                return flag or m.group(0)[1:-1]

            text = re.sub(r"\{" + re.escape(name) + r"(?:=[^{}]*)?\}", sub, text)
        return text

    def __str__(self) -> str:
        return self.render()


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``exc``'s message (its type name when the message is blank), cut to
    ``limit`` characters: how a foreign library's error goes into a StnDeployError."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]
