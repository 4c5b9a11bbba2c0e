/* fuzz_load_forward.c - libFuzzer harness for the whole load path (a model
 * directory with tokenizer and adapter, or a GGUF with its tokenizer) followed
 * by one forward (see lp_fuzz_load_forward). */
#include "fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_fuzz_load_forward(data, size);
    return 0;
}
