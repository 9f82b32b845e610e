// common.c: failing, allocating, reading whole files, and the run context.
#define _GNU_SOURCE
#include "01_tensor/common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

RunContext nm_ctx = {DEVICE_CPU, 0, 1337};

void fail_input(const char *what, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "error: %s: ", what);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
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
    FILE *f = fopen(path, "rb");
    if (!f) { *err = strerror(errno); return NULL; }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        *err = "not a regular file";
        return NULL;
    }
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

const char *device_name(Device d) { return d == DEVICE_CUDA ? "cuda" : "cpu"; }

Device device_parse(const char *s) {
    if (strcmp(s, "cpu") == 0) return DEVICE_CPU;
    if (strcmp(s, "cuda") == 0) return DEVICE_CUDA;
    fail_input("--device", "unknown device '%s' (expected cpu or cuda)", s);
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
