/* fuzz_gguf_model.c - libFuzzer harness for the GGUF model loader (lopad_model_load on a file). */
#include "fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_fuzz_gguf_model(data, size);
    return 0;
}
