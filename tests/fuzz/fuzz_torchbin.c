// tests/fuzz/fuzz_torchbin.c: a libFuzzer target for the torch.save reader (zip
// container + restricted pickle, 01_tensor/torchbin.c).
//
// The property is the reader's promise: whatever the bytes, pt_parse returns an
// error or a list of tensors that lie inside the input, and never reads out of
// bounds, leaks, hangs or trips undefined behaviour (ASan + UBSan build). For an
// accepted file every tensor's bytes are touched and converted to f32, so a
// wrong bounds check cannot hide.
//
//   make fuzz FUZZ=torchbin FUZZ_SECONDS=300
#include <stdint.h>
#include <string.h>

#include "01_tensor/torchbin.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    StFile f;
    memset(&f, 0, sizeof f);
    if (pt_parse(&f, data, size, err, sizeof err) == 0) {
        volatile float sink = 0;
        for (int i = 0; i < f.n; i++) {
            const StTensor *t = &f.tensors[i];
            size_t n = (size_t)st_numel(t);
            const uint8_t *p = t->data;
            if (!(p >= data && t->end <= size && t->begin <= t->end)) __builtin_trap();   // inside the input
            if (n <= (1u << 20)) {
                float *buf = xmalloc(n * sizeof(float) + 4);
                if (st_read(t, buf, DT_F32) == 0 && n) sink += buf[n - 1];
                free(buf);
            }
            free(t->name);
        }
        free(f.tensors);
        (void)sink;
    }
    return 0;
}
