/*
 * test_types.c - element types: IEEE half and bfloat16 conversions (exhaustive
 * round trips, rounding ties, specials), dequantisation of hand-built blocks
 * of every quant type against an independent element-wise reading of the
 * layout, K-quant blocks against gguf-py's dequantiser, quantiser error
 * bounds, and row sizes.
 */
#include <stdint.h>

#include "test.h"
#include "core/types.h"

/* xorshift for reproducible data */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}
static float rndf(void) {
    return (float)rnd() / 4294967296.0f * 2.0f - 1.0f;
}

static float bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t f_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static bool half_is_nan(lp_half h) {
    return (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
}

static void test_f16_exhaustive(void) {
    int bad = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        lp_half h = (lp_half)i;
        float f = lp_f16_to_f32(h);
        lp_half back = lp_f32_to_f16(f);
        if (half_is_nan(h)) {
            if (!isnan(f) || !half_is_nan(back)) bad++;
        } else if (back != h) {
            bad++;
        }
#ifdef __FLT16_MANT_DIG__
        /* the compiler's own conversion as an independent reference */
        _Float16 r;
        memcpy(&r, &h, 2);
        if (!half_is_nan(h) && f_bits((float)r) != f_bits(f)) bad++;
#endif
    }
    CHECK_MSG(bad == 0, "%d half values did not round-trip", bad);
    CHECK(lp_f16_to_f32(0x3c00) == 1.0f);
    CHECK(lp_f16_to_f32(0xc000) == -2.0f);
    CHECK(lp_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(lp_f16_to_f32(0x0001) == 0x1p-24f);
    CHECK(lp_f16_to_f32(0x0400) == 0x1p-14f);
    CHECK(lp_f16_to_f32(0x03ff) == 0x3ffp-24f);
    CHECK(isinf(lp_f16_to_f32(0x7c00)) && lp_f16_to_f32(0xfc00) < 0);
    CHECK(f_bits(lp_f16_to_f32(0x8000)) == 0x80000000u);
}

static void test_f16_rounding(void) {
    CHECK(lp_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);            /* tie -> even (down) */
    CHECK(lp_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02);        /* tie -> even (up) */
    CHECK(lp_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f) == 0x3c01); /* above the tie */
    CHECK(lp_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(lp_f32_to_f16(65519.0f) == 0x7bff);
    CHECK(lp_f32_to_f16(65520.0f) == 0x7c00); /* tie with the next binade -> inf */
    CHECK(lp_f32_to_f16(1e10f) == 0x7c00 && lp_f32_to_f16(-1e10f) == 0xfc00);
    CHECK(lp_f32_to_f16(bits_f(0x7f800000u)) == 0x7c00);
    CHECK(half_is_nan(lp_f32_to_f16(NAN)));
    CHECK(half_is_nan(lp_f32_to_f16(bits_f(0x7f800001u)))); /* payload only in low bits */
    CHECK(lp_f32_to_f16(0x1p-25f) == 0x0000);               /* tie between 0 and 2^-24 */
    CHECK(lp_f32_to_f16(0x1.0002p-25f) == 0x0001);
    CHECK(lp_f32_to_f16(3 * 0x1p-25f) == 0x0002);        /* tie between 1 and 2 -> 2 */
    CHECK(lp_f32_to_f16(5 * 0x1p-25f) == 0x0002);        /* tie between 2 and 3 -> 2 */
    CHECK(lp_f32_to_f16(0x1p-14f - 0x1p-25f) == 0x0400); /* tie at the top of subnormals */
    CHECK(lp_f32_to_f16(0x1p-14f - 0x1p-24f) == 0x03ff);
    CHECK(lp_f32_to_f16(1e-30f) == 0x0000 && lp_f32_to_f16(-1e-30f) == 0x8000);
    CHECK(lp_f32_to_f16(-0.0f) == 0x8000);
#ifdef __FLT16_MANT_DIG__
    /* random f32 bit patterns against the compiler's conversion (round-to-nearest-even) */
    int bad = 0;
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = rnd();
        /* concentrate on the interesting exponent range */
        if (i & 1) u = (u & 0x807fffffu) | ((uint32_t)(100 + rnd() % 45) << 23);
        float f = bits_f(u);
        if (isnan(f)) continue;
        _Float16 r = (_Float16)f;
        lp_half ref;
        memcpy(&ref, &r, 2);
        if (lp_f32_to_f16(f) != ref) bad++;
    }
    CHECK_MSG(bad == 0, "%d f32 values rounded differently from _Float16", bad);
#endif
}

