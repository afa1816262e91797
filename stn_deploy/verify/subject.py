"""The file under verification: the ONNX model, its stn-deploy metadata, its input and output
specs, and the golden bundle beside it (when there is one)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stn_deploy.errors import StnDeployError
from stn_deploy.export.golden import bundle_path, check_bundle, read_bundle
from stn_deploy.export.metadata import stn_metadata
from stn_deploy.io.hashing import file_sha256
from stn_deploy.runtimes import TensorSpec, load_onnx
from stn_deploy.runtimes.base import graph_inputs, onnx_specs


@dataclass
class Subject:
    path: Path
    proto: Any
    meta: dict[str, str]
    in_specs: list[TensorSpec]
    out_names: list[str]
    bundle: Any = None

    @classmethod
    def load(cls, path: str | Path) -> Subject:
        path = Path(path)
        proto = load_onnx(path)
        return cls(
            path,
            proto,
            stn_metadata(proto),
            onnx_specs(graph_inputs(proto)),
            [o.name for o in proto.graph.output],
        )

    @property
    def bundle_path(self) -> Path:
        return bundle_path(self.path)

    @property
    def kinds(self) -> dict[str, str]:
        """``{output: kind}`` from the model (:mod:`.outputs`)."""
        from stn_deploy.verify.outputs import output_kinds

        return output_kinds(self.proto, self.meta)

    @property
    def precision(self) -> str:
        return self.meta.get("precision", "fp32")

    @property
    def num_classes(self) -> int | None:
        try:
            return len(json.loads(self.meta["class_labels"]))
        except (KeyError, ValueError, TypeError):
            return None

    @property
    def fixed_batch(self) -> int | None:
        return self.in_specs[0].fixed_batch() if self.in_specs else None

    def load_bundle(self, *, required: bool) -> None:
        """Read and check the golden bundle beside the file; without one, an error when
        ``required`` (nothing else to compare with)."""
        bpath = self.bundle_path
        if bpath.is_file():
            self.bundle = read_bundle(bpath)
            check_bundle(self.bundle, bpath, self.path, self.in_specs, self.out_names)
        elif required:
            raise StnDeployError(
                f"no reference: {bpath.name} (the golden bundle) is not beside the model; give "
                "{torch_side} to compare against torch, or {reference_model}",
                param=("torch_side", "reference_model"),
            )

    def to_dict(self) -> dict[str, Any]:
        """The report's ``model`` section."""
        return {
            "path": str(self.path),
            "sha256": file_sha256(self.path),
            "precision": self.precision,
            "lowering": self.meta.get("lowering"),
            "opset": self.meta.get("opset"),
            "inputs": [
                {"name": t.name, "dtype": t.dtype, "shape": list(t.shape or [])}
                for t in self.in_specs
            ],
            "outputs": self.out_names,
            "output_kinds": self.kinds,
        }
