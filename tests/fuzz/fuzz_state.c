// tests/fuzz/fuzz_state.c: a checkpoint's state.json (05_training/checkpoint.c), the
// file --resume trusts for the step, the data position and the seed: arbitrary
// bytes give an error or numbers inside the ranges a run can reach.
#include "05_training/checkpoint.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    TrainState st;
    int64_t adam = 0;
    char err[256];
    if (checkpoint_parse_state((const char *)data, size, &st, &adam, err, sizeof err) == 0 &&
        (st.step < 0 || st.step > 1000000000 || st.cursor < 0 || st.cursor > ((int64_t)1 << 52) || adam < 0))
        abort();
    return 0;
}
