"""What every converter shares (no torch): the source model's description, the conversion
record, running a converter as a child process, and the guard that keeps Python converters
from installing packages or reaching the network.

A converter module (:mod:`.tflite`, :mod:`.ncnn`, :mod:`.mnn`, :mod:`.iree`) defines
``FORMAT``, ``TOOL``, ``find_tool(**options) -> Tool`` (raising :class:`ConverterMissing`
with how to get it) and ``convert(src, dest, source, tool) -> Artifact``: ``src`` is a private
copy of the ONNX file in a scratch folder, ``dest`` the (work) folder the artifact files go to.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stn_deploy.errors import StnDeployError
from stn_deploy.runtimes.base import TensorSpec

FORMATS = ("tflite", "ncnn", "mnn", "iree")
#: the conversion record written beside the artifacts
RECORD = "conversion.json"
#: the longest a converter may run, seconds
TOOL_TIMEOUT = 900


class ConversionError(StnDeployError):
    """A conversion failed; the message names the format (or runtime) and the reason."""


class ConverterMissing(ConversionError):
    """The converter is not installed here; the message says how to get it."""


@dataclass(frozen=True)
class Tool:
    """A converter found here: its name, version and how it is started."""

    name: str
    version: str
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class Source:
    """The ONNX file being converted: name, sha256, opset, inputs/outputs, sampler nodes."""

    name: str
    sha256: str
    opset: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: ``(domain, padding_mode)`` of every GridSample node (graph and local functions' callers)
    grid_samples: tuple[tuple[str, str], ...] = ()
    lowering: str = ""

    @classmethod
    def of(cls, name: str, data: bytes) -> Source:
        import onnx

        from stn_deploy.export.metadata import stn_metadata
        from stn_deploy.runtimes.base import default_opset, graph_inputs, onnx_specs

        try:
            proto = onnx.load_from_string(data)
        except Exception as exc:
            raise StnDeployError(f"{name} is not an ONNX model: {exc}") from exc
        gs = tuple(
            (n.domain or "ai.onnx", _attr(n, "padding_mode", "zeros"))
            for n in proto.graph.node
            if n.op_type == "GridSample"
        )
        return cls(
            name=name,
            sha256=hashlib.sha256(data).hexdigest(),
            opset=default_opset(proto),
            inputs=tuple(onnx_specs(graph_inputs(proto))),
            outputs=tuple(onnx_specs(proto.graph.output)),
            grid_samples=gs,
            lowering=stn_metadata(proto).get("lowering", ""),
        )

    def image_shape(self, fmt: str) -> tuple[int, ...]:
        """The fixed non-batch dims of the (first) input, or an error naming ``fmt``."""
        spec = self.inputs[0] if self.inputs else None
        dims = spec.shape if spec is not None else None
        if not dims or any(not isinstance(d, int) or d <= 0 for d in dims[1:]):
            raise ConversionError(
                f"{fmt}: the converter needs fixed input dims besides the batch, "
                f"the model's input is {list(dims or [])}"
            )
        return tuple(dims[1:])


def _attr(node, name: str, default: str) -> str:
    for a in node.attribute:
        if a.name == name:
            return a.s.decode()
    return default


@dataclass
class Artifact:
    """What a converter wrote: files by role, the options it ran with, the layout of every
    input in the artifact, the batch it takes (0: any) and the tensor names it uses."""

    files: dict[str, str]
    options: list[str]
    #: input name -> "NCHW" (as in ONNX) or "NHWC" (channels last)
    layouts: dict[str, str] = field(default_factory=dict)
    batch: int = 0
    #: ONNX tensor name -> the artifact's name for it
    names: dict[str, str] = field(default_factory=dict)
    #: settings the runtime must use for fp32 results
    runtime_settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def record_of(fmt: str, tool: Tool, source: Source, art: Artifact) -> dict[str, Any]:
    """The conversion record (``conversion.json``) of one conversion."""
    from stn_deploy import __version__

    def spec(t: TensorSpec) -> dict[str, Any]:
        return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape or [])}

    return {
        "format": fmt,
        "tool": tool.name,
        "tool_version": tool.version,
        "options": art.options,
        "source": {"name": source.name, "sha256": source.sha256, "opset": source.opset},
        "inputs": [
            {**spec(t), "layout": art.layouts.get(t.name, "as ONNX")} for t in source.inputs
        ],
        "outputs": [spec(t) for t in source.outputs],
        "batch": art.batch or "any",
        "names": art.names,
        "files": art.files,
        "runtime_settings": art.runtime_settings,
        "notes": art.notes,
        "stn_deploy_version": __version__,
    }


def specs_of(record: dict[str, Any], key: str) -> list[TensorSpec]:
    """The ONNX TensorSpecs ``inputs``/``outputs`` of a conversion record."""
    return [
        TensorSpec(t["name"], t["dtype"], tuple(d if d != "" else None for d in t["shape"]))
        for t in record[key]
    ]


# A Python converter runs under this audit hook: starting a process (pip), or opening a
# network connection, raises inside the converter instead of happening.
GUARD = """
import sys
_BLOCKED = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
            "os.fork", "socket.connect", "socket.getaddrinfo", "urllib.Request")
def _stn_deploy_guard(event, args):
    if event in _BLOCKED:
        raise RuntimeError("stn-deploy blocked " + event + " inside the converter")
sys.addaudithook(_stn_deploy_guard)
"""


def guarded_python(code: str) -> list[str]:
    """A command running ``code`` in this Python under :data:`GUARD`."""
    return [sys.executable, "-I", "-c", GUARD + code]


def run_tool(cmd: list[str], fmt: str, tool: str, *, cwd: Path, env: dict | None = None) -> str:
    """Run a converter; its output on success, else one ConversionError line naming ``fmt``,
    ``tool`` and the reason (the last informative line it printed, or the signal)."""
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TOOL_TIMEOUT,
        )
    except FileNotFoundError as exc:
        raise ConverterMissing(f"{fmt}: {tool} cannot be started: {exc.strerror}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"{fmt}: {tool} ran longer than {TOOL_TIMEOUT} s") from exc
    text = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode == 0:
        return text
    if proc.returncode < 0:
        why = f"crashed ({signal.Signals(-proc.returncode).name})"
    else:
        why = f"failed (exit {proc.returncode})"
    raise ConversionError(f"{fmt}: {tool} {why}: {last_message(text)}")


_NOISE = ("warning", "the device supports", "####", "[w ", "w0000", "i0000")


def last_message(text: str, limit: int = 240) -> str:
    """The last line of a tool's output that looks like an error message."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [
        ln for ln in lines if any(k in ln.lower() for k in ("error", "fail", "not ", "unsupport"))
    ]
    pick = errors or [ln for ln in lines if not ln.lower().startswith(_NOISE)] or ["no output"]
    return pick[-1][:limit]


def tool_env(extra_path: Path | None = None) -> dict[str, str]:
    """The environment for a converter: ours, with ``extra_path`` first on PATH."""
    env = dict(os.environ)
    if extra_path is not None:
        env["PATH"] = f"{extra_path}{os.pathsep}{env.get('PATH', '')}"
    return env


def package_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return ""