static void test_bf16(void) {
    int bad = 0;
    for (uint32_t i = 0; i < 65536; i++) {
        float f = lp_bf16_to_f32((lp_bf16)i);
        lp_bf16 back = lp_f32_to_bf16(f);
        if (isnan(f) ? !isnan(lp_bf16_to_f32(back)) : back != i) bad++;
        if (f_bits(f) != i << 16) bad++;
    }
    CHECK_MSG(bad == 0, "%d bf16 values did not round-trip", bad);
    CHECK(lp_f32_to_bf16(bits_f(0x3f808000u)) == 0x3f80); /* tie -> even (down) */
    CHECK(lp_f32_to_bf16(bits_f(0x3f818000u)) == 0x3f82); /* tie -> even (up) */
    CHECK(lp_f32_to_bf16(bits_f(0x3f808001u)) == 0x3f81);
    CHECK(isnan(lp_bf16_to_f32(lp_f32_to_bf16(bits_f(0x7f800001u)))));
    CHECK(lp_f32_to_bf16(bits_f(0x7f7fffffu)) == 0x7f80); /* FLT_MAX rounds to inf */
}

/* the plain types' traits convert both ways */
static void test_plain_traits(void) {
    float x[5] = {1.0f, -0.5f, 3.140625f, 0.0f, 65504.0f}, y[5];
    uint8_t buf[20];
    const int types[] = {LOPAD_TYPE_F32, LOPAD_TYPE_F16, LOPAD_TYPE_BF16};
    for (int k = 0; k < 3; k++) {
        const struct lp_type_traits *t = lp_type_traits(types[k]);
        CHECK(t && t->blck_size == 1 && t->from_float && t->to_float);
        t->from_float(x, buf, 5);
        t->to_float(buf, y, 5);
        for (int i = 0; i < 4; i++)
            CHECK(y[i] == x[i]); /* exactly representable in all three */
        CHECK_NEAR(y[4], 65504.0f, 0, 1e-2);
    }
    /* unaligned sources (bytes inside a mapping) */
    lp_half h[3] = {0x3c00, 0x4000, 0xc200};
    uint8_t ub[7];
    memcpy(ub + 1, h, 6);
    lp_type_traits(LOPAD_TYPE_F16)->to_float(ub + 1, y, 3);
    CHECK(y[0] == 1.0f && y[1] == 2.0f && y[2] == -3.0f);
}

/* q4_k block and its dequantisation by gguf-py (gguf.quants) */
static const uint8_t ref_q4_k_block[144] = {
    0,   40,  0,   32,  169, 65,  6,   160, 149, 106, 38,  175, 188, 205, 175, 229, 98,  249,
    10,  148, 95,  86,  147, 198, 66,  39,  106, 213, 171, 45,  167, 57,  69,  81,  55,  14,
    153, 178, 215, 76,  52,  39,  250, 72,  215, 50,  161, 223, 112, 172, 161, 233, 38,  17,
    89,  1,   221, 6,   242, 127, 143, 6,   60,  210, 94,  25,  166, 33,  249, 189, 12,  204,
    33,  57,  124, 30,  199, 149, 202, 119, 72,  220, 3,   209, 122, 136, 147, 77,  133, 82,
    115, 87,  162, 230, 70,  71,  240, 62,  47,  184, 31,  34,  63,  65,  146, 197, 142, 253,
    81,  133, 240, 113, 30,  247, 103, 122, 31,  19,  42,  129, 141, 136, 33,  149, 161, 0,
    178, 141, 107, 35,  107, 130, 72,  27,  217, 254, 99,  13,  195, 206, 59,  228, 235, 202};
