"""The metadata stn-deploy writes into every exported ONNX file (``metadata_props``), no torch.

Keys live under the ``stn_deploy.`` prefix; values are strings (lists and dicts as JSON), so any
runtime can read them: ORT's ``session.get_modelmeta().custom_metadata_map``, OpenVINO's
``rt_info``, or ``onnx.load(path).metadata_props``.
"""

from __future__ import annotations

import json
from typing import Any

import onnx

PREFIX = "stn_deploy."

#: the keys an export writes, and what they say.
KEYS = {
    "version": "stn-deploy version that wrote the file",
    "torch_version": "torch version the model was exported from",
    "model": "model name (zoo name, factory or checkpoint architecture)",
    "transform": "STN transform(s): affine, attention, projective, tps, none",
    "lowering": "grid-sample lowering: native, portable, custom, custom-inline, ort-contrib, "
    "or separable (attention STNs sampled by two MatMuls, no sampler op)",
    "target": "the target profile the file was made for",
    "opset": "default-domain opset",
    "input_layout": "layout of the image input, e.g. NCHW float32 0..1 then normalised",
    "normalization_mean": "JSON list: per-channel mean subtracted from 0..1 pixels",
    "normalization_std": "JSON list: per-channel std the pixels are divided by",
    "class_labels": "JSON list of class names, in output order",
    "precision": "numeric precision of the weights and compute: fp32, fp16 or int8",
    "export_args": "JSON: target, sampler, opset, inline, expose_stn, dynamic_batch, separable, "
    "exporter (dynamo or torchscript) and optimize (none, exact or auto) as export_model used "
    "them (enough to export the same file again from the same weights), plus output_names "
    "(only when given)",
}
#: written only by ``--lowering auto``: every candidate's parity and timings, and the choice
AUTO_KEY = "auto"
#: written when attention STNs were sampled in the exact separable form: how many
SEPARABLE_KEY = "separable"
#: written only when the export's self-check did not gate the file: why
SELF_CHECK_KEY = "self_check"
#: the keys some exports write and others do not (every export writes all of :data:`KEYS`)
OPTIONAL_KEYS = {
    AUTO_KEY: "JSON, --lowering auto only: every candidate's parity with torch and timings, "
    "the provider timed on and the lowering chosen",
    SEPARABLE_KEY: "how many attention STNs were sampled in the exact separable form "
    "(two MatMuls); absent when none",
    "optimize": "JSON: the graph rewrites applied (stn_deploy.optimize: mode, runtime, passes "
    "and sites, notes; auto also every candidate's timings); absent when none ran",
    SELF_CHECK_KEY: "why the self-check (the written file on ONNX Runtime CPU against torch "
    "before it is kept) did not gate the file: check=False / --no-check, onnxruntime not "
    "installed, or an fp16/int8 file whose golden inputs are noise; absent when it passed",
}


def write_metadata(model: onnx.ModelProto, values: dict[str, Any]) -> None:
    """Set ``stn_deploy.<key>`` entries on ``model`` (replacing earlier ones), sorted by key."""
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in values.items():
        props[PREFIX + key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    del model.metadata_props[:]
    for key in sorted(props):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, props[key]


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """All ``metadata_props`` of ``model`` as a dict (stn-deploy's and anyone else's)."""
    return {p.key: p.value for p in model.metadata_props}


def stn_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """Only stn-deploy's entries, with the prefix removed."""
    return {k[len(PREFIX) :]: v for k, v in read_metadata(model).items() if k.startswith(PREFIX)}
