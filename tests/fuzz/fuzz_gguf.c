/* fuzz_gguf.c - libFuzzer harness for the GGUF reader (memory and file paths). */
#include "fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_fuzz_gguf_both(data, size);
    return 0;
}
