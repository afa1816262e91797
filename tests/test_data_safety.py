"""Data safety: what a write leaves behind when it fails, is killed or races another writer.

- ``run`` never removes a folder it did not make, replaces with --force without a window where
  both reports are lost, and lets one writer at a time at one --out (a lock file beside it);
- a model and its golden bundle are written as a pair, and every reader rejects a broken pair;
- killed writers' work files and folders are removed by the next write of the same name;
- a full disk is one ``Error:`` line naming the path, with nothing half-written left.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from stn_deploy.cli import main
from stn_deploy.errors import StnDeployError
from stn_deploy.export.golden import bundle_path, check_bundle_matches, read_bundle
from stn_deploy.io.atomic import atomic_path, write_bytes_atomic

REPO = Path(__file__).resolve().parents[1]
EXPORTED = REPO / "exported"
NATIVE = EXPORTED / "mnist-affine-native.onnx"
NO_SPACE = os.strerror(errno.ENOSPC)
RUN_FAST = [
    "--synthetic",
    "--limit-train", "64",
    "--limit-test", "32",
    "--epochs", "1",
    "--runtimes", "cpu",
    "--batch-sizes", "1",
    "--duration", "0.01",
    "--compare", "none",
    "--no-progress",
]  # fmt: skip


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error(r, *needles: str) -> str:
    """Exit 1, exactly one ``Error:`` line, holding every needle; no traceback."""
    assert r.exit_code == 1, (r.exit_code, r.output, r.exception)
    errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, r.output
    assert "Traceback" not in r.output
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    code = "import os; print(os.getpid())"
    proc = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(proc.stdout)


def python(code: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, **kw)


# --------------------------------------------------------------------------- a full disk
class _FullFile:
    """An open file on a full disk: every write fails with ENOSPC."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        raise OSError(errno.ENOSPC, NO_SPACE)

    writelines = write

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


@pytest.fixture
def full_disk(monkeypatch, tmp_path):
    """Files under tmp_path open for writing but every write fails, as on a full disk."""
    real_open, root = io.open, str(tmp_path)

    def fake_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        writes = any(c in mode for c in "wax+")
        if writes and isinstance(file, (str, os.PathLike)):
            if os.path.abspath(os.fspath(file)).startswith(root):
                return _FullFile(fh)
        return fh

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(builtins, "open", fake_open)
    return tmp_path


def test_export_on_a_full_disk(full_disk):
    out = full_disk / "out"
    out.mkdir()
    r = cli("export", EXPORTED / "mnist-affine-rts.pt", "--out", out / "m.onnx")
    one_error(r, f"cannot write {out / 'm.'}", NO_SPACE)
    assert tree(full_disk) == ["out"]


def test_quantize_on_a_full_disk(full_disk):
    r = cli("quantize", NATIVE, "--precision", "fp16", "--out", full_disk / "q.onnx")
    one_error(r, f"cannot write {full_disk / 'q.'}", NO_SPACE)
    assert tree(full_disk) == []


def test_lower_on_a_full_disk(full_disk):
    dst = full_disk / "new" / "l.onnx"
    one_error(cli("lower", NATIVE, dst, "--lowering", "portable"), f"cannot write {dst}", NO_SPACE)
    assert tree(full_disk) == []  # nor the folder made for it


def test_verify_plot_on_a_full_disk(full_disk):
    pytest.importorskip("matplotlib")
    plot = full_disk / "plots" / "errors.png"
    r = cli("verify", NATIVE, "--runtimes", "cpu", "--plot", plot)
    one_error(r, f"cannot write {plot}", NO_SPACE)
    assert tree(full_disk) == []


def test_data_preview_on_a_full_disk(full_disk):
    png = full_disk / "deep" / "p.png"
    r = cli("data", "preview", "--synthetic", "--count", "4", "--out", png)
    one_error(r, f"cannot write {png}", NO_SPACE)
    assert tree(full_disk) == []


def test_train_on_a_full_disk_leaves_no_empty_run_folder(full_disk):
    out = full_disk / "runs" / "a"
    args = ["--synthetic", "--limit-train", "32", "--limit-test", "16", "--epochs", "1"]
    r = cli("train", *args, "--batch-size", "32", "--no-progress", "--out", out)
    one_error(r, f"cannot write {out / 'checkpoint.pt'}", NO_SPACE)
    assert tree(full_disk) == []


def test_run_on_a_full_disk(full_disk):
    out = full_disk / "report"
    one_error(cli("run", *RUN_FAST, "--out", out), f"cannot write {out}", NO_SPACE)
    assert tree(full_disk) == []  # no work folder, no lock file


