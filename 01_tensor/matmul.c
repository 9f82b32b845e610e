// matmul.c: draft
#include "01_tensor/matmul.h"

#include <limits.h>
#include <stddef.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#define NM_STR_(x) #x
#ifdef _OPENMP
#define NM_OMP(...) _Pragma(NM_STR_(omp __VA_ARGS__))
#else
#define NM_OMP(...)
#endif

#ifndef KC_
#define KC_ 256
#endif
#ifndef NC_
#define NC_ 1024
#endif
#ifndef MR_
#define MR_ 14
#endif

#if defined(__AVX512F__)
#define MR MR_
#define NR 32
#elif defined(__AVX2__) && defined(__FMA__)
#define MR 6
#define NR 16
#else
#define MR 4
#define NR 8
#endif
#define KC KC_
#define NC NC_

static void kernel(int kc, const float *restrict a, const float *restrict b, float *restrict c,
                   ptrdiff_t ldc, float alpha, float beta, const float *bias) {
#if defined(__AVX512F__)
    __m512 acc[MR][2];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#ifdef PF
        _mm_prefetch((const char *)(b + PF), _MM_HINT_T0);
        _mm_prefetch((const char *)(b + PF + 16), _MM_HINT_T0);
#endif
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += MR;
        b += NR;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __m512 bias0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
    __m512 bias1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        float *ci = c + i * ldc;
        __m512 r0 = _mm512_fmadd_ps(va, acc[i][0], bias0), r1 = _mm512_fmadd_ps(va, acc[i][1], bias1);
        if (beta != 0.0f) {
            r0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci), r0);
            r1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(ci + 16), r1);
        }
        _mm512_storeu_ps(ci, r0);
        _mm512_storeu_ps(ci + 16, r1);
    }
#else
    float acc[MR][NR] = {{0}};
    for (int k = 0; k < kc; k++) {
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++) acc[i][j] += a[i] * b[j];
        a += MR;
        b += NR;
    }
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) {
            float v = alpha * acc[i][j] + (bias ? bias[j] : 0.0f);
            if (beta != 0.0f) v += beta * c[i * ldc + j];
            c[i * ldc + j] = v;
        }
#endif
}

static void pack_a(float *restrict ap, bool trans, const float *A, ptrdiff_t lda, int i0, int mr, int p0,
                   int kc) {
    if (!trans) {
        for (int i = 0; i < mr; i++) {
            const float *src = A + (ptrdiff_t)(i0 + i) * lda + p0;
            for (int k = 0; k < kc; k++) ap[k * MR + i] = src[k];
        }
    } else {
        for (int k = 0; k < kc; k++) {
            const float *src = A + (ptrdiff_t)(p0 + k) * lda + i0;
            for (int i = 0; i < mr; i++) ap[k * MR + i] = src[i];
        }
    }
    if (mr < MR)
        for (int k = 0; k < kc; k++)
            for (int i = mr; i < MR; i++) ap[k * MR + i] = 0.0f;
}

static void pack_b(float *restrict bp, bool trans, const float *B, ptrdiff_t ldb, int j0, int nr, int p0,
                   int kc) {
    if (!trans) {
        for (int k = 0; k < kc; k++) {
            const float *src = B + (ptrdiff_t)(p0 + k) * ldb + j0;
            for (int j = 0; j < nr; j++) bp[k * NR + j] = src[j];
        }
    } else {
        for (int j = 0; j < nr; j++) {
            const float *src = B + (ptrdiff_t)(j0 + j) * ldb + p0;
            for (int k = 0; k < kc; k++) bp[k * NR + j] = src[k];
        }
    }
    if (nr < NR)
        for (int k = 0; k < kc; k++)
            for (int j = nr; j < NR; j++) bp[k * NR + j] = 0.0f;
}

static int imin(int a, int b) { return a < b ? a : b; }

static void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc, const float *bias) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        for (int i = 0; i < M; i++) {
            float *ci = C + (ptrdiff_t)i * ldc;
            for (int j = 0; j < N; j++) {
                float v = beta == 0.0f ? 0.0f : beta * ci[j];
                ci[j] = v + (bias ? bias[j] : 0.0f);
            }
        }
        return;
    }
    int ncmax = imin(N, NC);
    int nsl_max = (ncmax + NR - 1) / NR;
    float *bp = xmalloc((size_t)nsl_max * NR * KC * sizeof(float));
    int msl = (M + MR - 1) / MR;
    double flops = 2.0 * M * N * K;
    (void)flops;
    NM_OMP(parallel if (flops > 2e6))
    {
        float ap[MR * KC] __attribute__((aligned(64)));
        for (int jc = 0; jc < N; jc += NC) {
            int nc = imin(NC, N - jc);
            int nsl = (nc + NR - 1) / NR;
            for (int pc = 0; pc < K; pc += KC) {
                int kc = imin(KC, K - pc);
                float bt = pc == 0 ? beta : 1.0f;
                const float *bias_here = pc == 0 ? bias : NULL;
                NM_OMP(for schedule(static))
                for (int s = 0; s < nsl; s++)
                    pack_b(bp + (size_t)s * NR * kc, transB, B, ldb, jc + s * NR, imin(NR, nc - s * NR), pc, kc);
                NM_OMP(for schedule(dynamic, 1))
                for (int is = 0; is < msl; is++) {
                    int i0 = is * MR, mr = imin(MR, M - i0);
                    pack_a(ap, transA, A, lda, i0, mr, pc, kc);
                    for (int s = 0; s < nsl; s++) {
                        int j0 = jc + s * NR, nr = imin(NR, N - j0);
                        float *c = C + (ptrdiff_t)i0 * ldc + j0;
                        const float *bb = bias_here ? bias_here + j0 : NULL;
                        if (mr == MR && nr == NR) {
                            kernel(kc, ap, bp + (size_t)s * NR * kc, c, ldc, alpha, bt, bb);
                        } else {
                            float tmp[MR * NR] __attribute__((aligned(64)));
                            kernel(kc, ap, bp + (size_t)s * NR * kc, tmp, NR, 1.0f, 0.0f, NULL);
                            for (int i = 0; i < mr; i++)
                                for (int j = 0; j < nr; j++) {
                                    float *cij = c + (ptrdiff_t)i * ldc + j;
                                    float v = alpha * tmp[i * NR + j] + (bb ? bb[j] : 0.0f);
                                    if (bt != 0.0f) v += bt * *cij;
                                    *cij = v;
                                }
                        }
                    }
                }
            }
        }
    }
    free(bp);
}

void sgemm_cpu(bool transA, bool transB, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc) {
    gemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL);
}

void matmul_forward_cpu(float *out, const float *inp, const float *weight, const float *bias, int M, int K,
                        int N) {
    gemm(false, true, M, N, K, 1.0f, inp, K, weight, K, 0.0f, out, N, bias);
}
