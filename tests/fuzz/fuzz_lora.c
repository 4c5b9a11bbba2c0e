/* fuzz_lora.c - libFuzzer harness for PEFT LoRA adapters (config + safetensors, merged into a tiny
 * model). */
#include "fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_fuzz_lora(data, size);
    return 0;
}
