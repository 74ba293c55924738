"""Exported plan graphs in ONNX Runtime and OpenVINO, one thread each:
CLK=thread|process|wall python ovmulti.py INPUTS.npz RT:GRAPH.onnx ...  (RT: ort or ov; CLK
default process). 5 rounds x 400 runs of each in turn (50 warm-up runs first), the median of
each round; OpenVINO's inputs shared, not copied, and its compiled graph's node types printed.
"""
import os, sys, time, collections, numpy as np, onnxruntime as ort, openvino as ov
CLK = {"thread": time.thread_time_ns, "process": time.process_time_ns,
       "wall": time.perf_counter_ns}[os.environ.get("CLK", "process")]
inp = dict(np.load(sys.argv[1]))
core = ov.Core()
F = {}
for spec in sys.argv[2:]:
    rt, path = spec.split(":", 1)
    if rt == "ort":
        o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
        o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL; o.log_severity_level = 3
        s = ort.InferenceSession(path, o)
        F[spec] = (lambda s=s: s.run(None, inp))
    else:
        cm = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1,
             "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
        c = collections.Counter(op.get_rt_info()["layerType"].astype(str) for op in cm.get_runtime_model().get_ops())
        print(spec, sum(c.values()), c.most_common(8))
        req = cm.create_infer_request(); names = [i.get_any_name() for i in cm.inputs]
        def f(req=req, names=names, n=len(cm.outputs)):
            req.infer({k: inp[k] for k in names}, share_inputs=True)
            return [req.get_output_tensor(i).data.copy() for i in range(n)]
        F[spec] = f
ref = None
for k, f in F.items():
    out = f(); ref = out if ref is None else ref
    print(k, "max diff vs first", [float(np.abs(a - b).max()) for a, b in zip(out, ref)])
res = {k: [] for k in F}
for r in range(5):
    for k, f in F.items():
        for _ in range(50): f()
        ts = []
        for _ in range(400):
            t = CLK(); f(); ts.append(CLK() - t)
        res[k].append(np.median(ts) / 1e6)
for k, v in res.items():
    print(f"{k:30s} " + " ".join(f"{x:.3f}" for x in v) + f"  median {np.median(v):.3f} ms")
