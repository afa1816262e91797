"""Converters from ONNX to edge runtimes' formats (no torch): onnx2tf -> ``.tflite`` (LiteRT),
pnnx -> ncnn, MNNConvert -> ``.mnn``, iree-import-onnx + iree-compile -> ``.vmfb``. Each is
driven as its users drive it, on a private copy of the file, with the settings that keep fp32
results (see ``RUNTIMES.md`` notes in the README); see :mod:`.api`."""

from stn_deploy.convert.api import CONVERTERS, RUNTIME_OF, Converted, convert_model
from stn_deploy.convert.base import FORMATS, RECORD, ConversionError, ConverterMissing
from stn_deploy.convert.cache import cache_root, cached_conversion

__all__ = [
    "CONVERTERS",
    "FORMATS",
    "RECORD",
    "RUNTIME_OF",
    "ConversionError",
    "ConverterMissing",
    "Converted",
    "cache_root",
    "cached_conversion",
    "convert_model",
]
