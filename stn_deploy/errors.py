"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class StnDeployError(Exception):
    """A user-facing error: bad input, missing files, mismatched checkpoints.

    The message is shown as it is, on one line, without a traceback.
    """


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``exc``'s message (its type name when the message is blank), cut to
    ``limit`` characters: how a foreign library's error goes into a StnDeployError."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]
