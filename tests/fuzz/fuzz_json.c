/* fuzz_json.c - libFuzzer harness for the JSON helpers (parse + typed getters). */
#include "fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_fuzz_json(data, size);
    return 0;
}
