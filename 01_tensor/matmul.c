// matmul.c: a fast fp32 GEMM for the CPU, and the Linear layer built on it.
//
// What this file does. It implements one routine that matters, `sgemm_cpu`,
//
//     C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C (M,N),
//
// for row-major matrices with any row strides, and builds the Linear layer's
// forward and backward (three GEMMs and a column sum) on top of it. Then come
// the Tensor-level entry points that model code calls: they check shapes,
// dtypes and devices, and send the work to this file or to matmul_cuda.cu.
//
// What it does not do. No double precision, no complex numbers, no Strassen,
// no hand-written assembly, no run-time CPU detection (the instruction set is
// fixed when the file is compiled: the release build uses -march=native), no
// autotuning (the block sizes below were chosen once, by measuring, for a
// recent Xeon, and are merely reasonable elsewhere). It is one file you can
// read in an evening; bench/RESULTS.md records how it compares with the
// vendor BLAS behind PyTorch on the machine it was tuned on.
//
// Shape letters in this file:
//   M   rows of C and of op(A)            (for a Linear layer: tokens, B*T)
//   N   columns of C and of op(B)         (a Linear layer's out_features)
//   K   the summed-over dimension         (a Linear layer's in_features)
//   MR, NR   the register tile: the micro-kernel computes an MR x NR piece of C
//   KC       how much of K one pass over the packed panels covers
//   NC       how many columns of C one packed block of B covers
//
// ---------------------------------------------------------------------------
// Why a GEMM can be fast, and why the obvious loop is not
//
// C = A @ B does 2*M*N*K floating-point operations on only (M*K + K*N + M*N)
// numbers: for 1024 x 1024 matrices, about 2 billion flops on 12 MB of data,
// or 170 flops for every byte. That ratio, the *arithmetic intensity*, is
// what makes GEMM the one kernel that can run near the chip's peak: each number
// fetched from memory can be used hundreds of times. The obvious triple loop
//
//     for i, for j, for k:  C[i][j] += A[i][k] * B[k][j]
//
// throws that away. Its inner loop loads two numbers for every two flops, and
// walks down a column of B, touching a new cache line on every step. It runs
// at the speed of the memory system, not of the arithmetic units: on this
// project's test machine a core can do 64 fp32 flops per cycle (two 16-wide
// fused multiply-adds), but it can bring in only a few bytes per cycle from
// DRAM. To keep the multipliers busy, every float that reaches the core has to
// be reused many times *while it is still close by*. The memory hierarchy
// offers three places to keep things close, each bigger and slower than the
// last, and a fast GEMM arranges its loops so that each one holds exactly the
// data that is reused at its level:
//
//   registers (32 vectors of 16 floats): a tile of C, MR x NR, that stays in
//       registers for the whole inner loop over k. Each step of that loop
//       loads MR numbers of A and NR numbers of B and does MR*NR multiply-adds
//       with them. Loads are the scarce resource, FMAs the plentiful one, so we
//       want a tile that is as large as the register file allows.
//   L1 cache (48 KB per core): one sliver of A, MR x KC, reused against every
//       sliver of B in the block below.
//   L2 cache (2 MB per core): one block of B, KC x NC, reused against every
//       sliver of A.
//
// and main memory (or the shared L3) holds the rest, each element of which is
// brought in only a few times. This is the structure GotoBLAS introduced and
// every serious BLAS now uses; what follows is our own small rendition of it.
//
// ---------------------------------------------------------------------------
// Packing
//
// The kernel reads A and B in an order that is neither of their layouts in
// memory: at step k it wants MR consecutive elements of column k of op(A) and
// NR consecutive elements of row k of op(B). So before computing we *pack*:
// copy a sliver of A into a small buffer laid out exactly in the order the
// kernel will read it (k-major: the MR values of step 0, then of step 1, ...),
// and likewise a block of B, one NR-wide sliver after another. The copy costs
// O(MK + KN) while the arithmetic costs O(MNK), and it buys four things:
//   - the kernel's loads become one sequential, aligned stream per operand,
//     which the hardware prefetcher follows perfectly;
//   - transposition is handled once, in the packing code, so one kernel serves
//     all four combinations of transA and transB;
//   - edge slivers are padded with zeros to full MR or NR, so the kernel never
//     has a ragged case (the padding computes zeros that we do not store);
//   - a block of B that fits in L2 really sits there contiguously, instead of
//     being scattered over rows that each evict a little of the rest.
//
// Threads. The slivers of A (row bands of C) are dealt out to OpenMP threads,
// and when there are too few of them, the columns too (see column_splits).
// Every tile of C is computed by one thread, start to finish, so no locking is
// needed, and every element of C is summed in the same order whatever the
// number of threads: the result is bit-identical with 1 thread or 16.
#include "01_tensor/matmul.h"

#include <limits.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif


// ---------------------------------------------------------------------------
// The vector vocabulary
//
// The kernel is written once, against six operations on a short vector of
// floats; three instruction sets provide them. VL is the number of floats in
// one vector, MR the number of rows of the register tile. The tile is always
// two vectors wide (NR = 2*VL), and MR is chosen so that the 2*MR accumulators
// plus the two vectors of B and one broadcast value fill the register file
// without spilling:
//
//   AVX-512: 32 registers of 16 floats. MR = 14: 28 accumulators + 3 = 31.
//   AVX2:    16 registers of  8 floats. MR = 6:  12 accumulators + 3 = 15.
//   portable: GCC/Clang vector extensions, 4 floats (SSE2 on x86, NEON on
//            ARM), no fused multiply-add. The same 6 x 8 shape. Correct
//            everywhere, fast nowhere in particular; the ASan build uses it.

