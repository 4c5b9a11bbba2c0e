/*
 * safetensors.c - map a .safetensors file and validate its header into tensor
 * views (see safetensors.h). Nothing from the file is trusted: every number is
 * range-checked with overflow-checked arithmetic before it becomes a pointer.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* qsort_r */
#endif
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "json.h"

/* the largest dimension / offset a JSON number carries exactly */
#define ST_INT_MAX ((int64_t)1 << 53)

struct st_dtype {
    const char *name;
    int type;    /* enum lopad_type, -1 = known to safetensors but not to lopad */
    size_t size; /* bytes per element */
};

static const struct st_dtype st_dtypes[] = {
    {"BF16", LOPAD_TYPE_BF16, 2},
    {"F16", LOPAD_TYPE_F16, 2},
    {"F32", LOPAD_TYPE_F32, 4},
};

static const struct st_dtype *find_dtype(const char *name) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (!strcmp(st_dtypes[i].name, name)) return &st_dtypes[i];
    return NULL;
}

void lp_st_close(struct lp_st_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->map_size);
    for (int i = 0; i < f->n; i++)
        lp_free((char *)f->t[i].name);
    lp_free(f->t);
    lp_free(f->by_name);
    for (int i = 0; i < f->n_meta; i++) {
        lp_free(f->meta[i].key);
        lp_free(f->meta[i].value);
    }
    lp_free(f->meta);
    lp_free(f->path);
    lp_free(f);
}

void lp_st_take_mapping(struct lp_st_file *f, void **ptr, size_t *size) {
    *ptr = f->map;
    *size = f->map_size;
    f->map = NULL;
}

const struct lp_tensor *lp_st_find(const struct lp_st_file *f, const char *name) {
    int lo = 0, hi = f->by_name ? f->n : 0;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        const struct lp_tensor *t = &f->t[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (!c) return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *lp_st_meta(const struct lp_st_file *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta[i].key, key)) return f->meta[i].value;
    return NULL;
}

static enum lopad_status read_metadata(struct lp_st_file *f, const cJSON *md) {
    if (!cJSON_IsObject(md))
        return lp_error(LOPAD_ERR_FORMAT, "%s: '__metadata__' must be an object", f->path);
    int n = cJSON_GetArraySize(md);
    if (n == 0) return LOPAD_OK;
    f->meta = lp_calloc((size_t)n, sizeof *f->meta, "safetensors metadata");
    if (!f->meta) return LOPAD_ERR_NOMEM;
    const cJSON *kv;
    cJSON_ArrayForEach(kv, md) {
        if (!cJSON_IsString(kv))
            return lp_error(LOPAD_ERR_FORMAT, "%s: '__metadata__' value of '%s' must be a string",
                            f->path, kv->string);
        struct lp_st_meta_kv *e = &f->meta[f->n_meta];
        if (!(e->key = lp_strdup(kv->string, "safetensors metadata"))) return LOPAD_ERR_NOMEM;
        if (!(e->value = lp_strdup(kv->valuestring, "safetensors metadata"))) {
            lp_free(e->key);
            return LOPAD_ERR_NOMEM;
        }
        f->n_meta++;
    }
    return LOPAD_OK;
}

