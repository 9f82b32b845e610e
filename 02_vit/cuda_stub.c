// cuda_stub.c: chapter 02's CUDA entry points in a build without nvcc (or an ASan build).
//
// The run program and the tests call vit_cuda_*() only when asked for
// `--device cuda`; in a binary without CUDA that request ends here, with a
// sentence instead of a link error.
#include "02_vit/vit.h"

#define NO_CUDA() NM_DIE("this binary was built without CUDA (no nvcc found, or an ASan build); use --device cpu")

VitCuda *vit_cuda_create(const Vit *m, int max_batch) { NO_CUDA(); }

void vit_cuda_forward(VitCuda *g, const float *pix, int B, float *hidden, const VitFeature *feat, float *features,
                      float *pooled) {
    NO_CUDA();
}

void vit_cuda_free(VitCuda *g) { NO_CUDA(); }
