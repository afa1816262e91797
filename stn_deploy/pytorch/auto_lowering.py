"""``--lowering auto``: lower one trace into every candidate and keep the fastest at parity,
timed on the target's ONNX Runtime provider (torch-free but for the caller's trace)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from stn_deploy.errors import StnDeployError
from stn_deploy.export.lower import lower_model
from stn_deploy.export.lowerings import get_lowering, lowering_names
from stn_deploy.timing import median_us

AUTO_PROVIDERS = {"ort-cpu": "CPUExecutionProvider", "ort-cuda": "CUDAExecutionProvider"}


#: ``--lowering auto``'s candidates, in the registry's order
AUTO_CANDIDATES = lowering_names(auto=True)


def _auto_provider(target: str) -> tuple[Any, str]:
    """onnxruntime and the provider ``auto`` times on for ``target``, or a one-line error."""
    if target not in AUTO_PROVIDERS:
        raise StnDeployError(
            f"--lowering auto times the candidates on the target runtime, which stn-deploy can do "
            f"for {', '.join(AUTO_PROVIDERS)}; for {target} pick --lowering"
        )
    try:
        import onnxruntime as ort
    except ImportError:
        raise StnDeployError(
            "--lowering auto needs onnxruntime: pip install 'stn-deploy[cpu]'"
        ) from None
    provider = AUTO_PROVIDERS[target]
    if provider not in ort.get_available_providers():
        raise StnDeployError(
            f"--lowering auto for {target} needs {provider}, which this onnxruntime lacks"
        )
    return ort, provider


def choose_lowering(
    traced: onnx.ModelProto,
    target: str,
    opset: int,
    x: np.ndarray | list[np.ndarray],
    reference: np.ndarray,
    seed: int,
) -> tuple[str, dict[str, Any]]:
    """Lower ``traced`` to each candidate, keep those at parity with torch on ``x`` (the golden
    inputs: one array per graph input; max abs difference <= 1e-4 on the first output) and
    return the fastest (median µs at batch 1 + batch 64 on the target's ONNX Runtime provider)
    with every candidate's figures."""
    ort, provider = _auto_provider(target)
    xs = x if isinstance(x, list) else [x]
    names = [i.name for i in traced.graph.input][: len(xs)]
    golden = dict(zip(names, xs, strict=True))
    rng = np.random.default_rng(seed)
    feeds = {
        b: {n: rng.standard_normal((b, *a.shape[1:])).astype(a.dtype) for n, a in golden.items()}
        for b in (1, 64)
    }
    figures: dict[str, Any] = {}
    for cand in AUTO_CANDIDATES:
        need = get_lowering(cand).min_opset
        if opset < need:
            figures[cand] = {"skipped": f"{cand} needs opset {need}, the export uses {opset}"}
            continue
        sess = ort.InferenceSession(
            lower_model(traced, cand).SerializeToString(), providers=[provider]
        )
        diff = float(np.abs(sess.run(None, golden)[0] - reference).max())
        row = {"max_abs_diff": diff, "at_parity": bool(diff <= 1e-4)}
        if row["at_parity"]:
            for b, feed in feeds.items():
                row[f"batch{b}_us"] = round(
                    median_us(lambda feed=feed, sess=sess: sess.run(None, feed)), 1
                )
        figures[cand] = row
    timed = {c: r["batch1_us"] + r["batch64_us"] for c, r in figures.items() if "batch1_us" in r}
    if not timed:
        raise StnDeployError(f"--lowering auto: no candidate is at parity with torch: {figures}")
    chosen = min(timed, key=timed.get)
    return chosen, {
        "provider": provider,
        "chosen": chosen,
        "score": "median us at batch 1 + batch 64",
        "candidates": figures,
    }


choose_sampler = choose_lowering  # the former name
