// tensor.c: tensor views and the one-allocation tensor table.
#include "01_tensor/tensor.h"

#include <stdarg.h>
#include <string.h>

#include "01_tensor/cuda_util.h"
#include "01_tensor/matmul.h"   // cuda_available

// ----------------------------------------------------------------------------
// Tensor views

Tensor tensor_view(void *data, DType dt, Device dev, int ndim, const int64_t *shape) {
    NM_CHECK(ndim >= 0 && ndim <= NM_MAX_DIMS, "tensor rank %d out of range", ndim);
    Tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = dt;
    t.device = dev;
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    return t;
}

Tensor tensor_f32(float *data, int ndim, ...) {
    int64_t shape[NM_MAX_DIMS];
    NM_CHECK(ndim >= 0 && ndim <= NM_MAX_DIMS, "tensor rank %d out of range", ndim);
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim; i++) shape[i] = va_arg(ap, int64_t);
    va_end(ap);
    return tensor_view(data, DT_F32, DEVICE_CPU, ndim, shape);
}

int64_t tensor_numel(Tensor t) {
    int64_t n = 1;
    for (int i = 0; i < t.ndim; i++) n *= t.shape[i];
    return n;
}

size_t tensor_nbytes(Tensor t) { return (size_t)tensor_numel(t) * dtype_size(t.dtype); }

const char *shape_str(const int64_t *shape, int ndim, char *buf, size_t n) {
    size_t used = 0;
    used += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && used < n; i++) {
        used += (size_t)snprintf(buf + used, n - used, i ? ", %lld" : "%lld", (long long)shape[i]);
    }
    if (used < n) snprintf(buf + used, n - used, "]");
    return buf;
}

bool shape_equal(Tensor a, Tensor b) {
    if (a.ndim != b.ndim) return false;
    for (int i = 0; i < a.ndim; i++)
        if (a.shape[i] != b.shape[i]) return false;
    return true;
}

Tensor tensor_sub(Tensor t, int64_t offset, int ndim, ...) {
    int64_t shape[NM_MAX_DIMS];
    NM_CHECK(ndim >= 0 && ndim <= NM_MAX_DIMS, "tensor rank %d out of range", ndim);
    va_list ap;
    va_start(ap, ndim);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (shape[i] = va_arg(ap, int64_t));
    va_end(ap);
    char b1[96], b2[96];
    NM_CHECK(offset >= 0 && offset + n <= tensor_numel(t), "tensor_sub: %lld elements at %lld (%s) do not fit in %s",
             (long long)n, (long long)offset, shape_str(shape, ndim, b1, sizeof b1),
             shape_str(t.shape, t.ndim, b2, sizeof b2));
    return tensor_view(t.data ? (char *)t.data + (size_t)offset * dtype_size(t.dtype) : NULL, t.dtype, t.device, ndim,
                       shape);
}

// ----------------------------------------------------------------------------
// Moving numbers

void tensor_copy(Tensor dst, Tensor src) {
    NM_CHECK(dst.dtype == src.dtype && tensor_numel(dst) == tensor_numel(src),
             "tensor_copy: %lld %s into %lld %s", (long long)tensor_numel(src), dtype_name(src.dtype),
             (long long)tensor_numel(dst), dtype_name(dst.dtype));
    size_t nb = tensor_nbytes(src);
    if (nb == 0 || dst.data == src.data) return;
    if (dst.device == DEVICE_CPU && src.device == DEVICE_CPU) memcpy(dst.data, src.data, nb);
    else if (dst.device == DEVICE_CUDA && src.device == DEVICE_CUDA) cuda_copy(dst.data, src.data, nb);
    else if (dst.device == DEVICE_CUDA) cuda_upload(dst.data, src.data, nb);
    else cuda_download(dst.data, src.data, nb);
}