/* Fill t from one header entry; begin/end are the checked data offsets. */
static enum lopad_status read_tensor(struct lp_st_file *f, const cJSON *e, struct lp_tensor *t,
                                     uint64_t *begin, uint64_t *end) {
    const char *name = e->string;
    char src[512];
    snprintf(src, sizeof src, "%s: tensor '%s'", f->path, name);
    if (!cJSON_IsObject(e))
        return lp_error(LOPAD_ERR_FORMAT, "%s: header entry must be an object", src);
    enum lopad_status st;
    const char *dtype;
    const cJSON *shape, *offs;
    if ((st = lp_json_get_string(e, "dtype", src, &dtype))) return st;
    if ((st = lp_json_get_item(e, "shape", cJSON_Array, src, &shape))) return st;
    if ((st = lp_json_get_item(e, "data_offsets", cJSON_Array, src, &offs))) return st;

    const struct st_dtype *dt = find_dtype(dtype);
    if (!dt)
        return lp_error(LOPAD_ERR_UNSUPPORTED,
                        "%s has dtype %s; lopad reads BF16, F16 and F32 safetensors", src, dtype);

    int rank = cJSON_GetArraySize(shape);
    if (rank > LP_MAX_DIMS)
        return lp_error(LOPAD_ERR_UNSUPPORTED, "%s has %d dimensions; at most %d are supported",
                        src, rank, LP_MAX_DIMS);
    t->type = dt->type;
    t->n_dims = rank;
    for (int i = 0; i < LP_MAX_DIMS; i++)
        t->ne[i] = 1;
    uint64_t count = 1;
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape) {
        int64_t v;
        if ((st = lp_json_as_i64(d, 0, ST_INT_MAX, src, "shape", &v))) return st;
        t->ne[rank - 1 - i] = v; /* ggml order: fastest dimension first */
        if (!lp_mul_ok(count, (uint64_t)v, &count))
            return lp_error(LOPAD_ERR_FORMAT, "%s: element count overflows", src);
        i++;
    }
    uint64_t nbytes;
    if (!lp_mul_ok(count, dt->size, &nbytes))
        return lp_error(LOPAD_ERR_FORMAT, "%s: byte size overflows", src);

    if (cJSON_GetArraySize(offs) != 2)
        return lp_error(LOPAD_ERR_FORMAT, "%s: 'data_offsets' must hold [begin, end]", src);
    int64_t b, en;
    if ((st = lp_json_as_i64(cJSON_GetArrayItem(offs, 0), 0, ST_INT_MAX, src, "data_offsets[0]",
                             &b)))
        return st;
    if ((st = lp_json_as_i64(cJSON_GetArrayItem(offs, 1), 0, ST_INT_MAX, src, "data_offsets[1]",
                             &en)))
        return st;
    if (b > en)
        return lp_error(LOPAD_ERR_FORMAT, "%s: data_offsets [%lld, %lld] end before they begin",
                        src, (long long)b, (long long)en);
    if ((uint64_t)en > f->data_size)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: data_offsets [%lld, %lld] run past the %llu-byte data buffer", src,
                        (long long)b, (long long)en, (unsigned long long)f->data_size);
    if ((uint64_t)(en - b) != nbytes)
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: data_offsets span %lld bytes but %s shape needs %llu", src,
                        (long long)(en - b), dtype, (unsigned long long)nbytes);
    /* the mapping is page-aligned, so this is the alignment of the data itself */
    if (((uintptr_t)f->data + (uint64_t)b) % dt->size)
        return lp_error(
            LOPAD_ERR_UNSUPPORTED,
            "%s: data at file offset %llu is not aligned to its %zu-byte elements", src,
            (unsigned long long)((const uint8_t *)f->data - (const uint8_t *)f->map + b), dt->size);
    t->data = f->data + b;
    t->nbytes = (size_t)nbytes;
    *begin = (uint64_t)b;
    *end = (uint64_t)en;
    return LOPAD_OK;
}

struct span {
    uint64_t begin, end;
    int idx;
};