#if defined(__AVX512F__)
#define VL 16
#define MR 14
typedef __m512 vec;
#define vzero() _mm512_setzero_ps()
#define vset1(x) _mm512_set1_ps(x)
#define vload(p) _mm512_load_ps(p)        // aligned: only used on packed buffers
#define vloadu(p) _mm512_loadu_ps(p)      // unaligned: rows of C, the bias
#define vstoreu(p, v) _mm512_storeu_ps(p, v)
#define vfma(a, b, c) _mm512_fmadd_ps(a, b, c)  // a*b + c, one rounding
#elif defined(__AVX2__) && defined(__FMA__)
#define VL 8
#define MR 6
typedef __m256 vec;
#define vzero() _mm256_setzero_ps()
#define vset1(x) _mm256_set1_ps(x)
#define vload(p) _mm256_load_ps(p)
#define vloadu(p) _mm256_loadu_ps(p)
#define vstoreu(p, v) _mm256_storeu_ps(p, v)
#define vfma(a, b, c) _mm256_fmadd_ps(a, b, c)
#else
#define VL 4
#define MR 6
// may_alias: these vectors are read from and written to float arrays.
typedef float vec __attribute__((vector_size(16), may_alias));
static inline vec vloadu(const float *p) { vec v; memcpy(&v, p, sizeof v); return v; }
static inline void vstoreu(float *p, vec v) { memcpy(p, &v, sizeof v); }
#define vzero() ((vec){0.0f, 0.0f, 0.0f, 0.0f})
#define vset1(x) ((vec){(x), (x), (x), (x)})
#define vload(p) (*(const vec *)(p))
#define vfma(a, b, c) ((a) * (b) + (c))
#endif
#define NR (2 * VL)

// Cache blocking. An A sliver is MR x KC floats = 14 KB with AVX-512: it stays
// in L1 while the kernel sweeps the block of B. A B block is KC x NC floats =
// 1 MB: it stays in L2 (2 MB on the machine we tuned on) while every sliver of
// A passes by. A larger KC would mean fewer passes over C (each pass over K
// reads and writes C once), but KC is bounded by the A sliver's place in L1.
// None of the neighbours we measured (KC 128..512, NC 256..4096) was faster.
// They are constants, not functions of the thread count, which is part of
// what keeps the results independent of it.
#define KC 256
#define NC 1024

static inline int imin(int a, int b) { return a < b ? a : b; }

// The number of threads in the calling team (1 outside a parallel region).
static inline int omp_team_size(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

// ---------------------------------------------------------------------------
// The micro-kernel: an MR x NR tile of C from a packed sliver of each operand.
//
//   a  (kc, MR)  packed: at step k, the MR values op(A)[i0 .. i0+MR)[k]
//   b  (kc, NR)  packed: at step k, the NR values op(B)[k][j0 .. j0+NR)
//   c  (mr, nr)  the part of the tile that exists in C, row stride ldc
//   bias (nr) or NULL: added to every row (the first pass over K only)
//
// then  c = alpha * (a^T b) + beta * c + bias,  and c is not read when beta
// is 0 (C may hold garbage, NaN included, which 0 * NaN would propagate).
//
// Each step of the k loop is one rank-1 update of the tile: two vector loads
// of B, MR broadcasts of A, 2*MR fused multiply-adds. With AVX-512 that is 28
// FMAs, which the two FMA units finish in 14 cycles, against 16 loads, which
// the two load ports finish in 8: the kernel is bound by arithmetic, as it
// should be. The 28 accumulators also hide the FMA's latency: an FMA takes 4
// cycles to produce its result, so with 2 units at least 8 independent sums
// must be in flight to keep both busy every cycle.
//
// The tile at the bottom or right edge of C is ragged: only mr <= MR rows and
// nr <= NR columns of it exist. The packing padded its operands with zeros, so
// the loop computes the whole tile anyway; with AVX-512 the epilogue then
// stores only what exists, through lane masks. Small products are mostly edge:
// an attention block of 64 queries is four full slivers of 14 rows and one of 8.
// (Without masks, i.e. AVX2 and the portable vectors, the caller passes full
// tiles only and blends a ragged one in from a scratch tile.)
//
// `noinline`: inlined into its caller, whose own variables then compete for
// the 32 vector registers, GCC 12 kept one accumulator on the stack, a load
// and a store in every step of the loop; alone, it gets all 32. (Measured: 10%
// on a 3712 x 128 x 128 product on one core.)
#if defined(__AVX512F__)
#define MASKED_EDGES 1
#else
#define MASKED_EDGES 0
#endif
static __attribute__((noinline)) void kernel(int kc, const float *restrict a, const float *restrict b,
                                             float *restrict c, ptrdiff_t ldc, float alpha, float beta,
                                             const float *restrict bias, int mr, int nr) {
    vec acc[MR][2];  // the tile of C, in registers: row i, columns [0,VL) and [VL,2VL)
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        acc[i][0] = vzero();
        acc[i][1] = vzero();
        // C is read or written only after the loop, 2*MR cache lines at the
        // end of a long computation. Asking for them now lets the memory
        // system fetch them while we compute, instead of stalling at the end.
        if (i < mr) {
            __builtin_prefetch(c + i * ldc, 1);
            __builtin_prefetch(c + i * ldc + nr - 1, 1);
        }
    }
    for (int k = 0; k < kc; k++) {
        vec b0 = vload(b), b1 = vload(b + VL);  // op(B)[k][j0 .. j0+NR)
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            vec ai = vset1(a[i]);  // op(A)[i0+i][k], in every lane
            acc[i][0] = vfma(ai, b0, acc[i][0]);
            acc[i][1] = vfma(ai, b1, acc[i][1]);
        }
        a += MR;
        b += NR;
    }
    // The epilogue: scale, add the bias, blend with the old C.
    vec va = vset1(alpha), vb = vset1(beta);
