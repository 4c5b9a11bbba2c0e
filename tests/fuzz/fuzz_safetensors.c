/* fuzz_safetensors.c - libFuzzer harness for the safetensors reader. */
#include "fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_fuzz_safetensors(data, size);
    return 0;
}
