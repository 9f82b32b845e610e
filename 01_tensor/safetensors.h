// safetensors.h: reading and writing HuggingFace's weight files.
//
// A .safetensors file is the simplest possible container, which is why the
// whole ecosystem moved to it from pickles:
//
//     [ N : u64 little-endian ][ N bytes of JSON header ][ raw tensor bytes ... ]
//
// The header maps each tensor name to {"dtype", "shape", "data_offsets":[b,e]}
// with offsets relative to the start of the raw bytes. There is no code to run
// and no compression: we `mmap` the file and every tensor is a pointer into it.
//
// Because the data is trusted to be exactly where the header says, the reader
// must trust nothing else. `st_open` validates everything before handing out a
// pointer: header length bounded and inside the file, JSON well formed, dtypes
// known, shapes sane, each tensor's byte size = prod(shape) x dtype size, the
// tensors contiguous and in range with no gap or overlap, and the last one
// ending exactly at the end of the file. Any violation is an error message,
// never a crash: the reader is fuzzed.
//
// Big checkpoints are split into shards (`model-00001-of-00002.safetensors`)
// with a `model.safetensors.index.json` naming the shard of every tensor.
// `st_model_open` takes a file or a model directory and hides the difference.
// A directory that has no safetensors but PyTorch's `pytorch_model.bin` (or
// its shards and `pytorch_model.bin.index.json`), as older hub repositories
// do, is read through torchbin.h into the same structures, without running
// the pickle inside it.
//
// The writer produces what the Python library produces: header padded with
// spaces to a multiple of 8 bytes (so data is 8-aligned), tensors sorted by
// dtype (the reference writer's order) then name, and the file written atomically (temp name, fsync,
// rename), so a crash never leaves a half-written checkpoint that looks whole.
#ifndef NM_SAFETENSORS_H
#define NM_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "01_tensor/tensor.h"

#define ST_MAX_HEADER 100000000ull   // the reference implementation's limit (100 MB)

typedef struct {
    char *name;
    DType dtype;
    int ndim;
    int64_t shape[NM_MAX_DIMS];
    size_t begin, end;        // data_offsets, relative to the data section
    const void *data;         // points into the mapped file
} StTensor;

typedef struct {
    char *path;
    void *map;                // the whole file, mmapped read-only (NULL for an empty mapping)
    size_t map_len;
    bool owns_map;            // false when parsed from a caller's buffer
    size_t header_len;
    StTensor *tensors;        // in file order
    int n;
    char **meta_keys, **meta_vals;   // "__metadata__" (string -> string)
    int n_meta;
} StFile;

// Parses a safetensors image held in memory (the fuzzer's entry point, and
// what st_open uses after mmap). Returns 0, or -1 with a reason in err.
int st_parse(StFile *f, const void *buf, size_t len, char *err, size_t errlen);
// Opens and validates a file. Returns NULL with "reason" in err on failure.
StFile *st_open(const char *path, char *err, size_t errlen);
void st_close(StFile *f);
const StTensor *st_find(const StFile *f, const char *name);
int64_t st_numel(const StTensor *t);

// ---- a whole model: one file, or a directory (single file or sharded) --------
typedef struct {
    char *path;
    StFile **files;
    int nfiles;
    const StTensor **tensors;   // all tensors of all shards, sorted by name
    int n;
} StModel;

StModel *st_model_open(const char *path, char *err, size_t errlen);
void st_model_close(StModel *m);
const StTensor *st_model_find(const StModel *m, const char *name);

// Copies a tensor into dst converting to dtype `to` (F32, BF16, F16 or the
// stored dtype). Returns 0, or -1 if the conversion is unsupported.
int st_read(const StTensor *t, void *dst, DType to);

// Loads every entry of a table by name from a model, checking shapes.
// Entries missing from the file are an error unless `allow_missing` returns
// true for that name (e.g. a tied lm_head). Returns 0 or -1 with err set.
int table_load(Table *t, const StModel *m, bool (*allow_missing)(const char *name),
               char *err, size_t errlen);
// The same with every name looked up renamed: a leading `strip` removed (when
// present), `add` put in front. For the part of a bigger checkpoint a model
// lives in: a LLaVA directory keeps its LM under "language_model.", its
// projector (our "connector.") under "multi_modal_projector.".
int table_load_renamed(Table *t, const StModel *m, const char *strip, const char *add,
                       bool (*allow_missing)(const char *name), char *err, size_t errlen);

// ---- writing ------------------------------------------------------------------
typedef struct {
    const char *name;
    DType dtype;
    int ndim;
    const int64_t *shape;
    const void *data;         // CPU memory, numel x dtype size bytes
} StItem;

// Writes one file atomically. meta: n_meta (key, value) pairs, may be NULL.
// Returns 0, or -1 with err set.
int st_write(const char *path, const StItem *items, int n, const char *const *meta, int n_meta,
             char *err, size_t errlen);
// Writes items as shards of at most max_shard_bytes each into dir, plus
// model.safetensors.index.json (or a single model.safetensors when one shard
// suffices). Returns 0 or -1 with err set.
int st_write_model(const char *dir, const StItem *items, int n, size_t max_shard_bytes,
                   char *err, size_t errlen);
// Writes all (or only trainable) entries of a CPU table to one file.
int table_save(const Table *t, const char *path, bool trainable_only, char *err, size_t errlen);

#endif
