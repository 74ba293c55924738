"""Time ONNX graphs of one plan on one thread: python ortbench.py INPUTS.npz SPEC... [--interleave]

SPEC is PATH[:LEVEL][@OPTION=VALUE...]: LEVEL all (default), ext or basic, ONNX Runtime's graph
optimisation level (the optimised graph is written to PATH.LEVEL.opt.onnx and its nodes counted);
OPTION a SessionOptions attribute, e.g. @enable_cpu_mem_arena=False. Default: 5 rounds of 400
runs of each graph in turn (50 warm-up runs first), the median of each round. --interleave: one
run of each graph in turn, 4000 times, the caches shared (median, p25, min after the first 200).
"""
import sys, time, numpy as np, onnxruntime as ort, onnx
LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
          "ext": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}
interleave = "--interleave" in sys.argv
args = [a for a in sys.argv[1:] if a != "--interleave"]
inp = dict(np.load(args[0]))
S = {}
for spec in args[1:]:
    head, *opts = spec.split("@")
    path, _, level = head.partition(":")
    level = level or "all"
    o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL; o.log_severity_level = 3
    o.graph_optimization_level = LEVELS[level]
    o.optimized_model_filepath = f"{path}.{level}.opt.onnx"
    for kv in opts:
        k, v = kv.split("=", 1)
        setattr(o, k, {"True": True, "False": False}.get(v, v))
    S[spec] = ort.InferenceSession(path, o)
    print(spec, "nodes", len(onnx.load(f"{path}.{level}.opt.onnx").graph.node))
ref = None
for m, s in S.items():
    out = s.run(None, inp)
    ref = out if ref is None else ref
    print(m, "max diff vs first", max(float(np.abs(a - b).max()) for a, b in zip(out, ref)))
keys = list(S)
if interleave:
    ts = {k: [] for k in keys}
    for it in range(4000):
        for k in (keys if it % 2 else keys[::-1]):
            t = time.thread_time_ns(); S[k].run(None, inp); ts[k].append(time.thread_time_ns() - t)
    for k, v in ts.items():
        v = np.array(v[200:]) / 1e6
        print(f"{k:60s} median {np.median(v):.3f}  p25 {np.percentile(v, 25):.3f}  min {v.min():.3f} ms")
else:
    res = {k: [] for k in keys}
    for r in range(5):
        for k in keys:
            for _ in range(50): S[k].run(None, inp)
            ts = []
            for _ in range(400):
                t = time.thread_time_ns(); S[k].run(None, inp); ts.append(time.thread_time_ns() - t)
            res[k].append(np.median(ts) / 1e6)
    for k, v in res.items():
        print(f"{k:40s} " + " ".join(f"{x:.3f}" for x in v) + f"  median {np.median(v):.3f} ms")
