/*
 * test_nccl.c - the device door (src/dist/nccl.h) in one process, in whatever build
 * this is (the ranks, on the fake NCCL: tests/cli/test_nccl_emu.sh):
 *   - a build without NCCL says so: lp_dist_dev_built() is false and every call is
 *     LOPAD_ERR_UNSUPPORTED naming the call and -DLOPAD_NCCL=ON;
 *   - a build with NCCL refuses a missing communicator by name, and on a GPU runs
 *     every collective on a communicator of one rank (SKIP without a device);
 *   - lp_backend_cuda_stream (the stream the door's calls go on) is NULL for a CPU
 *     backend, in every build.
 */
#include <stdint.h>
#include <string.h>
#include "backend/cpu/cpu.h"
#include "backend/cuda/cuda.h"
#include "dist/nccl.h"
#include "test.h"
#ifdef LOPAD_CUDA
#include <cuda_runtime_api.h>
#endif

static void test_not_built(void) {
    if (lp_dist_dev_built()) TEST_SKIP("this build has NCCL");
    struct lp_dist_dev *d = (struct lp_dist_dev *)&d;
    CHECK(lp_dist_dev_new(NULL, &d) == LOPAD_ERR_UNSUPPORTED);
    CHECK(d == NULL);
    CHECK_MSG(strstr(lopad_errmsg(), "NCCL set-up") && strstr(lopad_errmsg(), "-DLOPAD_NCCL=ON"),
              "%s", lopad_errmsg());
#ifndef LOPAD_CUDA
    CHECK_MSG(strstr(lopad_errmsg(), "without CUDA"), "%s", lopad_errmsg());
#endif
    float x[2] = {1, 2};
    CHECK(lp_dist_dev_allreduce_sum(NULL, x, 2, NULL, "the sum") == LOPAD_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(lopad_errmsg(), "the sum: this lopad has no NCCL"), "%s", lopad_errmsg());
    CHECK(lp_dist_dev_allgather(NULL, x, x, 4, NULL, "the gather") == LOPAD_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(lopad_errmsg(), "the gather"), "%s", lopad_errmsg());
    CHECK(lp_dist_dev_bcast(NULL, x, 4, 0, NULL, "the bcast") == LOPAD_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(lopad_errmsg(), "the bcast"), "%s", lopad_errmsg());
    CHECK(lp_dist_dev_rank(NULL) == 0 && lp_dist_dev_size(NULL) == 1);
    lp_dist_dev_free(NULL);
}

static void test_no_communicator(void) {
    if (!lp_dist_dev_built()) TEST_SKIP("this build has no NCCL");
    float x[2] = {1, 2};
    CHECK(lp_dist_dev_allreduce_sum(NULL, x, 2, NULL, "the sum") == LOPAD_ERR_ARG);
    CHECK_MSG(strstr(lopad_errmsg(), "the sum: no NCCL communicator"), "%s", lopad_errmsg());
    lp_dist_dev_free(NULL);
}

static void test_stream_of_cpu_backend(void) {
    struct lp_backend_limits lim = {.max_n_in = 64, .head_dim = 16, .n_head = 2, .n_head_kv = 2};
    struct lp_backend cpu = {0};
    CHECK_MSG(lp_backend_cpu_new(1, &lim, &cpu) == LOPAD_OK, "%s", lopad_errmsg());
    CHECK(lp_backend_cuda_stream(&cpu) == NULL);
    CHECK(lp_backend_cuda_stream(NULL) == NULL);
    lp_backend_free(&cpu);
}

#ifdef LOPAD_CUDA
/* one rank on the GPU: the sum is the buffer, the gather and broadcast copy it */
static void test_one_rank_gpu(void) {
    if (!lp_dist_dev_built()) TEST_SKIP("this build has no NCCL");
    if (lp_cuda_device_count() < 1) TEST_SKIP("no CUDA device");
    struct lp_dist_dev *d = NULL;
    CHECK_MSG(lp_dist_dev_new(NULL, &d) == LOPAD_OK && d, "%s", lopad_errmsg());
    if (!d) return;
    CHECK(lp_dist_dev_rank(d) == 0 && lp_dist_dev_size(d) == 1);
    const float x[4] = {1.5f, -2.25f, 1e-8f, 3e7f};
    float y[4] = {0}, *dx = NULL, *dy = NULL;
    cudaStream_t s = NULL;
    CHECK(cudaStreamCreate(&s) == cudaSuccess);
    CHECK(cudaMalloc((void **)&dx, sizeof x) == cudaSuccess);
    CHECK(cudaMalloc((void **)&dy, sizeof x) == cudaSuccess);
    CHECK(cudaMemcpy(dx, x, sizeof x, cudaMemcpyHostToDevice) == cudaSuccess);
    CHECK_MSG(lp_dist_dev_allreduce_sum(d, dx, 4, s, "sum") == LOPAD_OK, "%s", lopad_errmsg());
    CHECK_MSG(lp_dist_dev_allgather(d, dx, dy, sizeof x, s, "gather") == LOPAD_OK, "%s",
              lopad_errmsg());
    CHECK_MSG(lp_dist_dev_bcast(d, dy, sizeof x, 0, NULL, "bcast") == LOPAD_OK, "%s",
              lopad_errmsg());
    CHECK(cudaStreamSynchronize(s) == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess);
    CHECK(cudaMemcpy(y, dy, sizeof y, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(!memcmp(x, y, sizeof x));
    CHECK(lp_dist_dev_bcast(d, dy, sizeof x, 1, s, "the bad root") == LOPAD_ERR_ARG);
    CHECK_MSG(strstr(lopad_errmsg(), "the bad root"), "%s", lopad_errmsg());
    CHECK(lp_dist_dev_allreduce_sum(d, NULL, 4, s, "the null sum") == LOPAD_ERR_ARG);
    CHECK_MSG(strstr(lopad_errmsg(), "the null sum: ncclAllReduce failed"), "%s", lopad_errmsg());
    cudaFree(dx);
    cudaFree(dy);
    cudaStreamDestroy(s);
    lp_dist_dev_free(d);
}
#endif

int main(void) {
    TEST_RUN(test_not_built);
    TEST_RUN(test_no_communicator);
    TEST_RUN(test_stream_of_cpu_backend);
#ifdef LOPAD_CUDA
    TEST_RUN(test_one_rank_gpu);
#endif
    return test_report();
}
