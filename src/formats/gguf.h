/*
 * gguf.h - GGUF (v2/v3, little-endian) reader and writer.
 *
 * Reader: lp_gguf_open() memory-maps the file read-only (never copies tensor
 * data) and validates every count, length and offset against the file size.
 * Keys, string values and tensor names are copied out as NUL-terminated strings
 * (they live as long as the struct lp_gguf); numeric array elements stay in the
 * mapping and are read through the lp_gguf_arr_* accessors (they may be
 * unaligned). Tensor data pointers point into the mapping.
 *
 * Ownership of the mapping: by default lp_gguf_close() unmaps it. A model that
 * wants to keep tensor views after closing the reader calls
 * lp_gguf_release_mapping() and hands (ptr, size) to lp_model_own(.., true);
 * lp_gguf_close() then frees only the metadata (so tensor *names* die with the
 * reader: copy them if you keep them).
 *
 * Writer: lp_gguf_writer_create() opens "<path>.tmp.<pid>"; KVs and tensor
 * descriptions are collected in memory, lp_gguf_writer_finish() writes the whole
 * file (tensor data from caller buffers or produced row by row through a
 * callback, so a converter never holds a converted model) and renames it onto
 * `path`. On any failure (and on lp_gguf_writer_abort) the temporary file is
 * unlinked, so nothing half-written remains.
 */
#ifndef LP_GGUF_H
#define LP_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../core/common.h"
#include "../core/tensor.h"

#define LP_GGUF_MAGIC 0x46554747u /* "GGUF" as a little-endian uint32 */
#define LP_GGUF_VERSION 3
#define LP_GGUF_DEFAULT_ALIGNMENT 32
#define LP_GGUF_MAX_DEPTH 8 /* nesting limit of arrays of arrays */

/* Metadata value types (GGUF ids). */
enum lp_gguf_type {
    LP_GGUF_U8 = 0,
    LP_GGUF_I8 = 1,
    LP_GGUF_U16 = 2,
    LP_GGUF_I16 = 3,
    LP_GGUF_U32 = 4,
    LP_GGUF_I32 = 5,
    LP_GGUF_F32 = 6,
    LP_GGUF_BOOL = 7,
    LP_GGUF_STRING = 8,
    LP_GGUF_ARRAY = 9,
    LP_GGUF_U64 = 10,
    LP_GGUF_I64 = 11,
    LP_GGUF_F64 = 12,
    LP_GGUF_NTYPES
};

const char *lp_gguf_type_name(enum lp_gguf_type t); /* "u32", "string", ... ; "?" */
/* Bytes of one element of a fixed-size type (0 for STRING / ARRAY / unknown). */
size_t lp_gguf_type_size(enum lp_gguf_type t);

/* A metadata value. Filled by the reader; a writer caller may build one (e.g.
 * nested arrays) and pass it to lp_gguf_writer_add_value(). */
struct lp_gguf_value {
    enum lp_gguf_type type;
    union {
        uint64_t u64; /* U8, U16, U32, U64 and BOOL (0 / 1) */
        int64_t i64;  /* I8, I16, I32, I64 */
        double f64;   /* F32, F64 */
        struct {
            const char *s; /* NUL-terminated (may also contain NULs: use len) */
            uint64_t len;
        } str;
        struct {
            enum lp_gguf_type type; /* element type */
            uint64_t n;             /* element count */
            /* fixed-size elements: n packed little-endian elements, possibly
             * unaligned (reader: inside the mapping; writer: a C array) */
            const void *data;
            /* STRING and ARRAY elements: n values */
            const struct lp_gguf_value *sub;
        } arr;
    };
};

/* ------------------------------------------------------------------ reader */

struct lp_gguf;

/* Map and parse `path`. Errors (LOPAD_ERR_IO / FORMAT / UNSUPPORTED / NOMEM)
 * name the file and the key or tensor at fault. */
enum lopad_status lp_gguf_open(const char *path, struct lp_gguf **out);
/* Parse an in-memory image (not copied, must outlive g; not unmapped by close).
 * `name` is used in error messages. For tests and fuzzing. */
enum lopad_status lp_gguf_open_memory(const void *data, size_t size, const char *name,
                                      struct lp_gguf **out);
void lp_gguf_close(struct lp_gguf *g); /* NULL ok */

const char *lp_gguf_path(const struct lp_gguf *g);
uint32_t lp_gguf_version(const struct lp_gguf *g);
uint32_t lp_gguf_alignment(const struct lp_gguf *g);
size_t lp_gguf_file_size(const struct lp_gguf *g);
uint64_t lp_gguf_data_offset(const struct lp_gguf *g); /* file offset of the tensor data */

