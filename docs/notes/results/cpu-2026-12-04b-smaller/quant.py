"""int8 weights for the fused warm graph: ONNX Runtime's dynamic quantisation (Conv, MatMul)."""
import sys
from onnxruntime.quantization import QuantType, quantize_dynamic
src, dst = sys.argv[1], sys.argv[2]
quantize_dynamic(src, dst, weight_type=QuantType.QInt8 if "s8" in dst else QuantType.QUInt8,
                 use_external_data_format=True)
