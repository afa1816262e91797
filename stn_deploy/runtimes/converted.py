"""Runtimes that run a converted model (LiteRT, ncnn, MNN, IREE): the shared part.

Given an ONNX file (path, bytes or ModelProto) a session converts it into the cache keyed by the
file's sha256 (:func:`stn_deploy.convert.cached_conversion`; the cache entry is put in place only
after the runtime loaded it), or it takes a converted folder (``stn-deploy convert``'s output,
or any file in it). Inputs and outputs keep the ONNX names, dtypes and NCHW layout: the session
does the layout change (NHWC for LiteRT) and, where the artifact has a fixed batch of one
(ncnn, LiteRT's portable file), one call per image.
"""

from __future__ import annotations

import importlib.util
import os
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from stn_deploy.errors import StnDeployError, one_line
from stn_deploy.runtimes.base import RuntimeInfo, RuntimeSession, RuntimeUnavailable


def require(module: str, runtime: str, extra: str) -> None:
    """RuntimeUnavailable unless ``module`` can be imported."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise RuntimeUnavailable(
            f"{runtime}: {module} is not installed (pip install 'stn-deploy[{extra}]')"
        )


def resolve(model: Any, fmt: str, *, check=None, onnx2tf=None):
    """The :class:`~stn_deploy.convert.Converted` model for ``model``: a converted folder (or a
    file in one) as it is, an ONNX file converted through the cache."""
    from stn_deploy.convert import RECORD, Converted, cached_conversion

    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        folder = path if path.is_dir() else path.parent
        if (folder / RECORD).is_file() and (path.is_dir() or path.suffix != ".onnx"):
            conv = Converted.load(folder)
            if conv.format != fmt:
                raise StnDeployError(f"{folder} holds a {conv.format} model, not {fmt}")
            return conv
    return cached_conversion(model, fmt, check=check, onnx2tf=onnx2tf)


class ConvertedSession(RuntimeSession):
    """A converted model on its runtime; subclasses load (:meth:`_load`) and run one call
    (:meth:`_call`, named ONNX-layout inputs of at most :attr:`batch` images)."""

    FORMAT = ""
    RUNTIME = ""
    LIBRARY = ""
    DIST = ""

    def __init__(
        self,
        model: Any,
        *,
        name: str | None = None,
        threads: int | None = None,
        onnx2tf: str | os.PathLike | None = None,
        **_ignored: Any,
    ) -> None:
        from stn_deploy.convert.base import package_version, specs_of

        self.check_installed()
        self.threads = threads
        from stn_deploy.convert import ConverterMissing

        try:
            self.converted = resolve(model, self.FORMAT, check=self._probe, onnx2tf=onnx2tf)
        except ConverterMissing as exc:
            raise RuntimeUnavailable(str(exc)) from exc
        rec = self.converted.record
        self.inputs = specs_of(rec, "inputs")
        self.outputs = specs_of(rec, "outputs")
        self.batch = rec["batch"] if isinstance(rec["batch"], int) else 0
        self._loaded = self._open(self.converted)
        self.primary = "CPU"
        self.info = RuntimeInfo(
            name=name or self.RUNTIME,
            library=self.LIBRARY,
            version=package_version(self.DIST),
            device="CPU",
            providers=("CPU",),
            extra={
                "threads": threads or 0,
                "converter": f"{rec['tool']} {rec['tool_version']}",
                "artifact": str(self.converted.folder),
                "batch_per_call": self.batch or "any",
                "settings": rec.get("runtime_settings", {}),
            },
        )

    @classmethod
    def check_installed(cls) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _probe(self, conv) -> None:
        """Load ``conv`` once (before a conversion is cached)."""
        self._open(conv)

    def _open(self, conv) -> Any:
        try:
            return self._load(conv)
        except StnDeployError:
            raise
        except Exception as exc:
            raise StnDeployError(
                f"{self.RUNTIME}: cannot load the converted model: {one_line(exc)}"
            ) from exc

    @abstractmethod
    def _load(self, conv) -> Any:
        """The runtime's loaded model of ``conv`` (raise on failure)."""

    @abstractmethod
    def _call(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once; returns every output by ONNX name, as fresh arrays."""

    def run(self, feeds, output_names=None):
        self.check_feeds(feeds)
        names = output_names or [o.name for o in self.outputs]
        unknown = [n for n in names if n not in {o.name for o in self.outputs}]
        if unknown:
            raise StnDeployError(f"{self.RUNTIME}: the model has no output {unknown[0]!r}")
        n = next(iter(feeds.values())).shape[0] if feeds else 0
        try:
            if self.batch and n != self.batch:
                parts = [self._call({k: v[i : i + 1] for k, v in feeds.items()}) for i in range(n)]
                out = {k: np.concatenate([p[k] for p in parts]) for k in names}
            else:
                out = self._call(feeds)
        except StnDeployError:
            raise
        except Exception as exc:
            raise StnDeployError(
                f"{self.RUNTIME} failed to run the model: {one_line(exc)}"
            ) from exc
        return {k: out[k] for k in names}

    def onnx_dtype(self, name: str) -> np.dtype:
        spec = next(t for t in (*self.inputs, *self.outputs) if t.name == name)
        return np.dtype(spec.dtype)
