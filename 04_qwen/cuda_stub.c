// cuda_stub.c: chapter 04's CUDA entry points for a build without nvcc (or the ASan build).
//
// run.c and the generation loop call qwen_cuda_*() without asking how the
// binary was built; here each one stops with a sentence saying why, instead of
// a link error or a crash.
#include "04_qwen/qwen_cuda.h"

#define NO_CUDA() NM_DIE("this binary was built without CUDA (no nvcc found, or an ASan build); use --device cpu")

QwenCuda *qwen_cuda_create(const Qwen *m, int Tmax, int Tcap) { NO_CUDA(); }
void qwen_cuda_free(QwenCuda *g) { NO_CUDA(); }
void qwen_cuda_reset(QwenCuda *g) { NO_CUDA(); }
const float *qwen_cuda_forward(QwenCuda *g, const int *tokens, int T, bool all_logits) { NO_CUDA(); }
