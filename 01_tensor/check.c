// check.c: max-error comparisons against a reference, and the tolerance table.
#include "01_tensor/check.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

// The one table. fp32 GEMMs of length K accumulate rounding error that grows
// roughly like sqrt(K) * 2^-24 relative to the magnitudes summed, so "exactly
// like PyTorch" in fp32 means agreeing to about 1e-5 relative, not bitwise:
// PyTorch's BLAS and ours add the same products in a different order.
const Tolerance TOLERANCES[TOL_COUNT] = {
    [TOL_EXACT]    = {"exact",    0.0,  0.0},
    [TOL_F32]      = {"f32",      1e-5, 1e-5},
    [TOL_F32_DEEP] = {"f32-deep", 1e-4, 1e-4},
    [TOL_GRAD]     = {"grad",     1e-4, 1e-4},
    [TOL_BF16]     = {"bf16",     2e-2, 2e-2},
    [TOL_BF16_DEEP] = {"bf16-deep", 5e-2, 5e-2},
};

int check_passed = 0, check_failed = 0;

static bool record(bool ok) {
    if (ok) check_passed++; else check_failed++;
    return ok;
}

bool check_f32(const char *name, const float *got, const float *want, size_t n, TolClass tol) {
    const Tolerance *t = &TOLERANCES[tol];
    double max_abs = 0.0, max_rel = 0.0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        if (isnan(g) || isnan(w)) {
            if (!(isnan(g) && isnan(w))) { if (!bad++) first_bad = i; }
            continue;
        }
        if (isinf(g) || isinf(w)) {
            if (g != w) { if (!bad++) first_bad = i; }
            continue;
        }
        double a = fabs(g - w);
        double r = a / (fabs(w) > 1e-30 ? fabs(w) : 1e-30);
        if (a > max_abs) max_abs = a;
        if (a > 1e-12 && r > max_rel) max_rel = r; // ignore rel error of exact near-zeros
        if (a > t->atol + t->rtol * fabs(w)) { if (!bad++) first_bad = i; }
    }
    bool ok = bad == 0;
    printf("%s %-48s n=%-9zu max_abs=%.3e max_rel=%.3e tol=%s", ok ? "PASS" : "FAIL", name, n,
           max_abs, max_rel, t->name);
    if (!ok) printf(" bad=%zu first=[%zu] got=%.9g want=%.9g", bad, first_bad,
                    (double)got[first_bad], (double)want[first_bad]);
    printf("\n");
    return record(ok);
}

bool check_bytes(const char *name, const void *got, const void *want, size_t n) {
    const unsigned char *g = got, *w = want;
    size_t i = 0;
    while (i < n && g[i] == w[i]) i++;
    bool ok = i == n;
    if (ok) printf("PASS %-48s %zu bytes identical\n", name, n);
    else printf("FAIL %-48s first difference at byte %zu of %zu (got 0x%02x want 0x%02x)\n", name, i, n,
                g[i], w[i]);
    return record(ok);
}

bool check_true(const char *name, bool ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s %-48s ", ok ? "PASS" : "FAIL", name);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    return record(ok);
}

int check_summary(const char *program) {
    printf("# %s: %d passed, %d failed\n", program, check_passed, check_failed);
    fflush(stdout);
    return check_failed ? 1 : 0;
}
