"""The torch boundary: every module of stn_deploy outside stn_deploy/pytorch/ imports with torch
made unimportable (the runtime side installs without torch; see README "Layout").

Modules are listed from the source tree with pkgutil (nothing is imported to list them) and
imported in one subprocess where ``sys.modules["torch"] = None``, so any ``import torch``, direct
or through another module, raises ImportError there; each module is one test case.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "stn_deploy"
TORCH_SIDE = "stn_deploy.pytorch"


def _modules(path: Path, prefix: str) -> list[str]:
    """Every module and package under ``path`` (by file, without importing), but the torch side."""
    names = []
    for info in pkgutil.iter_modules([str(path)], prefix):
        if info.name == TORCH_SIDE or info.name.startswith(TORCH_SIDE + "."):
            continue
        names.append(info.name)
        if info.ispkg:
            names += _modules(path / info.name.rsplit(".", 1)[-1], info.name + ".")
    return names


MODULES = ["stn_deploy", *_modules(PACKAGE, "stn_deploy.")]

IMPORT_ALL = textwrap.dedent(
    """
    import importlib, json, sys, traceback
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    errors = {}
    for name in json.loads(sys.argv[1]):
        try:
            importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - any failure is that module's
            errors[name] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    torch_side = sorted(m for m in sys.modules if m.startswith("stn_deploy.pytorch."))
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print(json.dumps({"errors": errors, "torch_side": torch_side, "torch": loaded}))
    """
)


@pytest.fixture(scope="module")
def imported() -> dict:
    r = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, json.dumps(MODULES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_walk_finds_the_runtime_side():
    assert {"stn_deploy.bench.api", "stn_deploy.runtimes.registry", "stn_deploy.cli"} <= set(
        MODULES
    )
    assert not [m for m in MODULES if m.startswith(TORCH_SIDE)]


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_without_torch(imported, module):
    assert module not in imported["errors"], imported["errors"][module]


def test_nothing_imported_torch(imported):
    # only the blocked placeholder; no torch submodule was reached by any module
    assert imported["torch"] == ["torch"], imported["torch"]


def test_import_stn_deploy_is_light_and_lazy():
    """``import stn_deploy`` loads neither torch nor onnx; each public name loads on use."""
    code = textwrap.dedent(
        """
        import sys
        import stn_deploy
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx", "numpy"))
        assert not heavy, heavy
        sys.modules["torch"] = None
        for name in ("lower_model", "lower_file", "quantize", "quantize_file", "verify_model",
                     "bench_model", "inspect_model"):
            assert callable(getattr(stn_deploy, name)), name
        assert stn_deploy.quantize is stn_deploy.quantize_file
        assert set(stn_deploy._LAZY) <= set(dir(stn_deploy)) and set(stn_deploy.__all__) >= {
            "load_model", "train", "export_model", "run_pipeline"}
        try:
            stn_deploy.no_such_name
        except AttributeError:
            pass
        else:
            raise AssertionError("no AttributeError")
        print("ok")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_torch_side_names_resolve():
    import stn_deploy
    from stn_deploy.pytorch.pipeline import run_pipeline

    assert stn_deploy.run_pipeline is run_pipeline
    assert callable(stn_deploy.train) and callable(stn_deploy.load_model)
    assert callable(stn_deploy.export_model)
