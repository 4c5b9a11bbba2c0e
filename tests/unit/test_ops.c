/*
 * test_ops.c - the thread pool and every CPU kernel against plain scalar
 * references written here (double accumulation), for every weight type, on
 * both the SIMD and the scalar path; plus bitwise equality across thread
 * counts and across batch compositions; the kernel levels against each other.
 */
#include "test.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <unistd.h>
#include "backend/cpu/cpu.h"
#include "forward/forward.h"
#include "model/synthetic.h"
#include "core/threadpool.h"
#include "core/types.h"

static uint64_t rng_state = 0x1234567;
static float frand(void) { /* uniform [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}
static void fill(float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++)
        x[i] = frand() * scale;
}

static struct lp_backend make_cpu(int threads, bool scalar) {
    struct lp_backend_limits lim = {.max_n_in = 1024, .head_dim = 32, .n_head = 8, .n_head_kv = 2};
    struct lp_backend be = {0};
    enum lopad_status st = lp_backend_cpu_new(threads, &lim, &be);
    if (st) {
        fprintf(stderr, "cannot create cpu backend: %s\n", lopad_errmsg());
        exit(1);
    }
    lp_backend_cpu_force_scalar(&be, scalar);
    return be;
}

static bool bits_equal(const float *a, const float *b, int64_t n) {
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

/* ------------------------------------------------------------ thread pool */

struct count_ctx {
    atomic_int hits[1000];
    int tid_of[1000];
    int n_threads;
    atomic_int bad_tid;
};

static void count_task(void *arg, int task, int tid) {
    struct count_ctx *c = arg;
    atomic_fetch_add(&c->hits[task], 1);
    c->tid_of[task] = tid;
    if (tid < 0 || tid >= c->n_threads) atomic_store(&c->bad_tid, 1);
}

static void test_pool(void) {
    static struct count_ctx c;
    for (int nt = 1; nt <= 4; nt++) {
        lp_pool *p = lp_pool_new(nt);
        CHECK(p != NULL);
        if (!p) return;
        CHECK(lp_pool_n_threads(p) == nt);
        const int sizes[] = {1, 2, 3, 7, 64, 1000};
        for (int rep = 0; rep < 50; rep++)
            for (unsigned s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                int n = sizes[s];
                for (int i = 0; i < n; i++)
                    atomic_store(&c.hits[i], 0);
                c.n_threads = nt;
                atomic_store(&c.bad_tid, 0);
                lp_pool_run(p, n, count_task, &c);
                int ok = 1;
                for (int i = 0; i < n; i++)
                    if (atomic_load(&c.hits[i]) != 1) ok = 0;
                CHECK_MSG(ok, "%d threads, %d tasks: some task not run exactly once", nt, n);
                CHECK(atomic_load(&c.bad_tid) == 0);
            }
        lp_pool_run(p, 0, count_task, &c); /* no tasks: a no-op */
        lp_pool_free(p);
    }
    lp_pool_free(NULL);
}

/* ----------------------------------------------------------------- matmul */

/* a weight matrix of `type` with random contents; *deq gets its f32 values */
static void *make_weight(int type, int n_out, int n_in, struct lp_weight *w, float **deq) {
    const struct lp_type_traits *tt = lp_type_traits(type);
    size_t rb = lp_row_size(type, n_in);
    unsigned char *data = malloc(rb * n_out);
    float *src = malloc(sizeof(float) * n_in);
    if (tt->from_float) {
        for (int r = 0; r < n_out; r++) {
            fill(src, n_in, 0.5f);
            tt->from_float(src, data + r * rb, n_in);
        }
    } else {
        /* K-quants: random bits with sane f16 super-block scales */
        for (size_t i = 0; i < rb * n_out; i++)
            data[i] = (unsigned char)(frand() * 127 + 128);
        for (int r = 0; r < n_out; r++)
            for (int b = 0; b < n_in / LP_QK_K; b++) {
                unsigned char *blk = data + r * rb + b * tt->type_size;
                if (type == LOPAD_TYPE_Q4_K) {
                    lp_block_q4_K *q = (lp_block_q4_K *)blk;
                    q->d = lp_f32_to_f16(0.002f + 0.001f * frand());
                    q->dmin = lp_f32_to_f16(0.004f + 0.001f * frand());
                } else {
                    lp_block_q6_K *q = (lp_block_q6_K *)blk;
                    q->d = lp_f32_to_f16(0.0005f + 0.0001f * frand());
                }
            }
    }
    free(src);
    *deq = malloc(sizeof(float) * (size_t)n_in * n_out);
    tt->to_float(data, *deq, (int64_t)n_in * n_out);
    *w = (struct lp_weight){"test.weight", type, n_in, n_out, rb, data};
    return data;
}

static void ref_matmul(const float *W, const float *bias, const float *x, int n_rows, int n_in,
                       int n_out, double *y) {
    for (int t = 0; t < n_rows; t++)
        for (int o = 0; o < n_out; o++) {
            double s = bias ? bias[o] : 0;
            for (int i = 0; i < n_in; i++)
                s += (double)W[(size_t)o * n_in + i] * x[(size_t)t * n_in + i];
            y[(size_t)t * n_out + o] = s;
        }
}

/* Bound on |y - exact| from the level-3 dot paths' activation rounding, per
 * output: bf16 rounds each activation to 8 significant bits (relative error
 * <= 2^-9), int8 quantises a 32-block with step d = amax/127 (error <= d/2). */
static double dot_path_bound(int type, const float *W, const float *x, int n_in, int o) {
    double b = 0;
    if (type == LOPAD_TYPE_BF16) {
        for (int i = 0; i < n_in; i++)
            b += fabs((double)W[(size_t)o * n_in + i] * x[i]) * (1.0 / 512);
    } else if (type != LOPAD_TYPE_F32 && type != LOPAD_TYPE_F16) { /* the int8 path */
        for (int b0 = 0; b0 < n_in; b0 += 32) {
            double amax = 0, sw = 0;
            for (int i = b0; i < b0 + 32; i++) {
                amax = fmax(amax, fabs(x[i]));
                sw += fabs(W[(size_t)o * n_in + i]);
            }
            b += sw * amax / 127 / 2;
        }
    }
    return b;
}

static void check_matmul_type(int type, int n_in, int n_out, int n_rows) {
    struct lp_weight w;
    float *W;
    void *data = make_weight(type, n_out, n_in, &w, &W);
    float *x = malloc(sizeof(float) * n_rows * n_in), *bias = malloc(sizeof(float) * n_out);
    fill(x, (int64_t)n_rows * n_in, 1.0f);
    fill(bias, n_out, 0.3f);
    double *ref = malloc(sizeof(double) * n_rows * n_out);
    const size_t ny = (size_t)n_rows * n_out;
    float *y[6];
    for (int k = 0; k < 6; k++)
        y[k] = malloc(sizeof(float) * ny);
    const char *tn = lp_type_name(type);
    for (int use_bias = 0; use_bias < 2; use_bias++) {
        const float *b = use_bias ? bias : NULL;
        ref_matmul(W, b, x, n_rows, n_in, n_out, ref);
        /* y0: best level 1 thread, y1: best 3 threads, y2: scalar 2 threads, y3: best level,
         * rows fed one by one, y4: avx2, y5: avx512 f32 */
        struct lp_backend be1 = make_cpu(1, false), be3 = make_cpu(3, false),
                          bs = make_cpu(2, true);
        const int level = lp_backend_cpu_level(&be1);
        be1.ops->matmul(be1.ctx, &w, b, x, n_rows, y[0]);
        be3.ops->matmul(be3.ctx, &w, b, x, n_rows, y[1]);
        bs.ops->matmul(bs.ctx, &w, b, x, n_rows, y[2]);
        for (int t = 0; t < n_rows; t++)
            be1.ops->matmul(be1.ctx, &w, b, x + (size_t)t * n_in, 1, y[3] + (size_t)t * n_out);
        double max_err = 0, max_err_s = 0, over = 0;
        const double scale = sqrt((double)n_in) * 0.5;
        for (int t = 0; t < n_rows; t++)
            for (int o = 0; o < n_out; o++) {
                size_t i = (size_t)t * n_out + o;
                double e = fabs(y[0][i] - ref[i]);
                max_err = fmax(max_err, e / scale);
                max_err_s = fmax(max_err_s, fabs(y[2][i] - ref[i]) / scale);
                if (level >= 3) {
                    double bound = dot_path_bound(type, W, x + (size_t)t * n_in, n_in, o);
                    over = fmax(over, e - bound - 1e-5 * scale);
                }
            }
        const bool dot_path =
            level >= 3 && n_in >= 256 && type != LOPAD_TYPE_F32 && type != LOPAD_TYPE_F16;
        if (dot_path)
            CHECK_MSG(over <= 0, "%s n_in %d: dot path exceeds its rounding bound by %g", tn, n_in,
                      over);
        else
            CHECK_MSG(max_err < 1e-5, "%s n_in %d bias %d: error vs reference %g", tn, n_in,
                      use_bias, max_err);
        CHECK_MSG(max_err_s < 1e-5, "%s n_in %d: scalar error vs reference %g", tn, n_in,
                  max_err_s);
        CHECK_MSG(bits_equal(y[0], y[1], (int64_t)ny), "%s: 1 vs 3 threads not bitwise equal", tn);
        CHECK_MSG(bits_equal(y[0], y[3], (int64_t)ny),
                  "%s: a row's result depends on the other rows fed", tn);
        /* levels 0-2 (scalar, AVX2, AVX-512 f32) do the same f32 operations: bitwise */
        lp_backend_cpu_set_level(&be3, 1);
        be3.ops->matmul(be3.ctx, &w, b, x, n_rows, y[4]);
        lp_backend_cpu_set_level(&be3, 2);
        be3.ops->matmul(be3.ctx, &w, b, x, n_rows, y[5]);
        CHECK_MSG(bits_equal(y[2], y[4], (int64_t)ny), "%s: scalar and avx2 kernels differ", tn);
        CHECK_MSG(bits_equal(y[2], y[5], (int64_t)ny), "%s: scalar and avx512 kernels differ", tn);
        if (!dot_path)
            CHECK_MSG(bits_equal(y[0], y[2], (int64_t)ny), "%s: best level differs from scalar",
                      tn);
        lp_backend_free(&be1);
        lp_backend_free(&be3);
        lp_backend_free(&bs);
    }
    for (int k = 0; k < 6; k++)
        free(y[k]);
    free(ref);
    free(x);
    free(bias);
    free(W);
    free(data);
}

static void test_matmul(void) {
    const int types[] = {LOPAD_TYPE_F32,  LOPAD_TYPE_F16,  LOPAD_TYPE_BF16, LOPAD_TYPE_Q8_0,
                         LOPAD_TYPE_Q4_0, LOPAD_TYPE_Q4_K, LOPAD_TYPE_Q6_K};
    for (unsigned i = 0; i < sizeof types / sizeof types[0]; i++) {
        const struct lp_type_traits *tt = lp_type_traits(types[i]);
        CHECK(tt != NULL);
        if (!tt) continue;
        check_matmul_type(types[i], 512, 37, 7);
        /* several tasks, partial micro-tiles, two activation groups and a partial one */
        check_matmul_type(types[i], 768, 203, 45);
        if (tt->blck_size == 32) check_matmul_type(types[i], 96, 37, 7);
        if (tt->blck_size == 1) check_matmul_type(types[i], 101, 37, 7); /* odd K tail */
    }
    /* more activation rows than one accumulator chunk */
    check_matmul_type(LOPAD_TYPE_BF16, 256, 20, 300);
    check_matmul_type(LOPAD_TYPE_Q8_0, 256, 20, 300);
    check_matmul_type(LOPAD_TYPE_F32, 64, 20, 300);
    /* the dot paths with an odd bf16 tail and a K-block remainder */
    check_matmul_type(LOPAD_TYPE_BF16, 301, 40, 9);
    check_matmul_type(LOPAD_TYPE_Q4_0, 288, 40, 9);
}

/* Many threads on narrow matrices: the matmul switches to narrower panels (so
 * every thread gets work) and must still give the one-thread result bitwise. */
static void test_matmul_panels(void) {
    const int types[] = {LOPAD_TYPE_F32, LOPAD_TYPE_BF16, LOPAD_TYPE_Q8_0, LOPAD_TYPE_Q4_K};
    const int n_in = 512, n_out = 520, n_rows = 32; /* 8.5M multiply-adds: parallel */
    float *x = malloc(sizeof(float) * n_rows * n_in);
    float *y1 = malloc(sizeof(float) * n_rows * n_out),
          *yn = malloc(sizeof(float) * n_rows * n_out);
    fill(x, (int64_t)n_rows * n_in, 1.0f);
    struct lp_backend be1 = make_cpu(1, false);
    for (unsigned k = 0; k < sizeof types / sizeof types[0]; k++) {
        struct lp_weight w;
        float *W;
        void *data = make_weight(types[k], n_out, n_in, &w, &W);
        be1.ops->matmul(be1.ctx, &w, NULL, x, n_rows, y1);
        const int threads[] = {2, 5, 16};
        for (unsigned i = 0; i < sizeof threads / sizeof threads[0]; i++) {
            struct lp_backend ben = make_cpu(threads[i], false);
            memset(yn, 0xff, sizeof(float) * n_rows * n_out);
            ben.ops->matmul(ben.ctx, &w, NULL, x, n_rows, yn);
            CHECK_MSG(bits_equal(y1, yn, (int64_t)n_rows * n_out),
                      "%s: %d threads (narrow panels) differ from 1 thread", lp_type_name(types[k]),
                      threads[i]);
            lp_backend_free(&ben);
        }
        free(W);
        free(data);
    }
    lp_backend_free(&be1);
    free(x);
    free(y1);
    free(yn);
}

/* Binding a model repacks its Q8_0 matrices (n_in a multiple of 256) once per
 * model, where the int8 path runs; matmuls and the fused head on the repacked
 * layout equal the staged ones bitwise, they really read the copy (the stored
 * bytes can be wiped afterwards), a second backend bound to the same model
 * shares it, and a tensor sharing another's data with a different shape (a
 * crafted file) is not served from the other's copy. */
static void test_matmul_repacked(void) {
    lopad_model *m = lp_calloc(1, sizeof *m, "test model");
    struct lp_layer *L = calloc(1, sizeof *L);
    m->hp.n_layer = 1;
    m->layers = L;
    float *W[4];
    void *data[4];
    data[0] = make_weight(LOPAD_TYPE_Q8_0, 300, 512, &m->output, &W[0]); /* repacked */
    data[1] = make_weight(LOPAD_TYPE_Q8_0, 64, 768, &L->w_down, &W[1]);  /* repacked */
    data[2] = make_weight(LOPAD_TYPE_Q8_0, 40, 288, &L->wq, &W[2]);      /* K tail: staged */
    data[3] = make_weight(LOPAD_TYPE_Q4_0, 40, 512, &L->wk, &W[3]);      /* other type */
    /* w_up: the first 64 rows of output's bytes read as 64 x 512 (not a tie) */
    L->w_up = m->output;
    L->w_up.n_out = 64;
    struct lp_backend plain = make_cpu(2, false), bound = make_cpu(2, false),
                      bound2 = make_cpu(1, false);
    /* off: this backend reads the stored weights, and no copy is made (or kept) */
    struct lp_backend off = make_cpu(1, false);
    CHECK(lp_backend_cpu_bind_model(&off, m, LOPAD_REPACK_OFF) == LOPAD_OK);
    CHECK(lp_backend_cpu_repacked_bytes(&off) == 0 && m->caches == NULL);
    CHECK(lp_backend_cpu_bind_model(&off, m, 7) == LOPAD_ERR_ARG);
    lp_backend_free(&off);
    CHECK(lp_backend_cpu_bind_model(&bound, m, LOPAD_REPACK_AUTO) == LOPAD_OK);
    CHECK(lp_backend_cpu_bind_model(&bound2, m, LOPAD_REPACK_ON) == LOPAD_OK);
    const bool expect = lp_backend_cpu_int8_dot(&bound);
    if (!expect) fprintf(stderr, "  (no int8 path: nothing repacked)\n");
    const size_t want = (size_t)((300 + 64) * 512 + 64 * 768) * (1 + 4.0 / 32);
    CHECK_MSG(lp_backend_cpu_repacked_bytes(&bound) == (expect ? want : 0),
              "repacked %zu bytes, expected %zu", lp_backend_cpu_repacked_bytes(&bound),
              expect ? want : 0);
    if (expect)
        CHECK(m->caches && !m->caches->next); /* one copy for both backends */
    else
        CHECK(m->caches == NULL);
    const struct lp_weight *ws[] = {&m->output, &L->w_down, &L->wq, &L->wk, &L->w_up};
    enum { NW = 5, NR = 3 };
    float *ref[NW][NR], *xs[NW][NR];
    for (int k = 0; k < NW; k++) {
        const struct lp_weight *w = ws[k];
        for (int i = 0; i < NR; i++) {
            const int rows = 1 + 22 * i;
            float *x = malloc(sizeof(float) * rows * w->n_in);
            float *y0 = malloc(sizeof(float) * rows * w->n_out);
            float *y1 = malloc(sizeof(float) * rows * w->n_out);
            float *y2 = malloc(sizeof(float) * rows * w->n_out);
            fill(x, (int64_t)rows * w->n_in, 1.0f);
            plain.ops->matmul(plain.ctx, w, NULL, x, rows, y0);
            bound.ops->matmul(bound.ctx, w, NULL, x, rows, y1);
            /* a copy of the view finds the same repacked data (keyed by data and shape) */
            struct lp_weight copy = *w;
            bound2.ops->matmul(bound2.ctx, &copy, NULL, x, rows, y2);
            const int64_t ny = (int64_t)rows * w->n_out;
            CHECK_MSG(bits_equal(y0, y1, ny) && bits_equal(y0, y2, ny),
                      "matrix %d, %d rows: repacked and staged results differ", k, rows);
            ref[k][i] = y0;
            xs[k][i] = x;
            free(y1);
            free(y2);
        }
    }
    /* the fused head on the repacked output matrix */
    {
        const int rows = 23;
        const size_t nsc = plain.ops->head_scores_scratch(m->output.n_out, rows);
        float *scr = malloc(sizeof(float) * nsc);
        struct lp_row_scores a[23], b[23];
        plain.ops->head_scores(plain.ctx, &m->output, xs[0][1], rows, scr, nsc, a);
        bound.ops->head_scores(bound.ctx, &m->output, xs[0][1], rows, scr, nsc, b);
        CHECK_MSG(memcmp(a, b, sizeof a) == 0, "head scores differ on the repacked head");
        free(scr);
    }
    /* wipe the stored bytes: the bound backends still give the results (they read
     * the copy); the plain one no longer does */
    if (expect) {
        memset(data[0], 0, lp_row_size(LOPAD_TYPE_Q8_0, 512) * 300);
        memset(data[1], 0, lp_row_size(LOPAD_TYPE_Q8_0, 768) * 64);
        const int idx[] = {0, 1, 4};
        for (int n = 0; n < 3; n++) {
            const struct lp_weight *w = ws[idx[n]];
            const int rows = 23;
            float *y = malloc(sizeof(float) * rows * w->n_out);
            bound.ops->matmul(bound.ctx, w, NULL, xs[idx[n]][1], rows, y);
            CHECK_MSG(bits_equal(ref[idx[n]][1], y, (int64_t)rows * w->n_out),
                      "matrix %d: the bound backend did not read its repacked copy", idx[n]);
            plain.ops->matmul(plain.ctx, w, NULL, xs[idx[n]][1], rows, y);
            CHECK(!bits_equal(ref[idx[n]][1], y, (int64_t)rows * w->n_out));
            free(y);
        }
    }
    /* allocation failures anywhere in the repack: a clear status, nothing leaked
     * (the ASan build checks), and the next bind works */
    for (long n = 0; n < 16 && expect; n++) {
        lopad_model *m2 = lp_calloc(1, sizeof *m2, "test model");
        m2->hp = m->hp;
        m2->layers = m->layers;
        m2->output = m->output;
        struct lp_backend b2 = make_cpu(2, false);
        lp_alloc_fail_after(n);
        const enum lopad_status st = lp_backend_cpu_bind_model(&b2, m2, LOPAD_REPACK_ON);
        lp_alloc_fail_after(-1);
        CHECK_MSG(st == LOPAD_OK || st == LOPAD_ERR_NOMEM, "bind with allocation %ld failing: %s",
                  n, lopad_status_name(st));
        if (st) CHECK(m2->caches == NULL && lp_backend_cpu_repacked_bytes(&b2) == 0);
        if (st) CHECK(lp_backend_cpu_bind_model(&b2, m2, LOPAD_REPACK_ON) == LOPAD_OK);
        CHECK(lp_backend_cpu_repacked_bytes(&b2) == want);
        lp_backend_free(&b2);
        m2->layers = NULL;
        lopad_model_free(m2);
    }
    for (int k = 0; k < NW; k++)
        for (int i = 0; i < NR; i++) {
            free(ref[k][i]);
            free(xs[k][i]);
        }
    lp_backend_free(&plain);
    lp_backend_free(&bound);
    lp_backend_free(&bound2);
    for (int k = 0; k < 4; k++) {
        free(W[k]);
        free(data[k]);
    }
    free(L);
    m->layers = NULL;
    lopad_model_free(m); /* releases the repacked copy */
}

/* Pages of [p, p+n) mapped in this process (/proc/self/pagemap's present bit;
 * mincore would report the file's page cache instead), or -1 when unreadable. */
static long pages_present(const void *p, size_t n) {
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    const int fd = open("/proc/self/pagemap", O_RDONLY);
    if (fd < 0) return -1;
    long present = 0;
    for (uintptr_t a = (uintptr_t)p & ~(pg - 1); a < (uintptr_t)p + n; a += pg) {
        uint64_t e = 0;
        if (pread(fd, &e, sizeof e, (off_t)(a / pg * sizeof e)) != (ssize_t)sizeof e) {
            present = -1;
            break;
        }
        present += (long)(e >> 63);
    }
    close(fd);
    return present;
}

/* Repacking a file-mapped model releases the source pages of every repacked
 * matrix (the copy replaces them in memory): after the bind they are no longer
 * mapped, matmuls and the fused head on the copy stay bitwise the same and do
 * not touch them, and reading the stored bytes (a context without the copy,
 * saving the model) faults in the file's unchanged contents. A matrix left as
 * stored keeps its pages. */
static void test_repack_releases_source(void) {
    struct lp_backend probe = make_cpu(1, false);
    const bool int8 = lp_backend_cpu_int8_dot(&probe);
    lp_backend_free(&probe);
    if (!int8) TEST_SKIP("no int8 path on this CPU: nothing is repacked");
    /* a file holding output (Q8_0 512 x 1024), w_down (Q8_0 64 x 768, repacked)
     * and wq (Q8_0 40 x 288: K tail, stays as stored), not page aligned */
    struct lp_weight ws[3];
    float *deq[3];
    void *data[3] = {make_weight(LOPAD_TYPE_Q8_0, 512, 1024, &ws[0], &deq[0]),
                     make_weight(LOPAD_TYPE_Q8_0, 64, 768, &ws[1], &deq[1]),
                     make_weight(LOPAD_TYPE_Q8_0, 40, 288, &ws[2], &deq[2])};
    char path[] = "/tmp/lopad_test_repack_XXXXXX";
    const int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    size_t off[3], at = 96; /* 32-byte aligned as in GGUF, not page aligned */
    for (int i = 0; i < 3; i++) {
        const size_t bytes = ws[i].row_bytes * (size_t)ws[i].n_out;
        off[i] = at;
        CHECK(pwrite(fd, data[i], bytes, (off_t)at) == (ssize_t)bytes);
        at += bytes + 800;
    }
    char *map = mmap(NULL, at, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    unlink(path);
    CHECK(map != MAP_FAILED);
    if (map == MAP_FAILED) return;
    lopad_model *m = lp_calloc(1, sizeof *m, "test model");
    struct lp_layer *L = calloc(1, sizeof *L);
    m->hp.n_layer = 1;
    m->layers = L;
    CHECK(lp_model_own(m, map, at, true));
    struct lp_weight *mw[3] = {&m->output, &L->w_down, &L->wq};
    volatile unsigned sum = 0;
    for (size_t i = 0; i < at; i += 512) /* every page resident */
        sum += (unsigned char)map[i];
    for (int i = 0; i < 3; i++) {
        *mw[i] = ws[i];
        mw[i]->data = map + off[i];
    }
    const size_t bytes0 = ws[0].row_bytes * 512, bytes1 = ws[1].row_bytes * 64;
    const long before = pages_present(m->output.data, bytes0);
    if (before < 0) {
        lopad_model_free(m);
        free(L);
        TEST_SKIP("/proc/self/pagemap is not readable");
    }
    CHECK(before > 100);
    /* references from a backend that reads the stored bytes */
    const int rows = 17;
    float *x = malloc(sizeof(float) * rows * 1024), *y[3], *yb = malloc(sizeof(float) * rows * 512);
    fill(x, rows * 1024, 1.0f);
    struct lp_backend plain = make_cpu(2, false), bound = make_cpu(2, false);
    for (int i = 0; i < 3; i++) {
        y[i] = malloc(sizeof(float) * rows * mw[i]->n_out);
        plain.ops->matmul(plain.ctx, mw[i], NULL, x, rows, y[i]);
    }
    const size_t nsc = plain.ops->head_scores_scratch(512, rows);
    float *scr = malloc(sizeof(float) * nsc);
    struct lp_row_scores sa[17], sb[17];
    plain.ops->head_scores(plain.ctx, &m->output, x, rows, scr, nsc, sa);

    CHECK(lp_backend_cpu_bind_model(&bound, m, LOPAD_REPACK_ON) == LOPAD_OK);
    CHECK(lp_backend_cpu_repacked_bytes(&bound) > 0);
    /* whole pages inside each repacked matrix are gone; the stored one keeps its own */
    const long pg = sysconf(_SC_PAGESIZE);
    CHECK_MSG(pages_present(m->output.data, bytes0) <= 2, "output: %ld of %ld pages still mapped",
              pages_present(m->output.data, bytes0), before);
    CHECK(pages_present(L->w_down.data, bytes1) <= 2);
    CHECK(pages_present((char *)L->wq.data + pg, ws[2].row_bytes * 40 - 2 * (size_t)pg) > 0);
    /* the repacked matmuls and head: the same bits, without touching the source */
    for (int i = 0; i < 3; i++) {
        bound.ops->matmul(bound.ctx, mw[i], NULL, x, rows, yb);
        CHECK_MSG(bits_equal(y[i], yb, (int64_t)rows * mw[i]->n_out),
                  "matrix %d: repacked result differs after the release", i);
    }
    bound.ops->head_scores(bound.ctx, &m->output, x, rows, scr, nsc, sb);
    CHECK(memcmp(sa, sb, sizeof sa) == 0);
    CHECK_MSG(pages_present(m->output.data, bytes0) <= 2,
              "the repacked matmul read the released source (%ld pages)",
              pages_present(m->output.data, bytes0));
    /* the stored bytes read back unchanged (as saving does), and a backend without
     * the copy still gives the references */
    for (int i = 0; i < 3; i++)
        CHECK(memcmp(mw[i]->data, data[i], mw[i]->row_bytes * (size_t)mw[i]->n_out) == 0);
    CHECK(pages_present(m->output.data, bytes0) >= before - 2);
    plain.ops->matmul(plain.ctx, &m->output, NULL, x, rows, yb);
    CHECK(bits_equal(y[0], yb, (int64_t)rows * 512));
    lp_backend_free(&plain);
    lp_backend_free(&bound);
    for (int i = 0; i < 3; i++) {
        free(y[i]);
        free(deq[i]);
        free(data[i]);
    }
    free(x);
    free(yb);
    free(scr);
    m->layers = NULL;
    lopad_model_free(m); /* unmaps the file, releases the copy */
    free(L);
}

/* The matmul's own weight conversion (SIMD or scalar) against to_float, exactly:
 * one-hot activations make each output exactly one weight. F16 covers every
 * finite bit pattern. */
static void test_matmul_conversion_exact(void) {
    const int n = 256;
    const int types[] = {LOPAD_TYPE_F16,  LOPAD_TYPE_BF16, LOPAD_TYPE_Q8_0,
                         LOPAD_TYPE_Q4_0, LOPAD_TYPE_Q4_K, LOPAD_TYPE_Q6_K};
    float *x = calloc((size_t)n * n, sizeof(float)), *y = malloc(sizeof(float) * n * n);
    for (int t = 0; t < n; t++)
        x[t * n + t] = 1.0f;
    for (unsigned k = 0; k < sizeof types / sizeof types[0]; k++) {
        struct lp_weight w;
        float *W;
        void *data = make_weight(types[k], n, n, &w, &W);
        if (types[k] == LOPAD_TYPE_F16) {
            lp_half *h = data;
            for (int i = 0; i < n * n; i++)
                h[i] = ((i >> 10) & 31) == 31 ? 0 : (lp_half)i;
            lp_type_traits(LOPAD_TYPE_F16)->to_float(h, W, (int64_t)n * n);
        }
        for (int scalar = 0; scalar < 2; scalar++) {
            struct lp_backend be = make_cpu(2, scalar);
            /* the f32 path: the level-3 dot paths round the activations on purpose */
            if (!scalar) lp_backend_cpu_set_level(&be, 2);
            be.ops->matmul(be.ctx, &w, NULL, x, n, y);
            int bad = 0;
            for (int t = 0; t < n; t++)
                for (int o = 0; o < n; o++)
                    bad += y[t * n + o] != W[o * n + t];
            CHECK_MSG(bad == 0, "%s: %d weights converted differently from to_float (scalar %d)",
                      lp_type_name(types[k]), bad, scalar);
            lp_backend_free(&be);
        }
        free(W);
        free(data);
    }
    free(x);
    free(y);
}

static void test_get_rows(void) {
    const int types[] = {LOPAD_TYPE_F32, LOPAD_TYPE_BF16, LOPAD_TYPE_Q8_0, LOPAD_TYPE_Q6_K};
    for (unsigned k = 0; k < sizeof types / sizeof types[0]; k++) {
        struct lp_weight w;
        float *W;
        void *data = make_weight(types[k], 20, 256, &w, &W);
        int32_t ids[5] = {3, 0, 19, 3, 7};
        float out[5 * 256];
        struct lp_backend be = make_cpu(2, false);
        be.ops->get_rows(be.ctx, &w, ids, 5, out);
        for (int i = 0; i < 5; i++)
            CHECK_MSG(bits_equal(out + i * 256, W + (size_t)ids[i] * 256, 256), "%s row %d",
                      lp_type_name(types[k]), ids[i]);
        lp_backend_free(&be);
        free(W);
        free(data);
    }
}

/* ------------------------------------------------- types.c fast paths */

/* q8_0_from_float's scalar definition, to hold the SIMD fast path to it */
static void q8_0_ref(const float *x, lp_block_q8_0 *b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = lp_f32_to_f16(d);
    for (int j = 0; j < 32; j++)
        b->qs[j] = (int8_t)fmaxf(-127.0f, fminf(127.0f, roundf(x[j] * id)));
}

static void test_types_fast_paths(void) {
    /* every f16 bit pattern (NaN payloads included) through F16 to_float */
    static lp_half h[65536];
    static float f[65536];
    for (int i = 0; i < 65536; i++)
        h[i] = (lp_half)i;
    lp_type_traits(LOPAD_TYPE_F16)->to_float(h, f, 65536);
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        float r = lp_f16_to_f32(h[i]);
        bad += memcmp(&r, &f[i], 4) != 0;
    }
    CHECK_MSG(bad == 0, "F16 to_float: %d patterns differ from lp_f16_to_f32", bad);
    /* Q8_0 from_float: random blocks, exact .5 ties, zeros, huge, tiny, inf, NaN */
    enum { NB = 4000 };
    static float x[NB * 32];
    static lp_block_q8_0 got[NB], want[NB];
    for (int i = 0; i < NB * 32; i++)
        x[i] = frand() * (i % 7 == 0 ? 1e-30f : i % 11 == 0 ? 3e30f : 4.0f);
    for (int j = 0; j < 32; j++) {
        x[j] = (float)(j - 16) * 0.5f * (127.0f / 8.0f) / 127.0f * 2.0f; /* many ties */
        x[32 + j] = 0.0f;
        x[64 + j] = j == 5 ? INFINITY : 1.0f;
        x[96 + j] = j == 9 ? NAN : -1.0f;
        x[128 + j] = (j & 1) ? -0.0f : 1e-40f;
    }
    lp_type_traits(LOPAD_TYPE_Q8_0)->from_float(x, got, (int64_t)NB * 32);
    for (int i = 0; i < NB; i++)
        q8_0_ref(x + i * 32, &want[i]);
    bad = 0;
    for (int i = 0; i < NB; i++)
        if (memcmp(&got[i], &want[i], sizeof got[i]) != 0 && bad++ < 3) {
            fprintf(stderr, "block %d: d %04x/%04x\n", i, got[i].d, want[i].d);
            for (int j = 0; j < 32; j++)
                if (got[i].qs[j] != want[i].qs[j])
                    fprintf(stderr, "  x %a: %d vs %d\n", x[i * 32 + j], got[i].qs[j],
                            want[i].qs[j]);
        }
    CHECK_MSG(bad == 0, "Q8_0 from_float: %d blocks differ from the scalar definition", bad);
}

/* ------------------------------------------------------------ head scores */

/* scores of one logit row, in double */
static void ref_scores(const float *z, int n, struct lp_row_scores *o) {
    int a = 0;
    for (int v = 1; v < n; v++)
        if (z[v] > z[a]) a = v;
    int b = -1;
    for (int v = 0; v < n; v++)
        if (v != a && (b < 0 || z[v] > z[b])) b = v;
    double m = z[a], S = 0, Z = 0;
    for (int v = 0; v < n; v++) {
        S += exp(z[v] - m);
        Z += exp(z[v] - m) * z[v];
    }
    double lse = m + log(S);
    o->argmax = a;
    o->logsumexp = (float)lse;
    o->pmax = (float)exp(z[a] - lse);
    o->margin = (float)(exp(z[a] - lse) - (b >= 0 ? exp(z[b] - lse) : 0));
    o->negent = (float)(Z / S - lse);
}

static void check_scores(const struct lp_row_scores *got, const struct lp_row_scores *want,
                         const float *z, int n, const char *what) {
    int bad_arg = 0;
    double e = 0;
    /* an argmax may differ only where the top two logits are exactly equal */
    bad_arg += got->argmax != want->argmax && z[got->argmax] != z[want->argmax];
    e = fmax(e, fabs(got->pmax - want->pmax));
    e = fmax(e, fabs(got->margin - want->margin));
    e = fmax(e, fabs(got->negent - want->negent) / (1 + fabs(want->negent)));
    e = fmax(e, fabs(got->logsumexp - want->logsumexp) / (1 + fabs(want->logsumexp)));
    CHECK_MSG(!bad_arg, "%s: argmax %d, want %d", what, got->argmax, want->argmax);
    CHECK_MSG(e < 2e-5, "%s: scores differ by %g", what, e);
    (void)n;
}

static void test_head_scores(void) {
    const int types[] = {LOPAD_TYPE_F32, LOPAD_TYPE_BF16, LOPAD_TYPE_Q8_0};
    const int n_vocab = 3333, n_in = 256, n_rows = 37; /* 3 vocabulary chunks */
    for (unsigned k = 0; k < sizeof types / sizeof types[0]; k++) {
        struct lp_weight w;
        float *W;
        void *data = make_weight(types[k], n_vocab, n_in, &w, &W);
        /* equal rows 5 and 3000 with the largest logit for row 0: the lower id wins */
        memcpy((char *)data + 3000 * w.row_bytes, (char *)data + 5 * w.row_bytes, w.row_bytes);
        float *x = malloc(sizeof(float) * n_rows * n_in);
        fill(x, (int64_t)n_rows * n_in, 3.0f);
        float *z = malloc(sizeof(float) * n_rows * n_vocab);
        struct lp_row_scores got[37], got3[37], want;
        struct lp_backend be0 = make_cpu(1, false);
        size_t nsc = be0.ops->head_scores_scratch(n_vocab, n_rows);
        lp_backend_free(&be0);
        float *scr = malloc(sizeof(float) * nsc);
        for (int level = 0; level <= 3; level++) {
            struct lp_backend be = make_cpu(1, false), be3 = make_cpu(3, false);
            lp_backend_cpu_set_level(&be, level);
            lp_backend_cpu_set_level(&be3, level);
            be.ops->matmul(be.ctx, &w, NULL, x, n_rows, z);
            be.ops->head_scores(be.ctx, &w, x, n_rows, scr, nsc, got);
            be3.ops->head_scores(be3.ctx, &w, x, n_rows, scr, nsc, got3);
            CHECK_MSG(!memcmp(got, got3, sizeof got), "%s level %d: 1 vs 3 threads differ",
                      lp_type_name(types[k]), level);
            for (int t = 0; t < n_rows; t++) {
                char what[64];
                snprintf(what, sizeof what, "%s level %d row %d", lp_type_name(types[k]), level, t);
                ref_scores(z + (size_t)t * n_vocab, n_vocab, &want);
                check_scores(&got[t], &want, z + (size_t)t * n_vocab, n_vocab, what);
                if (got[t].argmax == 3000) CHECK_MSG(0, "%s: tie not to the lower id", what);
            }
            lp_backend_free(&be);
            lp_backend_free(&be3);
        }
        free(scr);
        free(z);
        free(x);
        free(W);
        free(data);
    }
}

/* lp_forward_scores against lopad_forward's logits on a synthetic model */
static void test_forward_scores(void) {
    lopad_model *m = NULL;
    CHECK(lp_model_synthetic("tiny", LOPAD_TYPE_F32, 7, &m) == LOPAD_OK);
    if (!m) return;
    const int n = 10, V = lopad_model_hparams(m)->n_vocab;
    lopad_ctx *c = NULL;
    struct lopad_ctx_params cp = {.n_ctx = 16, .n_batch_max = 4, .n_threads = 2};
    CHECK(lopad_ctx_new(m, &cp, &c) == LOPAD_OK);
    int32_t tok[10], pos[10], rows[6] = {0, 3, 9, 4, 5, 1};
    for (int i = 0; i < n; i++) {
        tok[i] = (i * 37 + 11) % V;
        pos[i] = i;
    }
    float *logits = malloc(sizeof(float) * 6 * V);
    struct lp_row_scores sc[6], want;
    struct lopad_batch b = {.n_tokens = 4,
                            .tokens = tok,
                            .pos = pos,
                            .n_seq = 1,
                            .n_out = 4,
                            .out_rows = rows + 2,
                            .logits = logits};
    /* the fed rows must fit n_batch_max: feed 4, ask for 4 rows (two are repeated) */
    rows[2] = 2, rows[3] = 0, rows[4] = 3, rows[5] = 2;
    CHECK(lopad_forward(c, &b) == LOPAD_OK);
    b.logits = NULL;
    CHECK(lp_forward_scores(c, &b, sc) == LOPAD_OK);
    for (int i = 0; i < 4; i++) {
        ref_scores(logits + (size_t)i * V, V, &want);
        check_scores(&sc[i], &want, logits + (size_t)i * V, V, "forward scores");
    }
    CHECK(lp_forward_scores(c, &b, NULL) == LOPAD_ERR_ARG);
    lopad_ctx_free(c);
    lopad_model_free(m);
    free(logits);
}

/* ----------------------------------------------------------- small kernels */

static void test_rmsnorm(void) {
    const int n = 77, rows = 5;
    float x[5 * 77], w[77], y[5 * 77];
    fill(x, rows * n, 3.0f);
    fill(w, n, 1.0f);
    for (int scalar = 0; scalar < 2; scalar++) {
        struct lp_backend be = make_cpu(2, scalar);
        be.ops->rmsnorm(be.ctx, x, w, 1e-5f, rows, n, y);
        for (int r = 0; r < rows; r++) {
            double ss = 0;
            for (int i = 0; i < n; i++)
                ss += (double)x[r * n + i] * x[r * n + i];
            double inv = 1.0 / sqrt(ss / n + 1e-5);
            for (int i = 0; i < n; i++)
                CHECK_NEAR(y[r * n + i], w[i] * x[r * n + i] * inv, 1e-6, 1e-5);
        }
        /* in place */
        float z[5 * 77];
        memcpy(z, x, sizeof z);
        be.ops->rmsnorm(be.ctx, z, w, 1e-5f, rows, n, z);
        CHECK(bits_equal(z, y, rows * n));
        lp_backend_free(&be);
    }
}

static void ref_rope(float *x, int n_head, int d, int pos, double theta, enum lopad_rope mode) {
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < d / 2; i++) {
            double ang = pos * pow(theta, -2.0 * i / d);
            int a = mode == LOPAD_ROPE_NEOX ? i : 2 * i,
                b = mode == LOPAD_ROPE_NEOX ? i + d / 2 : 2 * i + 1;
            double x0 = x[h * d + a], x1 = x[h * d + b];
            x[h * d + a] = (float)(x0 * cos(ang) - x1 * sin(ang));
            x[h * d + b] = (float)(x1 * cos(ang) + x0 * sin(ang));
        }
}

