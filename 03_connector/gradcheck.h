// gradcheck.h: is this backward right? Ask the forward, by finite differences.
//
// A backward pass is a claim: "dL/dx_i is this number". The derivative's
// definition gives an independent way to compute the same number, needing
// nothing but the forward:
//
//     dL/dx_i  ~  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)      (central difference)
//
// whose error is O(eps^2) from the curvature plus O(u/eps) from rounding in L
// (u the unit roundoff). In fp32 (u ~ 6e-8) the two cannot both be small: the
// best eps leaves errors near 1e-3 and tells a wrong backward from a right one
// only for gross mistakes. In double (u ~ 1e-16) eps = 1e-6 leaves ~1e-10,
// so any difference we see is the fp32 backward's own rounding (~1e-6)
// or a bug. That is why the checker works in double:
//
//   1. The test writes a *double-precision twin* of the forward it wants to
//      check: a plain, obviously-correct loop nest over doubles (no need to be
//      fast; the sizes are tiny), returning a scalar loss. The usual scalar is
//          L = sum_i w_i out_i
//      for fixed random weights w, whose gradient dL/dout is exactly w: so w
//      is the upstream gradient the fp32 backward is run with.
//   2. The fp32 backward runs once on the same numbers (converted to float)
//      and produces the analytic gradients.
//   3. gradcheck() perturbs each double input in place, calls the twin twice,
//      and compares. It prints one PASS/FAIL line (check.h) with the max
//      relative error and where it happened.
//
// Comparing a float op with its double twin's *forward* (gc_compare) is the
// other half: it shows that the twin and the op compute the same function, so
// the finite differences are really about the op.
//
// How a later chapter uses it (e.g. RMSNorm in chapter 04):
//
//     typedef struct { int N, C; double *x, *w, *dout; } RmsCase;
//     static double rms_loss(void *p) {            // the double twin + sum(dout * out)
//         RmsCase *k = p; double L = 0; ... return L;
//     }
//     ... run rmsnorm_forward_cpu/backward in float with dout as the upstream grad
//         into float dx[], dw[] (zeroed first) ...
//     gradcheck("rmsnorm dx", rms_loss, &k, k.x, N*C, dx, 1e-6, 1e-4);
//     gradcheck("rmsnorm dw", rms_loss, &k, k.w, C,   dw, 1e-6, 1e-4);
//
// The loss callback reads every input through the context, so one callback
// serves all the gradients of an op. Keep sizes tiny: each element costs two
// forward evaluations (or check a strided sample with gradcheck_sampled).
//
// What it does not do: second derivatives, automatic twins (C has no
// templates; the twin is hand-written, which is also the point: two
// independent writings of the same maths).
#ifndef NM_GRADCHECK_H
#define NM_GRADCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Scalar loss computed in double from inputs the callback reaches through ctx.
typedef double (*GcLossFn)(void *ctx);

typedef struct {
    double max_abs;     // max |numeric - analytic|
    double max_rel;     // max of that over max(|numeric|, |analytic|, floor)
    size_t worst;       // index of the element with max_rel
    size_t checked;     // elements checked
} GcResult;

// Checks analytic (n floats) against central differences of loss(ctx) with
// respect to x[0..n) (perturbed in place and restored exactly). The relative
// error's denominator has a floor of 1e-3 times the largest gradient in
// magnitude, so near-zero entries are judged on an absolute scale.
// Prints "PASS/FAIL gradcheck <name> ..." and returns true on pass.
bool gradcheck(const char *name, GcLossFn loss, void *ctx, double *x, size_t n, const float *analytic, double eps,
               double tol);
// Same, checking at most max_checks elements spread evenly over x (for bigger
// tensors in end-to-end checks).
bool gradcheck_sampled(const char *name, GcLossFn loss, void *ctx, double *x, size_t n, const float *analytic,
                       double eps, double tol, size_t max_checks);
// The numbers behind the verdict, without printing.
GcResult gradcheck_measure(GcLossFn loss, void *ctx, double *x, size_t n, const float *analytic, double eps,
                           size_t stride);

// Compares a float result with its double twin (max relative error, same
// floor rule); prints a PASS/FAIL line.
bool gc_compare(const char *name, const float *got, const double *want, size_t n, double tol);

// Helpers for building cases: random doubles (deterministic, and exactly
// representable as floats, so both sides start from the same numbers), conversions.
void gc_fill(double *x, size_t n, uint64_t seed, double lo, double hi);
void gc_to_float(float *dst, const double *src, size_t n);
void gc_to_double(double *dst, const float *src, size_t n);
// sum_i w_i y_i: the usual scalar loss, L = <w, y>, so that dL/dy = w.
double gc_dot(const double *w, const double *y, size_t n);

#endif
