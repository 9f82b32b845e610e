// matmul_cuda.cu: the Linear layer on the GPU, by way of cuBLAS.
//
// What this file does. It is the GPU twin of the Linear layer in matmul.c:
//
//     forward    out     (M,N)  = inp (M,K) @ weight (N,K)^T + bias (N)
//     backward   dinp    (M,K) += dout (M,N) @ weight (N,K)
//                dweight (N,K) += dout^T (N,M) @ inp (M,K)
//                dbias   (N)   += column sums of dout (M,N)
//
// with the same row-major layout, the same argument order and the same
// accumulating backward, so that a test can run both on the same numbers and
// compare (tests/verify_gpu_ch01.c does). The three products are handed to
// cuBLAS, NVIDIA's GEMM library: writing a GEMM that keeps Hopper's tensor
// cores busy is a book of its own, and cuBLAS already is that book. What this
// file adds is the plumbing: the row-major to column-major translation, the
// bias, the column sums, the GPU half of the run context (cuda_common.h) and
// the device-memory helpers C code uses (cuda_util.h).
//
// Two storage types. With DT_F32 every number is a 4-byte float and the GEMM
// runs on the ordinary fp32 units; we forbid TF32 (the tensor cores' 10-bit
// mantissa shortcut for fp32), so the result differs from the C oracle only in
// the order of the additions. With DT_BF16 every tensor (inputs, weights,
// outputs, gradients) is stored as bf16, but all arithmetic is fp32: the
// tensor cores multiply two bf16 numbers exactly (8-bit mantissas give a
// 16-bit product, which fp32 holds) and add the products into fp32
// accumulators; the result is rounded to bf16 once, when it is stored. Why
// bf16 at all: half the bytes per number means half the memory traffic and
// twice the tensors that fit, and the tensor cores run bf16 products an order
// of magnitude faster than fp32 ones (about 990 vs 67 TFLOP/s on an H100).
// bf16 keeps fp32's 8-bit exponent, so gradients neither overflow nor vanish
// the way they can in fp16. Why fp32 accumulation: bf16 has 8 significant
// bits, so a running sum kept in bf16 would round away everything below 1/256
// of itself at every addition (and ignore outright any product smaller than
// that); over a dot product of length 1024 those roundings add up to errors of
// a few percent. An fp32 sum keeps 24 bits: its errors stay far below the one
// rounding to bf16 at the end.
//
// What it does not do. No batched or strided GEMMs (attention's need them and
// comes later), no fused activations (cuBLASLt epilogues, later), no fp16, no
// fp8, no TF32, one stream. Calls are asynchronous, like every CUDA launch:
// they return as soon as the work is queued, and the next copy to the host
// waits for it.
//
// Determinism. cuBLAS returns the same bits for the same call on the same GPU
// model and library version, and our two small kernels sum in a fixed order,
// so a run repeats exactly. Results differ in the last bits from the CPU's,
// and between GPU models.
#include "01_tensor/cuda_common.h"

#include <unordered_map>

extern "C" {
#include "01_tensor/matmul.h"
}

// ============================================================================
// The GPU run context (declared in cuda_common.h)
//
// Three objects, each made on first use. Host code is single-threaded, so a
// plain "if (!x) create" is enough.

static cublasHandle_t g_cublas = NULL;
static cublasLtHandle_t g_cublaslt = NULL;
static void *g_workspace = NULL;

void *cuda_workspace(size_t *nbytes) {
    if (!g_workspace) CUDA_CHECK(cudaMalloc(&g_workspace, CUDA_WORKSPACE_BYTES));
    if (nbytes) *nbytes = CUDA_WORKSPACE_BYTES;
    return g_workspace;
}

