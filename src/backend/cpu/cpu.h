/*
 * cpu.h - the CPU backend: a thread pool plus per-thread scratch behind the
 * lp_backend table (see backend/backend.h). Kernels use AVX-512 (with BF16 and
 * VNNI dot products), else AVX2/FMA/F16C, when the CPU has them (chosen per
 * backend, see lp_backend_cpu_set_level) and portable scalar loops otherwise.
 */
#ifndef LP_BACKEND_CPU_H
#define LP_BACKEND_CPU_H

#include "../backend.h"

/* Create a CPU backend with n_threads threads (<= 0: all cores) and scratch for
 * the given limits. On error *out is untouched and the message recorded. */
enum lopad_status lp_backend_cpu_new(int n_threads, const struct lp_backend_limits *lim,
                                     struct lp_backend *out);

/* Bind the backend to model m's weights: Q8_0 matrices are repacked once per
 * model into the int8 kernel's layout (kept with the model, shared by its
 * contexts), so matmuls stop staging them. Optional: an unbound backend gives
 * bitwise the same results. mode: LOPAD_REPACK_AUTO makes the copy when it takes
 * at most half of MemAvailable (Linux) at that bind, _ON always, _OFF never (this
 * backend then reads the stored weights even if another context made the copy).
 * Once a matrix of a file mapping is repacked, its pages are released from the
 * process (madvise), so the copy replaces the source in memory instead of
 * doubling it; whatever reads the stored bytes later (a context without the copy,
 * the CUDA upload, saving) faults them in again from the file. */
enum lopad_status lp_backend_cpu_bind_model(struct lp_backend *b, const struct lopad_model *m,
                                            enum lopad_repack mode);
/* Whether the int8-dot matmul path (and so the Q8_0 repack) is in use. */
bool lp_backend_cpu_int8_dot(const struct lp_backend *b);
/* Bytes of repacked weights the backend reads (0 when unbound or none). */
size_t lp_backend_cpu_repacked_bytes(const struct lp_backend *b);

/* Threads of a CPU backend. */
int lp_backend_cpu_n_threads(const struct lp_backend *b);
/* The backend's worker pool (NULL for another backend): the decoders' proposals run
 * on it between forwards, so a request has one thread budget. */
struct lp_pool;
struct lp_pool *lp_backend_cpu_pool(const struct lp_backend *b);
/* Whether this CPU can run the AVX2/FMA/F16C kernels. */
bool lp_cpu_simd_available(void);
/* Test hook: use the scalar kernels (true) or the SIMD ones when available
 * (false) from now on. Returns whether SIMD kernels are in use afterwards. */
bool lp_backend_cpu_force_scalar(struct lp_backend *b, bool scalar);
/* Kernel level 0 = scalar reference, 1 = AVX2/FMA/F16C, 2 = AVX-512 (matmul
 * bitwise the same as 0 and 1), 3 = AVX-512 plus the bf16-dot (BF16 weights) and
 * int8-dot (Q8_0/Q4_0/Q4_K/Q6_K) matmul paths, whose numerics differ (see
 * cpu_matmul.c). Clamped to what the CPU has. Returns the level now in use.
 * A new backend runs the best level; the level is the backend's own (one
 * context's), never process-wide. The library reads no environment: callers
 * cap it (lopad_ctx_params.kernels, lp_cpu_kernels_level). */
int lp_backend_cpu_set_level(struct lp_backend *b, int level);
int lp_backend_cpu_level(const struct lp_backend *b);
/* The level a lopad_ctx_params.kernels name caps at: NULL or "" = 3 (the best),
 * "ref" (or "scalar") = 0, "avx2" = 1, "avx512f32" = 2, "avx512" = 3.
 * LOPAD_ERR_ARG naming the value otherwise. */
enum lopad_status lp_cpu_kernels_level(const char *name, int *level);

#endif
