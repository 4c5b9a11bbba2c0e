/*
 * fake_cuda.c - a stand-in for the CUDA runtime and cuBLAS on host memory, so the
 * whole CUDA backend (cuda_backend.c, the forward's device paths, test_cuda) can
 * run without a GPU: "device" memory is malloc'd (filled with 0xA5 garbage so
 * code that forgets to clear a buffer shows), copies are memmove, streams and
 * events are no-ops (everything runs in order), and cublasGemmEx computes the
 * documented column-major C = alpha op(A) op(B) + beta C in double, for the
 * configuration the backend uses (bf16 x bf16 -> f32). The kernels are the
 * emulated ones (emu.h). Built by tests/cli/test_cuda_build.sh when
 * LOPAD_CUDA_EMU_FULL=1, with -DLP_CUDA_FAKE_RUNTIME; compiles to nothing in
 * the library's source glob.
 */
#ifdef LP_CUDA_FAKE_RUNTIME
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
static int n_alloc;
cudaError_t cudaMalloc(void **p, size_t n) {
    *p = malloc(n ? n : 1);
    if (!*p) return cudaErrorMemoryAllocation;
    n_alloc++;
    memset(*p, 0xA5, n);
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    if (p) {
        free(p);
        n_alloc--;
    }
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t n) {
    return cudaMalloc(p, n);
}
cudaError_t cudaFreeHost(void *p) {
    return cudaFree(p);
}
cudaError_t cudaMemset(void *p, int v, size_t n) {
    memset(p, v, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, enum cudaMemcpyKind k) {
    memmove(d, s, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, enum cudaMemcpyKind k,
                            cudaStream_t st) {
    memmove(d, s, n);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *s) {
    *s = (cudaStream_t)malloc(8);
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    free(s);
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
    return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d) {
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
    return d == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}
const char *cudaGetErrorString(cudaError_t e) {
    return e ? "fake error" : "no error";
}
cudaError_t cudaGetLastError(void) {
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned f) {
    *e = (cudaEvent_t)malloc(8);
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *e) {
    *e = (cudaEvent_t)malloc(8);
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    free(e);
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = 1;
    return cudaSuccess;
}
int fake_cuda_live_allocs(void) {
    return n_alloc;
}

cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
    *h = (cublasHandle_t)malloc(8);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t h, void *w, size_t n) {
    return CUBLAS_STATUS_SUCCESS;
}
static float bf(const uint16_t *p) {
    uint32_t u = (uint32_t)*p << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* C (m x n, col-major, ldc) = alpha op(A) op(B) + beta C, per the cuBLAS definition */
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType at,
                            int lda, const void *B, cudaDataType bt, int ldb, const void *beta,
                            void *C, cudaDataType ct, int ldc, cublasComputeType_t cp,
                            cublasGemmAlgo_t al) {
    if (at != CUDA_R_16BF || bt != CUDA_R_16BF || ct != CUDA_R_32F || cp != CUBLAS_COMPUTE_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (lda < (ta == CUBLAS_OP_N ? m : k) || ldb < (tb == CUBLAS_OP_N ? k : n) || ldc < m)
        return CUBLAS_STATUS_INVALID_VALUE;
    const uint16_t *a = A, *b = B;
    float *c = C;
    float al_ = *(const float *)alpha, be = *(const float *)beta;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int p = 0; p < k; p++) {
                float x =
                    ta == CUBLAS_OP_N ? bf(a + i + (size_t)p * lda) : bf(a + p + (size_t)i * lda);
                float y =
                    tb == CUBLAS_OP_N ? bf(b + p + (size_t)j * ldb) : bf(b + j + (size_t)p * ldb);
                s += (double)x * y;
            }
            float *o = c + i + (size_t)j * ldc;
            *o = al_ * (float)s + (be != 0 ? be * *o : 0);
        }
    return CUBLAS_STATUS_SUCCESS;
}
#else
typedef int lp_cuda_fake_runtime_disabled;
#endif