cublasHandle_t cuda_cublas(void) {
    if (!g_cublas) {
        CUBLAS_CHECK(cublasCreate(&g_cublas));  // bound to the default stream
        // CUBLAS_DEFAULT_MATH alone already excludes TF32 for CUBLAS_COMPUTE_32F;
        // the second flag also keeps split-K partial sums in fp32 rather than in
        // the output type (bf16), so "fp32 accumulation" holds all the way.
        CUBLAS_CHECK(cublasSetMathMode(
            g_cublas, (cublasMath_t)(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
        size_t nbytes = 0;
        void *ws = cuda_workspace(&nbytes);
        CUBLAS_CHECK(cublasSetWorkspace(g_cublas, ws, nbytes));
    }
    return g_cublas;
}

cublasLtHandle_t cuda_cublaslt(void) {
    if (!g_cublaslt) CUBLAS_CHECK(cublasLtCreate(&g_cublaslt));
    return g_cublaslt;
}

// ============================================================================
// Is there a GPU we can use?
//
// Asked once, remembered. Every failure is an answer, not a crash: a machine
// with no NVIDIA driver, a driver older than the runtime we linked, no device,
// or a GPU this binary has no machine code for (we compile for sm_80 and sm_90:
// A100, H100, H200). The last is found by asking the runtime for the
// attributes of one of our kernels, which also creates the CUDA context (a
// fraction of a second, once).

static int g_available = -1;    // -1: not asked yet; 0: no; 1: yes
static char g_reason[512] = "";

static __global__ void f32_to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n);

extern "C" bool cuda_available(void) {
    if (g_available >= 0) return g_available == 1;
    g_available = 0;
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        snprintf(g_reason, sizeof g_reason, "cudaGetDeviceCount failed: %.200s (%.100s)", cudaGetErrorString(err),
                 cudaGetErrorName(err));
        (void)cudaGetLastError();  // clear it, so no later check reports it again
        return false;
    }
    if (count == 0) {
        snprintf(g_reason, sizeof g_reason, "the driver reports no CUDA device");
        return false;
    }
    cudaFuncAttributes attr;
    err = cudaFuncGetAttributes(&attr, f32_to_bf16_kernel);
    if (err != cudaSuccess) {
        int dev = 0;
        cudaDeviceProp prop;
        (void)cudaGetLastError();
        if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&prop, dev) == cudaSuccess) {
            snprintf(g_reason, sizeof g_reason, "no usable kernel for %.100s (sm_%d%d; built for sm_80, sm_90): %.200s",
                     prop.name, prop.major, prop.minor, cudaGetErrorString(err));
        } else {
            snprintf(g_reason, sizeof g_reason, "cannot use the CUDA device: %.200s", cudaGetErrorString(err));
        }
        (void)cudaGetLastError();
        return false;
    }
    g_available = 1;
    return true;
}

extern "C" const char *cuda_unavailable_reason(void) { return g_reason; }

extern "C" const char *cuda_device_summary(char *buf, size_t n) {
    int dev = 0, driver = 0, runtime = 0;
    cudaDeviceProp p;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
    CUDA_CHECK(cudaDriverGetVersion(&driver));
    CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
    size_t lt = cublasLtGetVersion();  // major*10000 + minor*100 + patch
    snprintf(buf, n, "%s, sm_%d%d, %d SMs, %.1f GiB, driver %d.%d, runtime %d.%d, cuBLASLt %zu.%zu.%zu", p.name,
             p.major, p.minor, p.multiProcessorCount, (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0),
             driver / 1000, (driver % 1000) / 10, runtime / 1000, (runtime % 1000) / 10, lt / 10000,
             (lt / 100) % 100, lt % 100);
    return buf;
}

// ============================================================================
// Device memory and copies (declared in cuda_util.h)

// Every cuda_malloc is remembered with its size, so the bytes held now and
// the most ever held (the high-water mark that `train --device cuda` prints
// beside the --mem prediction) are known exactly. The host side is
// single-threaded (cuda_common.h), so a plain map will do.
static std::unordered_map<void *, size_t> g_sizes;
static size_t g_in_use = 0, g_peak = 0;

extern "C" void *cuda_malloc(size_t nbytes) {
    void *p = NULL;
    CUDA_CHECK(cudaMalloc(&p, nbytes ? nbytes : 1));
    g_sizes[p] = nbytes;
    g_in_use += nbytes;
    if (g_in_use > g_peak) g_peak = g_in_use;
    return p;
}

