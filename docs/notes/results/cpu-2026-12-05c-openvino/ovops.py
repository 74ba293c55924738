"""The node types of OpenVINO's compiled (executable) graph: python ovops.py GRAPH.onnx"""
import sys, collections, openvino as ov
core = ov.Core()
cm = core.compile_model(core.read_model(sys.argv[1]), "CPU", {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
ops = cm.get_runtime_model().get_ops()
c = collections.Counter(op.get_rt_info()["layerType"].astype(str) for op in ops)
print(c.most_common())
