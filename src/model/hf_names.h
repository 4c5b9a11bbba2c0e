/*
 * hf_names.h - Hugging Face tensor names <-> lopad's canonical (GGUF) names,
 * shared by the HF loader (load_hf.c) and the LoRA merger (lora.c).
 *
 *   Dream (Qwen2)                              LLaDA                                canonical
 *   model.embed_tokens.weight                  model.transformer.wte.weight         token_embd.weight
 *   model.norm.weight                          model.transformer.ln_f.weight        output_norm.weight
 *   lm_head.weight                             model.transformer.ff_out.weight      output.weight
 *   model.layers.N.input_layernorm             model.transformer.blocks.N.attn_norm blk.N.attn_norm
 *   model.layers.N.self_attn.{q,k,v}_proj      ...blocks.N.{q,k,v}_proj             blk.N.attn_{q,k,v}
 *   model.layers.N.self_attn.o_proj            ...blocks.N.attn_out                 blk.N.attn_output
 *   model.layers.N.post_attention_layernorm    ...blocks.N.ff_norm                  blk.N.ffn_norm
 *   model.layers.N.mlp.gate_proj               ...blocks.N.ff_proj (the GATE)       blk.N.ffn_gate
 *   model.layers.N.mlp.up_proj                 ...blocks.N.up_proj                  blk.N.ffn_up
 *   model.layers.N.mlp.down_proj               ...blocks.N.ff_out (the DOWN proj)   blk.N.ffn_down
 * (each with .weight; q/k/v also .bias)
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
