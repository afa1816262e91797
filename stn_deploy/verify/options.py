"""What :func:`~stn_deploy.verify.verify_model` is asked to do: :class:`VerifyOptions`.

verify never imports the torch side: a caller that has a torch model (the CLI with
``--reference``, the ``run`` pipeline) builds a :class:`~stn_deploy.torch_side.TorchSide` with
the torch side's ``torch_side(loaded)`` and passes it in as ``torch_side``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from stn_deploy.errors import StnDeployError
from stn_deploy.torch_side import TorchSide
from stn_deploy.verify.tolerances import Tolerance, tolerance_for


@dataclass(frozen=True)
class VerifyOptions:
    """Every knob of :func:`~stn_deploy.verify.verify_model` (the keyword names it accepts)."""

    #: runtimes to verify: names (``cpu``, ``cuda``, ``openvino``, ``reference``, any ORT EP) or
    #: a comma-separated string; None: all that may be available here
    runtimes: list[str] | str | None = None
    #: a runtime or input set named explicitly that cannot run here is an error
    strict: bool = False
    #: override the precision's defaults (:data:`stn_deploy.verify.tolerances.DEFAULTS`)
    atol: float | None = None
    rtol: float | None = None
    check_error_stat: str | None = None
    quantile: float | None = None
    #: per-output overrides on top of those, e.g. ``{"theta": {"atol": 1e-3}}``
    output_tolerances: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: a node an ORT execution provider did not take fails the runtime
    strict_placement: bool = False
    #: for each failing runtime, name the first diverging node (:mod:`.bisect`)
    bisect: bool = False
    #: input sets among golden, random, mnist, stress (None: all that apply)
    inputs: list[str] | str | None = None
    #: images per generated input set (the golden set is the bundle's)
    count: int = 8
    #: seeds the random, MNIST-distortion and stress inputs
    seed: int = 0
    threads: int | None = None
    #: report how far the sampler's grid reached outside the image
    stn_stats: bool = True
    #: without torch: an ONNX file (e.g. the fp32 source of an int8 file) run on ORT CPU as the
    #: reference of the non-golden input sets; with it no golden bundle is needed
    reference_model: str | Path | None = None
    #: the torch model as reference (else the golden bundle); its ``reexport`` for ``--bisect``
    #: and its training distortion for the ``mnist`` input set
    torch_side: TorchSide | None = None
    #: seconds of running per runtime (:mod:`.budget`); None: 20 s for runtimes verified by
    #: default, no limit for runtimes named in ``runtimes``
    timeout: float | None = None
    #: called with one line per runtime x input set as they run (the CLI: stderr)
    progress: Callable[[str], None] | None = None

    @classmethod
    def of(cls, options: VerifyOptions | None = None, **kw: Any) -> VerifyOptions:
        """``options`` (default: the defaults) with the keyword arguments replacing fields."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kw) - known)
        if unknown:
            raise TypeError(f"verify_model() got unexpected keyword arguments {unknown}")
        base = options or cls()
        return cls(**{**{f.name: getattr(base, f.name) for f in fields(cls)}, **kw})

    def check(self) -> None:
        """Arguments that are wrong whatever the model."""
        if self.count < 1:
            raise StnDeployError(f"{{count}} must be at least 1, got {self.count}", param="count")
        if self.timeout is not None and not self.timeout > 0:
            raise StnDeployError(
                f"{{timeout}} must be a number of seconds > 0, got {self.timeout}", param="timeout"
            )
        if self.reference_model is not None and self.torch_side is not None:
            raise StnDeployError(
                "give a torch reference ({torch_side}) or {reference_model}, not both",
                param=("torch_side", "reference_model"),
            )

    def overrides(self) -> dict[str, Any]:
        return {
            "atol": self.atol,
            "rtol": self.rtol,
            "check_error_stat": self.check_error_stat,
            "quantile": self.quantile,
        }

    def tolerance(self, precision: str | None) -> Tolerance:
        """The tolerance every output is held to, unless :meth:`output_tolerance` says more."""
        return tolerance_for(precision, **self.overrides())

    def per_output(self, precision: str | None) -> dict[str, Tolerance]:
        """``output name -> Tolerance`` for the outputs given in :attr:`output_tolerances`."""
        return {
            name: tolerance_for(precision, **{**self.overrides(), **dict(over)})
            for name, over in self.output_tolerances.items()
        }
