import sys, time, numpy as np, onnxruntime as ort, onnx
inp = dict(np.load(sys.argv[1]))
models = sys.argv[2:]
def sess(path, level):
    o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL; o.log_severity_level = 3
    o.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "ext": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    if "+nospin" in path: pass
    o.optimized_model_filepath = path + f".{level}.opt.onnx"
    return ort.InferenceSession(path, o)
S = {}
for m in models:
    p, lvl = m.split(":")
    S[m] = sess(p, lvl)
    g = onnx.load(p + f".{lvl}.opt.onnx")
    print(m, "nodes", len(g.graph.node))
ref = None
for m, s in S.items():
    out = s.run(None, inp)
    if ref is None: ref = out
    print(m, "max diff vs first", max(float(np.abs(a - b).max()) for a, b in zip(out, ref)))
res = {m: [] for m in S}
for r in range(5):
    for m, s in S.items():
        for _ in range(50): s.run(None, inp)
        ts = []
        for _ in range(400):
            t = time.thread_time_ns(); s.run(None, inp); ts.append(time.thread_time_ns() - t)
        res[m].append(np.median(ts) / 1e6)
for m, v in res.items():
    print(f"{m:40s} " + " ".join(f"{x:.3f}" for x in v) + f"  median {np.median(v):.3f} ms")
