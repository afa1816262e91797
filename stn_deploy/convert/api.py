"""``convert_model``: an ONNX file to a runtime's format, in a folder written all at once.

The converter always works on a private copy of the file in a scratch folder (onnx2tf rewrites
its input in place; pnnx writes its by-products beside it), the artifacts and the conversion
record are assembled in a work folder beside the destination, optionally checked to load, and
only then renamed into place (:mod:`stn_deploy.io.folders`): a failure or a kill leaves nothing
half-written, and a second writer of the same folder fails at once.

Example:
    >>> from stn_deploy.convert import convert_model
    >>> c = convert_model("exported/mnist-affine-native.onnx", "mnn")  # doctest: +SKIP
    >>> c.folder, c.record["tool"], c.path("model")                      # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stn_deploy.convert import iree, mnn, ncnn, tflite
from stn_deploy.convert.base import (
    FORMATS,
    RECORD,
    ConversionError,
    Source,
    record_of,
)
from stn_deploy.errors import StnDeployError

CONVERTERS = {m.FORMAT: m for m in (tflite, ncnn, mnn, iree)}
#: the runtime that runs each format
RUNTIME_OF = {"tflite": "litert", "ncnn": "ncnn", "mnn": "mnn", "iree": "iree"}


@dataclass(frozen=True)
class Converted:
    """A converted model: its folder and conversion record."""

    folder: Path
    record: dict[str, Any]

    @property
    def format(self) -> str:
        return self.record["format"]

    def path(self, role: str) -> Path:
        return self.folder / self.record["files"][role]

    def describe(self) -> str:
        files = ", ".join(self.record["files"].values())
        return (
            f"wrote {self.folder}/ ({files}, {RECORD}) with {self.record['tool']} "
            f"{self.record['tool_version']}"
        )

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Converted:
        folder = Path(folder)
        try:
            record = json.loads((folder / RECORD).read_text())
            missing = [f for f in record["files"].values() if not (folder / f).is_file()]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StnDeployError(
                f"{folder} is not a converted model: no readable {RECORD}"
            ) from exc
        if missing:
            raise StnDeployError(
                f"{folder} is not a complete converted model: {missing[0]} is missing"
            )
        return cls(folder, record)


def check_format(to: str) -> str:
    fmt = (to or "").strip().lower()
    if fmt not in FORMATS:
        raise StnDeployError(
            f"unknown format {to!r} for {{to}}: choose from {', '.join(FORMATS)}", param="to"
        )
    return fmt


def read_source(model: str | os.PathLike | Any) -> tuple[str, bytes]:
    """``(name, bytes)`` of an ONNX path, bytes or ModelProto (one-line errors)."""
    if isinstance(model, bytes):
        return "model.onnx", model
    if hasattr(model, "SerializeToString"):
        return "model.onnx", model.SerializeToString()
    path = Path(model)
    from stn_deploy.runtimes.base import load_onnx

    load_onnx(path)  # one-line errors for a missing, empty or corrupt file
    return path.name, path.read_bytes()


def convert_model(
    model: str | os.PathLike | Any,
    to: str,
    out: str | os.PathLike | None = None,
    *,
    onnx2tf: str | os.PathLike | None = None,
    force: bool = False,
    check: Callable[[Converted], None] | None = None,
) -> Converted:
    """Convert ``model`` (ONNX path, bytes or ModelProto) to format ``to`` into folder ``out``
    (default: ``NAME-TO/`` beside a file). ``check(converted)`` runs on the work folder before
    it is put in place (a runtime's load check); ``force`` replaces an existing ``out``."""
    fmt = check_format(to)
    name, data = read_source(model)
    if out is None:
        if not isinstance(model, (str, os.PathLike)):
            raise StnDeployError("give {out} for a model that is not a file", param="out")
        out = Path(model).with_name(f"{Path(model).stem}-{fmt}")
    return write_conversion(fmt, name, data, Path(out), onnx2tf=onnx2tf, force=force, check=check)


def write_conversion(
    fmt: str, name: str, data: bytes, out: Path, *, onnx2tf=None, force=False, check=None
) -> Converted:
    """Convert the ONNX ``data`` (file ``name``) to ``fmt`` into ``out`` (see the module)."""
    from stn_deploy.io.atomic import ensure_writable_dir, missing_dirs, remove_empty_dirs
    from stn_deploy.io.folders import clean_stale, new_work_folder, place_folder
    from stn_deploy.io.locks import destination_lock

    conv = CONVERTERS[fmt]
    tool = conv.find_tool(onnx2tf=onnx2tf)  # ConverterMissing before anything is written
    source = Source.of(name, data)
    odd = [
        f"{t.name} ({t.dtype})" for t in (*source.inputs, *source.outputs) if t.dtype != "float32"
    ]
    if odd:  # the runtimes are driven in fp32; a half/int8 file's numbers would not be its own
        raise ConversionError(
            f"{fmt}: float32 inputs and outputs only, the model has {', '.join(odd)}: "
            "convert the fp32 file"
        )
    if out.exists() and not force:
        raise StnDeployError(f"{out} exists: pass {{force=True}} to replace it", param="force")
    made = missing_dirs(out.parent)
    try:
        ensure_writable_dir(out.parent)
        with destination_lock(out):
            clean_stale(out)
            work = new_work_folder(out)
            try:
                converted = _convert_into(work, conv, tool, source, data)
                if check is not None:
                    check(converted)
                place_folder(work, out, replace=force)
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
    except BaseException:
        remove_empty_dirs(made)
        raise
    return Converted(out, converted.record)


def _convert_into(work: Path, conv, tool, source: Source, data: bytes) -> Converted:
    with tempfile.TemporaryDirectory(prefix="stn-deploy-convert-") as scratch:
        src = Path(scratch) / "model.onnx"
        src.write_bytes(data)  # the converter's own copy: the caller's file is never touched
        try:
            art = conv.convert(src, work.resolve(), source, tool)  # converters run elsewhere
        except StnDeployError:
            raise
        except Exception as exc:  # a converter bug: one line, not a traceback
            raise ConversionError(f"{conv.FORMAT}: {tool.name} failed: {exc}") from exc
    record = record_of(conv.FORMAT, tool, source, art)
    (work / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return Converted(work, record)