#if MASKED_EDGES
    // m0, m1: which lanes of the tile's two column vectors exist in C.
    __mmask16 m0 = (__mmask16)(nr >= VL ? 0xFFFFu : (1u << nr) - 1u);
    __mmask16 m1 = (__mmask16)(nr >= NR ? 0xFFFFu : nr <= VL ? 0u : (1u << (nr - VL)) - 1u);
    vec bias0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : vzero();
    vec bias1 = bias ? _mm512_maskz_loadu_ps(m1, bias + VL) : vzero();
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        if (i >= mr) break;
        float *ci = c + i * ldc;  // (nr) row i of the tile
        vec r0 = vfma(va, acc[i][0], bias0), r1 = vfma(va, acc[i][1], bias1);
        if (beta != 0.0f) {
            r0 = vfma(vb, _mm512_maskz_loadu_ps(m0, ci), r0);
            r1 = vfma(vb, _mm512_maskz_loadu_ps(m1, ci + VL), r1);
        }
        _mm512_mask_storeu_ps(ci, m0, r0);
        _mm512_mask_storeu_ps(ci + VL, m1, r1);
    }
#else
    (void)mr, (void)nr;  // always MR and NR here
    vec bias0 = bias ? vloadu(bias) : vzero(), bias1 = bias ? vloadu(bias + VL) : vzero();
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        float *ci = c + i * ldc;  // (NR) row i of the tile
        vec r0 = vfma(va, acc[i][0], bias0), r1 = vfma(va, acc[i][1], bias1);
        if (beta != 0.0f) {
            r0 = vfma(vb, vloadu(ci), r0);
            r1 = vfma(vb, vloadu(ci + VL), r1);
        }
        vstoreu(ci, r0);
        vstoreu(ci + VL, r1);
    }
#endif
}

// ---------------------------------------------------------------------------
// Packing. Two shapes of copy cover all four (transA, transB) cases:
//
//   op(A) = A:    a sliver's MR rows are MR rows of A, read along k. The
//                 packed layout wants them across: a transpose.
//   op(A) = A^T:  the MR values of step k are contiguous in row k of A: a copy.
//   op(B) = B:    the NR values of step k are contiguous in row k of B: a copy.
//   op(B) = B^T:  the NR values of step k are column k of B (N, K): a transpose.
//
// The Linear layer's forward (inp @ weight^T) takes the transposing path for
// both operands, so the transpose is worth doing with vector shuffles.

#if defined(__AVX512F__)
// Transposes the 16x16 block held in r[0..15] (r[i] = row i) in place, in four
// rounds of shuffles that each swap ever larger sub-blocks: pairs of single
// floats, then pairs of 2-float groups, then 4-float groups, then 8-float
// halves. 64 shuffles move 256 floats, against one scalar store per float.
static inline void transpose16x16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {  // interleave single floats of rows i, i+1
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {  // interleave pairs
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 16; i += 8) {  // interleave 128-bit lanes of rows 4 apart
        for (int j = 0; j < 4; j++) {
            t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
            t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xDD);
        }
    }
    for (int j = 0; j < 8; j++) {  // and of rows 8 apart
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xDD);
    }
}
#endif

// The transposing pack. `rows` (at most 16) rows of a row-major panel,
//     src  (rows, kc)  row stride ld
// go to
//     dst  (kc, W)     dst[k*W + r] = src[r*ld + k],  for r < min(W, 16)
// with lanes rows .. min(W,16)-1 set to zero (the padding of an edge sliver).
// W is the packed width (MR or NR); a panel wider than 16 is packed 16 rows at
// a time by the caller.
static void pack_transpose(float *restrict dst, int W, const float *restrict src, ptrdiff_t ld, int rows,
                           int kc) {
    int lanes = W < 16 ? W : 16;
#if defined(__AVX512F__)
    __mmask16 store_mask = (__mmask16)((1u << lanes) - 1u);
    for (int k0 = 0; k0 < kc; k0 += 16) {
        int kn = imin(16, kc - k0);  // columns of this 16x16 block
        __mmask16 load_mask = (__mmask16)((1u << kn) - 1u);
        __m512 r[16];
        for (int i = 0; i < 16; i++)
            r[i] = i < rows ? _mm512_maskz_loadu_ps(load_mask, src + i * ld + k0) : _mm512_setzero_ps();
        transpose16x16(r);  // now r[k] holds column k0+k: one packed step
        for (int k = 0; k < kn; k++) _mm512_mask_storeu_ps(dst + (ptrdiff_t)(k0 + k) * W, store_mask, r[k]);
    }
#else
    for (int k = 0; k < kc; k++) {
        float *d = dst + (ptrdiff_t)k * W;
        for (int r = 0; r < rows; r++) d[r] = src[r * ld + k];
        for (int r = rows; r < lanes; r++) d[r] = 0.0f;
    }
#endif
}

