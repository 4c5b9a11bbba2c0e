/*
 * synthetic.h - models with random weights built in memory (no file), for
 * tests and `lopad bench forward`.
 */
#ifndef LP_SYNTHETIC_H
#define LP_SYNTHETIC_H

#include "model.h"

/* Build a model of a named shape with random weights stored as `type`
 * (F32, F16, BF16, Q8_0, Q4_0; Q4_K / Q6_K have no quantiser). Shapes:
 *   "tiny"        Dream-like: n_embd 64, 2 layers, 4 heads / 2 kv heads of 16, n_ff 128,
 *                 vocab 300, q/k/v biases, NEOX RoPE, shifted logits
 *   "tiny-llada"  LLaDA-like: same sizes, 4 kv heads (no GQA), no biases
 *   "dream-7b", "llada-8b"  the real shapes (docs/MODELS.md)
 * A shape name may end in ":N" (e.g. "llada-8b:2"): the same shape with only its
 * first N layers (1 <= N <= the shape's count), full width and vocabulary. Only
 * those layers are generated, so a 2-layer 7B shape builds in seconds; its
 * tensors are byte-identical to the first N layers (and the embedding / head) of
 * the full-depth model with the same type and seed.
 * Weights are uniform with variance 1/n_in (activations stay O(1); Q8_0 and
 * Q4_0 get uniformly random quants of the same range directly), norm
 * weights 1 +- 0.1, biases +- 0.2. The same (shape, type, seed) always gives
 * the same bytes, whatever the number of cores used to generate them. */
enum lopad_status lp_model_synthetic(const char *shape, int type, uint64_t seed, lopad_model **out);

/* The same with the layer count given apart: n_layers 0 = the shape's own count
 * (or the ":N" suffix of the name, which must then agree). */
enum lopad_status lp_model_synthetic_layers(const char *shape, int n_layers, int type,
                                            uint64_t seed, lopad_model **out);

#endif
