// common.h: the few helpers every file of the project leans on.
//
// Three things live here, and nothing else:
//   1. How we fail. A library call that can go wrong is wrapped in a macro that
//      prints `file:line` and the cause, then exits. Bad *user input* (a missing
//      file, a malformed header) is reported differently, with `fail_input()`:
//      one line, `error: PATH: reason`, because the reader of that message is a
//      user, not a developer, and the line number of our C code means nothing
//      to them.
//   2. Checked allocation (`xmalloc`, `xcalloc`, `xrealloc`, `xstrdup`).
//   3. The run context: the one piece of global mutable state the project
//      allows (device, thread count, seed), so that every op can ask "where do
//      I run?" without threading a parameter through every call.
//
// What it does not do: logging frameworks, error codes threaded through the
// stack. A C program that reads a corrupt file has nothing better to do than
// to say so clearly and stop; libraries that must survive bad input (the
// safetensors reader under a fuzzer) return an error string instead.
#ifndef NM_COMMON_H
#define NM_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// ----------------------------------------------------------------------------
// Failing loudly

// Internal errors: something the program itself got wrong, or the OS refused.
#define NM_DIE(...)                                                            \
    do {                                                                       \
        fprintf(stderr, "error: %s:%d: ", __FILE__, __LINE__);                 \
        fprintf(stderr, __VA_ARGS__);                                          \
        fprintf(stderr, "\n");                                                 \
        exit(1);                                                               \
    } while (0)

// CHECK(cond, fmt, ...): an assertion that survives -DNDEBUG and says why.
#define NM_CHECK(cond, ...)                                                    \
    do {                                                                       \
        if (!(cond)) NM_DIE(__VA_ARGS__);                                      \
    } while (0)

// Bad user input: one line naming the input and the problem, exit code 1.
void fail_input(const char *what, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

// Library code that must survive bad input (readers a fuzzer drives) does not
// exit: it writes a reason into the caller's `err` buffer and returns -1, and
// the caller adds the path and decides. This is that one-liner.
int set_error(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// ----------------------------------------------------------------------------
// Checked allocation. 64-byte alignment for every buffer, so that a row of 16
// floats is one cache line and one AVX-512 register.

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xsprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Whole-file read (NUL-terminated for text convenience). Returns NULL and sets
// *err (a static string) on failure instead of exiting, so callers decide.
char *read_file(const char *path, size_t *len, const char **err);

// Atomic whole-file write: write to PATH.tmp.PID, fsync, rename over PATH.
// A crash half-way leaves the old file (or nothing), never a torn one.
// Returns 0 on success, -1 with errno set.
int write_file_atomic(const char *path, const void *data, size_t len);

// OpenMP pragmas written as NM_OMP(parallel for) so that a build without
// OpenMP sees nothing at all (a bare `#pragma omp` would warn, and we build
// with -Werror).
#define NM_STR_(x) #x
#ifdef _OPENMP
#define NM_OMP(...) _Pragma(NM_STR_(omp __VA_ARGS__))
#else
#define NM_OMP(...)
#endif

// ----------------------------------------------------------------------------
// The run context

typedef enum { DEVICE_CPU = 0, DEVICE_CUDA = 1 } Device;

typedef struct {
    Device device;    // where ops run by default
    int threads;      // OpenMP threads for CPU ops (0 = OpenMP's default)
    uint64_t seed;    // base seed for every RNG of the run
} RunContext;

extern RunContext nm_ctx;

const char *device_name(Device d);
// Parses "cpu" / "cuda"; exits with a clear message on anything else.
Device device_parse(const char *s);
// Applies nm_ctx.threads to OpenMP (no-op in a build without OpenMP).
void ctx_apply_threads(void);
// Number of threads CPU ops will use.
int ctx_num_threads(void);

// Wall-clock seconds since an arbitrary start (monotonic).
double now_seconds(void);

#endif
