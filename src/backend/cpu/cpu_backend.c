/*
 * cpu_backend.c - the CPU backend's context, memory operations and the small
 * row-wise kernels (RMSNorm, RoPE, SiLU-gating, residual add). Matmul and
 * attention live in their own files.
 */
#include "cpu_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

bool lp_cpu_simd_available(void) {
#if defined(__x86_64__) || defined(__i386__)
    /* f16c through cpuid: clang 14 does not know the "f16c" feature string */
    unsigned a, b, c, d;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
#else
    return false;
#endif
}

static bool cpu_has_avx512(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return lp_cpu_simd_available() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq");
#else
    return false;
#endif
}

static bool cpu_has_bf16(void) {
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && __GNUC__ >= 11
    return cpu_has_avx512() && __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
}

static bool cpu_has_vnni(void) {
#if defined(__x86_64__) || defined(__i386__)
    return cpu_has_avx512() && __builtin_cpu_supports("avx512vnni");
#else
    return false;
#endif
}

/* Best level this CPU runs. */
static int level_max(void) {
    return cpu_has_avx512() ? LP_LEVEL_AVX512_DOT : lp_cpu_simd_available() ? LP_LEVEL_AVX2 : 0;
}

enum lopad_status lp_cpu_kernels_level(const char *name, int *level) {
    static const struct {
        const char *name;
        int level;
    } names[] = {{"ref", LP_LEVEL_REF},
                 {"scalar", LP_LEVEL_REF},
                 {"avx2", LP_LEVEL_AVX2},
                 {"avx512f32", LP_LEVEL_AVX512},
                 {"avx512", LP_LEVEL_AVX512_DOT}};
    *level = LP_LEVEL_AVX512_DOT;
    if (!name || !*name) return LOPAD_OK;
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcmp(name, names[i].name)) {
            *level = names[i].level;
            return LOPAD_OK;
        }
    return lp_error(LOPAD_ERR_ARG,
                    "kernels: unknown CPU kernel level \"%s\" (ref, avx2, avx512f32, avx512)",
                    name);
}

/* ---------------------------------------------------------------- memory */

static void *cpu_alloc(void *ctx, size_t bytes, const char *what) {
    return lp_calloc(1, bytes, what);
}
static void cpu_release(void *ctx, void *buf) {
    lp_free(buf);
}
static void cpu_copy(void *ctx, void *dst, const void *src, size_t bytes) {
    if (bytes) memmove(dst, src, bytes);
}

/* --------------------------------------------------------------- rmsnorm */

struct norm_job {
    const float *x, *w;
    float *y;
    float eps;
    int n;
};

static void norm_task(void *arg, int row, int tid) {
    struct norm_job *j = arg;
    const float *x = j->x + (int64_t)row * j->n;
    float *y = j->y + (int64_t)row * j->n;
    /* f32 sum of squares, fixed 8-lane order (as the reference does it in fp32) */
    float ss = lp_cpu_dot_scalar(x, x, j->n);
    const float r = 1.0f / sqrtf(ss / (float)j->n + j->eps);
    for (int i = 0; i < j->n; i++)
        y[i] = j->w[i] * (x[i] * r);
}

static void cpu_rmsnorm(void *ctx, const float *x, const float *w, float eps, int n_rows, int n,
                        float *y) {
    struct lp_cpu *cpu = ctx;
    struct norm_job j = {.x = x, .w = w, .y = y, .eps = eps, .n = n};
    lp_cpu_run(cpu, n_rows, norm_task, &j, (double)n_rows * n >= LP_PAR_MIN_EW);
}

/* ------------------------------------------------------------------ rope */

struct rope_job {
    float *x;
    const int32_t *pos;
    int n_head, head_dim;
    float theta;
    enum lopad_rope mode;
};