extern "C" void cuda_free(void *dev) {
    if (!dev) return;
    CUDA_CHECK(cudaFree(dev));
    auto it = g_sizes.find(dev);
    if (it != g_sizes.end()) {
        g_in_use -= it->second;
        g_sizes.erase(it);
    }
}

extern "C" size_t cuda_mem_in_use(void) { return g_in_use; }
extern "C" size_t cuda_mem_peak(void) { return g_peak; }

extern "C" void cuda_mem_info(size_t *free_bytes, size_t *total_bytes) {
    CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

extern "C" void cuda_zero(void *dev, size_t nbytes) {
    if (nbytes) CUDA_CHECK(cudaMemsetAsync(dev, 0, nbytes, 0));
}

extern "C" void cuda_upload(void *dev, const void *host, size_t nbytes) {
    if (nbytes) CUDA_CHECK(cudaMemcpy(dev, host, nbytes, cudaMemcpyHostToDevice));
}

extern "C" void cuda_download(void *host, const void *dev, size_t nbytes) {
    // cudaMemcpy on the default stream would wait for queued kernels anyway;
    // synchronizing first makes a failed kernel report itself as such, not as
    // a failed copy.
    cuda_synchronize();
    if (nbytes) CUDA_CHECK(cudaMemcpy(host, dev, nbytes, cudaMemcpyDeviceToHost));
}

extern "C" void cuda_copy(void *dst_dev, const void *src_dev, size_t nbytes) {
    if (nbytes) CUDA_CHECK(cudaMemcpyAsync(dst_dev, src_dev, nbytes, cudaMemcpyDeviceToDevice, 0));
}

extern "C" void cuda_synchronize(void) { CUDA_CHECK(cudaDeviceSynchronize()); }

// ============================================================================
// bf16 <-> f32 on the device
//
// The kernels below use a grid-stride loop: a fixed grid (grid_for in
// cuda_common.h) walks over any n, each thread taking every
// (gridDim.x*blockDim.x)-th element. Indices are size_t: the logits of 16384
// tokens over Qwen's 151936-word vocabulary are more numbers than an int counts.

#define THREADS 256

static __global__ void f32_to_bf16_kernel(__nv_bfloat16 *dst, const float *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        store_f32(&dst[i], src[i]);
}

static __global__ void bf16_to_f32_kernel(float *dst, const __nv_bfloat16 *src, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = load_f32(src[i]);
}

extern "C" void cuda_f32_to_bf16(void *dst_bf16, const float *src, size_t n) {
    if (n == 0) return;
    f32_to_bf16_kernel<<<grid_for(n, THREADS), THREADS>>>((__nv_bfloat16 *)dst_bf16, src, n);
    CUDA_CHECK_LAUNCH();
}

extern "C" void cuda_bf16_to_f32(float *dst, const void *src_bf16, size_t n) {
    if (n == 0) return;
    bf16_to_f32_kernel<<<grid_for(n, THREADS), THREADS>>>(dst, (const __nv_bfloat16 *)src_bf16, n);
    CUDA_CHECK_LAUNCH();
}

static void check_float_dtype(DType dt, const char *who) {
    NM_CHECK(dt == DT_F32 || dt == DT_BF16, "%s: dtype %s is not supported (F32 or BF16 only)", who, dtype_name(dt));
}

extern "C" void *cuda_upload_as(const float *host, size_t n, DType dt) {
    check_float_dtype(dt, "cuda_upload_as");
    void *dev = cuda_malloc(n * dtype_size(dt));
    if (dt == DT_F32) {
        cuda_upload(dev, host, n * sizeof(float));
    } else {
        float *staging = (float *)cuda_malloc(n * sizeof(float));  // (n) f32
        cuda_upload(staging, host, n * sizeof(float));
        cuda_f32_to_bf16(dev, staging, n);
        cuda_synchronize();  // the kernel must be done reading before the free
        cuda_free(staging);
    }
    return dev;
}

extern "C" void cuda_download_f32(float *host, const void *dev, size_t n, DType dt) {
    check_float_dtype(dt, "cuda_download_f32");
    if (dt == DT_F32) {
        cuda_download(host, dev, n * sizeof(float));
        return;
    }
    // Widening bf16 is exact, so doing it on the host (dtype.h) loses nothing.
    uint16_t *raw = (uint16_t *)xmalloc(n * sizeof(uint16_t) + 1);  // (n) bf16 bits
    cuda_download(raw, dev, n * sizeof(uint16_t));
    NM_CHECK(dtype_convert(host, DT_F32, raw, DT_BF16, n) == 0, "bf16 -> f32 conversion failed");
    free(raw);
}

// ============================================================================
// Timing with events

extern "C" CudaTimer cuda_timer_start(void) {
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    CUDA_CHECK(cudaEventRecord(start, 0));
    CudaTimer t = {(void *)start, (void *)stop};
    return t;
}

extern "C" float cuda_timer_stop(CudaTimer *t) {
    cudaEvent_t start = (cudaEvent_t)t->start, stop = (cudaEvent_t)t->stop;
    float ms = 0.0f;
    CUDA_CHECK(cudaEventRecord(stop, 0));
    CUDA_CHECK(cudaEventSynchronize(stop));
    CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    CUDA_CHECK(cudaEventDestroy(start));
    CUDA_CHECK(cudaEventDestroy(stop));
    t->start = t->stop = NULL;
    return ms;
}

// ============================================================================
// Row-major GEMM on a column-major library
//
// cuBLAS follows Fortran's BLAS: matrices are column-major, element (i,j) of
// an R x C matrix with leading dimension ld sits at [i + j*ld]. Ours are
// row-major, element (i,j) at [i*ld + j]. The two conventions read the same
// memory as each other's transpose:
//
//     a row-major (R,C) matrix X with row stride ld  ==  a column-major (C,R)
//     matrix X^T with leading dimension ld, same pointer, nothing moved.
//
// So to get the row-major C = op(A) @ op(B) we ask cuBLAS for the column-major
// product it would see in C's memory, C^T, and use (XY)^T = Y^T X^T:
//
//     C^T (N,M) = op(B)^T (N,K) @ op(A)^T (K,M)
//
// cuBLAS already sees B's memory as B^T and A's as A^T, so each operand keeps
// its own transpose flag; only the order of the two operands and of M and N
// swaps, and every leading dimension is the row stride we would pass to
// sgemm_cpu. The signature below is sgemm_cpu's (matmul.h) minus alpha:
//     A is (M,K), or stored (K,M) if transA;  lda = row stride of A as stored
//     B is (K,N), or stored (N,K) if transB;  ldb = row stride of B as stored
//     C is (M,N);                             ldc = row stride of C
// C = op(A) @ op(B) + beta * C, every operand of type dt, fp32 accumulation.
static void gemm(bool transA, bool transB, int M, int N, int K, const void *A, int lda, const void *B, int ldb,
                 float beta, void *C, int ldc, DType dt) {
    cudaDataType_t type = dt == DT_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    // CUBLAS_COMPUTE_32F: products summed in fp32 for both storage types;
    // alpha and beta are then floats. CUBLAS_GEMM_DEFAULT lets cuBLAS pick the
    // kernel (tensor cores for bf16 when the sizes allow).
    const float alpha = 1.0f;
    CUBLAS_CHECK(cublasGemmEx(cuda_cublas(), transB ? CUBLAS_OP_T : CUBLAS_OP_N, transA ? CUBLAS_OP_T : CUBLAS_OP_N,
                              N, M, K, &alpha, B, type, ldb, A, type, lda, &beta, C, type, ldc,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// ============================================================================
// The bias: a broadcast forward, a column sum backward

// out (M,N) row-major: every row becomes a copy of bias (N). The GEMM then adds
// inp @ weight^T on top with beta = 1, in fp32, and rounds once: in bf16 this
// gives round(sum + bias), where adding the bias in a second kernel would round
// twice.
template <typename T>
static __global__ void broadcast_rows_kernel(T *out, const T *bias, size_t M, size_t N) {
    size_t total = M * N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        out[i] = bias[i % N];
}

// dbias (N) += sum over the M rows of dout (M,N), in two passes, so that the
// work spreads over the whole GPU even when N is small, and the order of the
// additions is fixed (no atomics, so the same bits on every run).
//
// Pass 1: the rows are cut into R chunks; block (x, y) sums chunk y of the 32
// columns starting at 32*x. Its 32 x 8 threads read 32 consecutive columns of
// a row at once (one coalesced 64- or 128-byte read), each thread walking down
// every 8th row of the chunk; shared memory then adds the 8 per-thread sums.
// Result: partial (R,N) fp32.
// Pass 2: one thread per column adds its R partials to dbias, in fp32, and
// rounds once when it stores.
#define BG_COLS 32
#define BG_ROWS 8

template <typename T>
static __global__ void bias_grad_partial_kernel(float *partial, const T *dout, int M, int N, int rows_per_chunk) {
    __shared__ float sums[BG_ROWS][BG_COLS];
    int col = blockIdx.x * BG_COLS + threadIdx.x;
    int row0 = blockIdx.y * rows_per_chunk;
    int row1 = M - row0 < rows_per_chunk ? M : row0 + rows_per_chunk;  // (no int overflow)
    float s = 0.0f;
    if (col < N)
        for (int row = row0 + (int)threadIdx.y; row < row1; row += BG_ROWS) s += load_f32(dout[(size_t)row * N + col]);
    sums[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && col < N) {
        float total = 0.0f;
        for (int r = 0; r < BG_ROWS; r++) total += sums[r][threadIdx.x];
        partial[(size_t)blockIdx.y * N + col] = total;
    }
}

template <typename T>
static __global__ void bias_grad_final_kernel(T *dbias, const float *partial, int R, int N) {
    for (int col = blockIdx.x * blockDim.x + threadIdx.x; col < N; col += gridDim.x * blockDim.x) {
        float total = load_f32(dbias[col]);
        for (int r = 0; r < R; r++) total += partial[(size_t)r * N + col];
        store_f32(&dbias[col], total);
    }
}

// Launches the two passes. The partial sums go to a scratch buffer of our own
// (not cuBLAS's workspace: what cuBLAS leaves there between calls is its
// business), allocated on first use and kept.
#define BG_SCRATCH_BYTES ((size_t)8 << 20)
static float *g_bias_partial = NULL;  // (R,N) fp32, R*N*4 <= BG_SCRATCH_BYTES

template <typename T>
static void bias_grad(T *dbias, const T *dout, int M, int N) {
    if (!g_bias_partial) CUDA_CHECK(cudaMalloc(&g_bias_partial, BG_SCRATCH_BYTES));
    float *partial = g_bias_partial;
    const size_t ws_bytes = BG_SCRATCH_BYTES;
    int col_blocks = (N + BG_COLS - 1) / BG_COLS;
    // About 512 blocks in all (several per SM on any current GPU), at least
    // BG_ROWS rows per chunk, and R*N floats must fit in the scratch buffer
    // (for N = 151936 that still leaves 13 chunks). R depends only on M and N,
    // so the summation order does too.
    long R = (512 + col_blocks - 1) / col_blocks;
    long max_by_rows = (M + BG_ROWS - 1) / BG_ROWS;
    long max_by_ws = (long)(ws_bytes / (sizeof(float) * (size_t)N));
    if (R > max_by_rows) R = max_by_rows;
    if (R > max_by_ws) R = max_by_ws;
    NM_CHECK(R >= 1, "matmul_backward_cuda: N=%d is too large for the bias-gradient scratch buffer", N);
    int rows_per_chunk = (int)((M + R - 1) / R);
    int chunks = (M + rows_per_chunk - 1) / rows_per_chunk;  // <= R; no empty chunk
    dim3 grid((unsigned)col_blocks, (unsigned)chunks), block(BG_COLS, BG_ROWS);
    bias_grad_partial_kernel<T><<<grid, block>>>(partial, dout, M, N, rows_per_chunk);
    CUDA_CHECK_LAUNCH();
    bias_grad_final_kernel<T><<<grid_for((size_t)N, THREADS), THREADS>>>(dbias, partial, chunks, N);
    CUDA_CHECK_LAUNCH();
}

// ============================================================================
// The Linear layer

static void check_sizes(int M, int K, int N, const char *who) {
    NM_CHECK(M >= 0 && K >= 0 && N >= 0, "%s: negative size M=%d K=%d N=%d", who, M, K, N);
}

// out (M,N) = inp (M,K) @ weight (N,K)^T + bias (N); bias may be NULL.
// All pointers are device pointers of type dt.
extern "C" void matmul_forward_cuda(void *out, const void *inp, const void *weight, const void *bias, int M, int K,
                                    int N, DType dt) {
    check_float_dtype(dt, "matmul_forward_cuda");
    check_sizes(M, K, N, "matmul_forward_cuda");
    if (M == 0 || N == 0) return;
    NM_CHECK(out != NULL, "matmul_forward_cuda: out is NULL");
    float beta = 0.0f;  // beta = 0: cuBLAS does not read out, whatever it holds
    if (bias) {
        size_t total = (size_t)M * (size_t)N;
        if (dt == DT_BF16)
            broadcast_rows_kernel<<<grid_for(total, THREADS), THREADS>>>(
                (__nv_bfloat16 *)out, (const __nv_bfloat16 *)bias, (size_t)M, (size_t)N);
        else
            broadcast_rows_kernel<<<grid_for(total, THREADS), THREADS>>>((float *)out, (const float *)bias,
                                                                          (size_t)M, (size_t)N);
        CUDA_CHECK_LAUNCH();
        beta = 1.0f;
    }
    if (K == 0) {  // an empty sum: out = bias, or zeros
        if (!bias) cuda_zero(out, (size_t)M * (size_t)N * dtype_size(dt));
        return;
    }
    NM_CHECK(inp != NULL && weight != NULL, "matmul_forward_cuda: inp or weight is NULL");
    // out (M,N) = inp (M,K) @ op(weight) with weight stored (N,K): transB.
    gemm(false, true, M, N, K, inp, K, weight, K, beta, out, N, dt);
}

// dinp (M,K) += dout (M,N) @ weight (N,K)
// dweight (N,K) += dout^T (N,M) @ inp (M,K)
// dbias (N) += column sums of dout (M,N)
// Any of dinp, dweight, dbias may be NULL (that gradient is not wanted). The
// GEMMs accumulate with beta = 1: in bf16, each gradient is read, the new
// contribution added in fp32, and the sum rounded once.
extern "C" void matmul_backward_cuda(void *dinp, void *dweight, void *dbias, const void *dout, const void *inp,
                                     const void *weight, int M, int K, int N, DType dt) {
    check_float_dtype(dt, "matmul_backward_cuda");
    check_sizes(M, K, N, "matmul_backward_cuda");
    if (M == 0 || N == 0) return;  // dout is empty: every gradient gets += 0
    NM_CHECK(dout != NULL, "matmul_backward_cuda: dout is NULL");
    if (K > 0) {
        if (dinp) {
            NM_CHECK(weight != NULL, "matmul_backward_cuda: dinp wanted but weight is NULL");
            // (M,K) = dout (M,N) @ weight (N,K): neither transposed.
            gemm(false, false, M, K, N, dout, N, weight, K, 1.0f, dinp, K, dt);
        }
        if (dweight) {
            NM_CHECK(inp != NULL, "matmul_backward_cuda: dweight wanted but inp is NULL");
            // (N,K) = op(dout) (N,M) @ inp (M,K), with dout stored (M,N): transA.
            gemm(true, false, N, K, M, dout, N, inp, K, 1.0f, dweight, K, dt);
        }
    }
    if (dbias) {
        if (dt == DT_BF16)
            bias_grad((__nv_bfloat16 *)dbias, (const __nv_bfloat16 *)dout, M, N);
        else
            bias_grad((float *)dbias, (const float *)dout, M, N);
    }
}