def test_run_reports_on_a_full_disk(full_disk, monkeypatch):
    import stn_deploy.pytorch.pipeline as pipeline

    fake = pipeline.RunReport(options={}, passed=True, bench={"rows": []})
    monkeypatch.setattr(pipeline, "_run", lambda *a: fake)
    out = full_disk / "report"
    one_error(cli("run", *RUN_FAST, "--out", out), f"cannot write {out}/", NO_SPACE)
    assert tree(full_disk) == []


def test_torch_save_failure_names_the_file(tmp_path):
    # torch.save's own file writer reports a full disk without the errno
    path = tmp_path / "c.pt"
    with pytest.raises(StnDeployError, match=f"cannot write {path}: "):
        with atomic_path(path):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704")
    with pytest.raises(FileNotFoundError):  # not a write of this file: passed on as it is
        with atomic_path(path):
            open(tmp_path / "missing")
    assert tree(tmp_path) == []


# --------------------------------------------------------------------------- run's folder
def _fake_run(monkeypatch, action=None):
    import stn_deploy.pytorch.pipeline as pipeline

    def fake(opts, work, *a):
        (work / "ours.txt").write_text("ours")
        if action:
            action(work)
        return pipeline.RunReport(options={}, passed=True, bench={"rows": []})

    monkeypatch.setattr(pipeline, "_run", fake)
    monkeypatch.setattr(pipeline, "_write_reports", lambda report, work, out: None)


def test_run_leaves_a_folder_that_appeared_meanwhile(tmp_path, monkeypatch):
    out = tmp_path / "report"

    def someone_else(work):
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")

    _fake_run(monkeypatch, someone_else)
    one_error(cli("run", *RUN_FAST, "--out", out), f"{out} appeared", "untouched", "--force")
    assert tree(tmp_path) == ["report", "report/theirs.txt"]


def test_run_keeps_an_empty_folder_that_appeared_meanwhile(tmp_path, monkeypatch):
    out = tmp_path / "report"
    _fake_run(monkeypatch, lambda work: out.mkdir())
    one_error(cli("run", *RUN_FAST, "--out", out), "appeared")
    assert tree(tmp_path) == ["report"]


def test_run_folder_has_the_umask_mode(tmp_path, monkeypatch):
    _fake_run(monkeypatch)
    old = os.umask(0o027)
    try:
        r = cli("run", *RUN_FAST, "--out", tmp_path / "report")
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "report").stat().st_mode & 0o777 == 0o750


