/* fuzz_json_config.c - libFuzzer harness for config.json parsing (lp_load_hf via lopad_model_load).
 */
#include "fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_fuzz_json_config(data, size);
    return 0;
}