static const float ref_q4_k_out[256] = {
    2.3984375f,  11.3671875f, 12.6484375f, 4.9609375f,  19.0546875f, 7.5234375f,  3.6796875f,
    7.5234375f,  2.3984375f,  8.8046875f,  12.6484375f, 6.2421875f,  13.9296875f, 16.4921875f,
    8.8046875f,  11.3671875f, 6.2421875f,  1.1171875f,  8.8046875f,  17.7734375f, 11.3671875f,
    2.3984375f,  8.8046875f,  15.2109375f, 4.9609375f,  8.8046875f,  12.6484375f, 10.0859375f,
    8.8046875f,  2.3984375f,  1.1171875f,  19.0546875f, -0.140625f,  0.140625f,   -0.328125f,
    -0.046875f,  -0.171875f,  -0.171875f,  -0.046875f,  0.046875f,   -0.203125f,  -0.265625f,
    -0.140625f,  0.078125f,   -0.015625f,  -0.265625f,  -0.015625f,  -0.234375f,  -0.203125f,
    -0.171875f,  -0.234375f,  -0.328125f,  -0.046875f,  0.015625f,   0.078125f,   -0.203125f,
    -0.234375f,  -0.265625f,  0.140625f,   -0.203125f,  0.078125f,   -0.234375f,  -0.015625f,
    0.078125f,   -0.296875f,  1.953125f,   -0.109375f,  1.390625f,   0.828125f,   -0.109375f,
    1.390625f,   -0.109375f,  2.140625f,   0.828125f,   0.078125f,   2.515625f,   2.515625f,
    0.828125f,   1.953125f,   0.078125f,   2.328125f,   1.390625f,   0.828125f,   -0.109375f,
    1.390625f,   2.140625f,   1.953125f,   1.953125f,   -0.109375f,  1.390625f,   1.953125f,
    2.328125f,   1.015625f,   0.640625f,   1.578125f,   1.015625f,   6.6328125f,  9.6328125f,
    9.6328125f,  13.6328125f, 1.6328125f,  0.6328125f,  4.6328125f,  -0.3671875f, 12.6328125f,
    -0.3671875f, 14.6328125f, 6.6328125f,  7.6328125f,  -0.3671875f, 2.6328125f,  12.6328125f,
    4.6328125f,  0.6328125f,  9.6328125f,  1.6328125f,  14.6328125f, 10.6328125f, -0.3671875f,
    11.6328125f, 1.6328125f,  2.6328125f,  6.6328125f,  0.6328125f,  11.6328125f, 8.6328125f,
    11.6328125f, 6.6328125f,  10.6640625f, 16.1640625f, 3.7890625f,  1.0390625f,  13.4140625f,
    10.6640625f, 3.7890625f,  17.5390625f, 6.5390625f,  2.4140625f,  3.7890625f,  9.2890625f,
    2.4140625f,  7.9140625f,  7.9140625f,  9.2890625f,  -0.3359375f, 18.9140625f, 20.2890625f,
    10.6640625f, 20.2890625f, 2.4140625f,  20.2890625f, 1.0390625f,  2.4140625f,  6.5390625f,
    18.9140625f, 17.5390625f, 1.0390625f,  6.5390625f,  -0.3359375f, 1.0390625f,  3.40625f,
    11.5625f,    -0.21875f,   11.5625f,    6.125f,      7.03125f,    7.9375f,     3.40625f,
    7.03125f,    4.3125f,     6.125f,      4.3125f,     8.84375f,    12.46875f,   3.40625f,
    3.40625f,    13.375f,     2.5f,        1.59375f,    9.75f,       0.6875f,     1.59375f,
    2.5f,        3.40625f,    7.9375f,     10.65625f,   7.03125f,    13.375f,     4.3125f,
    7.03125f,    13.375f,     6.125f,      6.484375f,   3.203125f,   3.203125f,   4.609375f,
    6.953125f,   1.328125f,   4.609375f,   0.390625f,   6.015625f,   3.671875f,   0.390625f,
    2.265625f,   0.390625f,   -0.078125f,  0.859375f,   6.015625f,   5.078125f,   1.328125f,
    5.078125f,   0.859375f,   3.671875f,   5.078125f,   4.140625f,   6.484375f,   1.328125f,
    6.015625f,   1.328125f,   6.484375f,   5.078125f,   1.796875f,   5.078125f,   4.609375f,
    0.796875f,   16.984375f,  6.578125f,   7.734375f,   0.796875f,   0.796875f,   1.953125f,
    8.890625f,   8.890625f,   8.890625f,   1.953125f,   10.046875f,  11.203125f,  -0.359375f,
    12.359375f,  8.890625f,   6.578125f,   1.953125f,   6.578125f,   8.890625f,   4.265625f,
    0.796875f,   14.671875f,  16.984375f,  6.578125f,   -0.359375f,  13.515625f,  13.515625f,
    3.109375f,   15.828125f,  15.828125f,  13.515625f};
