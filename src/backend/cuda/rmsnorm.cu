/*
 * rmsnorm.cu - RMSNorm per row: y = x * rsqrt(mean(x^2) + eps) * w (f32 sums).
 */
#include "common.cuh"

#define LP_NORM_THREADS 256

/* ---------------------------------------------------------------- kernels */

/* one block per row; x, y (n_rows, n), y may alias x (each thread reads and then
 * writes only its own elements) */
__global__ void lp_k_rmsnorm(const float *x, const float *__restrict__ w, float eps, int n,
                             float *y) {
    __shared__ float part[LP_NORM_THREADS / 32];
    const float *xr = x + (int64_t)blockIdx.x * n;
    float *yr = y + (int64_t)blockIdx.x * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        ss = fmaf(xr[i], xr[i], ss);
    ss = lp_warp_sum(ss);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) part[warp] = ss;
    __syncthreads();
    if (warp == 0) {
        ss = lane < LP_NORM_THREADS / 32 ? part[lane] : 0.0f;
        ss = lp_warp_sum(ss);
        if (lane == 0) part[0] = ss;
    }
    __syncthreads();
    const float r = 1.0f / sqrtf(part[0] / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        yr[i] = w[i] * (xr[i] * r);
}

/* -------------------------------------------------------------- launchers */

extern "C" int lp_cuda_rmsnorm(const float *x, const float *w, float eps, int n_rows, int n,
                               float *y, lp_cuda_stream s) {
    if (n_rows <= 0) return 0;
    lp_k_rmsnorm<<<n_rows, LP_NORM_THREADS, 0, s>>>(x, w, eps, n, y);
    return lp_cuda_launch_status();
}