static int cmp_span(const void *a, const void *b) {
    const struct span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int cmp_by_name(const void *a, const void *b, void *arg) {
    const struct lp_tensor *t = arg;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

/* duplicate names (cJSON keeps both) and overlapping byte ranges are errors;
 * both checks sort, so a header of n tensors costs O(n log n) */
static enum lopad_status check_layout(struct lp_st_file *f, struct span *sp) {
    if (f->n == 0) return LOPAD_OK;
    f->by_name = lp_malloc(sizeof *f->by_name * (size_t)f->n, "safetensors name index");
    if (!f->by_name) return LOPAD_ERR_NOMEM;
    for (int i = 0; i < f->n; i++)
        f->by_name[i] = i;
    qsort_r(f->by_name, (size_t)f->n, sizeof *f->by_name, cmp_by_name, f->t);
    for (int i = 1; i < f->n; i++)
        if (!strcmp(f->t[f->by_name[i - 1]].name, f->t[f->by_name[i]].name))
            return lp_error(LOPAD_ERR_FORMAT, "%s: tensor '%s' appears twice", f->path,
                            f->t[f->by_name[i]].name);
    qsort(sp, (size_t)f->n, sizeof *sp, cmp_span);
    uint64_t prev_end = 0;
    int prev = -1;
    for (int i = 0; i < f->n; i++) {
        if (sp[i].begin == sp[i].end) continue; /* empty tensors occupy nothing */
        if (prev >= 0 && sp[i].begin < prev_end)
            return lp_error(LOPAD_ERR_FORMAT,
                            "%s: tensors '%s' and '%s' overlap in the data buffer", f->path,
                            f->t[sp[prev].idx].name, f->t[sp[i].idx].name);
        prev_end = sp[i].end;
        prev = i;
    }
    return LOPAD_OK;
}

static enum lopad_status parse_header(struct lp_st_file *f, const char *hdr, size_t hlen) {
    cJSON *root;
    char src[512];
    snprintf(src, sizeof src, "%s (safetensors header)", f->path);
    enum lopad_status st = lp_json_parse(hdr, hlen, src, &root);
    if (st) return st;
    struct span *sp = NULL;
    if (!cJSON_IsObject(root)) {
        st = lp_error(LOPAD_ERR_FORMAT, "%s: the header must be a JSON object", src);
        goto done;
    }
    int n = cJSON_GetArraySize(root);
    if (n > 0) {
        f->t = lp_calloc((size_t)n, sizeof *f->t, "safetensors tensors");
        sp = lp_calloc((size_t)n, sizeof *sp, "safetensors spans");
        if (!f->t || !sp) {
            st = LOPAD_ERR_NOMEM;
            goto done;
        }
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (!strcmp(e->string, "__metadata__")) {
            if (f->meta) {
                st = lp_error(LOPAD_ERR_FORMAT, "%s: '__metadata__' appears twice", src);
                goto done;
            }
            if ((st = read_metadata(f, e))) goto done;
            continue;
        }
        struct lp_tensor *t = &f->t[f->n];
        if ((st = read_tensor(f, e, t, &sp[f->n].begin, &sp[f->n].end))) goto done;
        if (!(t->name = lp_strdup(e->string, "tensor name"))) {
            st = LOPAD_ERR_NOMEM;
            goto done;
        }
        sp[f->n].idx = f->n;
        f->n++;
    }
    st = check_layout(f, sp);
done:
    lp_free(sp);
    cJSON_Delete(root);
    return st;
}

enum lopad_status lp_st_open(const char *path, struct lp_st_file **out) {
    *out = NULL;
    struct lp_st_file *f = lp_calloc(1, sizeof *f, "safetensors file");
    if (!f) return LOPAD_ERR_NOMEM;
    enum lopad_status st = LOPAD_ERR_NOMEM;
    if (!(f->path = lp_strdup(path, "safetensors path"))) goto fail;

    int fd;
    uint64_t fsize;
    if ((st = lp_open_regular(path, &fd, &fsize))) goto fail;
    if (fsize < 8) {
        close(fd);
        st = lp_error(LOPAD_ERR_FORMAT,
                      "%s: file is %llu bytes, too short for the 8-byte safetensors header size",
                      path, (unsigned long long)fsize);
        goto fail;
    }
    if (fsize > SIZE_MAX) {
        close(fd);
        st = lp_error(LOPAD_ERR_IO, "%s: file too large to map", path);
        goto fail;
    }
    void *map = mmap(NULL, (size_t)fsize, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) {
        st = lp_error(LOPAD_ERR_IO, "%s: cannot map: %s", path, strerror(map_errno));
        goto fail;
    }
    f->map = map;
    f->map_size = (size_t)fsize;

    const uint8_t *p = map;
    uint64_t hsize = 0;
    for (int i = 7; i >= 0; i--)
        hsize = hsize << 8 | p[i]; /* little-endian u64 */
    if (hsize > fsize - 8) {
        st = lp_error(LOPAD_ERR_FORMAT,
                      "%s: header size %llu is larger than the %llu bytes after it (truncated or "
                      "not a safetensors file)",
                      path, (unsigned long long)hsize, (unsigned long long)(fsize - 8));
        goto fail;
    }
    if (hsize > LP_ST_MAX_HEADER) {
        st = lp_error(LOPAD_ERR_FORMAT, "%s: header size %llu exceeds the %llu-byte limit", path,
                      (unsigned long long)hsize, (unsigned long long)LP_ST_MAX_HEADER);
        goto fail;
    }
    if (hsize < 2) {
        st = lp_error(LOPAD_ERR_FORMAT, "%s: header of %llu bytes cannot hold a JSON object", path,
                      (unsigned long long)hsize);
        goto fail;
    }
    f->data = p + 8 + hsize;
    f->data_size = fsize - 8 - hsize;
    if ((st = parse_header(f, (const char *)p + 8, (size_t)hsize))) goto fail;
    *out = f;
    return LOPAD_OK;
fail:
    lp_st_close(f);
    return st;
}
