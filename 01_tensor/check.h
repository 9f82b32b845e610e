// check.h: comparing our numbers with a reference, and counting what passed.
//
// Every claim of correctness in this project comes down to one comparison:
// a tensor we computed against the same tensor computed by an independent
// implementation (PyTorch/transformers for C, the C oracle for CUDA). This
// file is that comparison, with the *one* table of tolerances the project
// uses, so that "how close is close enough" is decided in one place.
//
// An element passes when   |got - want| <= atol + rtol * |want|
// (numpy's allclose rule). We print the max absolute and max relative error of
// every tensor, pass or fail, because a check that only says "ok" hides how
// close it came to failing.
//
// Output protocol, shared by every test program: one line per check,
//     PASS <name> ...details...
//     FAIL <name> ...details...
// and tests/run.sh counts the lines. A program's exit code is non-zero when
// any of its checks failed.
#ifndef NM_CHECK_H
#define NM_CHECK_H

#include <stdbool.h>
#include <stddef.h>

// The tolerance classes. Pick the one that describes *how* the two sides
// computed the tensor, not the one that happens to pass.
typedef enum {
    TOL_EXACT = 0,   // bit-identical (conversions, file round trips)
    TOL_F32,         // fp32 vs fp32, same algorithm, different summation order
    TOL_F32_DEEP,    // fp32 through many layers (whole models, long reductions)
    TOL_GRAD,        // fp32 gradients (one more chain of reductions)
    TOL_BF16,        // bf16 storage with fp32 accumulation vs the fp32 oracle
    TOL_BF16_DEEP,   // bf16 activations through a whole forward and backward (a training step's gradients)
    TOL_COUNT
} TolClass;

typedef struct { const char *name; double atol, rtol; } Tolerance;
extern const Tolerance TOLERANCES[TOL_COUNT];

// Compares n floats; prints a PASS/FAIL line; returns true on pass.
// NaNs must match positions (NaN == NaN counts as equal here).
bool check_f32(const char *name, const float *got, const float *want, size_t n, TolClass tol);
// Compares raw bytes; prints a PASS/FAIL line with the first differing offset.
bool check_bytes(const char *name, const void *got, const void *want, size_t n);
// A plain boolean check with a message (printed on failure and success).
bool check_true(const char *name, bool ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// Counts of this process's checks, for a summary and the exit code.
extern int check_passed, check_failed;
// Prints "N passed, N failed" for this program and returns its exit code.
int check_summary(const char *program);

#endif
