/* fuzz_tokenizer_json.c - libFuzzer harness for the tokenizer.json loader (+ encode/decode). */
#include "fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_fuzz_tokenizer_json(data, size);
    return 0;
}
