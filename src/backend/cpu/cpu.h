/*
 * cpu.h - the CPU backend: a thread pool plus per-thread scratch behind the
 * lp_backend table (see backend/backend.h). Kernels use AVX2/FMA/F16C when the
 * CPU has them (chosen once at creation) and portable scalar loops otherwise.
 */
#ifndef LP_BACKEND_CPU_H
#define LP_BACKEND_CPU_H

#include "../backend.h"

/* Create a CPU backend with n_threads threads (<= 0: all cores) and scratch for
 * the given limits. On error *out is untouched and the message recorded. */
enum lopad_status lp_backend_cpu_new(int n_threads, const struct lp_backend_limits *lim,
                                     struct lp_backend *out);

/* Threads of a CPU backend. */
int lp_backend_cpu_n_threads(const struct lp_backend *b);
/* Whether this CPU can run the AVX2/FMA/F16C kernels. */
bool lp_cpu_simd_available(void);
/* Test hook: use the scalar kernels (true) or the SIMD ones when available
 * (false) from now on. Returns whether SIMD kernels are in use afterwards. */
bool lp_backend_cpu_force_scalar(struct lp_backend *b, bool scalar);
/* Test hook: kernel level 0 = scalar, 1 = AVX2/FMA/F16C, 2 = the same with
 * AVX-512VL registers (bigger matmul tiles, bitwise the same results as 1);
 * clamped to what the CPU has. Returns the level now in use. */
int lp_backend_cpu_set_level(struct lp_backend *b, int level);

#endif
