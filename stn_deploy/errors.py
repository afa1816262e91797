"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class StnDeployError(Exception):
    """A user-facing error: bad input, missing files, mismatched checkpoints.

    The message is shown as it is, on one line, without a traceback.
    """
