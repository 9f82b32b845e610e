// cuda_util.h: the GPU seen from plain C (device memory, copies, bf16, timers).
//
// The model code and the tests are C, compiled by gcc, and must not need the
// CUDA headers: those are C++-flavoured and live where nvcc is. So the few
// things C code asks of the GPU are declared here with plain C types (`void *`
// for device pointers, `size_t` for byte counts) and implemented in
// matmul_cuda.cu, the chapter's one CUDA file. A .cu file gets the same
// declarations through cuda_common.h, which includes this header.
//
// Every function dies with `file:line` and CUDA's own words on any error
// (CUDA_CHECK in cuda_common.h): a failed allocation or copy on the GPU is
// never something a caller can recover from.
//
// Only a binary built with nvcc (-DNM_CUDA) has these symbols; C code that may
// run in a CPU-only build asks cuda_available() (matmul.h) before calling any.
//
// Pointers named `dev` or `*_dev` are device memory; the others are host memory.
// Everything runs on CUDA's default stream, so work is done in the order it
// was asked for, and a copy to the host waits for the kernels before it.
#ifndef NM_CUDA_UTIL_H
#define NM_CUDA_UTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "01_tensor/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

// Why cuda_available() said no ("" when it said yes, or before it was asked).
const char *cuda_unavailable_reason(void);
// "NVIDIA H200, sm_90, 132 SMs, 139.8 GiB, driver 13.0, runtime 13.0, cuBLASLt 13.1.0" into buf.
const char *cuda_device_summary(char *buf, size_t n);

// ---- memory ------------------------------------------------------------------
void *cuda_malloc(size_t nbytes);                  // cudaMalloc; 256-byte aligned
void cuda_free(void *dev);                         // NULL is fine
void cuda_zero(void *dev, size_t nbytes);          // memset to 0 bytes (0.0 in f32 and bf16)
void cuda_upload(void *dev, const void *host, size_t nbytes);
void cuda_download(void *host, const void *dev, size_t nbytes);
void cuda_copy(void *dst_dev, const void *src_dev, size_t nbytes);  // device to device
// Bytes cuda_malloc holds now and the most it ever held (its high-water mark;
// cuBLAS's workspace and the driver's context are not in it).
size_t cuda_mem_in_use(void);
size_t cuda_mem_peak(void);
// cudaMemGetInfo: the device's free and total bytes, whoever holds them.
void cuda_mem_info(size_t *free_bytes, size_t *total_bytes);
// Waits for all queued GPU work; reports errors of earlier asynchronous launches.
void cuda_synchronize(void);

// ---- bf16 <-> f32 on the device ----------------------------------------------
// Both pointers are device pointers to n elements. Narrowing rounds to nearest,
// ties to even: for every non-NaN value the same bits as f32_to_bf16() in dtype.h.
void cuda_f32_to_bf16(void *dst_bf16, const float *src, size_t n);
void cuda_bf16_to_f32(float *dst, const void *src_bf16, size_t n);

// Test helpers. A new device buffer holding host[n] (f32) stored as dt
// (DT_F32 or DT_BF16); free it with cuda_free.
void *cuda_upload_as(const float *host, size_t n, DType dt);
// Copies n elements of dtype dt (DT_F32 or DT_BF16) from the device into host[n] as f32.
void cuda_download_f32(float *host, const void *dev, size_t n, DType dt);

// ---- timing with CUDA events -------------------------------------------------
// The GPU runs behind the CPU, so a wall-clock timer around a launch measures
// the launch, not the work. An event is a timestamp the GPU itself writes when
// it reaches that point in its queue.
typedef struct {
    void *start, *stop;  // cudaEvent_t, opaque to C
} CudaTimer;
// Creates both events and records `start` on the default stream.
CudaTimer cuda_timer_start(void);
// Records `stop`, waits for it, frees the events; returns milliseconds between them.
float cuda_timer_stop(CudaTimer *t);

#ifdef __cplusplus
}
#endif

#endif