def test_run_refuses_while_another_process_writes_the_folder(tmp_path, monkeypatch):
    from stn_deploy.io.locks import lock_path

    _fake_run(monkeypatch)
    out = tmp_path / "report"
    holder = python(
        f"""
        import sys
        from stn_deploy.io.locks import destination_lock
        with destination_lock({str(out)!r}):
            print("held", flush=True)
            sys.stdin.read()
        """,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        r = cli("run", *RUN_FAST, "--out", out)
        one_error(r, f"{out} is being written by pid {holder.pid}", str(lock_path(out)))
        assert tree(tmp_path) == [lock_path(out).name]  # the holder's lock only
    finally:
        holder.communicate("")
    assert holder.returncode == 0 and tree(tmp_path) == []
    assert cli("run", *RUN_FAST, "--out", out).exit_code == 0  # free again


def _killed_run(tmp_path: Path, out: Path, where: str) -> None:
    """A ``run --force`` to ``out`` (fake steps) killed at ``where``: 'steps' or 'rename-in'."""
    proc = python(
        f"""
        import os, pathlib
        import stn_deploy.pytorch.pipeline as pipeline
        from stn_deploy.pytorch.pipeline import RunOptions, run_pipeline

        def steps(opts, work, *a):
            (work / "new.txt").write_text("new")
            if {where!r} == "steps":
                os._exit(9)
            return pipeline.RunReport(options={{}}, passed=True, bench={{"rows": []}})

        def killed(*a, **k):
            os._exit(9)

        pipeline._run = steps
        pipeline._write_reports = lambda *a: None
        try:
            import stn_deploy.io.folders as folders
            folders.rename_noreplace = killed
        except ImportError:
            pathlib.Path.rename = killed
        run_pipeline(RunOptions(), {str(out)!r}, force=True, log=lambda *a: None)
        """
    )
    assert proc.wait(timeout=120) == 9


def test_killed_force_run_loses_neither_report(tmp_path, monkeypatch):
    out = tmp_path / "report"
    out.mkdir()
    (out / "old.txt").write_text("old")
    _killed_run(tmp_path, out, "rename-in")
    assert "report" not in tree(tmp_path)  # killed with the old report set aside
    # the next run puts the old report back (so refuses without --force) and cleans up
    _fake_run(monkeypatch)
    r = cli("run", *RUN_FAST, "--out", out)
    assert "put " in r.output
    one_error(r, "already exists")
    assert tree(tmp_path) == ["report", "report/old.txt"]
    assert cli("run", *RUN_FAST, "--out", out, "--force").exit_code == 0
    assert tree(tmp_path) == ["report", "report/ours.txt"]


def test_killed_run_work_folder_is_removed_by_the_next_run(tmp_path, monkeypatch):
    out = tmp_path / "report"
    _killed_run(tmp_path, out, "steps")
    assert any(p.startswith(".report.tmp-") for p in tree(tmp_path)), tree(tmp_path)
    live = tmp_path / f".report.tmp-{os.getpid()}-abcd1234"  # a live writer's: kept
    live.mkdir()
    _fake_run(monkeypatch)
    assert cli("run", *RUN_FAST, "--out", out).exit_code == 0
    assert tree(tmp_path) == [live.name, "report", "report/ours.txt"]


# --------------------------------------------------------------------------- work files
def test_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "x.bin"
    proc = python(
        f"""
        import os
        from stn_deploy.io.atomic import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"half")
            os._exit(9)
        """
    )
    assert proc.wait(timeout=60) == 9
    (left,) = tree(tmp_path)
    assert left.startswith(".x.bin.") and left.endswith(".tmp")
    live = tmp_path / f".x.bin.{os.getpid()}-abcd1234.tmp"
    live.write_bytes(b"")
    write_bytes_atomic(target, b"whole")
    assert tree(tmp_path) == [live.name, "x.bin"] and target.read_bytes() == b"whole"


def test_stale_names_without_a_dead_pid_are_kept(tmp_path):
    keep = [".x.bin.abc.tmp", f".x.bin.{dead_pid()}-abc.tmp.keep", f".y.bin.{dead_pid()}-ab.tmp"]
    for name in keep:
        (tmp_path / name).write_bytes(b"")
    write_bytes_atomic(tmp_path / "x.bin", b"x")
    assert tree(tmp_path) == sorted([*keep, "x.bin"])


# --------------------------------------------------------------------------- model + bundle
class _Killed(BaseException):
    pass


def _replace_killed_at(monkeypatch, name: str):
    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).name == name:
            raise _Killed
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    return real


def test_a_broken_pair_is_rejected_by_every_reader_and_repaired(tmp_path, monkeypatch):
    from stn_deploy.precision.convert import quantize_file

    m = tmp_path / "m.onnx"
    shutil.copy(NATIVE, m)
    shutil.copy(bundle_path(NATIVE), bundle_path(m))
    real = _replace_killed_at(monkeypatch, "m.onnx")
    with pytest.raises(_Killed):  # killed between the bundle's rename and the model's
        quantize_file(NATIVE, m, "fp16")
    monkeypatch.setattr(os, "replace", real)
    assert m.read_bytes() == NATIVE.read_bytes()  # the old model beside the new bundle
    again = "again to write a matching pair"
    one_error(cli("verify", m, "--runtimes", "cpu"), "made for another model", again)
    bench = ["--runtimes", "cpu", "--batch-sizes", "1", "--duration", "0.01"]
    one_error(cli("bench", m, *bench), "made for another model", again)
    one_error(cli("quantize", m, "--out", tmp_path / "q.onnx"), "made for another model")
    assert cli("quantize", NATIVE, "--precision", "fp16", "--out", m).exit_code == 0
    check_bundle_matches(read_bundle(bundle_path(m)), m)  # repaired
    assert tree(tmp_path) == ["m.io.npz", "m.onnx"]


def test_export_refuses_while_another_writer_holds_the_model(tmp_path):
    from stn_deploy.io.locks import destination_lock

    out = tmp_path / "m.onnx"
    with destination_lock(out) as lock:
        r = cli("export", EXPORTED / "mnist-affine-rts.pt", "--out", out)
        one_error(r, f"{out} is being written by pid {os.getpid()}", str(lock))
        assert tree(tmp_path) == [lock.name]
    assert tree(tmp_path) == []


def test_quantize_and_lower_refuse_while_another_writer_holds_the_model(tmp_path):
    from stn_deploy.io.locks import destination_lock

    out = tmp_path / "m.onnx"
    with destination_lock(out) as lock:
        r = cli("quantize", NATIVE, "--precision", "fp16", "--out", out)
        one_error(r, f"{out} is being written by pid {os.getpid()}", str(lock))
        r = cli("lower", NATIVE, out, "--lowering", "portable")
        one_error(r, f"{out} is being written by pid {os.getpid()}", str(lock))
    assert tree(tmp_path) == []
