// tests/fuzz/fuzz_st_index.c: a sharded model's model.safetensors.index.json
// (01_tensor/safetensors.c, st_model_open on a directory) from arbitrary bytes,
// next to two real shards named model-00001-of-00002.safetensors and
// model-00002-of-00002.safetensors. An accepted model is searched for every tensor.
#include "01_tensor/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    size_t len;
    const char *why;
    char *a = read_file("tests/fuzz/seeds/safetensors/two_tensors.safetensors", &len, &why);
    if (!a) { fprintf(stderr, "fuzz_st_index: run from the repository root: %s\n", why); abort(); }
    fuzz_file("model-00001-of-00002.safetensors", (const uint8_t *)a, len);
    free(a);
    char *b = read_file("tests/fuzz/seeds/safetensors/scalar_empty.safetensors", &len, &why);
    if (!b) abort();
    fuzz_file("model-00002-of-00002.safetensors", (const uint8_t *)b, len);
    free(b);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_file("model.safetensors.index.json", data, size);
    char err[512];
    StModel *m = st_model_open(fuzz_dir(), err, sizeof err);
    if (!m) return 0;
    volatile size_t sink = 0;
    for (int i = 0; i < m->n; i++)
        if (st_model_find(m, m->tensors[i]->name) != m->tensors[i]) abort();
        else sink += (size_t)st_numel(m->tensors[i]);
    st_model_close(m);
    return 0;
}