static void rope_task(void *arg, int row, int tid) {
    struct rope_job *j = arg;
    const int d = j->head_dim, half = d / 2;
    float *x = j->x + (int64_t)row * j->n_head * d;
    const float p = (float)j->pos[row];
    for (int i = 0; i < half; i++) {
        /* same f32 steps as the reference: inv_freq = 1 / theta^(2i/d), angle = pos * inv_freq */
        const float inv = 1.0f / powf(j->theta, (float)(2 * i) / (float)d);
        const float ang = p * inv;
        const float c = cosf(ang), s = sinf(ang);
        for (int h = 0; h < j->n_head; h++) {
            float *xh = x + (int64_t)h * d;
            int a = j->mode == LOPAD_ROPE_NEOX ? i : 2 * i;
            int b = j->mode == LOPAD_ROPE_NEOX ? i + half : 2 * i + 1;
            const float x0 = xh[a], x1 = xh[b];
            const float t0 = x0 * c, t1 = x1 * s, t2 = x1 * c, t3 = x0 * s;
            xh[a] = t0 - t1;
            xh[b] = t2 + t3;
        }
    }
}

static void cpu_rope(void *ctx, float *x, int n_rows, int n_head, int head_dim, const int32_t *pos,
                     float theta, enum lopad_rope mode) {
    struct lp_cpu *cpu = ctx;
    LP_ASSERT(head_dim % 2 == 0);
    struct rope_job j = {
        .x = x, .pos = pos, .n_head = n_head, .head_dim = head_dim, .theta = theta, .mode = mode};
    lp_cpu_run(cpu, n_rows, rope_task, &j, (double)n_rows * n_head * head_dim * 4 >= LP_PAR_MIN_EW);
}

/* ------------------------------------------------------- elementwise ops */

#define EW_CHUNK 16384

struct ew_job {
    float *y;
    const float *x;
    int64_t n;
};

static void silu_mul_task(void *arg, int task, int tid) {
    struct ew_job *j = arg;
    int64_t i0 = (int64_t)task * EW_CHUNK, i1 = LP_MIN(j->n, i0 + EW_CHUNK);
    for (int64_t i = i0; i < i1; i++) {
        const float g = j->y[i];
        j->y[i] = (g / (1.0f + expf(-g))) * j->x[i];
    }
}

static void add_task(void *arg, int task, int tid) {
    struct ew_job *j = arg;
    int64_t i0 = (int64_t)task * EW_CHUNK, i1 = LP_MIN(j->n, i0 + EW_CHUNK);
    for (int64_t i = i0; i < i1; i++)
        j->y[i] += j->x[i];
}

static void run_ew(struct lp_cpu *cpu, lp_task_fn fn, float *y, const float *x, int64_t n) {
    struct ew_job j = {.y = y, .x = x, .n = n};
    int64_t n_tasks = (n + EW_CHUNK - 1) / EW_CHUNK;
    LP_ASSERT(n_tasks <= INT32_MAX);
    lp_cpu_run(cpu, (int)n_tasks, fn, &j, (double)n >= LP_PAR_MIN_EW);
}

static void cpu_silu_mul(void *ctx, float *gate, const float *up, int64_t n) {
    run_ew(ctx, silu_mul_task, gate, up, n);
}
static void cpu_add(void *ctx, float *y, const float *x, int64_t n) {
    run_ew(ctx, add_task, y, x, n);
}

/* ------------------------------------------------------------- lifecycle */

static void cpu_free(void *ctx) {
    struct lp_cpu *cpu = ctx;
    if (!cpu) return;
    lp_pool_free(cpu->pool);
    lp_free(cpu->mm_scratch);
    lp_free(cpu->xpk);
    lp_free(cpu->att_scratch);
    lp_free(cpu);
}

static const struct lp_backend_ops cpu_ops = {
    .name = "cpu",
    .host_memory = true,
    .free = cpu_free,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .copy = cpu_copy,
    .upload = cpu_copy,
    .download = cpu_copy,
    .get_rows = lp_cpu_get_rows,
    .matmul = lp_cpu_matmul,
    .head_scores = lp_cpu_head_scores,
    .head_scores_scratch = lp_cpu_scores_scratch_floats,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .attention = lp_cpu_attention,
    .silu_mul = cpu_silu_mul,
    .add = cpu_add,
};