// The copying pack: step k's `n` values are contiguous at src + k*ld.
//     src  (kc, n)   row stride ld, n <= W
//     dst  (kc, W)   dst[k*W + j] = src[k*ld + j], lanes n .. W-1 zeroed
static void pack_copy(float *restrict dst, int W, const float *restrict src, ptrdiff_t ld, int n, int kc) {
#if defined(__AVX512F__)
    // Whole vectors with masks: the lanes past n read nothing and write zeros.
    for (int k = 0; k < kc; k++) {
        const float *s = src + k * ld;
        float *d = dst + (ptrdiff_t)k * W;
        for (int j = 0; j < W; j += 16) {
            int left = n - j < 0 ? 0 : imin(16, n - j), lanes = imin(16, W - j);
            __m512 v = _mm512_maskz_loadu_ps((__mmask16)((1u << left) - 1u), s + j);
            _mm512_mask_storeu_ps(d + j, (__mmask16)((1u << lanes) - 1u), v);
        }
    }
#else
    for (int k = 0; k < kc; k++) {
        const float *s = src + k * ld;
        float *d = dst + (ptrdiff_t)k * W;
        for (int j = 0; j < n; j++) d[j] = s[j];
        for (int j = n; j < W; j++) d[j] = 0.0f;
    }
#endif
}

// One sliver of op(A): rows i0 .. i0+mr, steps p0 .. p0+kc.
//     A   (M, K) row stride lda, or (K, M) when transA
//     ap  (kc, MR)
static void pack_a(float *restrict ap, bool transA, const float *A, ptrdiff_t lda, int i0, int mr, int p0,
                   int kc) {
    if (!transA) pack_transpose(ap, MR, A + i0 * lda + p0, lda, mr, kc);
    else pack_copy(ap, MR, A + p0 * lda + i0, lda, mr, kc);
}

// One sliver of op(B): columns j0 .. j0+nr, steps p0 .. p0+kc.
//     B   (K, N) row stride ldb, or (N, K) when transB
//     bp  (kc, NR)
static void pack_b(float *restrict bp, bool transB, const float *B, ptrdiff_t ldb, int j0, int nr, int p0,
                   int kc) {
    if (!transB) {
        pack_copy(bp, NR, B + p0 * ldb + j0, ldb, nr, kc);
    } else {
        for (int j = 0; j < NR; j += 16) {  // 16 rows of B at a time
            int rows = nr - j < 0 ? 0 : imin(16, nr - j);
            pack_transpose(bp + j, NR, B + (j0 + j) * ldb + p0, ldb, rows, kc);
        }
    }
}

// ---------------------------------------------------------------------------
// The blocked driver.
//
// How finely to cut the work. A task is one sliver of A against a range of B's
// slivers. With many slivers of A, one task per sliver balances the threads by
// itself; with few (a small M, or M = 1 during generation) we also split the
// columns, or some threads would sit idle. We split as little as gives every
// thread about the same number of tasks, because each extra split packs the
// same A sliver once more.
static int column_splits(int a_slivers, int b_slivers, int threads) {
    int best = 1;
    for (int s = 1; s <= b_slivers && s <= 16; s++) {
        int tasks = a_slivers * s, rounds = (tasks + threads - 1) / threads;
        best = s;
        if (tasks >= 16 * threads || tasks >= 0.97 * rounds * threads) break;
    }
    return best;
}

// ---------------------------------------------------------------------------
// A barrier that waits by spinning first.
//
// The team meets once per block of B (the driver below), and a product of
// 4,000 x 384 x 128 still has 17 blocks of K. An OpenMP barrier under
// OMP_WAIT_POLICY=passive (train_nano.sh's choice: on a shared laptop, idle
// threads should sleep) puts the first thread to arrive to sleep in the
// kernel, and waking it takes tens of microseconds, as long as a block's
// work. The threads of one product arrive within a few microseconds of each
// other, so this barrier spins first, watching a shared flag (with the
// `pause` hint between looks), and only after SPIN_LIMIT looks gives its core
// to whoever else wants it (sched_yield) between further looks. Sense
// reversal: every round flips the value the flag must reach, so a fast thread
// cannot run through the next round's barrier on the last round's signal.
enum { SPIN_LIMIT = 4000 };
typedef struct {
    atomic_int arrived;  // threads at the barrier this round
    atomic_int sense;    // flips when the last one arrives
    int n;               // team size
} SpinBarrier;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// my_sense: the calling thread's own copy of the sense, flipped every round.
static void spin_barrier(SpinBarrier *b, int *my_sense) {
    const int s = *my_sense = !*my_sense;
    if (atomic_fetch_add(&b->arrived, 1) == b->n - 1) {   // the last to arrive releases the rest
        atomic_store(&b->arrived, 0);
        atomic_store(&b->sense, s);
        return;
    }
    for (int looks = 0; atomic_load(&b->sense) != s; looks++) {
        if (looks < SPIN_LIMIT) cpu_relax();
        else sched_yield();
    }
}

// Everything one call needs to know, so that the steps below can be functions.
typedef struct {
    bool transA, transB;
    int M, N, K;
    float alpha, beta;
    const float *A, *B, *bias;  // A (M,K) or (K,M); B (K,N) or (N,K); bias (N) or NULL
    int lda, ldb, ldc;
    float *C;                   // (M, N)
    int k_blocks;               // passes over K per column block: ceil(K / KC)
    int a_slivers, splits;      // slivers of A; column splits per sliver (see column_splits)
    bool team;                  // run by a team of threads (OpenMP worksharing), or by the caller alone
    SpinBarrier bar;            // the team's barrier between blocks
} Gemm;