static void test_rope(void) {
    const int n_head = 3, d = 32, rows = 4;
    const int32_t pos[4] = {0, 1, 17, 700};
    float x[4 * 3 * 32], y[4 * 3 * 32];
    fill(x, rows * n_head * d, 1.0f);
    for (int mode = 0; mode < 2; mode++) {
        memcpy(y, x, sizeof x);
        struct lp_backend be = make_cpu(2, false);
        be.ops->rope(be.ctx, y, rows, n_head, d, pos, 10000.0f, (enum lopad_rope)mode);
        CHECK(bits_equal(y, x, n_head * d)); /* position 0 is the identity */
        for (int r = 0; r < rows; r++) {
            float ref[3 * 32];
            memcpy(ref, x + r * n_head * d, sizeof ref);
            ref_rope(ref, n_head, d, pos[r], 10000.0, (enum lopad_rope)mode);
            for (int i = 0; i < n_head * d; i++)
                CHECK_NEAR(y[r * n_head * d + i], ref[i], 2e-4, 1e-4); /* f32 angles at pos 700 */
        }
        /* the two variants pair different elements */
        if (mode == 1) {
            float z[4 * 3 * 32];
            memcpy(z, x, sizeof x);
            be.ops->rope(be.ctx, z, rows, n_head, d, pos, 10000.0f, LOPAD_ROPE_NEOX);
            CHECK(!bits_equal(z + n_head * d, y + n_head * d, n_head * d));
        }
        lp_backend_free(&be);
    }
}

