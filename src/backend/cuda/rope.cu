/*
 * rope.cu - rotary position embedding in place, at explicit positions, with
 * NEOX (rotate-half) or NORM (interleaved) pairing.
 */
#include "common.cuh"

/* ---------------------------------------------------------------- kernels */

/* one thread per (row, head, pair i < d/2); x (n_rows, n_head*d) */
__global__ void lp_k_rope(float *__restrict__ x, int n_rows, int n_head, int d,
                          const int32_t *__restrict__ pos, float theta, int neox) {
    const int half = d / 2;
    const int64_t total = (int64_t)n_rows * n_head * half;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total;
         t += (int64_t)gridDim.x * blockDim.x) {
        const int i = (int)(t % half);
        const int64_t rh = t / half; /* row * n_head + head */
        const int64_t row = rh / n_head;
        /* same f32 steps as the CPU backend: inv = 1 / theta^(2i/d), angle = pos * inv */
        const float inv = 1.0f / powf(theta, (float)(2 * i) / (float)d);
        const float ang = (float)pos[row] * inv;
        const float c = cosf(ang), s = sinf(ang);
        float *xh = x + rh * d;
        const int a = neox ? i : 2 * i;
        const int b = neox ? i + half : 2 * i + 1;
        const float x0 = xh[a], x1 = xh[b];
        xh[a] = x0 * c - x1 * s;
        xh[b] = x1 * c + x0 * s;
    }
}

/* -------------------------------------------------------------- launchers */

extern "C" int lp_cuda_rope(float *x, int n_rows, int n_head, int head_dim, const int32_t *pos,
                            float theta, int neox, lp_cuda_stream s) {
    const int64_t total = (int64_t)n_rows * n_head * (head_dim / 2);
    if (total <= 0) return 0;
    lp_k_rope<<<lp_cuda_ew_blocks(total), LP_CUDA_EW_THREADS, 0, s>>>(x, n_rows, n_head, head_dim,
                                                                      pos, theta, neox);
    return lp_cuda_launch_status();
}
