/*
 * emu.cpp - the CUDA emulation runtime (see emu.h): threads, barriers, shuffles.
 */
#include "emu.h"

#include <vector>

thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

static pthread_barrier_t block_bar;
static pthread_barrier_t warp_bar[32];
static float xch[32][32]; /* [warp][lane] */

void __syncthreads() {
    pthread_barrier_wait(&block_bar);
}

static float shfl(float v, int src_lane) {
    const int w = threadIdx.x / 32, l = threadIdx.x % 32;
    xch[w][l] = v;
    pthread_barrier_wait(&warp_bar[w]);
    const float r = xch[w][src_lane & 31];
    pthread_barrier_wait(&warp_bar[w]); /* everyone read before the next write */
    return r;
}
void emu_warp_barrier() {
    pthread_barrier_wait(&warp_bar[threadIdx.x / 32]);
}
float __shfl_sync(unsigned, float v, int lane) {
    return shfl(v, lane);
}
float __shfl_xor_sync(unsigned, float v, int m) {
    return shfl(v, (threadIdx.x % 32) ^ m);
}

struct worker {
    unsigned tid;
    std::function<void()> *fn;
};

static void *work(void *p) {
    const worker *w = (const worker *)p;
    threadIdx = dim3(w->tid);
    for (unsigned by = 0; by < gridDim.y; by++)
        for (unsigned bx = 0; bx < gridDim.x; bx++) {
            blockIdx = dim3(bx, by);
            (*w->fn)();
            pthread_barrier_wait(&block_bar); /* the block is done before shared memory is reused */
        }
    return nullptr;
}

void emu_launch(dim3 grid, dim3 block, std::function<void()> fn) {
    gridDim = grid;
    blockDim = block;
    const unsigned n = block.x, n_warps = (n + 31) / 32;
    pthread_barrier_init(&block_bar, nullptr, n);
    for (unsigned w = 0; w < n_warps; w++)
        pthread_barrier_init(&warp_bar[w], nullptr, std::min(32u, n - 32 * w));
    std::vector<pthread_t> th(n);
    std::vector<worker> ws(n);
    for (unsigned t = 0; t < n; t++) {
        ws[t] = {t, &fn};
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 << 10);
        pthread_create(&th[t], &attr, work, &ws[t]);
        pthread_attr_destroy(&attr);
    }
    for (unsigned t = 0; t < n; t++)
        pthread_join(th[t], nullptr);
    pthread_barrier_destroy(&block_bar);
    for (unsigned w = 0; w < n_warps; w++)
        pthread_barrier_destroy(&warp_bar[w]);
}