static void test_elementwise(void) {
    const int n = 40000; /* more than one chunk */
    float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n),
          *g0 = malloc(sizeof(float) * n);
    fill(g, n, 8.0f);
    fill(u, n, 2.0f);
    memcpy(g0, g, sizeof(float) * n);
    struct lp_backend be = make_cpu(3, false);
    be.ops->silu_mul(be.ctx, g, u, n);
    for (int i = 0; i < n; i += 97)
        CHECK_NEAR(g[i], g0[i] / (1 + exp(-(double)g0[i])) * u[i], 1e-6, 1e-5);
    memcpy(g, g0, sizeof(float) * n);
    be.ops->add(be.ctx, g, u, n);
    int ok = 1;
    for (int i = 0; i < n; i++)
        ok &= g[i] == g0[i] + u[i];
    CHECK(ok);
    lp_backend_free(&be);
    free(g);
    free(u);
    free(g0);
}

/* -------------------------------------------------------------- attention */

/* Reference: per query, list its visible keys, softmax in double. */
static void ref_attention(const struct lp_attn_desc *a, double *out) {
    const int hd = a->head_dim, kvd = a->n_head_kv * hd, qd = a->n_head * hd;
    const int group = a->n_head / a->n_head_kv;
    for (int s = 0; s < a->n_seq; s++)
        for (int i = a->seq_start[s]; i < a->seq_start[s + 1]; i++)
            for (int h = 0; h < a->n_head; h++) {
                const float *q = a->q + i * qd + h * hd;
                int kvh = h / group;
                double sc[512], mx = -INFINITY;
                const float *vr[512];
                int nk = 0;
                for (int r = 0; r < a->n_cache; r++) {
                    if (r >= a->skip_begin && r < a->skip_end) continue;
                    double d = 0;
                    for (int e = 0; e < hd; e++)
                        d += (double)q[e] * a->k_cache[r * kvd + kvh * hd + e];
                    sc[nk] = d * a->scale;
                    vr[nk++] = a->v_cache + r * kvd + kvh * hd;
                }
                for (int j = a->seq_start[s]; j < a->seq_start[s + 1]; j++) {
                    if (a->block && a->block[j] > a->block[i]) continue;
                    double d = 0;
                    for (int e = 0; e < hd; e++)
                        d += (double)q[e] * a->k[j * kvd + kvh * hd + e];
                    sc[nk] = d * a->scale;
                    vr[nk++] = a->v + j * kvd + kvh * hd;
                }
                for (int k = 0; k < nk; k++)
                    mx = fmax(mx, sc[k]);
                double l = 0;
                for (int k = 0; k < nk; k++)
                    l += exp(sc[k] - mx);
                for (int e = 0; e < hd; e++) {
                    double acc = 0;
                    for (int k = 0; k < nk; k++)
                        acc += exp(sc[k] - mx) * vr[k][e];
                    out[i * qd + h * hd + e] = acc / l;
                }
            }
}

