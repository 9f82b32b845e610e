// common.c: failing, allocating, reading whole files, numbers from the
// command line, and the run context.
#define _GNU_SOURCE
#include "01_tensor/common.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

RunContext nm_ctx = {DEVICE_CPU, 0, 1337};
void (*nm_fail_hook)(void) = NULL;

void fail_input(const char *what, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: %s: ", what);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    if (nm_fail_hook) nm_fail_hook();
    exit(1);
}

int set_error(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

void *xmalloc(size_t n) {
    void *p = NULL;
    // aligned_alloc wants a size that is a multiple of the alignment
    size_t rounded = (n + 63) & ~(size_t)63;
    if (rounded == 0) rounded = 64;
    p = aligned_alloc(64, rounded);
    NM_CHECK(p != NULL, "out of memory allocating %zu bytes", n);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    NM_CHECK(size == 0 || count <= SIZE_MAX / size, "allocation size overflow");
    void *p = xmalloc(count * size);
    memset(p, 0, count * size);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    NM_CHECK(q != NULL, "out of memory reallocating %zu bytes", n);
    return q;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = xmalloc(n);
    memcpy(d, s, n);
    return d;
}

char *xsprintf(const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    NM_CHECK(n >= 0, "bad format string");
    char *s = xmalloc((size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return s;
}

char *read_file(const char *path, size_t *len, const char **err) {
    // O_NONBLOCK: opening a FIFO for reading waits for a writer, forever if none
    // comes; without the wait, the check below refuses it. A regular file reads the
    // same either way.
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) { *err = strerror(errno); return NULL; }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        *err = "not a regular file";
        return NULL;
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) { close(fd); *err = strerror(errno); return NULL; }
    size_t n = (size_t)st.st_size;
    char *buf = xmalloc(n + 1);
    if (n > 0 && fread(buf, 1, n, f) != n) {
        fclose(f);
        free(buf);
        *err = "short read";
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

int write_file_atomic(const char *path, const void *data, size_t len) {
    char *tmp = xsprintf("%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { free(tmp); return -1; }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno; close(fd); unlink(tmp); free(tmp); errno = e;
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno; unlink(tmp); free(tmp); errno = e;
        return -1;
    }
    free(tmp);
    return 0;
}

// ----------------------------------------------------------------------------
// Numbers from the command line
//
// strtol and atoi are the usual tools and the usual trap: atoi("abc") is 0,
// strtol skips leading spaces, accepts "12abc" unless the caller checks the end
// pointer, and signals overflow only through errno. So the digits are read
// here, by hand: the sign, then every character a digit, each step checked
// against overflow before it is taken. The magnitude is kept unsigned, which
// holds every int64 and every uint64 alike; the signed and the unsigned forms
// below are two range checks on the one reading.

// S as '-'? digits, to its end: the sign and the magnitude. False on anything
// else (empty, a space, '+', trailing junk) and on a magnitude past 2^64 - 1.
static bool read_whole(const char *s, bool *neg, uint64_t *mag) {
    *neg = *s == '-';
    if (*neg) s++;
    if (!*s) return false;
    uint64_t m = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return false;
        unsigned d = (unsigned)(*s - '0');
        if (m > (UINT64_MAX - d) / 10) return false;
        m = m * 10 + d;
    }
    *mag = m;
    return true;
}

bool parse_whole(const char *s, int64_t lo, int64_t hi, int64_t *v) {
    bool neg;
    uint64_t m;
    if (!read_whole(s, &neg, &m)) return false;
    // |INT64_MIN| is one more than INT64_MAX, hence the two limits
    if (neg ? m > (uint64_t)INT64_MAX + 1 : m > (uint64_t)INT64_MAX) return false;
    int64_t x = neg ? (m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m) : (int64_t)m;
    if (x < lo || x > hi) return false;
    *v = x;
    return true;
}

bool parse_whole_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *v) {
    bool neg;
    uint64_t m;
    // "-0" is zero, but a minus sign in front of a count or a seed is a mistake
    if (!read_whole(s, &neg, &m) || neg || m < lo || m > hi) return false;
    *v = m;
    return true;
}

// Real numbers are strtod's (decimal, exponent, hex floats), with the end
// pointer and errno checked; "nan" and "inf" are refused by the range, since
// NaN compares false with everything and no flag's range is infinite.
bool parse_real(const char *s, double lo, double hi, double *v) {
    if (!*s || isspace((unsigned char)*s)) return false;
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (*end || errno == ERANGE || !isfinite(x) || !(x >= lo && x <= hi)) return false;
    *v = x;
    return true;
}

int parse_int_arg(const char *what, const char *s, int lo, int hi) {
    int64_t v;
    if (!parse_whole(s, lo, hi, &v)) fail_input(what, "'%s' is not a whole number in %d..%d", s, lo, hi);
    return (int)v;
}

uint64_t parse_u64_arg(const char *what, const char *s, uint64_t lo, uint64_t hi) {
    uint64_t v;
    if (!parse_whole_u64(s, lo, hi, &v))
        fail_input(what, "'%s' is not a whole number in %llu..%llu", s, (unsigned long long)lo, (unsigned long long)hi);
    return v;
}

double parse_real_arg(const char *what, const char *s, double lo, double hi) {
    double v;
    if (!parse_real(s, lo, hi, &v)) fail_input(what, "'%s' is not a number in [%g, %g]", s, lo, hi);
    return v;
}

int parse_threads_arg(const char *s) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return parse_int_arg("--threads", s, 1, 4 * (int)(cores > 0 && cores < 4096 ? cores : 1));
}

// ----------------------------------------------------------------------------
// The run context

const char *device_name(Device d) { return d == DEVICE_CUDA ? "cuda" : "cpu"; }

Device device_parse(const char *s) {
    if (strcmp(s, "cpu") == 0) return DEVICE_CPU;
    if (strcmp(s, "cuda") == 0) return DEVICE_CUDA;
    fail_input("--device", "unknown device '%s' (expected cpu or cuda)", s);
}

Device device_select(const char *arg, const char *command, bool has_cuda, bool gpu_present) {
    Device d = arg ? device_parse(arg) : has_cuda && gpu_present ? DEVICE_CUDA : DEVICE_CPU;
    if (d == DEVICE_CUDA && !has_cuda)
        fail_input("--device", "'%s' runs on the CPU in this build (cuda is not available for it)", command);
    if (d == DEVICE_CUDA && !gpu_present)
        fail_input("--device", "cuda: no usable GPU in this machine or this build (use --device cpu)");
    nm_ctx.device = d;
    return d;
}

void ctx_apply_threads(void) {
#ifdef _OPENMP
    if (nm_ctx.threads > 0) omp_set_num_threads(nm_ctx.threads);
#endif
}

int ctx_num_threads(void) {
#ifdef _OPENMP
    return nm_ctx.threads > 0 ? nm_ctx.threads : omp_get_max_threads();
#else
    return 1;
#endif
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
