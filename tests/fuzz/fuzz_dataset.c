// tests/fuzz/fuzz_dataset.c: training rows (05_training/data.c: LLaVA-style JSONL or
// a JSON array) from arbitrary bytes. The loader stops with fail_input on a bad row,
// as the trainer does; the hook brings it back here (what it allocated before is
// not freed, so this target runs with leak detection off).
#include "05_training/data.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_file(size && data[0] == '[' ? "rows.json" : "rows.jsonl", data, size);
    nm_fail_hook = fuzz_fail_hook;
    if (setjmp(fuzz_jmp) == 0) {
        Dataset d;
        dataset_load(&d, path, NULL);
        dataset_free(&d);
    }
    nm_fail_hook = NULL;
    return 0;
}