/* Give the mapping to the caller, who must munmap(ptr, size) it (e.g. through
 * lp_model_own(m, ptr, size, true)). Tensor data pointers stay valid as long as
 * the caller keeps it; g no longer unmaps. For lp_gguf_open_memory images it
 * returns NULL / 0. */
void lp_gguf_release_mapping(struct lp_gguf *g, void **ptr, size_t *size);

/* ---- keys: index 0..n-1 in file order ---- */
int64_t lp_gguf_n_kv(const struct lp_gguf *g);
const char *lp_gguf_key(const struct lp_gguf *g, int64_t i);
const struct lp_gguf_value *lp_gguf_value(const struct lp_gguf *g, int64_t i);
int64_t lp_gguf_find(const struct lp_gguf *g, const char *key); /* -1 when absent */
const struct lp_gguf_value *lp_gguf_get(const struct lp_gguf *g, const char *key); /* or NULL */

/* Typed getters by key. They fail with LOPAD_ERR_FORMAT (message naming the key
 * and the file) when the key is absent, has a different kind of type, or its
 * value does not fit: integers convert between widths and signedness when
 * lossless; f32 accepts F32 and F64; bool accepts BOOL only; str accepts STRING.
 * Use lp_gguf_get() first for optional keys. */
enum lopad_status lp_gguf_get_u32(const struct lp_gguf *g, const char *key, uint32_t *out);
enum lopad_status lp_gguf_get_i32(const struct lp_gguf *g, const char *key, int32_t *out);
enum lopad_status lp_gguf_get_u64(const struct lp_gguf *g, const char *key, uint64_t *out);
enum lopad_status lp_gguf_get_i64(const struct lp_gguf *g, const char *key, int64_t *out);
enum lopad_status lp_gguf_get_f32(const struct lp_gguf *g, const char *key, float *out);
enum lopad_status lp_gguf_get_bool(const struct lp_gguf *g, const char *key, bool *out);
/* A C string: a value with an embedded NUL byte is LOPAD_ERR_FORMAT naming the
 * key (it would otherwise be read as its prefix). Use lp_gguf_get() and
 * str.len for the raw bytes. */
enum lopad_status lp_gguf_get_str(const struct lp_gguf *g, const char *key, const char **out);
/* An array whose elements have type `elem` (any element type when elem < 0). */
enum lopad_status lp_gguf_get_arr(const struct lp_gguf *g, const char *key, int elem,
                                  const struct lp_gguf_value **out);

/* Conversions of a scalar value (false when the type or range does not fit). */
bool lp_gguf_value_i64(const struct lp_gguf_value *v, int64_t *out);  /* integers, bool */
bool lp_gguf_value_u64(const struct lp_gguf_value *v, uint64_t *out); /* integers, bool */
bool lp_gguf_value_f64(const struct lp_gguf_value *v, double *out);   /* floats, integers */

/* Array element j of array value a (false when j >= n or the element type does
 * not convert losslessly, as above). Strings: pointer to the NUL-terminated
 * element, *len its length (len may be NULL); NULL when not a string array. */
const char *lp_gguf_arr_str(const struct lp_gguf_value *a, uint64_t j, size_t *len);
bool lp_gguf_arr_i64(const struct lp_gguf_value *a, uint64_t j, int64_t *out);
bool lp_gguf_arr_u64(const struct lp_gguf_value *a, uint64_t j, uint64_t *out);
bool lp_gguf_arr_i32(const struct lp_gguf_value *a, uint64_t j, int32_t *out);
bool lp_gguf_arr_u32(const struct lp_gguf_value *a, uint64_t j, uint32_t *out);
bool lp_gguf_arr_f32(const struct lp_gguf_value *a, uint64_t j, float *out); /* F32/F64 */
/* Nested element j of a STRING or ARRAY array, or NULL. */
const struct lp_gguf_value *lp_gguf_arr_sub(const struct lp_gguf_value *a, uint64_t j);

/* ---- tensors: index 0..n-1 in file order; views into the mapping ---- */
int64_t lp_gguf_n_tensors(const struct lp_gguf *g);
/* The contiguous array of all tensors (e.g. for a struct lp_tensor_dir). */
const struct lp_tensor *lp_gguf_tensors(const struct lp_gguf *g);
const struct lp_tensor *lp_gguf_find_tensor(const struct lp_gguf *g, const char *name);
/* Offset of tensor i's data relative to the data section. */
uint64_t lp_gguf_tensor_offset(const struct lp_gguf *g, int64_t i);

