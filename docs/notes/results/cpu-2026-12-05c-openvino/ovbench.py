"""One exported plan graph, ONNX Runtime against OpenVINO, one thread each:
CLK=thread|process|wall python ovbench.py INPUTS.npz GRAPH.onnx (5 rounds x 400 runs of each in
turn, 50 warm-up runs first; the median of each round). OpenVINO's inputs are shared, not copied.
"""
import os, sys, time, numpy as np, onnxruntime as ort, openvino as ov
CLK = {"thread": time.thread_time_ns, "process": time.process_time_ns, "wall": time.perf_counter_ns}[os.environ.get("CLK", "thread")]
inp = dict(np.load(sys.argv[1])); path = sys.argv[2]
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL; o.log_severity_level = 3
s = ort.InferenceSession(path, o)
core = ov.Core()
m = core.read_model(path)
print("ov ops", len(m.get_ops()))
cm = core.compile_model(m, "CPU", {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
     "INFERENCE_PRECISION_HINT": "f32", "ENABLE_CPU_PINNING": False})
print("exec ops", len(cm.get_runtime_model().get_ops()))
req = cm.create_infer_request()
names = [i.get_any_name() for i in cm.inputs]
print(names)
def ovrun():
    req.infer({k: inp[k] for k in names}, share_inputs=True)
    return [req.get_output_tensor(i).data for i in range(len(cm.outputs))]
ref = s.run(None, inp); got = ovrun()
print("max diff", [float(np.abs(a - b).max()) for a, b in zip(ref, got)])
fns = {"ort": lambda: s.run(None, inp), "ov": ovrun}
res = {k: [] for k in fns}
for r in range(5):
    for k, f in fns.items():
        for _ in range(50): f()
        ts = []
        for _ in range(400):
            t = CLK(); f(); ts.append(CLK() - t)
        res[k].append(np.median(ts) / 1e6)
for k, v in res.items():
    print(f"{k:6s} " + " ".join(f"{x:.3f}" for x in v) + f"  median {np.median(v):.3f} ms")
