// tests/fuzz/fuzz_config.c: a stage config (05_training/config.c, `key = value`
// lines, the --set overrides and every checkpoint's train.conf) from arbitrary
// text; an accepted one is written out and must read back to the same values.
#include "05_training/config.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_text(data, size);
    TrainConfig c, back;
    char err[512], diff[2048];
    config_defaults(&c);
    if (config_parse(&c, text, err, sizeof err) == 0) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        config_write(&c, f);
        fclose(f);
        config_defaults(&back);
        if (config_parse(&back, buf, err, sizeof err) != 0) abort();
        config_diff(&c, &back, diff, sizeof diff);
        if (diff[0]) abort();
        free(buf);
    }
    free(text);
    return 0;
}
