"""The exporter's self-check: the written bytes run on ONNX Runtime CPU against torch, before
the file is kept.

The golden inputs are run at two batch sizes, 1 and the bundle's (at least 2; the batch
dimension is dynamic unless ``--static-batch``), on the serialized model, and compared with
torch on the same inputs under the precision's tolerance
(:data:`stn_deploy.verify.tolerances.DEFAULTS`: fp32 element-wise ``atol 1e-4`` or
``rtol 1e-3``, so scaled to the magnitude of each output). A trace that baked a batch-dependent
branch (``if x.shape[0] > 1``) runs the wrong branch at the other batch size and is caught here.

A pass writes nothing into the file (its bytes do not depend on the check); a skipped check is
recorded in the ``stn_deploy.self_check`` metadata: ``--no-check``, onnxruntime not installed,
or an fp16/int8 file whose golden inputs are noise (outside its calibration range, where
:mod:`stn_deploy.verify.tolerances` reports rather than gates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from stn_deploy.errors import StnDeployError, one_line


def ort_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def skip_note(check: bool, precision: str, real_inputs: bool) -> str | None:
    """Why the self-check will not gate this export (the metadata note), or None when it will."""
    if not check:
        return "skipped (--no-check / check=False)"
    if not ort_available():
        return "skipped: onnxruntime is not installed (pip install 'stn-deploy[cpu]')"
    if precision != "fp32" and not real_inputs:
        return (
            f"{precision} file not gated: its golden inputs are noise, outside its calibration "
            "range (the fp32 form was checked)"
        )
    return None


def check_batches(x: np.ndarray, dynamic_batch: bool) -> list[np.ndarray]:
    """The input batches checked: the first image alone, and the bundle's batch (at least 2)."""
    if not dynamic_batch:
        return [x[:1]]
    full = x if len(x) > 1 else np.concatenate([x, x[::-1] * 0.5])
    return [x[:1], full]


def run_self_check(
    data: bytes,
    input_names: Sequence[str],
    output_names: Sequence[str],
    batches: Sequence[Sequence[np.ndarray]],
    reference: Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]],
    precision: str = "fp32",
    hint: str = "A batch-dependent branch baked by the trace? Try {exporter}='dynamo'",
) -> dict[str, float]:
    """Run ``data`` on ORT CPU on each batch of inputs and compare every output with
    ``reference(batch)`` (torch) under ``precision``'s tolerance.

    Returns the worst max-abs difference per output; raises a one-line StnDeployError naming
    the worst failing output, its batch size and error.
    """
    import onnxruntime as ort

    from stn_deploy.verify.tolerances import DEFAULTS

    tol = DEFAULTS[precision]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise StnDeployError(
            f"self-check: ONNX Runtime CPU cannot load the exported model: {one_line(exc)} "
            "({check=False} skips the check)",
            param="check",
        ) from exc
    worst: dict[str, float] = {}
    failures = []
    for arrays in batches:
        n = int(arrays[0].shape[0])
        feeds = dict(zip(input_names, arrays, strict=True))
        try:
            got = sess.run(list(output_names), feeds)
        except Exception as exc:
            raise StnDeployError(
                f"self-check: ONNX Runtime CPU fails on the exported model at batch {n}: "
                f"{one_line(exc)} ({{check=False}} skips the check)",
                param="check",
            ) from exc
        want = reference(arrays)
        for name, ref, out in zip(output_names, want, got, strict=True):
            ref = np.asarray(ref, dtype=np.float64)
            out = np.asarray(out)
            cmp = tol.compare(ref, out.astype(np.float64), name=name)
            err = float(cmp.stats.max_abs) if cmp.stats is not None else float("inf")
            worst[name] = max(worst.get(name, 0.0), err)
            if not cmp.passed:
                scale = float(np.abs(ref).max()) if ref.size else 0.0
                failures.append((err / max(scale, 1e-12), name, n, err, scale, cmp.reason))
    if failures:
        _, name, n, err, scale, reason = max(failures, key=lambda f: f[0])
        detail = f"max abs error {err:.3g} (outputs up to {scale:.3g})"
        if reason and "shape" in reason:
            detail = reason
        raise StnDeployError(
            f"self-check failed: the exported model's output {name!r} at batch {n} differs from "
            f"torch on ONNX Runtime CPU: {detail}, beyond {precision} tolerance (atol "
            f"{tol.atol:g}, rtol {tol.rtol:g}); no file written. {hint}; {{check=False}} skips "
            "the check",
            param=("check", "exporter"),
        )
    return worst
