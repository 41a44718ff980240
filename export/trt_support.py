"""TensorRT's ONNX operator support, as data: the op importers registered by onnx-tensorrt's
8.2-GA (`builtin_op_importers.cpp`) and 10.0-GA (`onnxOpImporters.cpp`) parsers; the Jetson
Nano's JetPack 4.6 ships 8.2.1, desktops run 10. They agree with each release's
`docs/operators.md` but for one slip: 8.2's table marks Reciprocal "N" though 8.2 imports it.

`TARGETS[name]` says which TensorRT a check is for, its opset range, the ops its ONNX parser
imports (default domain; anything else needs a plugin) and the documented restrictions that
`export.check` verifies per node.
"""

from __future__ import annotations

_COMMON = """
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GRU HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN
LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max
MaxPool Mean Min Mul Neg NonMaxSuppression Not Or Pad ParametricSoftplus Pow PRelu
QuantizeLinear RandomUniform RandomUniformLike Range ReduceL1 ReduceL2 ReduceLogSum
ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
Reciprocal Reshape Resize ReverseSequence RNN Round ScaledTanh Scan Scatter ScatterElements ScatterND
Selu Shape Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split
Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Unsqueeze Upsample Where
"""

# Added between 8.2 and 10.0 (8.2 lists these as unsupported or does not know them yet).
_ADDED_IN_10 = """
CastLike Gelu GridSample GroupNormalization HardSwish Hardmax IsInf LayerNormalization
MeanVarianceNormalization Mish Mod NonZero OneHot RandomNormal RandomNormalLike RoiAlign
Shrink Trilu Xor
"""

# op -> documented restriction; export.check.RULES verifies each where the target lists it.
RESTRICTIONS_82 = {
    "Conv": "weights must be an initializer",
    "ConvTranspose": "weights must be an initializer",
    "TopK": "K must be an initializer (constant)",
    "Slice": "axes must be an initializer",
    "Squeeze": "axes must be an initializer",
    "Unsqueeze": "axes must be a constant tensor",
    "MaxPool": "the Indices output is unsupported",
    "Resize": "modes nearest/linear only",
}
RESTRICTIONS_10 = {
    "Slice": "axes must be an initializer",
    "Squeeze": "axes must be an initializer",
    "Unsqueeze": "axes must be a constant tensor",
    "MaxPool": "the Indices output is unsupported",
    "Resize": "modes nearest/linear only",
}

RESIZE_MODES = ("nearest", "linear")
RESIZE_COORDINATE_MODES = (
    "half_pixel",
    "pytorch_half_pixel",
    "tf_half_pixel_for_nn",
    "asymmetric",
    "align_corners",
)
RESIZE_NEAREST_MODES = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")


# Ops a parser may import that a nanoprune bundle must not carry (8.2 lists NMS as experimental).
_FORBIDDEN = {"NonMaxSuppression": "NMS must not be in the graph: the runtime runs it in numpy"}


def _ops(*blocks: str) -> frozenset[str]:
    return frozenset(op for block in blocks for op in block.split())


TARGETS = {
    "nano": {
        "tensorrt": "8.2",
        "opset_min": 7,
        "opset_max": 13,
        "ops": _ops(_COMMON),
        "restrictions": RESTRICTIONS_82,
        "static_shapes": True,  # Nano engines: static 1x3xHxW, no optimization profiles
        "int64": False,  # 8.2 casts INT64 down to INT32 (clamping)
        "forbidden": _FORBIDDEN,
    },
    "desktop": {
        "tensorrt": "10.0",
        "opset_min": 9,
        "opset_max": 20,
        "ops": _ops(_COMMON, _ADDED_IN_10),
        "restrictions": RESTRICTIONS_10,
        "static_shapes": False,
        "int64": True,  # 10 has INT64 tensors
        "forbidden": _FORBIDDEN,
    },
}
