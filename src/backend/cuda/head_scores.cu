/*
 * head_scores.cu - confidence scores of output rows from their logits, folded
 * over the vocabulary chunk by chunk (the fused output head: the logits of a
 * chunk live only in scratch, never go to the host).
 *
 * Per row a state (m, S, Z, v1, i1, v2, i2): running max m, S = sum exp(z - m),
 * Z = sum exp(z - m) (z - m), and the top two logits with their ids (ties keep
 * the lower id, NaN never wins). One block per row; threads fold strided ids in
 * increasing order, then merge in a fixed tree order, then into the row's state:
 * results do not depend on timing. The final pass gives argmax, p_max, margin,
 * sum p log p (= Z/S - log S) and logsumexp (= m + log S), as the CPU backend.
 */
#include "common.cuh"

#define SC_THREADS 256

struct sc_state {
    float m, S, Z, v1, v2;
    int i1, i2;
};

/* ---------------------------------------------------------------- kernels */

/* (v, i) beats (w, j): larger logit, or equal logit and lower id; no id = worst,
 * NaN never beats anything */
__device__ __forceinline__ bool sc_better(float v, int i, float w, int j) {
    if (i < 0 || v != v) return false;
    if (j < 0) return true;
    return v > w || (v == w && i < j);
}

__device__ __forceinline__ void sc_merge(sc_state &a, const sc_state &b) {
    if (b.m > -INFINITY) {
        const float mn = fmaxf(a.m, b.m);
        const float ca = a.S > 0 ? expf(a.m - mn) : 0.0f, cb = expf(b.m - mn);
        a.Z = ca * (a.Z + (a.S > 0 ? (a.m - mn) * a.S : 0.0f)) + cb * (b.Z + (b.m - mn) * b.S);
        a.S = ca * a.S + cb * b.S;
        a.m = mn;
    }
    const float cv[2] = {b.v1, b.v2};
    const int ci[2] = {b.i1, b.i2};
    for (int q = 0; q < 2; q++) {
        if (sc_better(cv[q], ci[q], a.v1, a.i1)) {
            a.v2 = a.v1, a.i2 = a.i1;
            a.v1 = cv[q], a.i1 = ci[q];
        } else if (sc_better(cv[q], ci[q], a.v2, a.i2)) {
            a.v2 = cv[q], a.i2 = ci[q];
        }
    }
}

/* z (n_rows, vc): logits of vocabulary ids [v0, v0 + vc); state (n_rows) folded
 * (initialised when first). One block per row. */
__global__ void lp_k_scores_chunk(const float *__restrict__ z, int vc, int v0, int first,
                                  sc_state *__restrict__ state) {
    __shared__ sc_state part[SC_THREADS];
    const float *zr = z + (int64_t)blockIdx.x * vc;
    sc_state s = {-INFINITY, 0.0f, 0.0f, -INFINITY, -INFINITY, -1, -1};
    for (int r = threadIdx.x; r < vc; r += blockDim.x) { /* increasing ids per thread */
        const float v = zr[r];
        const int id = v0 + r;
        if (sc_better(v, id, s.v1, s.i1)) {
            s.v2 = s.v1, s.i2 = s.i1;
            s.v1 = v, s.i1 = id;
        } else if (sc_better(v, id, s.v2, s.i2)) {
            s.v2 = v, s.i2 = id;
        }
        if (v > s.m) { /* rescale */
            const float c = expf(s.m - v);
            if (s.S > 0) s.Z = c * fmaf(s.m - v, s.S, s.Z);
            s.S *= c;
            s.m = v;
        }
        if (s.m == -INFINITY) continue; /* every logit so far is -inf */
        const float e = expf(v - s.m);
        s.S += e;
        s.Z = fmaf(e, v - s.m, s.Z);
    }
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = SC_THREADS / 2; w > 0; w /= 2) { /* fixed tree: deterministic */
        if ((int)threadIdx.x < w) {
            sc_state a = part[threadIdx.x];
            sc_merge(a, part[threadIdx.x + w]);
            part[threadIdx.x] = a;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        if (first) {
            state[blockIdx.x] = part[0];
        } else {
            sc_state a = state[blockIdx.x];
            sc_merge(a, part[0]);
            state[blockIdx.x] = a;
        }
    }
}

/* out[t] from state[t] (layout of struct lp_row_scores / lp_cuda_row_scores) */
__global__ void lp_k_scores_final(const sc_state *__restrict__ state, int n_rows,
                                  lp_cuda_row_scores *__restrict__ out) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n_rows) return;
    const sc_state s = state[t];
    const double lse = (double)s.m + log((double)s.S);
    const double p1 = exp((double)s.v1 - lse);
    lp_cuda_row_scores o;
    o.argmax = s.i1 < 0 ? 0 : s.i1;
    o.logsumexp = (float)lse;
    o.pmax = (float)p1;
    o.margin = (float)(p1 - (s.i2 < 0 ? 0.0 : exp((double)s.v2 - lse)));
    o.negent = (float)((double)s.Z / (double)s.S - log((double)s.S));
    o.top1 = s.v1;
    o.top2 = s.i2 < 0 ? -INFINITY : s.v2;
    out[t] = o;
}

/* -------------------------------------------------------------- launchers */

extern "C" int lp_cuda_scores_chunk(const float *z, int n_rows, int vc, int v0, int first,
                                    float *state, lp_cuda_stream s) {
    if (n_rows <= 0) return 0;
    lp_k_scores_chunk<<<n_rows, SC_THREADS, 0, s>>>(z, vc, v0, first,
                                                    reinterpret_cast<sc_state *>(state));
    return lp_cuda_launch_status();
}

extern "C" int lp_cuda_scores_final(const float *state, int n_rows, lp_cuda_row_scores *out,
                                    lp_cuda_stream s) {
    if (n_rows <= 0) return 0;
    lp_k_scores_final<<<(n_rows + 127) / 128, 128, 0, s>>>(
        reinterpret_cast<const sc_state *>(state), n_rows, out);
    return lp_cuda_launch_status();
}
