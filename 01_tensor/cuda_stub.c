// cuda_stub.c: the CUDA entry points of a build without nvcc (or an ASan build).
//
// Model code calls matmul_forward() and friends without asking how the binary
// was built; when a CUDA op is reached in a binary that has none, this file
// makes the failure a clear sentence rather than a link error.
#include "01_tensor/matmul.h"

bool cuda_available(void) { return false; }

#define NO_CUDA() NM_DIE("this binary was built without CUDA (no nvcc found, or an ASan build); use --device cpu")

void matmul_forward_cuda(void *out, const void *inp, const void *weight, const void *bias,
                         int M, int K, int N, DType dt) {
    NO_CUDA();
}

void matmul_backward_cuda(void *dinp, void *dweight, void *dbias, const void *dout, const void *inp,
                          const void *weight, int M, int K, int N, DType dt) {
    NO_CUDA();
}

#include "01_tensor/attention.h"

void attention_forward_cuda(void *out, const void *q, const void *k, const void *v, const int32_t *seg,
                            const int32_t *reach, int B, int Tq, int Tk, int Tcap, int NH, int NKV, int HD,
                            int q_pos0, bool causal, float scale, DType dt) {
    NO_CUDA();
}

// ---- cuda_util.h: device memory, conversions and timers --------------------
#include "01_tensor/cuda_util.h"

const char *cuda_unavailable_reason(void) { return "this binary was built without CUDA (no nvcc, or an ASan build)"; }
const char *cuda_device_summary(char *buf, size_t n) {
    snprintf(buf, n, "no CUDA in this build");
    return buf;
}
void *cuda_malloc(size_t nbytes) { NO_CUDA(); }
void cuda_free(void *dev) { (void)dev; }
void cuda_zero(void *dev, size_t nbytes) { NO_CUDA(); }
size_t cuda_mem_in_use(void) { return 0; }
size_t cuda_mem_peak(void) { return 0; }
void cuda_mem_info(size_t *free_bytes, size_t *total_bytes) { NO_CUDA(); }
void cuda_upload(void *dev, const void *host, size_t nbytes) { NO_CUDA(); }
void cuda_download(void *host, const void *dev, size_t nbytes) { NO_CUDA(); }
void cuda_copy(void *dst_dev, const void *src_dev, size_t nbytes) { NO_CUDA(); }
void cuda_synchronize(void) { NO_CUDA(); }
void cuda_f32_to_bf16(void *dst_bf16, const float *src, size_t n) { NO_CUDA(); }
void cuda_bf16_to_f32(float *dst, const void *src_bf16, size_t n) { NO_CUDA(); }
void *cuda_upload_as(const float *host, size_t n, DType dt) { NO_CUDA(); }
void cuda_download_f32(float *host, const void *dev, size_t n, DType dt) { NO_CUDA(); }
CudaTimer cuda_timer_start(void) { NO_CUDA(); }
float cuda_timer_stop(CudaTimer *t) { NO_CUDA(); }