// Block number `blk` covers columns jc .. jc+nc of C and steps pc .. pc+kc of K.
static void block_range(const Gemm *g, int blk, int *jc, int *nc, int *pc, int *kc) {
    *jc = (blk / g->k_blocks) * NC, *nc = imin(NC, g->N - *jc);
    *pc = (blk % g->k_blocks) * KC, *kc = imin(KC, g->K - *pc);
}

// Packs block `blk` of op(B), (kc, nc), into bp (nc/NR slivers of (kc, NR)).
// Called by every thread of the team: the slivers are dealt out one at a time,
// so that a thread the OS has paused for a moment delays the others by one
// sliver at most.
static void pack_b_sliver(const Gemm *g, int jc, int nc, int pc, int kc, int s, float *bp) {
    pack_b(bp + (size_t)s * kc * NR, g->transB, g->B, g->ldb, jc + s * NR, imin(NR, nc - s * NR), pc, kc);
}

static void pack_b_block(const Gemm *g, int blk, float *bp) {
    int jc, nc, pc, kc;
    block_range(g, blk, &jc, &nc, &pc, &kc);
    int b_slivers = (nc + NR - 1) / NR;
    if (!g->team) {
        for (int s = 0; s < b_slivers; s++) pack_b_sliver(g, jc, nc, pc, kc, s, bp);
        return;
    }
    NM_OMP(for schedule(dynamic, 1) nowait)
    for (int s = 0; s < b_slivers; s++) pack_b_sliver(g, jc, nc, pc, kc, s, bp);
}

// One task of a block: the sliver `is` of A (packed into ap, unless ap holds
// it already) against this task's share of the packed block of B.
//   ap    (KC, MR)  the calling thread's buffer for a packed sliver of A
//   edge  (MR, NR)  its scratch tile for ragged edges of C (without masks)
static void multiply_task(const Gemm *g, int task, int jc, int nc, int pc, int kc, const float *bp, float *ap,
                          int *packed, float *edge) {
    int b_slivers = (nc + NR - 1) / NR, splits = g->splits;
    // The first pass over K applies beta and the bias; later ones add to it.
    float beta = pc == 0 ? g->beta : 1.0f;
    const float *bias = pc == 0 ? g->bias : NULL;
    int is = task / splits, split = task % splits;
    int i0 = is * MR, mr = imin(MR, g->M - i0);
    if (*packed != is) {
        pack_a(ap, g->transA, g->A, g->lda, i0, mr, pc, kc);
        *packed = is;
    }
    // The sliver of A now sits in L1; sweep this task's slivers of B past it.
    int s_end = (int)((long)b_slivers * (split + 1) / splits);
    for (int s = (int)((long)b_slivers * split / splits); s < s_end; s++) {
        int j0 = jc + s * NR, nr = imin(NR, g->N - j0);
        const float *bs = bp + (size_t)s * kc * NR;            // (kc, NR)
        float *c = g->C + (ptrdiff_t)i0 * g->ldc + j0;           // (mr, nr) within (M, N)
        const float *bias_s = bias ? bias + j0 : NULL;           // (nr) or NULL
        if (MASKED_EDGES || (mr == MR && nr == NR)) {
            kernel(kc, ap, bs, c, g->ldc, g->alpha, beta, bias_s, mr, nr);
        } else {
            // A ragged tile without masks: compute the whole padded tile
            // into scratch, then blend in only the part of it that exists.
            kernel(kc, ap, bs, edge, NR, 1.0f, 0.0f, NULL, MR, NR);
            for (int i = 0; i < mr; i++) {
                float *ci = c + (ptrdiff_t)i * g->ldc;  // (nr)
                for (int j = 0; j < nr; j++) {
                    float v = g->alpha * edge[i * NR + j] + (bias_s ? bias_s[j] : 0.0f);
                    ci[j] = beta == 0.0f ? v : v + beta * ci[j];
                }
            }
        }
    }
}

// Multiplies every sliver of A by the packed block `blk` of B, into C.
// Called by every thread of the team: the slivers are dealt out one at a time.
static void multiply_block(const Gemm *g, int blk, const float *bp, float *ap, float *edge) {
    int jc, nc, pc, kc;
    block_range(g, blk, &jc, &nc, &pc, &kc);
    int packed = -1;  // which sliver `ap` holds now
    int tasks = g->a_slivers * g->splits;
    if (!g->team) {
        for (int task = 0; task < tasks; task++) multiply_task(g, task, jc, nc, pc, kc, bp, ap, &packed, edge);
        return;
    }
    NM_OMP(for schedule(dynamic, 1) nowait)
    for (int task = 0; task < tasks; task++) multiply_task(g, task, jc, nc, pc, kc, bp, ap, &packed, edge);
}

// The two packed blocks of B need 2 MB. Allocating and freeing that on every
// call looks free but is not: the C library hands a freed block that large
// back to the operating system, and the next call's first touch of each of its
// 512 pages is a page fault that also zeroes the page, which cost about 8% of
// a 1024^3 multiply when we measured it. So each thread that calls gemm keeps
// its buffer between calls and only ever grows it. This is the one piece of
// state the file keeps, and it is invisible from outside: thread-local, so
// two threads may multiply at once, and the whole result of a call still
// depends only on its arguments.
static _Thread_local float *workspace_buf;  // (workspace_floats)
static _Thread_local size_t workspace_floats;

static void workspace(size_t floats, float **out) {
    if (floats > workspace_floats) {
        free(workspace_buf);
        workspace_buf = xmalloc(floats * sizeof(float));
        workspace_floats = floats;
    }
    *out = workspace_buf;
}

