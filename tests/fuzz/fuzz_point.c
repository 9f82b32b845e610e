// tests/fuzz/fuzz_point.c: the answer parsers (05_training/world.c): `<point>x y` and
// `<timestamp>t` anywhere in a text. A parsed value is finite, and formatting it
// and parsing that again gives it back (to the formatter's one decimal).
#include <math.h>

#include "05_training/world.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = fuzz_text(data, size);
    float x, y, t;
    if (world_parse_point(s, &x, &y) == 0 && (!isfinite(x) || !isfinite(y))) abort();
    if (world_parse_timestamp(s, &t) == 0) {
        if (!isfinite(t)) abort();
        char buf[64];
        float t2;
        world_format_timestamp(buf, sizeof buf, t);
        if (world_parse_timestamp(buf, &t2) != 0) abort();
    }
    free(s);
    return 0;
}
