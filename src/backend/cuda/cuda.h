/*
 * cuda.h - the CUDA backend: the same lp_backend table as the CPU backend, with
 * buffers in GPU memory, weight matrices resident on the GPU as bf16 and GEMMs
 * on cuBLAS (bf16 x bf16 -> f32 accumulate). Only built with -DLOPAD_CUDA=ON;
 * everything here is declared regardless so callers can test LOPAD_CUDA once.
 */
#ifndef LP_BACKEND_CUDA_H
#define LP_BACKEND_CUDA_H

#include "../backend.h"

/* Create a CUDA backend on the current device for model m. The model's weights
 * are uploaded on first use and shared by every CUDA backend of the same model:
 * they are kept with the model (lp_model_cache_get) and released when the model
 * itself goes (the last of lopad_model_free and its contexts' lopad_ctx_free),
 * so a context made per request does not upload them again. n_rows_max bounds the rows of any
 * matmul / attention call (the context's n_batch_max).
 * LOPAD_ERR_UNSUPPORTED when there is no usable device or head_dim > 128. */
enum lopad_status lp_backend_cuda_new(const struct lopad_model *m,
                                      const struct lp_backend_limits *lim, int n_rows_max,
                                      struct lp_backend *out);

/* Wait for the backend's stream; returns the first error any kernel launch,
 * copy or cuBLAS call recorded since the last sync (and clears it). */
enum lopad_status lp_backend_cuda_sync(struct lp_backend *b);

/* The backend's stream (a cudaStream_t), on which every kernel, copy and cuBLAS call
 * of b is queued: work enqueued there (the NCCL door, src/dist/nccl.h) runs in order
 * with the forward's. NULL when b is not a CUDA backend (or the build has no CUDA). */
void *lp_backend_cuda_stream(const struct lp_backend *b);

/* Under a launcher, make device (local rank mod device count) the current one, so that
 * the ranks of one machine use its GPUs in turn (nothing without a local rank). */
void lp_cuda_use_local_device(void);

/* Number of usable CUDA devices (0 when none or the driver is missing). */
int lp_cuda_device_count(void);

/* Measured ceilings of the current device: device-to-device copy bandwidth
 * (GB/s, read + write) and a bf16 x bf16 -> f32 cuBLAS GEMM (TFLOP/s, 8192^3). */
enum lopad_status lp_cuda_peak(double *copy_gbs, double *gemm_tflops);

/* Bytes of weights resident on the device for backend b. */
size_t lp_backend_cuda_weight_bytes(const struct lp_backend *b);

#endif