/* q6_k block and its dequantisation by gguf-py (gguf.quants) */
static const uint8_t ref_q6_k_block[210] = {
    183, 47,  69,  179, 82,  35,  71,  159, 110, 121, 77,  87,  3,   126, 44,  253, 233, 225,
    90,  119, 137, 120, 30,  55,  33,  165, 87,  216, 229, 167, 3,   41,  109, 203, 129, 219,
    63,  101, 207, 156, 27,  220, 93,  29,  143, 200, 63,  11,  11,  180, 219, 113, 190, 87,
    34,  9,   133, 29,  61,  36,  244, 192, 207, 131, 254, 67,  99,  248, 47,  71,  89,  119,
    137, 85,  246, 206, 214, 129, 203, 234, 113, 121, 206, 210, 200, 248, 20,  161, 52,  114,
    255, 112, 206, 54,  157, 131, 133, 69,  42,  68,  243, 24,  51,  127, 8,   205, 30,  97,
    79,  35,  93,  63,  131, 188, 69,  254, 233, 238, 4,   3,   167, 155, 225, 24,  84,  68,
    65,  49,  124, 147, 17,  248, 94,  4,   41,  177, 159, 126, 192, 225, 86,  246, 90,  51,
    34,  231, 145, 184, 128, 238, 153, 94,  63,  13,  48,  125, 47,  186, 244, 0,   105, 58,
    23,  158, 13,  2,   126, 212, 229, 139, 231, 169, 235, 194, 138, 39,  29,  67,  167, 136,
    85,  99,  129, 68,  235, 102, 3,   247, 178, 114, 93,  225, 31,  230, 172, 47,  136, 166,
    129, 130, 134, 151, 147, 240, 170, 214, 222, 216, 0,   36};
