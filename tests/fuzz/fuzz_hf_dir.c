/* fuzz_hf_dir.c - libFuzzer harness for a Hugging Face directory's side files (see lp_fuzz_hf_dir).
 */
#include "fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lp_fuzz_hf_dir(data, size);
    return 0;
}