static void test_attention(void) {
    const int n_head = 8, n_kv = 2, hd = 32, n_tok = 19, n_cache = 70;
    const int qd = n_head * hd, kvd = n_kv * hd;
    float *q = malloc(sizeof(float) * n_tok * qd), *k = malloc(sizeof(float) * n_tok * kvd);
    float *v = malloc(sizeof(float) * n_tok * kvd), *kc = malloc(sizeof(float) * n_cache * kvd);
    float *vc = malloc(sizeof(float) * n_cache * kvd);
    fill(q, n_tok * qd, 1.5f);
    fill(k, n_tok * kvd, 1.5f);
    fill(v, n_tok * kvd, 1.0f);
    fill(kc, n_cache * kvd, 1.5f);
    fill(vc, n_cache * kvd, 1.0f);
    /* three sequences (lengths 9, 1, 9), a block-causal mask, a hidden cache range */
    int32_t seq_start[4] = {0, 9, 10, 19};
    int32_t block[19] = {0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 5, 3, 3, 4, 4, 4, 4, 4, 4};
    double *ref = malloc(sizeof(double) * n_tok * qd);
    float *out[4];
    for (int i = 0; i < 4; i++)
        out[i] = malloc(sizeof(float) * n_tok * qd);
    for (int variant = 0; variant < 4; variant++) {
        struct lp_attn_desc a = {.n_tokens = n_tok,
                                 .n_head = n_head,
                                 .n_head_kv = n_kv,
                                 .head_dim = hd,
                                 .q = q,
                                 .k = k,
                                 .v = v,
                                 .k_cache = kc,
                                 .v_cache = vc,
                                 .n_cache = variant == 3 ? 0 : n_cache,
                                 .skip_begin = variant == 1 ? 20 : 0,
                                 .skip_end = variant == 1 ? 45 : 0,
                                 .n_seq = 3,
                                 .seq_start = seq_start,
                                 .block = variant >= 2 ? block : NULL,
                                 .scale = 1.0f / sqrtf((float)hd)};
        ref_attention(&a, ref);
        struct lp_backend b1 = make_cpu(1, false), b3 = make_cpu(3, false), bs = make_cpu(2, true);
        a.out = out[0];
        b1.ops->attention(b1.ctx, &a);
        a.out = out[1];
        b3.ops->attention(b3.ctx, &a);
        a.out = out[2];
        bs.ops->attention(bs.ctx, &a);
        double err = 0, err_s = 0;
        for (int i = 0; i < n_tok * qd; i++) {
            err = fmax(err, fabs(out[0][i] - ref[i]));
            err_s = fmax(err_s, fabs(out[2][i] - ref[i]));
        }
        CHECK_MSG(err < 2e-6, "variant %d: simd error %g", variant, err);
        CHECK_MSG(err_s < 2e-6, "variant %d: scalar error %g", variant, err_s);
        CHECK_MSG(bits_equal(out[0], out[1], (int64_t)n_tok * qd), "variant %d: threads differ",
                  variant);
        /* a sequence alone gives bitwise the same rows as inside the batch */
        int32_t one[2] = {0, 9};
        struct lp_attn_desc a2 = a;
        a2.n_tokens = 9;
        a2.n_seq = 1;
        a2.seq_start = one;
        a2.q = q + 10 * qd;
        a2.k = k + 10 * kvd;
        a2.v = v + 10 * kvd;
        a2.block = a.block ? block + 10 : NULL;
        a2.out = out[3];
        b3.ops->attention(b3.ctx, &a2);
        CHECK_MSG(bits_equal(out[3], out[0] + 10 * qd, 9 * qd),
                  "variant %d: batch changes a sequence", variant);
        lp_backend_free(&b1);
        lp_backend_free(&b3);
        lp_backend_free(&bs);
    }
    for (int i = 0; i < 4; i++)
        free(out[i]);
    free(ref);
    free(q);
    free(k);
    free(v);
    free(kc);
    free(vc);
}

int main(void) {
    struct lp_backend be = make_cpu(1, false);
    fprintf(stderr, "kernel level: %d (0 scalar, 1 avx2, 2 avx512 f32, 3 avx512 + bf16/int8 dot)\n",
            lp_backend_cpu_level(&be));
    lp_backend_free(&be);
    TEST_RUN(test_pool);
    TEST_RUN(test_matmul);
    TEST_RUN(test_matmul_panels);
    TEST_RUN(test_matmul_repacked);
    TEST_RUN(test_repack_releases_source);
    TEST_RUN(test_matmul_conversion_exact);
    TEST_RUN(test_get_rows);
    TEST_RUN(test_types_fast_paths);
    TEST_RUN(test_head_scores);
    TEST_RUN(test_forward_scores);
    TEST_RUN(test_rmsnorm);
    TEST_RUN(test_rope);
    TEST_RUN(test_elementwise);
    TEST_RUN(test_attention);
    return test_report();
}
