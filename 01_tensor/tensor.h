// tensor.h: a tensor is a pointer with a shape; a model is a table of them.
//
// Two ideas carry the whole project, and this file holds both.
//
// **Tensor.** A small value type: where the numbers are (`data`, `device`),
// what they are (`dtype`), and how they are arranged (`ndim`, `shape`). Every
// tensor we compute with is contiguous and row-major, like a C array
// `float x[B][T][C]`, so we keep no strides: element (b,t,c) lives at
// `((b*T)+t)*C+c`. The Tensor never owns memory; whoever allocated the buffer
// frees it. Passing a Tensor by value costs a few words and lets every op check
// the shapes it is given.
//
// **Table.** Every model (the ViT, the connector, Qwen, the optimizer state)
// is described *once* by a table: for each tensor its name (HuggingFace's
// state-dict name where one exists, so loading is a lookup), shape, dtype and
// whether it is trainable. From that one list we derive everything else:
//   - allocation: one contiguous buffer for the whole table (llm.c style): one
//     malloc, no fragmentation, and "copy all params to the GPU" is one memcpy;
//   - loading a checkpoint by name, with dtype conversion;
//   - writing a checkpoint;
//   - the gradient table (same entries, trainable only) and AdamW's m and v;
//   - the memory report every `run --mem` prints.
// Nothing lists a model's tensors twice.
//
// Letters used for shapes in comments across the project:
//   B batch, T tokens (sequence), C channels (model width), NH heads,
//   HD head dim, V vocabulary, L layers, M,K,N the three sizes of a matmul.
#ifndef NM_TENSOR_H
#define NM_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "01_tensor/common.h"
#include "01_tensor/dtype.h"

#define NM_MAX_DIMS 8

typedef struct {
    void *data;
    DType dtype;
    Device device;
    int ndim;
    int64_t shape[NM_MAX_DIMS];
} Tensor;

// Builds a tensor view over existing memory. `ndim` sizes follow.
Tensor tensor_view(void *data, DType dt, Device dev, int ndim, const int64_t *shape);
// Convenience for the common cases (CPU, F32).
Tensor tensor_f32(float *data, int ndim, ...);
int64_t tensor_numel(Tensor t);
size_t tensor_nbytes(Tensor t);
// "[2, 3, 4]" into buf (for messages).
const char *shape_str(const int64_t *shape, int ndim, char *buf, size_t n);
bool shape_equal(Tensor a, Tensor b);
// A view of part of t with another shape: the elements offset .. offset+numel
// of t's memory, read as `ndim` sizes (int64_t) that follow. It must lie inside
// t. The model code keeps each activation at the largest size it was planned
// for and computes on a view of the size of the call: tensor_sub(t, 0, 2, BT, C).
Tensor tensor_sub(Tensor t, int64_t offset, int ndim, ...);

// ---- moving numbers between tensors and devices --------------------------------
// dst = src, elementwise; same numel, same dtype, either device on either side.
void tensor_copy(Tensor dst, Tensor src);
// host (numel) = t as f32, wherever t lives and whatever its float dtype.
void tensor_to_host_f32(float *host, Tensor t);
// t = host (numel) f32, converted to t's dtype and copied to t's device.
void tensor_from_host_f32(Tensor t, const float *host);

// ----------------------------------------------------------------------------
// The tensor table

typedef struct {
    char *name;              // HF state-dict name, e.g. "model.layers.0.mlp.up_proj.weight"
    DType dtype;
    int ndim;
    int64_t shape[NM_MAX_DIMS];
    bool trainable;
    size_t offset;           // byte offset of this tensor in the table's buffer
    size_t nbytes;
} TableEntry;

typedef struct {
    char *name;              // what the table describes, e.g. "qwen3 params" (for reports)
    TableEntry *entries;
    int n, cap;
    void *buffer;            // one allocation for all entries (NULL until table_alloc)
    size_t nbytes;           // total size, each entry's start aligned to 64 bytes
    Device device;
} Table;

void table_init(Table *t, const char *name);
// Adds an entry (before allocation). Returns its index. Names must be unique.
int table_add(Table *t, const char *name, DType dt, bool trainable, int ndim, const int64_t *shape);
// table_add for the common case of a rank-0..2 entry whose name is built with
// printf, e.g. table_addf(t, DT_F32, true, 2, C, C, "model.layers.%d.self_attn.q_proj.weight", l).
int table_addf(Table *t, DType dt, bool trainable, int ndim, int64_t d0, int64_t d1, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
// Allocates the single buffer, zero-filled, and fixes every entry's offset:
// host memory for DEVICE_CPU, device memory (cudaMalloc) for DEVICE_CUDA.
void table_alloc(Table *t, Device dev);
void table_free(Table *t);
// Index of `name`, or -1.
int table_find(const Table *t, const char *name);
// The entry as a Tensor view (the table must be allocated).
Tensor table_tensor(const Table *t, int i);
// Like table_find + table_tensor, dying with a clear message if absent.
Tensor table_get(const Table *t, const char *name);
int64_t table_numel(const Table *t, bool trainable_only);

// A derived table: the same entries (only the trainable ones if asked), with
// another dtype, e.g. the fp32 gradients or AdamW moments of a param table.
void table_derive(Table *dst, const Table *src, const char *name, DType dt, bool trainable_only);

// A table on another device, or in another dtype: dst is derived from src
// (every entry, in dtype dt), allocated on dev, and filled with src's numbers,
// converted. How a model's fp32 parameters become its bf16 weights on a GPU.
void table_to_device(Table *dst, const Table *src, const char *name, DType dt, Device dev);
// The copy of a host table that a forward computes with on device `to`: none
// on the CPU (the host table is it), a bf16 table_to_device copy on cuda (which
// must be available). The mirror made for `from` is released first. How a
// model moves its forward between devices (qwen_to_device, vit_to_device).
void table_mirror(Table *mirror, const Table *host, Device from, Device to, const char *name);
// Bytes the entries need, each rounded up to the 64-byte alignment of
// table_alloc: what allocating the table costs, computable before allocating.
size_t table_bytes(const Table *t);

// Prints one line per entry and totals (used by --mem and tests).
void table_print(const Table *t, FILE *f, bool per_entry);

// Human-readable size ("1.23 MiB") into buf.
const char *bytes_str(double bytes, char *buf, size_t n);

#endif
