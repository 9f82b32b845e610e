// torchbin.h: reading `pytorch_model.bin`, PyTorch's own weight files, safely.
//
// Older hub repositories ship their weights only as `torch.save(state_dict)`
// files. Since PyTorch 1.6 such a file is a zip archive of stored
// (uncompressed) entries:
//
//     NAME/data.pkl        a pickle of the state dict: {tensor name: tensor}
//     NAME/data/0, 1, ...  one entry per storage, the raw little-endian bytes
//     NAME/byteorder       "little" (absent in older files, which are little-endian)
//     NAME/version, ...    bookkeeping we ignore
//
// A pickle is a program for a small stack machine, and the standard unpickler
// will call any Python function the program names: loading an untrusted
// pickle runs whatever its author wanted. We do not unpickle. We read the
// opcodes ourselves, build values only for the handful of types a state dict
// is made of, and refuse every other name the moment the program mentions it:
//
//   collections.OrderedDict          the dict itself (its `_metadata` state ignored)
//   torch._utils._rebuild_tensor_v2  (storage, offset, size, stride, requires_grad, hooks)
//   torch._utils._rebuild_parameter  (tensor, requires_grad, hooks): the tensor
//   torch.{Float,BFloat16,Half,Double,Long,Int,Byte,Bool}Storage
//                                    the element type of a storage, named in the
//                                    persistent id ('storage', TYPE, key, location, numel)
//
// Nothing is ever called: a REDUCE of one of these three callables is
// interpreted by the reader, and a GLOBAL of anything else (os.system,
// builtins.eval, ...) is an error naming it. The opcodes understood are those
// of protocols 2 to 5 that data needs; object-building ones (INST, OBJ,
// NEWOBJ) are refused too.
//
// The result is an StFile like a safetensors file's: each tensor a pointer
// into the mapped archive (storages are stored uncompressed, so no copy), with
// its dtype and shape, and the same st_read / table_load work on it. A tensor
// must be a contiguous run of its storage (every state dict saved from a
// model is); two tensors may share a storage.
//
// What it does not do: the legacy pre-1.6 format (a bare pickle stream with
// the storages appended), which is refused with a message saying how to
// re-save it; compressed or encrypted zip entries; big-endian files; CRC
// checks of the entries (a corrupt byte gives wrong weights, not a crash).
#ifndef NM_TORCHBIN_H
#define NM_TORCHBIN_H

#include <stddef.h>

#include "01_tensor/safetensors.h"

// Parses a torch.save zip archive held in memory into f (tensors pointing
// into buf, which must outlive f). The fuzzer's entry point and what st_open
// uses for a `.bin` file. Returns 0, or -1 with a reason in err.
int pt_parse(StFile *f, const void *buf, size_t len, char *err, size_t errlen);

#endif
