/*
 * hf_names.h - Hugging Face tensor names <-> lopad's canonical (GGUF) names,
 * shared by the HF loader (load_hf.c) and the LoRA merger (lora.c).
 *
 *   Dream (Qwen2), model.layers.N.*    LLaDA, model.transformer.blocks.N.*   canonical
 *   model.embed_tokens                 model.transformer.wte                 token_embd
 *   model.norm                         model.transformer.ln_f                output_norm
 *   lm_head                            model.transformer.ff_out              output
 *   input_layernorm                    attn_norm                             blk.N.attn_norm
 *   self_attn.{q,k,v}_proj             {q,k,v}_proj                          blk.N.attn_{q,k,v}
 *   self_attn.o_proj                   attn_out                              blk.N.attn_output
 *   post_attention_layernorm           ff_norm                               blk.N.ffn_norm
 *   mlp.gate_proj                      ff_proj (the GATE)                    blk.N.ffn_gate
 *   mlp.up_proj                        up_proj                               blk.N.ffn_up
 *   mlp.down_proj                      ff_out (per block: the DOWN proj)     blk.N.ffn_down
 * The first three are whole names, the rest follow the layer prefix; each takes
 * .weight, and q/k/v also .bias.
 */
#ifndef LP_HF_NAMES_H
#define LP_HF_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include "lopad.h"

/* Largest canonical name written (with NUL), e.g. "blk.123456.attn_output.weight". */
#define LP_CANON_NAME_MAX 64
/* Room for an HF module path such as "model.transformer.blocks.123.attn_out". */
#define LP_HF_NAME_MAX 96

/* Write the canonical name of HF tensor `hf_name` (ending in .weight or .bias)
 * into buf and return true; return false for names lopad does not use (rotary
 * inv_freq buffers, anything unknown) or when buf is too small. */
bool lp_hf_canonical_name(enum lopad_arch arch, const char *hf_name, char *buf, size_t size);

/* The HF module paths (no ".weight") of the linear layers of layer `il`, in
 * the order q, k, v, o, gate, up, down (what PEFT's target_modules match). */
void lp_hf_layer_linear_modules(enum lopad_arch arch, int il, char mods[7][LP_HF_NAME_MAX]);

#endif
