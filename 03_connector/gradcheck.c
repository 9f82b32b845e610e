// gradcheck.c: central differences in double against an fp32 backward.
// See gradcheck.h for why and how. Letters: n elements checked.
#include "03_connector/gradcheck.h"

#include <math.h>

#include "01_tensor/check.h"
#include "01_tensor/common.h"
#include "01_tensor/rng.h"

GcResult gradcheck_measure(GcLossFn loss, void *ctx, double *x, size_t n, const float *analytic, double eps,
                           size_t stride) {
    GcResult r = {0, 0, 0, 0};
    if (stride == 0) stride = 1;
    // First pass: the numeric gradient of every checked element.
    size_t m = (n + stride - 1) / stride;
    double *num = xmalloc((m ? m : 1) * sizeof(double));   // (m,)
    double scale = 0.0;
    for (size_t k = 0, i = 0; i < n; i += stride, k++) {
        const double x0 = x[i];
        x[i] = x0 + eps;
        const double lp = loss(ctx);
        x[i] = x0 - eps;
        const double lm = loss(ctx);
        x[i] = x0;   // restored bit for bit
        num[k] = (lp - lm) / (2.0 * eps);
        scale = fmax(scale, fmax(fabs(num[k]), fabs((double)analytic[i])));
    }
    // Second pass: compare, with a floor on the denominator so that an entry
    // whose true gradient is ~0 is judged against the tensor's scale.
    const double floor = fmax(1e-3 * scale, 1e-12);
    for (size_t k = 0, i = 0; i < n; i += stride, k++) {
        const double a = analytic[i];
        const double diff = fabs(num[k] - a);
        const double rel = diff / fmax(fmax(fabs(num[k]), fabs(a)), floor);
        if (diff > r.max_abs) r.max_abs = diff;
        if (rel > r.max_rel) {
            r.max_rel = rel;
            r.worst = i;
        }
        r.checked++;
    }
    free(num);
    return r;
}

static bool report(const char *name, GcResult r, size_t n, double tol) {
    return check_true(name, r.max_rel <= tol && isfinite(r.max_rel),
                      "max rel %.2e (tol %.0e) max abs %.2e at [%zu], %zu of %zu checked", r.max_rel, tol,
                      r.max_abs, r.worst, r.checked, n);
}

bool gradcheck(const char *name, GcLossFn loss, void *ctx, double *x, size_t n, const float *analytic, double eps,
               double tol) {
    char label[160];
    snprintf(label, sizeof label, "gradcheck %s", name);
    return report(label, gradcheck_measure(loss, ctx, x, n, analytic, eps, 1), n, tol);
}

bool gradcheck_sampled(const char *name, GcLossFn loss, void *ctx, double *x, size_t n, const float *analytic,
                       double eps, double tol, size_t max_checks) {
    size_t stride = max_checks && n > max_checks ? (n + max_checks - 1) / max_checks : 1;
    // an odd stride walks through rows and columns instead of down one column
    if (stride > 1 && stride % 2 == 0) stride++;
    char label[160];
    snprintf(label, sizeof label, "gradcheck %s", name);
    return report(label, gradcheck_measure(loss, ctx, x, n, analytic, eps, stride), n, tol);
}

bool gc_compare(const char *name, const float *got, const double *want, size_t n, double tol) {
    double scale = 0.0, max_rel = 0.0, max_abs = 0.0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    const double floor = fmax(1e-3 * scale, 1e-12);
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        max_abs = fmax(max_abs, d);
        max_rel = fmax(max_rel, d / fmax(fabs(want[i]), floor));
    }
    char label[160];
    snprintf(label, sizeof label, "twin %s", name);
    return check_true(label, max_rel <= tol, "float vs double forward: max rel %.2e (tol %.0e) max abs %.2e over %zu",
                      max_rel, tol, max_abs, n);
}

void gc_fill(double *x, size_t n, uint64_t seed, double lo, double hi) {
    Rng r;
    rng_seed(&r, seed, 7);
    // rounded to float, so that the float op and its double twin see the same numbers
    for (size_t i = 0; i < n; i++) x[i] = (double)(float)(lo + (hi - lo) * (double)rng_uniform(&r));
}

void gc_to_float(float *dst, const double *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
}

void gc_to_double(double *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = src[i];
}

double gc_dot(const double *w, const double *y, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += w[i] * y[i];
    return s;
}
