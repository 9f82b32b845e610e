// tests/fuzz/fuzz_safetensors.c: a libFuzzer target for the two readers that
// face untrusted bytes, the safetensors validator and the JSON parser.
//
// Every input is handed to both. The property checked is the one the readers
// promise: whatever the bytes, they return an error or a valid structure, and
// never read out of bounds, leak, or trip undefined behaviour (the target is
// built with ASan and UBSan). For an accepted file we also touch every tensor's
// bytes and convert them to f32, so a wrong bounds check cannot hide.
//
//   make fuzz FUZZ_SECONDS=300
#include <stdint.h>
#include <string.h>

#include "01_tensor/json.h"
#include "01_tensor/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    JsonDoc *d = json_parse((const char *)data, size, err, sizeof err);
    json_free(d);

    StFile f;
    memset(&f, 0, sizeof f);
    if (st_parse(&f, data, size, err, sizeof err) == 0) {
        volatile float sink = 0;
        for (int i = 0; i < f.n; i++) {
            const StTensor *t = &f.tensors[i];
            size_t n = (size_t)st_numel(t);
            if (n > (1u << 20)) continue;
            float *buf = xmalloc(n * sizeof(float) + 4);
            if (st_read(t, buf, DT_F32) == 0 && n) sink += buf[n - 1];
            free(buf);
            free(t->name);
        }
        for (int i = 0; i < f.n_meta; i++) { free(f.meta_keys[i]); free(f.meta_vals[i]); }
        free(f.tensors);
        free(f.meta_keys);
        free(f.meta_vals);
        (void)sink;
    }
    return 0;
}
