"""Op versions whose semantics equal a version onnx2torch already converts (new types such as bfloat16/float8, or
dropped legacy attributes): each is handed to onnx2torch's converter for the older version.

`tests/test_onnx_compat.py` checks with `onnx.defs` that every pair has the same inputs, outputs and attributes
(up to the listed legacy ones), so an alias can't silently hide a change of meaning.
"""

from __future__ import annotations

from .. import Converter
from ._common import delegate

#: (op type, since-version) -> the onnx2torch version with the same meaning.
ALIASES: dict[tuple[str, int], int] = {
    # opset 16-24: type-only bumps (bfloat16, float8, int4, ...)
    ("GreaterOrEqual", 16): 12, ("LessOrEqual", 16): 12,
    ("Equal", 19): 13,
    ("Cast", 19): 13, ("Cast", 21): 13, ("Cast", 23): 13,  # + `saturate`, which only applies to float8 targets
    ("Constant", 19): 13, ("Constant", 21): 13, ("Constant", 23): 13,
    ("ConstantOfShape", 20): 9, ("ConstantOfShape", 21): 9, ("ConstantOfShape", 23): 9,
    ("Identity", 19): 16, ("Identity", 21): 16, ("Identity", 23): 16,
    ("Shape", 19): 15, ("Shape", 21): 15, ("Shape", 23): 15,
    ("Transpose", 21): 13, ("Transpose", 23): 13,
    ("Unsqueeze", 21): 13, ("Unsqueeze", 23): 13,
    ("Squeeze", 23): 21,
    ("IsInf", 20): 10, ("IsNaN", 20): 13,
    ("Acos", 22): 7, ("Asin", 22): 7, ("Atan", 22): 7, ("Cos", 22): 7, ("Sin", 22): 7, ("Tan", 22): 7,
    ("Elu", 22): 6, ("Selu", 22): 6, ("HardSigmoid", 22): 6, ("HardSwish", 22): 14, ("Softplus", 22): 1,
    ("Softsign", 22): 1, ("Round", 22): 11, ("Dropout", 22): 13, ("EyeLike", 22): 9,
    ("InstanceNormalization", 22): 6,
    # old opsets (the onnx wheel's reference nets are opset 6-9): legacy attributes that do not change inference
    ("PRelu", 6): 7,
    ("Gemm", 6): 9, ("Gemm", 7): 9,  # `broadcast` (6): numpy broadcasting is a superset
    ("Max", 6): 8, ("Min", 6): 8, ("Mean", 6): 8, ("Sum", 6): 8,
    ("Cast", 6): 9, ("IsNaN", 9): 13, ("NonZero", 9): 13,
    ("ArgMax", 1): 11, ("ArgMin", 1): 11,
    ("Dropout", 6): 10, ("Dropout", 7): 10,  # `is_test` (6): vizcore always runs in inference mode
}

#: Attributes an alias may add or drop relative to its target, by (op, version), with why that is safe.
LEGACY_ATTRIBUTES: dict[tuple[str, int], set[str]] = {
    ("Cast", 19): {"saturate"}, ("Cast", 21): {"saturate"}, ("Cast", 23): {"saturate"},
    ("Gemm", 6): {"broadcast"}, ("Dropout", 6): {"is_test"},
}

CONVERTERS = [Converter(op, version, delegate(op, target)) for (op, version), target in ALIASES.items()]
