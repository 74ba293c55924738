# What ran for h64_diag.txt and bench_only.txt on the H200 (2026-11-30, code of commit 0f31a88,
# before pick_device turned cuDNN's autotuner on), from the repository root, PYTHONPATH=src:
#   python3 docs/results/gpu-2026-11-30d/h64_diag.py fast      # H = 64, captured, cudnn.benchmark + TF32 matmuls
#   python3 docs/results/gpu-2026-11-30d/h64_diag.py prof      # H = 64, eager, defaults, the CUDA kernels by time
#   python3 docs/results/gpu-2026-11-30d/h64_diag.py bench H   # H, captured, cudnn.benchmark only (bench_only.txt)
# Since then `python3 benchmarks/train_speed.py --modes captured --set horizon=64 ...` runs
# with the autotuner on by itself (macdmp.methods.checkpoint.pick_device).
# So `prof` shows cuDNN's default (FFT) choice only on the code of commit 0f31a88 or before.
import runpy
import sys

import torch

mode = sys.argv[1]
speed = ["--warmup", "20", "--window", "100", "--repeats", "3"]
if mode == "fast":
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    sys.argv = ["t", "--modes", "captured", "--set", "horizon=64", *speed]
    runpy.run_path("benchmarks/train_speed.py", run_name="__main__")
elif mode == "bench":
    torch.backends.cudnn.benchmark = True
    sys.argv = ["t", "--modes", "captured", "--set", "horizon=" + sys.argv[2], *speed]
    runpy.run_path("benchmarks/train_speed.py", run_name="__main__")
else:
    from torch.profiler import ProfilerActivity, profile

    sys.argv = ["t", "--modes", "eager", "--set", "horizon=64", "--warmup", "5", "--window", "30"]
    sys.argv += ["--repeats", "1"]
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        runpy.run_path("benchmarks/train_speed.py", run_name="__main__")
    print(p.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))