// The blocks of B, in order, by every thread of the team (or the caller alone):
//   bp  two buffers of one packed block of B each, used in turn.
static void run_blocks(Gemm *g, int blocks, float *bp[2]) {
    _Alignas(64) float ap[KC * MR];    // (KC, MR) this thread's packed sliver of A
    _Alignas(64) float edge[MR * NR];  // (MR, NR) scratch for ragged tiles (without masks)
    int sense = 0;                     // this thread's side of the spin barrier
    // The spin barrier counts on every thread the driver asked for; should
    // OpenMP have given fewer, its own barrier is the one that knows.
    bool spin = g->team && omp_team_size() == g->bar.n;
    pack_b_block(g, 0, bp[0]);
    if (spin) {
        spin_barrier(&g->bar, &sense);
    } else if (g->team) {
        NM_OMP(barrier)
    }
    for (int blk = 0; blk < blocks; blk++) {
        multiply_block(g, blk, bp[blk % 2], ap, edge);
        if (blk + 1 < blocks) pack_b_block(g, blk + 1, bp[(blk + 1) % 2]);
        if (spin) {
            spin_barrier(&g->bar, &sense);
        } else if (g->team) {
            NM_OMP(barrier)
        }
    }
}

// C (M,N) = alpha * op(A) @ op(B) + beta * C + bias, bias (N) or NULL.
// The bias rides along with the first pass over K, so the Linear forward
// reads and writes its output once rather than twice.
//
// The blocks of B, (KC, NC) each, are taken in order: all passes over K for
// the first NC columns of C, then the next NC columns, and so on. Two buffers
// alternate, so that a thread that is done with block b can already pack its
// share of block b+1 while the others finish b. One barrier per block
// (spin_barrier, above) then separates "b+1 is packed, b is no longer read"
// from the next round.
static void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc, const float *bias) {
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == 0.0f) {  // nothing to multiply: C = beta * C + bias
        if (beta == 1.0f && !bias) return;
        for (int i = 0; i < M; i++) {
            float *ci = C + (ptrdiff_t)i * ldc;  // (N)
            for (int j = 0; j < N; j++) ci[j] = (beta == 0.0f ? 0.0f : beta * ci[j]) + (bias ? bias[j] : 0.0f);
        }
        return;
    }

    Gemm g = {.transA = transA, .transB = transB, .M = M, .N = N, .K = K, .alpha = alpha, .beta = beta,
              .A = A, .B = B, .bias = bias, .lda = lda, .ldb = ldb, .ldc = ldc, .C = C,
              .k_blocks = (K + KC - 1) / KC, .a_slivers = (M + MR - 1) / MR, .splits = 1};
    int blocks = ((N + NC - 1) / NC) * g.k_blocks;
    int threads = 1;
#ifdef _OPENMP
    // Below a few million flops, waking a team of threads costs more than it saves.
    if (2.0 * M * N * K >= 4e6 && !omp_in_parallel()) threads = omp_get_max_threads();
#endif
    size_t buf_floats = (size_t)((imin(N, NC) + NR - 1) / NR) * NR * KC;  // one packed block of B
    float *bp[2];
    workspace(2 * buf_floats, &bp[0]);
    bp[1] = bp[0] + buf_floats;
    g.splits = column_splits(g.a_slivers, (int)(buf_floats / ((size_t)NR * KC)), threads);

    // One thread needs no team: a product too small to share (or one called
    // from inside another parallel region, such as attention's blocks) runs on
    // the caller, with no OpenMP region to open and close around it.
    g.team = threads > 1;
    atomic_init(&g.bar.arrived, 0);
    atomic_init(&g.bar.sense, 0);
    g.bar.n = threads;
    if (!g.team) {
        run_blocks(&g, blocks, bp);
        return;
    }
    NM_OMP(parallel num_threads(threads))
    run_blocks(&g, blocks, bp);
}

void sgemm_cpu(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc) {
    NM_CHECK(M >= 0 && N >= 0 && K >= 0, "sgemm_cpu: negative size M=%d N=%d K=%d", M, N, K);
    NM_CHECK(ldc >= N, "sgemm_cpu: ldc=%d is less than N=%d", ldc, N);
    if (M > 0 && K > 0) {
        NM_CHECK(lda >= (transA ? M : K), "sgemm_cpu: lda=%d is less than the row length %d of A%s", lda,
                 transA ? M : K, transA ? " (stored K x M)" : "");
    }
    if (N > 0 && K > 0) {
        NM_CHECK(ldb >= (transB ? K : N), "sgemm_cpu: ldb=%d is less than the row length %d of B%s", ldb,
                 transB ? K : N, transB ? " (stored N x K)" : "");
    }
    gemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL);
}

// ---------------------------------------------------------------------------
// The Linear layer on the CPU.

// out (M,N) = inp (M,K) @ weight (N,K)^T + bias (N)
//   out     (M, N)
//   inp     (M, K)
//   weight  (N, K)  PyTorch's layout: (out_features, in_features)
//   bias    (N) or NULL
void matmul_forward_cpu(float *out, const float *inp, const float *weight, const float *bias, int M, int K,
                        int N) {
    gemm(false, true, M, N, K, 1.0f, inp, K, weight, K, 0.0f, out, N, bias);
}