static const float ref_q6_k_out[256] = {
    -12.109375f, 15.015625f,  -5.328125f,  -14.046875f, 0.96875f,    -14.046875f, -4.359375f,
    -0.484375f,  14.53125f,   4.359375f,   -9.203125f,  -4.359375f,  1.453125f,   6.78125f,
    5.8125f,     14.046875f,  -3.65625f,   -6.90625f,   2.4375f,     10.15625f,   9.34375f,
    -3.25f,      0.8125f,     -2.84375f,   -6.90625f,   4.46875f,    10.15625f,   3.25f,
    -8.53125f,   -2.84375f,   11.78125f,   9.34375f,    -38.0625f,   27.5625f,    40.6875f,
    -14.4375f,   -40.6875f,   14.4375f,    -19.6875f,   26.25f,      -35.4375f,   -36.75f,
    24.9375f,    24.9375f,    1.3125f,     10.5f,       -19.6875f,   27.5625f,    -15.421875f,
    -8.8125f,    -15.421875f, 0.734375f,   -13.21875f,  16.890625f,  1.46875f,    18.359375f,
    15.421875f,  21.296875f,  -13.953125f, 14.6875f,    14.6875f,    0.0f,        -0.734375f,
    -21.296875f, -50.625f,    26.25f,      22.5f,       -50.625f,    20.625f,     56.25f,
    -7.5f,       -46.875f,    18.75f,      -43.125f,    52.5f,       -9.375f,     30.0f,
    -43.125f,    26.25f,      -58.125f,    -19.6875f,   -19.6875f,   15.46875f,   -32.34375f,
    33.75f,      -9.84375f,   21.09375f,   18.28125f,   -25.3125f,   30.9375f,    -29.53125f,
    -40.78125f,  -19.6875f,   -36.5625f,   -22.5f,      42.1875f,    19.84375f,   -23.8125f,
    47.625f,     -57.546875f, 25.796875f,  51.59375f,   39.6875f,    -17.859375f, -1.984375f,
    5.953125f,   -41.671875f, -33.734375f, 15.875f,     -55.5625f,   25.796875f,  63.5f,
    63.0f,       -53.15625f,  -25.59375f,  -13.78125f,  -21.65625f,  -41.34375f,  -3.9375f,
    31.5f,       47.25f,      61.03125f,   57.09375f,   27.5625f,    33.46875f,   -23.625f,
    -55.125f,    47.25f,      3.8125f,     -5.71875f,   -36.21875f,  -15.25f,     1.90625f,
    -13.34375f,  -17.15625f,  47.65625f,   13.34375f,   -40.03125f,  -41.9375f,   3.8125f,
    -41.9375f,   -1.90625f,   -20.96875f,  -49.5625f,   24.609375f,  -41.015625f, -49.21875f,
    49.21875f,   13.125f,     -39.375f,    19.6875f,    50.859375f,  -32.8125f,   -3.28125f,
    -50.859375f, -26.25f,     -22.96875f,  -9.84375f,   4.921875f,   21.328125f,  -8.515625f,
    -8.515625f,  10.21875f,   -34.0625f,   -32.359375f, 40.875f,     -32.359375f, 1.703125f,
    13.625f,     -22.140625f, 3.40625f,    -1.703125f,  -25.546875f, 49.390625f,  -22.140625f,
    1.703125f,   -4.75f,      5.0f,        2.75f,       -3.5f,       1.75f,       4.5f,
    7.0f,        3.25f,       -1.75f,      1.25f,       7.75f,       2.0f,        7.0f,
    7.0f,        -4.25f,      7.75f,       -20.15625f,  -26.875f,    13.4375f,    1.34375f,
    40.3125f,    37.625f,     -28.21875f,  12.09375f,   -10.75f,     36.28125f,   -20.15625f,
    -16.125f,    -17.46875f,  32.25f,      26.875f,     -18.8125f,   5.90625f,    16.40625f,
    -7.875f,     12.46875f,   2.625f,      -9.84375f,   20.34375f,   14.4375f,    -1.96875f,
    -4.59375f,   11.15625f,   -15.09375f,  -18.375f,    -12.46875f,  4.59375f,    -5.25f,
    4.25f,       14.875f,     15.9375f,    -2.125f,     9.03125f,    16.46875f,   6.90625f,
    -12.21875f,  -8.5f,       -6.375f,     -9.03125f,   -3.1875f,    -10.625f,    -9.5625f,
    -2.65625f,   15.40625f,   15.0f,       3.125f,      -2.5f,       -9.375f,     1.25f,
    1.25f,       -0.0f,       10.0f,       -16.25f,     4.375f,      11.25f,      -10.625f,
    -3.125f,     7.5f,        7.5f,        -11.875f};

static void test_q8_0_block(void) {
    lp_block_q8_0 b[2];
    b[0].d = 0x3800; /* 0.5 */
    b[1].d = 0xbc00; /* -1 */
    for (int j = 0; j < 32; j++)
        b[0].qs[j] = (int8_t)(j - 16), b[1].qs[j] = (int8_t)(j * 4 - 128);
    float y[64];
    lp_type_traits(LOPAD_TYPE_Q8_0)->to_float(b, y, 64);
    for (int j = 0; j < 32; j++) {
        CHECK(y[j] == 0.5f * (j - 16));
        CHECK(y[32 + j] == -1.0f * (j * 4 - 128));
    }
}

static void test_q4_0_block(void) {
    lp_block_q4_0 b;
    b.d = 0x4000; /* 2 */
    for (int j = 0; j < 16; j++)
        b.qs[j] = (uint8_t)((j & 15) | ((15 - j) << 4));
    float y[32];
    lp_type_traits(LOPAD_TYPE_Q4_0)->to_float(&b, y, 32);
    /* element j < 16 is the low nibble of byte j, element 16 + j the high nibble */
    for (int j = 0; j < 16; j++) {
        CHECK(y[j] == 2.0f * (j - 8));
        CHECK(y[16 + j] == 2.0f * ((15 - j) - 8));
    }
}

