"""Where a benchmark ran: CPU model, cores, load, library versions, GPU if any (no torch import).

Versions come from the installed distributions' metadata, so describing the machine imports
neither torch nor OpenVINO.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

#: distributions whose version a result records (None when not installed)
LIBRARIES = (
    ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
    ("openvino", ("openvino",)),
    ("onnx", ("onnx",)),
    ("numpy", ("numpy",)),
    ("torch", ("torch",)),
)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dists: tuple[str, ...]) -> str | None:
    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def gpus() -> list[str]:
    """GPU names from ``nvidia-smi`` (empty when there is none or it does not answer)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return (
        [ln.strip() for ln in out.stdout.splitlines() if ln.strip()] if out.returncode == 0 else []
    )


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_description() -> dict[str, Any]:
    """A JSON-ready description of this machine for benchmark results.

    Keys: ``cpu``, ``cores`` (logical CPUs), ``usable_cores`` (this process's affinity),
    ``platform``, ``python``, ``versions`` (library -> version or None), ``ort_providers``,
    ``gpus`` (nvidia-smi lines, [] if none), ``load_average`` (1/5/15 min, at the call).
    """
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    try:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
    except ImportError:
        providers = []
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(dists) for name, dists in LIBRARIES},
        "ort_providers": providers,
        "gpus": gpus(),
        "load_average": load_average(),
    }


def format_machine(m: dict[str, Any]) -> str:
    """One line: CPU, cores, GPU, library versions and load."""
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v)
    gpu = "; GPU: " + ", ".join(m["gpus"]) if m.get("gpus") else "; no GPU"
    load = m.get("load_average")
    load_text = f"; load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}" if load else ""
    return f"{m.get('cpu')}, {m.get('cores')} cores{gpu}; {versions}{load_text}"