void tensor_to_host_f32(float *host, Tensor t) {
    size_t n = (size_t)tensor_numel(t);
    if (t.device == DEVICE_CUDA) {
        cuda_download_f32(host, t.data, n, t.dtype);
        return;
    }
    NM_CHECK(dtype_convert(host, DT_F32, t.data, t.dtype, n) == 0, "tensor_to_host_f32: cannot read %s",
             dtype_name(t.dtype));
}

void tensor_from_host_f32(Tensor t, const float *host) {
    size_t n = (size_t)tensor_numel(t);
    if (t.device == DEVICE_CPU) {
        NM_CHECK(dtype_convert(t.data, t.dtype, host, DT_F32, n) == 0, "tensor_from_host_f32: cannot write %s",
                 dtype_name(t.dtype));
        return;
    }
    // convert on the host, then one copy: the device sees only finished numbers
    void *tmp = xmalloc(n * dtype_size(t.dtype) + 1);
    NM_CHECK(dtype_convert(tmp, t.dtype, host, DT_F32, n) == 0, "tensor_from_host_f32: cannot write %s",
             dtype_name(t.dtype));
    cuda_upload(t.data, tmp, n * dtype_size(t.dtype));
    free(tmp);
}

// ----------------------------------------------------------------------------
// The table

void table_init(Table *t, const char *name) {
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name);
}

int table_add(Table *t, const char *name, DType dt, bool trainable, int ndim, const int64_t *shape) {
    NM_CHECK(t->buffer == NULL, "table '%s': add '%s' after allocation", t->name, name);
    NM_CHECK(ndim >= 0 && ndim <= NM_MAX_DIMS, "table '%s': '%s' has rank %d", t->name, name, ndim);
    NM_CHECK(table_find(t, name) < 0, "table '%s': duplicate entry '%s'", t->name, name);
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->entries = xrealloc(t->entries, (size_t)t->cap * sizeof *t->entries);
    }
    TableEntry *e = &t->entries[t->n];
    memset(e, 0, sizeof *e);
    e->name = xstrdup(name);
    e->dtype = dt;
    e->trainable = trainable;
    e->ndim = ndim;
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        NM_CHECK(shape[i] >= 0, "table '%s': '%s' has a negative size", t->name, name);
        e->shape[i] = shape[i];
        NM_CHECK(shape[i] == 0 || numel <= INT64_MAX / 8 / shape[i], "table '%s': '%s' has more than 2^60 elements",
                 t->name, name);
        numel *= shape[i];
    }
    e->nbytes = (size_t)numel * dtype_size(dt);
    return t->n++;
}

int table_addf(Table *t, DType dt, bool trainable, int ndim, int64_t d0, int64_t d1, const char *fmt, ...) {
    NM_CHECK(ndim >= 0 && ndim <= 2, "table_addf: rank %d (use table_add for rank > 2)", ndim);
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    NM_CHECK(n >= 0 && (size_t)n < sizeof name, "table_addf: name too long");
    int64_t shape[2] = {d0, d1};
    return table_add(t, name, dt, trainable, ndim, shape);
}

void table_alloc(Table *t, Device dev) {
    NM_CHECK(t->buffer == NULL, "table '%s' allocated twice", t->name);
    // Lay entries out in order, each starting on a 64-byte boundary so that
    // vector loads of any tensor are aligned and tensors never share a cache line.
    size_t off = 0;
    for (int i = 0; i < t->n; i++) {
        t->entries[i].offset = off;
        off += (t->entries[i].nbytes + 63) & ~(size_t)63;
    }
    t->nbytes = off;
    t->device = dev;
    if (dev == DEVICE_CUDA) {
        t->buffer = cuda_malloc(off ? off : 256);
        cuda_zero(t->buffer, off ? off : 256);
    } else {
        t->buffer = xcalloc(1, off ? off : 64);
    }
}

void table_mirror(Table *mirror, const Table *host, Device from, Device to, const char *name) {
    if (from == to) return;
    if (from == DEVICE_CUDA) table_free(mirror);
    if (to == DEVICE_CUDA) {
        NM_CHECK(cuda_available(), "--device cuda: no usable GPU (%s)", cuda_unavailable_reason());
        table_to_device(mirror, host, name, DT_BF16, DEVICE_CUDA);
    }
}