/* pack 8 six-bit scales and mins the way Q4_K stores them */
static void pack_q4_k_scales(const uint8_t sc[8], const uint8_t m[8], uint8_t q[12]) {
    for (int j = 0; j < 4; j++) {
        q[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        q[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
        q[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
    }
}

static void test_q4_k_block(void) {
    lp_block_q4_K b;
    const uint8_t sc[8] = {1, 63, 17, 32, 5, 48, 60, 33}, mn[8] = {0, 7, 63, 16, 47, 1, 31, 62};
    b.d = 0x3000;    /* 0.125 */
    b.dmin = 0x2c00; /* 0.0625 */
    pack_q4_k_scales(sc, mn, b.scales);
    for (int i = 0; i < 128; i++)
        b.qs[i] = (uint8_t)(rnd() & 0xff);
    float y[256];
    lp_type_traits(LOPAD_TYPE_Q4_K)->to_float(&b, y, 256);
    int bad = 0;
    for (int k = 0; k < 256; k++) {
        /* element k: sub-block k/32; chunks of 64 share 32 bytes, low nibbles first */
        int c = k / 64, l = k % 64, s = k / 32;
        int q = l < 32 ? (b.qs[c * 32 + l] & 15) : (b.qs[c * 32 + l - 32] >> 4);
        float want = 0.125f * sc[s] * q - 0.0625f * mn[s];
        if (y[k] != want) bad++;
    }
    CHECK_MSG(bad == 0, "%d Q4_K elements differ", bad);
}

static void test_q6_k_block(void) {
    lp_block_q6_K b;
    for (int i = 0; i < 128; i++)
        b.ql[i] = (uint8_t)rnd();
    for (int i = 0; i < 64; i++)
        b.qh[i] = (uint8_t)rnd();
    for (int i = 0; i < 16; i++)
        b.scales[i] = (int8_t)(i * 17 - 128);
    b.d = 0x2400; /* 2^-6 */
    float y[256];
    lp_type_traits(LOPAD_TYPE_Q6_K)->to_float(&b, y, 256);
    int bad = 0;
    for (int k = 0; k < 256; k++) {
        /* halves of 128; within a half, quarter g of 32 uses ql low (g<2) / high nibble
         * of byte l + 32*(g&1), qh bits 2g..2g+1 of byte l, scale (l/16) + 2g */
        int h = k / 128, r = k % 128, g = r / 32, l = r % 32;
        uint8_t lo = b.ql[h * 64 + l + (g & 1) * 32];
        int q = (g < 2 ? lo & 15 : lo >> 4) | (((b.qh[h * 32 + l] >> (2 * g)) & 3) << 4);
        float want = 0x1p-6f * b.scales[h * 8 + l / 16 + 2 * g] * (q - 32);
        if (y[k] != want) bad++;
    }
    CHECK_MSG(bad == 0, "%d Q6_K elements differ", bad);
}

/* against gguf-py's numpy dequantiser (an independent implementation) */
static void test_k_quants_reference(void) {
    float y[256];
    int bad = 0;
    lp_type_traits(LOPAD_TYPE_Q4_K)->to_float(ref_q4_k_block, y, 256);
    for (int i = 0; i < 256; i++)
        if (fabsf(y[i] - ref_q4_k_out[i]) > 1e-6f * (1 + fabsf(ref_q4_k_out[i]))) bad++;
    CHECK_MSG(bad == 0, "%d Q4_K values differ from gguf-py", bad);
    bad = 0;
    lp_type_traits(LOPAD_TYPE_Q6_K)->to_float(ref_q6_k_block, y, 256);
    for (int i = 0; i < 256; i++)
        if (fabsf(y[i] - ref_q6_k_out[i]) > 1e-6f * (1 + fabsf(ref_q6_k_out[i]))) bad++;
    CHECK_MSG(bad == 0, "%d Q6_K values differ from gguf-py", bad);
}

static void test_quantise_bounds(void) {
    enum { N = 32 * 64 };
    static float x[N], y[N];
    static uint8_t q[N * 2];
    for (int i = 0; i < N; i++)
        x[i] = rndf() * (1 + (i / 32) % 7) * ((i / 32) % 5 == 0 ? 100 : 1);
    for (int i = 0; i < 32; i++)
        x[5 * 32 + i] = 0.0f; /* an all-zero block */
    x[6 * 32 + 3] = -7.0f;    /* a negative extreme */

    const struct lp_type_traits *t8 = lp_type_traits(LOPAD_TYPE_Q8_0);
    t8->from_float(x, q, N);
    t8->to_float(q, y, N);
    int bad = 0;
    for (int b = 0; b < N / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        for (int j = 0; j < 32; j++) {
            float e = fabsf(x[b * 32 + j] - y[b * 32 + j]);
            /* half a step, plus the scale's own f16 rounding over 127 steps */
            if (e > amax / 127 * 0.5f + amax * 0x1p-10f + 1e-30f) bad++;
        }
    }
    CHECK_MSG(bad == 0, "%d Q8_0 values outside the error bound", bad);
    for (int j = 0; j < 32; j++)
        CHECK(y[5 * 32 + j] == 0.0f);

    const struct lp_type_traits *t4 = lp_type_traits(LOPAD_TYPE_Q4_0);
    t4->from_float(x, q, N);
    t4->to_float(q, y, N);
    bad = 0;
    for (int b = 0; b < N / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        for (int j = 0; j < 32; j++) {
            float e = fabsf(x[b * 32 + j] - y[b * 32 + j]);
            /* one step: the side opposite the extreme only reaches +7 steps */
            if (e > amax / 8 + amax * 0x1p-9f + 1e-30f) bad++;
            if (fabsf(x[b * 32 + j]) <= amax * 7 / 8 && e > amax / 16 + amax * 0x1p-9f) bad++;
        }
    }
    CHECK_MSG(bad == 0, "%d Q4_0 values outside the error bound", bad);
    for (int j = 0; j < 32; j++)
        CHECK(y[5 * 32 + j] == 0.0f);
    CHECK_NEAR(y[6 * 32 + 3], -7.0f, 0, 1e-3); /* the extreme is represented (as -8 steps) */
    CHECK((q[6 * 18 + 2 + 3] & 15) == 0);
}

/* the simple K-quant quantisers: dequantised values within the step bounds */
static void test_k_quantise_bounds(void) {
    enum { NB = 8, N = NB * 256 };
    static float x[N], y[N];
    static uint8_t q[NB * 210];
    for (int i = 0; i < N; i++)
        x[i] = rndf() * (1 + (i / 256)) + (i / 256 == 3 ? 2.0f : 0.0f);
    for (int i = 0; i < 256; i++)
        x[5 * 256 + i] = 0.0f; /* an all-zero block */
    for (int i = 0; i < 32; i++)
        x[6 * 256 + i] = 0.0f; /* a zero sub-block */

    const struct lp_type_traits *t4 = lp_type_traits(LOPAD_TYPE_Q4_K);
    CHECK(t4->from_float != NULL);
    t4->from_float(x, q, N);
    t4->to_float(q, y, N);
    int bad = 0;
    for (int b = 0; b < NB; b++) {
        const float *xb = x + b * 256, *yb = y + b * 256;
        float scale[8], max_scale = 0, max_min = 0;
        for (int s = 0; s < 8; s++) {
            float lo = 0, hi = 0;
            for (int l = 0; l < 32; l++)
                lo = fminf(lo, xb[s * 32 + l]), hi = fmaxf(hi, xb[s * 32 + l]);
            scale[s] = (hi - lo) / 15;
            max_scale = fmaxf(max_scale, scale[s]);
            max_min = fmaxf(max_min, -lo);
        }
        for (int k = 0; k < 256; k++) {
            float bound = 0.5f * scale[k / 32] + 1.01f * (max_scale + max_min) / 63 + 1e-6f;
            if (fabsf(xb[k] - yb[k]) > bound) bad++;
        }
    }
    CHECK_MSG(bad == 0, "%d Q4_K values outside the bound", bad);
    for (int i = 0; i < 256; i++)
        CHECK(y[5 * 256 + i] == 0.0f);

    const struct lp_type_traits *t6 = lp_type_traits(LOPAD_TYPE_Q6_K);
    CHECK(t6->from_float != NULL);
    t6->from_float(x, q, N);
    t6->to_float(q, y, N);
    bad = 0;
    for (int b = 0; b < NB; b++) {
        const float *xb = x + b * 256, *yb = y + b * 256;
        float amax_b = 0;
        for (int k = 0; k < 256; k++)
            amax_b = fmaxf(amax_b, fabsf(xb[k]));
        for (int j = 0; j < 16; j++) {
            float amax = 0;
            for (int l = 0; l < 16; l++)
                amax = fmaxf(amax, fabsf(xb[j * 16 + l]));
            float bound = 0.5f * (amax / 31 + 1.01f * amax_b / 31 / 127) + 1e-6f;
            for (int l = 0; l < 16; l++)
                if (fabsf(xb[j * 16 + l] - yb[j * 16 + l]) > bound) bad++;
        }
    }
    CHECK_MSG(bad == 0, "%d Q6_K values outside the bound", bad);
    for (int i = 0; i < 256; i++)
        CHECK(y[5 * 256 + i] == 0.0f);
    for (int i = 0; i < 32; i++)
        CHECK(fabsf(y[6 * 256 + i]) <= 1e-6f);
}

static void test_row_sizes(void) {
    CHECK(lp_row_size(LOPAD_TYPE_F32, 10) == 40);
    CHECK(lp_row_size(LOPAD_TYPE_F16, 7) == 14);
    CHECK(lp_row_size(LOPAD_TYPE_BF16, 4096) == 8192);
    CHECK(lp_row_size(LOPAD_TYPE_Q8_0, 64) == 68);
    CHECK(lp_row_size(LOPAD_TYPE_Q8_0, 4096) == 128 * 34);
    CHECK(lp_row_size(LOPAD_TYPE_Q8_0, 33) == 0);
    CHECK(lp_row_size(LOPAD_TYPE_Q4_0, 32) == 18);
    CHECK(lp_row_size(LOPAD_TYPE_Q4_K, 512) == 288);
    CHECK(lp_row_size(LOPAD_TYPE_Q4_K, 128) == 0);
    CHECK(lp_row_size(LOPAD_TYPE_Q6_K, 256) == 210);
    CHECK(lp_row_size(LOPAD_TYPE_Q6_K, 18944) == 74 * 210);
    CHECK(lp_row_size(3, 32) == 0); /* Q4_1: not supported */
    CHECK(lp_row_size(LOPAD_TYPE_F32, 0) == 0);
    CHECK(lp_row_size(LOPAD_TYPE_F32, -4) == 0);
    CHECK(lp_row_size(LOPAD_TYPE_F32, INT64_MAX) == 0); /* overflows */
    CHECK(lp_type_traits(-1) == NULL && lp_type_traits(31) == NULL);
    CHECK(!strcmp(lp_type_name(LOPAD_TYPE_Q4_K), "Q4_K") && !strcmp(lp_type_name(99), "?"));
    CHECK(!strcmp(lp_type_name(LOPAD_TYPE_BF16), "BF16"));
    CHECK(lp_type_traits(LOPAD_TYPE_Q8_0)->from_float &&
          lp_type_traits(LOPAD_TYPE_Q4_0)->from_float);
}

int main(void) {
    TEST_RUN(test_f16_exhaustive);
    TEST_RUN(test_f16_rounding);
    TEST_RUN(test_bf16);
    TEST_RUN(test_plain_traits);
    TEST_RUN(test_q8_0_block);
    TEST_RUN(test_q4_0_block);
    TEST_RUN(test_q4_k_block);
    TEST_RUN(test_q6_k_block);
    TEST_RUN(test_k_quants_reference);
    TEST_RUN(test_quantise_bounds);
    TEST_RUN(test_k_quantise_bounds);
    TEST_RUN(test_row_sizes);
    return test_report();
}
