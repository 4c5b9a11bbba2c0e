/*
 * types.h - element types: quant block layouts, half-precision conversions and
 * a traits table (name, block size, bytes, to_float, from_float).
 *
 * Block layouts are those of ggml / GGUF so files map without conversion.
 * A row of a weight matrix always holds a whole number of blocks.
 */
#ifndef LP_TYPES_H
#define LP_TYPES_H

#include <assert.h>
#include <stdint.h>
#include <string.h>
#include "common.h"

typedef uint16_t lp_half; /* IEEE binary16 bits */
typedef uint16_t lp_bf16; /* bfloat16 bits */

#define LP_QK8_0 32
typedef struct {
    lp_half d;            /* scale */
    int8_t qs[LP_QK8_0];  /* y = d * q */
} lp_block_q8_0;
static_assert(sizeof(lp_block_q8_0) == 34, "q8_0 block size");

#define LP_QK4_0 32
typedef struct {
    lp_half d;               /* scale */
    uint8_t qs[LP_QK4_0 / 2]; /* y[j] = d*((qs[j]&15)-8), y[j+16] = d*((qs[j]>>4)-8) */
} lp_block_q4_0;
static_assert(sizeof(lp_block_q4_0) == 18, "q4_0 block size");

#define LP_QK_K 256
typedef struct {
    lp_half d;            /* super-block scale for the 6-bit scales */
    lp_half dmin;         /* super-block scale for the 6-bit mins */
    uint8_t scales[12];   /* 8 sub-blocks: 6-bit scale + 6-bit min each */
    uint8_t qs[LP_QK_K / 2]; /* 4-bit quants */
} lp_block_q4_K;
static_assert(sizeof(lp_block_q4_K) == 144, "q4_K block size");

typedef struct {
    uint8_t ql[LP_QK_K / 2];     /* low 4 bits */
    uint8_t qh[LP_QK_K / 4];     /* high 2 bits */
    int8_t scales[LP_QK_K / 16]; /* 8-bit sub-block scales */
    lp_half d;                   /* super-block scale */
} lp_block_q6_K;
static_assert(sizeof(lp_block_q6_K) == 210, "q6_K block size");

/* ---- half precision ---- */

static inline float lp_bf16_to_f32(lp_bf16 h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* round to nearest even; NaN stays NaN */
static inline lp_bf16 lp_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (lp_bf16)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (lp_bf16)(u >> 16);
}

float lp_f16_to_f32(lp_half h);
lp_half lp_f32_to_f16(float f);

/* ---- traits ---- */

typedef void (*lp_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*lp_from_float_fn)(const float *src, void *dst, int64_t n);

struct lp_type_traits {
    const char *name;
    int blck_size;   /* elements per block */
    size_t type_size; /* bytes per block */
    lp_to_float_fn to_float;     /* n is a multiple of blck_size */
    lp_from_float_fn from_float; /* reference quantiser; NULL where lopad does not write it */
};

/* Traits of a supported type, or NULL for an id lopad does not know. */
const struct lp_type_traits *lp_type_traits(int type);
const char *lp_type_name(int type); /* "?" for unknown */
/* Bytes of a row of n elements (n a multiple of the block size), 0 if not. */
size_t lp_row_size(int type, int64_t n);

#endif
