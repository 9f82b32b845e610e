// common.h: the few helpers every file of the project leans on.
//
// Four things live here, and nothing else:
//   1. How we fail. A library call that can go wrong is wrapped in a macro that
//      prints `file:line` and the cause, then exits. Bad *user input* (a missing
//      file, a malformed header) is reported differently, with `fail_input()`:
//      one line, `error: PATH: reason`, because the reader of that message is a
//      user, not a developer, and the line number of our C code means nothing
//      to them.
//   2. Checked allocation (`xmalloc`, `xcalloc`, `xrealloc`, `xstrdup`).
//   3. Numbers typed by a user: one strict reader for every flag of every
//      `run`, and for the values of a config file.
//   4. The run context: the one piece of global mutable state the project
//      allows (device, thread count, seed), so that every op can ask "where do
//      I run?" without threading a parameter through every call, and the one
//      place `--device` is decided.
//
// What it does not do: logging frameworks, error codes threaded through the
// stack. A C program that reads a corrupt file has nothing better to do than
// to say so clearly and stop; libraries that must survive bad input (the
// safetensors reader under a fuzzer) return an error string instead.
#ifndef NM_COMMON_H
#define NM_COMMON_H

#include <stdbool.h>
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
// For a fuzzer driving readers that stop with fail_input: when set, fail_input
// calls it (after printing) instead of exit; it must not return (a longjmp back
// into the harness). NULL in every program.
extern void (*nm_fail_hook)(void);

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
// Anything but a regular file (a directory, a FIFO, a device) is refused
// without blocking.
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
// Numbers from the command line
//
// A number a user types is the whole string: an optional '-' and decimal
// digits for a whole number, what strtod reads for a real one; no spaces, no
// trailing junk, no overflow, inside the range the flag allows. `--threads abc`,
// `--steps 5x`, `--steps ''` and `--seed 99999999999999999999` are all the same
// mistake and get the same answer, one line and exit status 1:
//
//     error: --threads: 'abc' is not a whole number in 1..4096
//
// WHAT names the input (the flag, or "token id" for a positional argument).

int parse_int_arg(const char *what, const char *s, int lo, int hi);
uint64_t parse_u64_arg(const char *what, const char *s, uint64_t lo, uint64_t hi);
double parse_real_arg(const char *what, const char *s, double lo, double hi);
// --threads: a whole number from 1 to 4 per core of this machine (more only
// oversubscribes the cores, and thousands overflow the OpenMP runtime's stacks).
int parse_threads_arg(const char *s);

// The same checks without the exit, for a reader that words its own message
// (a config file names the line): true, and *v set, when S is a number in [lo, hi].
bool parse_whole(const char *s, int64_t lo, int64_t hi, int64_t *v);
bool parse_whole_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *v);
bool parse_real(const char *s, double lo, double hi, double *v);

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
// The device a command runs on, set in nm_ctx.device and returned; every
// `run` decides `--device` here. ARG is the flag's value (NULL when it was not
// given), COMMAND the command's name for the messages, HAS_CUDA whether that
// command has a CUDA path, GPU_PRESENT what cuda_available() (matmul.h) says;
// the caller asks it, so that this file, which the fuzzer links alone, needs
// no CUDA. Without the flag: cuda when the command has a CUDA path and a GPU is
// there, else cpu. `--device cuda` for a command without a CUDA path, or with
// no GPU, is a one-line error.
Device device_select(const char *arg, const char *command, bool has_cuda, bool gpu_present);
// Applies nm_ctx.threads to OpenMP (no-op in a build without OpenMP).
void ctx_apply_threads(void);
// Number of threads CPU ops will use.
int ctx_num_threads(void);

// Wall-clock seconds since an arbitrary start (monotonic).
double now_seconds(void);

#endif
