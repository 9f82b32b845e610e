// cuda_common.h: what every .cu file of the project starts with.
//
// Three things, for CUDA code only (the plain-C view of the GPU is
// cuda_util.h, included at the bottom of this file):
//
//   1. Failing loudly, the CUDA way. Every CUDA runtime call returns a
//      cudaError_t and every cuBLAS call a cublasStatus_t; ignoring one turns a
//      bad launch into wrong numbers three functions later. CUDA_CHECK and
//      CUBLAS_CHECK print `file:line`, the library's name for the error and the
//      call that failed, then exit, like NM_CHECK in common.h. Kernel launches
//      return nothing, so after each one we ask cudaGetLastError()
//      (CUDA_CHECK_LAUNCH). Errors that happen *while* a kernel runs (a bad
//      address) surface at the next synchronizing call, wherever that is.
//
//   2. The GPU half of the run context. common.h's RunContext says where ops
//      run; on the GPU they also need a cuBLAS handle (cuBLAS's own state: the
//      device, its stream, its math mode), a cuBLASLt handle (the lower-level
//      matmul API, whose fused "epilogues" add a bias or an activation
//      inside the GEMM) and a workspace, scratch memory the GEMM kernels may
//      use for split reductions. Each is created on first use and lives
//      until the process exits, so a CPU-only run never touches the driver.
//      There is one device (the current one) and one stream (the default
//      stream) for the whole process, and the host side is single-threaded;
//      several GPUs or streams would need a handle (and a workspace) for each.
//
//   3. Small device helpers shared by the kernels: reading a bf16 or f32 value
//      as a float and writing a float back (rounding to nearest even), and a
//      grid size for grid-stride loops.
//
// The project's headers are C. A .cu file is C++, where a function's linker
// name also encodes its argument types, so C headers are included inside
// `extern "C" { }`, as below, to keep their functions' C names.
#ifndef NM_CUDA_COMMON_H
#define NM_CUDA_COMMON_H

#ifndef __CUDACC__
#error "cuda_common.h is for .cu files (nvcc); C code includes 01_tensor/cuda_util.h"
#endif

// Standard headers first, outside the extern "C" block (some are C++-aware
// and must not be wrapped); the project headers' own includes of them are then
// no-ops.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

extern "C" {
#include "01_tensor/common.h"
#include "01_tensor/dtype.h"
}
#include "01_tensor/cuda_util.h"  // has its own extern "C" guard

// ----------------------------------------------------------------------------
// 1. Failing loudly

#define CUDA_CHECK(call)                                                       \
    do {                                                                       \
        cudaError_t nm_err_ = (call);                                          \
        if (nm_err_ != cudaSuccess)                                            \
            NM_DIE("CUDA error %s: %s (in %s)", cudaGetErrorName(nm_err_),     \
                   cudaGetErrorString(nm_err_), #call);                        \
    } while (0)

#define CUBLAS_CHECK(call)                                                     \
    do {                                                                       \
        cublasStatus_t nm_st_ = (call);                                        \
        if (nm_st_ != CUBLAS_STATUS_SUCCESS)                                   \
            NM_DIE("cuBLAS error %s: %s (in %s)", cublasGetStatusName(nm_st_), \
                   cublasGetStatusString(nm_st_), #call);                      \
    } while (0)

// After a kernel launch: reports a bad launch configuration (too many threads,
// a kernel image missing for this GPU) at the line that launched it.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

// ----------------------------------------------------------------------------
// 2. The GPU run context (defined in matmul_cuda.cu)

// The workspace size. cuBLAS asks for 32 MiB on Hopper to reach its best
// kernels (4 MiB is enough on older GPUs); it is allocated once.
#define CUDA_WORKSPACE_BYTES ((size_t)32 << 20)

// cuBLAS handle bound to the default stream, with fp32 math kept exact: no
// TF32, and reductions inside a GEMM done in fp32 even when the output is bf16
// (CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION). It uses the workspace below.
cublasHandle_t cuda_cublas(void);
// cuBLASLt handle. cuBLASLt calls take the workspace as an argument.
cublasLtHandle_t cuda_cublaslt(void);
// The shared workspace (device memory) and its size. cuBLAS and cuBLASLt both
// use it; that is safe because they run on the same stream, one after the other.
void *cuda_workspace(size_t *nbytes);

// ----------------------------------------------------------------------------
// 3. Device helpers

__device__ __forceinline__ float load_f32(float x) { return x; }
__device__ __forceinline__ float load_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void store_f32(float *p, float v) { *p = v; }
// cvt.rn.bf16.f32: round to nearest, ties to even, like f32_to_bf16 in dtype.h
// (only a NaN's payload differs: the hardware returns one canonical NaN).
__device__ __forceinline__ void store_f32(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

// Number of blocks of `threads` threads for a grid-stride loop over n items:
// enough to fill any GPU many times over, never more than the grid allows.
static inline unsigned int grid_for(size_t n, unsigned int threads) {
    size_t blocks = (n + threads - 1) / threads;
    if (blocks > 65536) blocks = 65536;  // the loop covers the rest
    if (blocks == 0) blocks = 1;
    return (unsigned int)blocks;
}

#endif