// The backward of
//     out[m][n] = sum_k inp[m][k] * weight[n][k] + bias[n]
// Each input appears in that line multiplied by something; its gradient is the
// sum, over every place it appears, of dout times that something:
//   d/d inp[m][k]     = sum_n dout[m][n] * weight[n][k]   ->  dinp    = dout @ weight
//   d/d weight[n][k]  = sum_m dout[m][n] * inp[m][k]      ->  dweight = dout^T @ inp
//   d/d bias[n]       = sum_m dout[m][n]                  ->  dbias   = column sums of dout
// All three are accumulated into (beta = 1), never overwritten.
//   dinp    (M, K) or NULL
//   dweight (N, K) or NULL
//   dbias   (N)    or NULL
//   dout    (M, N)
//   inp     (M, K)
//   weight  (N, K)
void matmul_backward_cpu(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                         const float *weight, int M, int K, int N) {
    // dinp (M,K) += dout (M,N) @ weight (N,K): both operands as stored.
    if (dinp) gemm(false, false, M, K, N, 1.0f, dout, N, weight, K, 1.0f, dinp, K, NULL);
    // dweight (N,K) += dout^T (N,M) @ inp (M,K): dout read transposed, i.e.
    // "A stored (K,M)" in sgemm's terms, with the sum running over the M rows.
    if (dweight) gemm(true, false, N, K, M, 1.0f, dout, N, inp, K, 1.0f, dweight, K, NULL);
    // dbias (N) += sum over the M rows of dout. Threads take disjoint bands of
    // columns and each column is summed top to bottom, so the result does not
    // depend on the thread count. A double accumulator keeps a sum over
    // thousands of rows accurate to fp32's last bit or so.
    if (dbias && M > 0) {
        enum { BAND = 256 };  // columns per task: 1 KB of each row, read front to back
        int bands = (N + BAND - 1) / BAND;
        NM_OMP(parallel for schedule(static) if ((double)M * N > 1e6))
        for (int band = 0; band < bands; band++) {
            int j0 = band * BAND, nj = imin(BAND, N - j0);
            double sum[BAND] = {0};
            for (int m = 0; m < M; m++) {
                const float *row = dout + (ptrdiff_t)m * N + j0;  // (nj)
                for (int j = 0; j < nj; j++) sum[j] += row[j];
            }
            for (int j = 0; j < nj; j++) dbias[j0 + j] += (float)sum[j];
        }
    }
}

// ---------------------------------------------------------------------------
// A few rows: matrix-vector products

// A few rows against a large weight: one dot product per (row, output), the
// outputs split across threads, each thread streaming its own rows of w once.
// This is what decoding is made of (M = 1), and where the general GEMM, which
// parallelises over blocks of rows, would leave all but one core idle.
#define GEMV_MAX_ROWS 4

// x . w over K elements. Decoding streams every weight of the model from
// memory once per token, so this loop must keep many loads in flight: two
// independent 16-wide accumulators (each inner j-loop becomes one vector
// multiply-add) let the core issue the next loads while the previous
// multiply-adds finish; a single accumulator makes every step wait on the
// last, and halves the memory bandwidth this loop reaches. Separate
// accumulators are also what lets -O3 vectorise without reassociating one sum.
#define GEMV_W 16
static inline float dot_f32(const float *x, const float *w, int K) {
    float a0[GEMV_W] = {0}, a1[GEMV_W] = {0};
    int k = 0;
    for (; k + 2 * GEMV_W <= K; k += 2 * GEMV_W) {
        for (int j = 0; j < GEMV_W; j++) a0[j] += x[k + j] * w[k + j];
        for (int j = 0; j < GEMV_W; j++) a1[j] += x[k + GEMV_W + j] * w[k + GEMV_W + j];
    }
    float s = 0.0f;
    for (; k < K; k++) s += x[k] * w[k];
    for (int j = 0; j < GEMV_W; j++) s += a0[j] + a1[j];
    return s;
}

static void gemv_rows(float *out, const float *inp, const float *w, const float *bias, int M, int K, int N) {
    // threads only pay off past a few hundred thousand multiply-adds: waking
    // them costs microseconds, far more on a loaded machine
    NM_OMP(parallel for schedule(static) if ((size_t)M * K * N > (1u << 18)))
    for (int n = 0; n < N; n++) {
        const float *wn = w + (size_t)n * K;   // (K,)
        for (int m = 0; m < M; m++)
            out[(size_t)m * N + n] = dot_f32(inp + (size_t)m * K, wn, K) + (bias ? bias[n] : 0.0f);   // x (K,)
    }
}

// ---------------------------------------------------------------------------
// Tensor-level entry points: check everything, then pick the device.

// The number of rows of t seen as a matrix (..., last): the product of all
// but the last dimension (1 for a vector).
static int64_t rows_of(Tensor t) {
    int64_t r = 1;
    for (int d = 0; d + 1 < t.ndim; d++) r *= t.shape[d];
    return r;
}

static int64_t last_dim(Tensor t) { return t.shape[t.ndim - 1]; }

