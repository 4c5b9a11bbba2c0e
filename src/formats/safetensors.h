/*
 * safetensors.h - a validating reader for .safetensors files.
 *
 * Layout: u64 little-endian header size N, N bytes of JSON
 *   {"name": {"dtype": "BF16", "shape": [out, in], "data_offsets": [begin, end]},
 *    ..., "__metadata__": {"key": "string", ...}}
 * then the data buffer; offsets are relative to its start.
 *
 * The file is memory-mapped read-only and never copied. Every tensor is
 * checked (offsets inside the buffer, size = prod(shape) * dtype size without
 * overflow, no overlap, rank <= 4, supported dtype BF16/F16/F32) before a view
 * is produced. Views use ggml dimension order: ne[0] is the LAST safetensors
 * dimension, so a PyTorch [out, in] matrix has ne[0] = in, ne[1] = out.
 */
#ifndef LP_SAFETENSORS_H
#define LP_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "../core/common.h"
#include "../core/tensor.h"

/* Upper bound on the JSON header (the largest real checkpoints use a few MB). */
#define LP_ST_MAX_HEADER ((uint64_t)100 << 20)

struct lp_st_meta_kv {
    char *key;
    char *value;
};

struct lp_st_file {
    char *path;
    void *map; /* whole-file mapping (NULL once handed over) */
    size_t map_size;
    const uint8_t *data; /* start of the data buffer inside the mapping */
    uint64_t data_size;
    struct lp_tensor *t; /* [n] in header order; names owned by this struct */
    int n;
    int *by_name;               /* [n] indices into t sorted by name: lp_st_find is O(log n) */
    struct lp_st_meta_kv *meta; /* __metadata__ string pairs */
    int n_meta;
};

/* Map and validate `path`. LOPAD_ERR_IO: cannot open/map; LOPAD_ERR_FORMAT: bad
 * header or offsets; LOPAD_ERR_UNSUPPORTED: a dtype other than BF16/F16/F32 or a
 * misaligned tensor (the message names the tensor and dtype). */
enum lopad_status lp_st_open(const char *path, struct lp_st_file **out);

/* Tensor by name, or NULL (binary search). */
const struct lp_tensor *lp_st_find(const struct lp_st_file *f, const char *name);
/* __metadata__ value by key, or NULL. */
const char *lp_st_meta(const struct lp_st_file *f, const char *key);

/* Give the mapping away (e.g. to lp_model_own(m, ptr, size, true)): tensor
 * views stay valid while the new owner keeps it mapped; lp_st_close then frees
 * only the directory. */
void lp_st_take_mapping(struct lp_st_file *f, void **ptr, size_t *size);

/* Unmap (unless taken) and free. NULL is a no-op. */
void lp_st_close(struct lp_st_file *f);

#endif
