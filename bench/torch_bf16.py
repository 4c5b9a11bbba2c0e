#!/usr/bin/env python3
# torch_bf16.py - PyTorch's CPU matmul (f32 and bf16 `linear`) on the Dream-7B matmul shapes,
# to set beside `bash bench/kernels.sh BUILD 1 32,128,512 f32,bf16`. Debian's torch 1.13
# runs bf16 linear through oneDNN (libdnnl), f32 through OpenBLAS when it is the libblas.so.3
# alternative. Times are process CPU time, best of 3.
#
#   /usr/bin/python3 bench/torch_bf16.py [THREADS]
import torch, time, sys
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
print(torch.__version__, torch.backends.mkldnn.is_available())
for (n_out, n_in) in [(3584,3584),(18944,3584),(3584,18944)]:
    w32 = torch.randn(n_out, n_in)
    for dt in (torch.float32, torch.bfloat16):
        w = w32.to(dt)
        for T in (32,128,512):
            x = torch.randn(T, n_in).to(dt)
            torch.nn.functional.linear(x, w)
            best = 1e9
            for _ in range(3):
                t0 = time.process_time(); torch.nn.functional.linear(x, w); best = min(best, time.process_time()-t0)
            print(f"{str(dt):15s} {n_out:6d} {n_in:6d} {T:4d} {2*T*n_out*n_in/best/1e9:8.1f} GFLOP/cpu-s")
