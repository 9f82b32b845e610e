// tests/fuzz/fuzz_tokenizer_load.c: tok_load (04_qwen/tokenizer.c) on an arbitrary
// tokenizer.json; a file it accepts is then used: a short text encoded and
// decoded, every id's string read.
#include "04_qwen/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512];
    Tokenizer *t = tok_load(fuzz_file("tokenizer.json", data, size), err, sizeof err);
    if (!t) return 0;
    static const char text[] = "Hello, w\xc3\xb6rld! <|im_end|> 123  \n\xe4\xbd\xa0\xff";
    int32_t *ids = NULL;
    int n = tok_encode(t, text, sizeof text - 1, &ids, true);
    char *back = tok_decode(t, ids, n, false);
    free(back);
    free(ids);
    volatile size_t sink = 0;
    for (int i = 0; i < tok_vocab_size(t); i++) {
        const char *s = tok_id_to_str(t, i);
        if (s) sink += strlen(s);
    }
    tok_free(t);
    return 0;
}