/* ------------------------------------------------------------------ writer */

struct lp_gguf_writer;

/* Produce row `row` (ne[0] elements, row_bytes bytes of the tensor's type) of a
 * tensor into dst. Rows are requested in order 0 .. ne[1]*ne[2]*ne[3]-1.
 * Return LOPAD_OK or an error (recorded with lp_error); the write then fails. */
typedef enum lopad_status (*lp_gguf_row_fn)(void *user, int64_t row, void *dst, size_t row_bytes);

/* Open "<path>.tmp.<pid>" for writing (LOPAD_ERR_IO naming it on failure). */
enum lopad_status lp_gguf_writer_create(const char *path, struct lp_gguf_writer **out);
/* Data alignment (nonzero multiple of 8; default 32). Also written as the
 * general.alignment key (u32) unless the caller added that key itself. */
enum lopad_status lp_gguf_writer_set_alignment(struct lp_gguf_writer *w, uint32_t alignment);

/* Add a KV (copied; duplicate keys -> LOPAD_ERR_ARG). Scalars: */
enum lopad_status lp_gguf_writer_add_u8(struct lp_gguf_writer *w, const char *key, uint8_t v);
enum lopad_status lp_gguf_writer_add_i8(struct lp_gguf_writer *w, const char *key, int8_t v);
enum lopad_status lp_gguf_writer_add_u16(struct lp_gguf_writer *w, const char *key, uint16_t v);
enum lopad_status lp_gguf_writer_add_i16(struct lp_gguf_writer *w, const char *key, int16_t v);
enum lopad_status lp_gguf_writer_add_u32(struct lp_gguf_writer *w, const char *key, uint32_t v);
enum lopad_status lp_gguf_writer_add_i32(struct lp_gguf_writer *w, const char *key, int32_t v);
enum lopad_status lp_gguf_writer_add_u64(struct lp_gguf_writer *w, const char *key, uint64_t v);
enum lopad_status lp_gguf_writer_add_i64(struct lp_gguf_writer *w, const char *key, int64_t v);
enum lopad_status lp_gguf_writer_add_f32(struct lp_gguf_writer *w, const char *key, float v);
enum lopad_status lp_gguf_writer_add_f64(struct lp_gguf_writer *w, const char *key, double v);
enum lopad_status lp_gguf_writer_add_bool(struct lp_gguf_writer *w, const char *key, bool v);
enum lopad_status lp_gguf_writer_add_str(struct lp_gguf_writer *w, const char *key, const char *s);
/* Array of fixed-size elements: data is a C array of n elements of `elem`
 * (uint8_t 0/1 for BOOL); or, for elem == LP_GGUF_STRING, a `const char *const *`
 * of n NUL-terminated strings. */
enum lopad_status lp_gguf_writer_add_arr(struct lp_gguf_writer *w, const char *key,
                                         enum lp_gguf_type elem, const void *data, uint64_t n);
/* True when key was already added. */
bool lp_gguf_writer_has_key(const struct lp_gguf_writer *w, const char *key);
/* Any value, deep-copied (nested arrays, or a value taken from a reader). */
enum lopad_status lp_gguf_writer_add_value(struct lp_gguf_writer *w, const char *key,
                                           const struct lp_gguf_value *v);

/* Add a tensor. ne in ggml order (ne[0] fastest), n_dims 1..4, ne[0] a multiple
 * of the type's block size. Either the data (nbytes must equal the tensor size;
 * the buffer must stay valid until finish) ... */
enum lopad_status lp_gguf_writer_add_tensor(struct lp_gguf_writer *w, const char *name, int type,
                                            int n_dims, const int64_t *ne, const void *data,
                                            size_t nbytes);
/* ... or a row producer called during finish (user must stay valid until then). */
enum lopad_status lp_gguf_writer_add_tensor_rows(struct lp_gguf_writer *w, const char *name,
                                                 int type, int n_dims, const int64_t *ne,
                                                 lp_gguf_row_fn fn, void *user);

/* Write everything, fsync, rename onto the final path, free w. On failure the
 * temporary file is removed and w is freed as well. */
enum lopad_status lp_gguf_writer_finish(struct lp_gguf_writer *w);
/* Discard: remove the temporary file and free w (NULL ok). */
void lp_gguf_writer_abort(struct lp_gguf_writer *w);

#endif
