// tests/fuzz/fuzz_json.c: the JSON reader (01_tensor/json.c) on arbitrary bytes; an
// accepted document is walked whole and read with every typed getter.
#include "01_tensor/json.h"
#include "tests/fuzz/fuzz_util.h"

static double walk(const JsonValue *v, int depth) {
    double s = 0;
    if (!v || depth > 200) return 0;
    if (v->type == JSON_NUMBER) s += v->number;
    if (v->type == JSON_STRING) s += (double)v->len;
    for (size_t i = 0; (v->type == JSON_ARRAY || v->type == JSON_OBJECT) && i < v->len; i++) {
        s += walk(v->items[i], depth + 1);
        if (v->type == JSON_OBJECT) {
            s += (double)json_get_int(v, v->keys[i], 0) + json_get_num(v, v->keys[i], 0) +
                 (double)strlen(json_get_str(v, v->keys[i], ""));
            s += json_get_bool(v, v->keys[i], false);
        }
    }
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    JsonDoc *d = json_parse((const char *)data, size, err, sizeof err);
    if (d) {
        volatile double sink = walk(json_root(d), 0);
        (void)sink;
        json_free(d);
    }
    return 0;
}