// Shape checks common to forward and backward, against inp (..., K) and
// weight (N, K). Returns M, K, N through the pointers.
static void check_operands(const char *op, Tensor inp, Tensor weight, int *M, int *K, int *N) {
    char s1[96], s2[96];
    NM_CHECK(inp.data != NULL && weight.data != NULL, "%s: inp and weight must have data", op);
    NM_CHECK(inp.ndim >= 1 && inp.ndim <= NM_MAX_DIMS, "%s: inp must have 1 to %d dims, got %d", op,
             NM_MAX_DIMS, inp.ndim);
    NM_CHECK(weight.ndim == 2, "%s: weight must be 2-D (N, K), got shape %s", op,
             shape_str(weight.shape, weight.ndim, s1, sizeof s1));
    NM_CHECK(weight.shape[1] == last_dim(inp), "%s: weight %s does not match inp %s: need (N, K=%lld)", op,
             shape_str(weight.shape, weight.ndim, s1, sizeof s1), shape_str(inp.shape, inp.ndim, s2, sizeof s2),
             (long long)last_dim(inp));
    int64_t m = rows_of(inp), k = last_dim(inp), n = weight.shape[0];
    NM_CHECK(m >= 0 && k >= 0 && n >= 0 && m <= INT_MAX && k <= INT_MAX && n <= INT_MAX,
             "%s: sizes M=%lld K=%lld N=%lld out of range (each must fit in an int)", op, (long long)m,
             (long long)k, (long long)n);
    *M = (int)m, *K = (int)k, *N = (int)n;
}

// Every tensor that takes part must live on the same device with the same dtype.
static void check_same(const char *op, const char *name, Tensor t, Tensor ref) {
    NM_CHECK(t.device == ref.device, "%s: %s is on %s but inp is on %s", op, name, device_name(t.device),
             device_name(ref.device));
    NM_CHECK(t.dtype == ref.dtype, "%s: %s is %s but inp is %s", op, name, dtype_name(t.dtype),
             dtype_name(ref.dtype));
}

static void check_dtype_for_device(const char *op, Tensor t) {
    if (t.device == DEVICE_CPU)
        NM_CHECK(t.dtype == DT_F32, "%s: the CPU path computes in F32, got %s (convert with dtype_convert)", op,
                 dtype_name(t.dtype));
    else
        NM_CHECK(t.dtype == DT_F32 || t.dtype == DT_BF16, "%s: the CUDA path takes F32 or BF16, got %s", op,
                 dtype_name(t.dtype));
}

// A vector (N): the bias or its gradient.
static void check_vector(const char *op, const char *name, Tensor t, int N) {
    char s[96];
    NM_CHECK(t.ndim == 1 && t.shape[0] == N, "%s: %s must be (N=%d), got %s", op, name, N,
             shape_str(t.shape, t.ndim, s, sizeof s));
}

// out (..., N) must hold M rows of N: usually inp's leading dims, but any
// shape with M rows will do (e.g. (B*T, N) for an inp of (B, T, K)).
static void check_rows(const char *op, const char *name, Tensor t, int M, int N) {
    char s[96];
    NM_CHECK(t.ndim >= 1 && t.ndim <= NM_MAX_DIMS && last_dim(t) == N && rows_of(t) == M,
             "%s: %s must be (..., N=%d) with %d rows in all, got %s", op, name, N, M,
             shape_str(t.shape, t.ndim, s, sizeof s));
}

void matmul_forward(Tensor out, Tensor inp, Tensor weight, Tensor bias) {
    const char *op = "matmul_forward";
    int M, K, N;
    check_operands(op, inp, weight, &M, &K, &N);
    NM_CHECK(out.data != NULL, "%s: out must have data", op);
    check_rows(op, "out", out, M, N);
    check_same(op, "weight", weight, inp);
    check_same(op, "out", out, inp);
    if (bias.data) {
        check_same(op, "bias", bias, inp);
        check_vector(op, "bias", bias, N);
    }
    check_dtype_for_device(op, inp);
    if (inp.device == DEVICE_CPU && M <= GEMV_MAX_ROWS)
        gemv_rows(out.data, inp.data, weight.data, bias.data, M, K, N);
    else if (inp.device == DEVICE_CPU)
        matmul_forward_cpu(out.data, inp.data, weight.data, bias.data, M, K, N);
    else
        matmul_forward_cuda(out.data, inp.data, weight.data, bias.data, M, K, N, inp.dtype);
}

void matmul_backward(Tensor dinp, Tensor dweight, Tensor dbias, Tensor dout, Tensor inp, Tensor weight) {
    const char *op = "matmul_backward";
    char s1[96], s2[96];
    int M, K, N;
    check_operands(op, inp, weight, &M, &K, &N);
    NM_CHECK(dout.data != NULL, "%s: dout must have data", op);
    check_rows(op, "dout", dout, M, N);
    check_same(op, "weight", weight, inp);
    check_same(op, "dout", dout, inp);
    if (dinp.data) {
        check_same(op, "dinp", dinp, inp);
        NM_CHECK(shape_equal(dinp, inp), "%s: dinp %s must have inp's shape %s", op,
                 shape_str(dinp.shape, dinp.ndim, s1, sizeof s1), shape_str(inp.shape, inp.ndim, s2, sizeof s2));
    }
    if (dweight.data) {
        check_same(op, "dweight", dweight, inp);
        NM_CHECK(shape_equal(dweight, weight), "%s: dweight %s must have weight's shape %s", op,
                 shape_str(dweight.shape, dweight.ndim, s1, sizeof s1),
                 shape_str(weight.shape, weight.ndim, s2, sizeof s2));
    }
    if (dbias.data) {
        check_same(op, "dbias", dbias, inp);
        check_vector(op, "dbias", dbias, N);
    }
    check_dtype_for_device(op, inp);
    if (inp.device == DEVICE_CPU)
        matmul_backward_cpu(dinp.data, dweight.data, dbias.data, dout.data, inp.data, weight.data, M, K, N);
    else
        matmul_backward_cuda(dinp.data, dweight.data, dbias.data, dout.data, inp.data, weight.data, M, K, N,
                             inp.dtype);
}