size_t table_bytes(const Table *t) {
    size_t off = 0;
    for (int i = 0; i < t->n; i++) off += (t->entries[i].nbytes + 63) & ~(size_t)63;
    return off;
}

void table_to_device(Table *dst, const Table *src, const char *name, DType dt, Device dev) {
    NM_CHECK(src->device == DEVICE_CPU && src->buffer, "table_to_device: '%s' is not an allocated host table",
             src->name);
    table_derive(dst, src, name, dt, false);
    table_alloc(dst, dev);
    for (int i = 0; i < src->n; i++) {
        Tensor s = table_tensor(src, i), d = table_tensor(dst, i);
        if (s.dtype == DT_F32) {
            tensor_from_host_f32(d, s.data);
        } else {
            float *tmp = xmalloc((size_t)tensor_numel(s) * sizeof(float) + 1);
            tensor_to_host_f32(tmp, s);
            tensor_from_host_f32(d, tmp);
            free(tmp);
        }
    }
}

void table_free(Table *t) {
    for (int i = 0; i < t->n; i++) free(t->entries[i].name);
    free(t->entries);
    if (t->device == DEVICE_CUDA) cuda_free(t->buffer);
    else free(t->buffer);
    free(t->name);
    memset(t, 0, sizeof *t);
}

int table_find(const Table *t, const char *name) {
    // A linear scan: tables hold a few hundred entries, looked up at load time only.
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->entries[i].name, name) == 0) return i;
    return -1;
}

Tensor table_tensor(const Table *t, int i) {
    NM_CHECK(i >= 0 && i < t->n, "table '%s': index %d out of range", t->name, i);
    NM_CHECK(t->buffer != NULL, "table '%s' used before allocation", t->name);
    const TableEntry *e = &t->entries[i];
    return tensor_view((char *)t->buffer + e->offset, e->dtype, t->device, e->ndim, e->shape);
}

Tensor table_get(const Table *t, const char *name) {
    int i = table_find(t, name);
    NM_CHECK(i >= 0, "table '%s' has no tensor '%s'", t->name, name);
    return table_tensor(t, i);
}

int64_t table_numel(const Table *t, bool trainable_only) {
    int64_t n = 0;
    for (int i = 0; i < t->n; i++) {
        if (trainable_only && !t->entries[i].trainable) continue;
        int64_t k = 1;
        for (int d = 0; d < t->entries[i].ndim; d++) k *= t->entries[i].shape[d];
        n += k;
    }
    return n;
}

void table_derive(Table *dst, const Table *src, const char *name, DType dt, bool trainable_only) {
    table_init(dst, name);
    for (int i = 0; i < src->n; i++) {
        const TableEntry *e = &src->entries[i];
        if (trainable_only && !e->trainable) continue;
        table_add(dst, e->name, dt, e->trainable, e->ndim, e->shape);
    }
}

const char *bytes_str(double bytes, char *buf, size_t n) {
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024.0 && u < 4) { bytes /= 1024.0; u++; }
    snprintf(buf, n, u ? "%.2f %s" : "%.0f %s", bytes, units[u]);
    return buf;
}

void table_print(const Table *t, FILE *f, bool per_entry) {
    char sb[128], bb[32];
    size_t total = 0;
    for (int i = 0; i < t->n; i++) {
        const TableEntry *e = &t->entries[i];
        total += e->nbytes;
        if (per_entry)
            fprintf(f, "  %-56s %-5s %-22s %12zu%s\n", e->name, dtype_name(e->dtype),
                    shape_str(e->shape, e->ndim, sb, sizeof sb), e->nbytes, e->trainable ? "" : "  (frozen)");
    }
    fprintf(f, "  %s: %d tensors, %lld parameters (%lld trainable), %s\n", t->name, t->n,
            (long long)table_numel(t, false), (long long)table_numel(t, true),
            bytes_str((double)total, bb, sizeof bb));
}
