// tests/fuzz/fuzz_util.h: what the libFuzzer targets share.
//
// Each target is one parser of user input fed arbitrary bytes; the property is
// the one every reader of the project promises: an error or a valid result,
// and never an out-of-bounds access, a leak, undefined behaviour (ASan and UBSan
// are on), a hang or a crash. Readers that take a path get the bytes through a
// file in a private temporary folder; readers that stop with fail_input (the
// trainer's) come back through nm_fail_hook and a longjmp.
#ifndef NM_FUZZ_UTIL_H
#define NM_FUZZ_UTIL_H

#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "01_tensor/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

// a folder of this process, made once
static const char *fuzz_dir(void) {
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/nm_fuzz.XXXXXX");
        if (!mkdtemp(dir)) abort();
    }
    return dir;
}

// writes the input to fuzz_dir()/NAME and returns that path (static storage)
static const char *fuzz_file(const char *name, const uint8_t *data, size_t size) {
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) abort();
    return path;
}

// a NUL-terminated copy of the input (malloc'd)
static char *fuzz_text(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}

// fail_input comes back here instead of exiting
static jmp_buf fuzz_jmp;
static void fuzz_fail_hook(void) { longjmp(fuzz_jmp, 1); }

#endif