enum lopad_status lp_backend_cpu_new(int n_threads, const struct lp_backend_limits *lim,
                                     struct lp_backend *out) {
    if (lim->max_n_in <= 0 || lim->head_dim <= 0 || lim->n_head <= 0 || lim->n_head_kv <= 0 ||
        lim->n_head % lim->n_head_kv != 0)
        return lp_error(LOPAD_ERR_ARG,
                        "cpu backend: bad limits (n_in %lld, head_dim %d, heads %d/%d)",
                        (long long)lim->max_n_in, lim->head_dim, lim->n_head, lim->n_head_kv);
    struct lp_cpu *cpu = lp_calloc(1, sizeof *cpu, "cpu backend");
    if (!cpu) return LOPAD_ERR_NOMEM;
    cpu->lim = *lim;
    cpu->has_bf16 = cpu_has_bf16();
    cpu->has_vnni = cpu_has_vnni();
    cpu->level = level_max(); /* callers cap it: lp_backend_cpu_set_level */
    cpu->simd = cpu->level >= LP_LEVEL_AVX2;
    cpu->wide = cpu->level >= LP_LEVEL_AVX512;
    cpu->pool = lp_pool_new(n_threads);
    if (!cpu->pool) {
        cpu_free(cpu);
        return LOPAD_ERR_NOMEM;
    }
    cpu->n_threads = lp_pool_n_threads(cpu->pool);
    uint64_t mm, att;
    cpu->mm_stride = lp_cpu_mm_scratch_floats();
    if (!lp_mul_ok((uint64_t)cpu->mm_stride, (uint64_t)cpu->n_threads * sizeof(float), &mm)) {
        cpu_free(cpu);
        return lp_error(LOPAD_ERR_ARG, "cpu backend: scratch size overflows");
    }
    cpu->att_stride = lp_cpu_att_scratch_floats(lim);
    att = (uint64_t)cpu->att_stride * cpu->n_threads * sizeof(float);
    cpu->mm_scratch = lp_calloc(1, (size_t)mm, "cpu matmul scratch");
    cpu->att_scratch = cpu->mm_scratch ? lp_malloc((size_t)att, "cpu attention scratch") : NULL;
    if (!cpu->att_scratch) {
        cpu_free(cpu);
        return LOPAD_ERR_NOMEM;
    }
    if (cpu->has_bf16 || cpu->has_vnni) { /* shared packed activations of the dot paths */
        cpu->xpk =
            lp_malloc(sizeof(float) * lp_cpu_xpack_floats(lim->max_n_in), "cpu packed activations");
        if (!cpu->xpk) {
            cpu_free(cpu);
            return LOPAD_ERR_NOMEM;
        }
    }
    out->ops = &cpu_ops;
    out->ctx = cpu;
    return LOPAD_OK;
}

int lp_backend_cpu_n_threads(const struct lp_backend *b) {
    return ((const struct lp_cpu *)b->ctx)->n_threads;
}

struct lp_pool *lp_backend_cpu_pool(const struct lp_backend *b) {
    return b->ops == &cpu_ops ? ((const struct lp_cpu *)b->ctx)->pool : NULL;
}

int lp_backend_cpu_set_level(struct lp_backend *b, int level) {
    struct lp_cpu *cpu = b->ctx;
    cpu->level = LP_MAX(0, LP_MIN(level, level_max()));
    cpu->simd = cpu->level >= LP_LEVEL_AVX2;
    cpu->wide = cpu->level >= LP_LEVEL_AVX512;
    return cpu->level;
}

int lp_backend_cpu_level(const struct lp_backend *b) {
    return ((const struct lp_cpu *)b->ctx)->level;
}

bool lp_backend_cpu_force_scalar(struct lp_backend *b, bool scalar) {
    return lp_backend_cpu_set_level(b, scalar ? 0 : level_max()) > 0;
}
