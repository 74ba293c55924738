import sys, time, numpy as np, onnxruntime as ort
inp = dict(np.load(sys.argv[1]))
def sess(path, **kw):
    o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL; o.log_severity_level = 3
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for k, v in kw.items():
        if k.startswith("cfg:"): o.add_session_config_entry(k[4:], v)
        else: setattr(o, k, v)
    return ort.InferenceSession(path, o)
variants = {}
for spec in sys.argv[2:]:
    parts = spec.split("@"); path = parts[0]; kw = {}
    for p in parts[1:]:
        k, v = p.split("=", 1)
        kw[k] = {"True": True, "False": False}.get(v, v)
    variants[spec] = sess(path, **kw)
ts = {k: [] for k in variants}
keys = list(variants)
for it in range(4000):
    for k in (keys if it % 2 else keys[::-1]):
        s = variants[k]
        t = time.thread_time_ns(); s.run(None, inp); ts[k].append(time.thread_time_ns() - t)
for k, v in ts.items():
    v = np.array(v[200:]) / 1e6
    print(f"{k:60s} median {np.median(v):.3f}  p25 {np.percentile(v,25):.3f}  min {v.min():.3f} ms")
