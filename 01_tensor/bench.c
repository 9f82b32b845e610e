// bench.c: the CPU's peak fp32 rate, and how much of it sgemm_cpu reaches.
//
// What it does. Two measurements, both "best of a few runs after a warm-up",
// because on a machine shared with other work the best run is the one the
// others disturbed least, and it is the one that says what the code can do:
//   1. Peak: every thread runs a loop that does nothing but fused
//      multiply-adds on independent registers (no loads, no stores). That is
//      the most arithmetic the cores can do; no real kernel beats it.
//   2. GEMM: sgemm_cpu on out (M,N) = inp (M,K) @ W (N,K)^T, the layout of a
//      Linear layer's forward, at a few sizes; and one Linear layer's forward
//      plus backward (three GEMMs and a column sum) at a transformer's shape.
// What it does not do: compare with anything (tests/reference/bench.py puts
// PyTorch beside it), or judge the numbers. Nothing here passes or fails.
//
// Shape letters: M rows of inp and out (tokens), K in_features, N out_features.
//
// The --json output is one object on one line, for scripts:
//   {"isa": "AVX-512",             instruction set sgemm_cpu was compiled for
//    "threads": T,                 OpenMP threads used for everything below
//    "peak": [{"threads": t, "gflops": G}, ...],   t = 1 .. T
//    "peak_gflops": G,             the peak at T threads (the yardstick)
//    "gemm": [{"M":..,"K":..,"N":.., "seconds": best time of one call,
//              "gflops": 2MNK / seconds / 1e9, "pct_peak": % of peak_gflops}, ...],
//    "linear_fwd_bwd": {"M":..,"K":..,"N":.., "seconds":.., "gflops":..,
//              "pct_peak":..}}     counting 3 GEMMs, 6MNK flops
#include "01_tensor/bench.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#include "01_tensor/common.h"
#include "01_tensor/matmul.h"
#include "01_tensor/rng.h"


// ---------------------------------------------------------------------------
// Peak: a loop of fused multiply-adds.
//
// A vector FMA has a latency of about 4 cycles and a core can start two per
// cycle, so at least 8 *independent* chains must be in flight to keep both
// units busy; we run 16 (AVX-512) or 12 (AVX2) and let each one converge to a
// harmless fixed point (acc = acc * 0.999999 + 1e-7 tends to 0.1: no overflow,
// no slow subnormal numbers). Every chain starts from a different value, so a
// compiler cannot notice that two of them compute the same thing and merge them.
// The portable build has no FMA instruction; its "peak" is a multiply and an
// add per lane, which is also what its GEMM kernel does.
#if defined(__AVX512F__)
#define PEAK_ISA "AVX-512"
#define PEAK_LANES 16
#define PEAK_CHAINS 16
typedef __m512 pvec;
#define p_set1(x) _mm512_set1_ps(x)
#define p_fma(a, b, c) _mm512_fmadd_ps(a, b, c)
#define p_add(a, b) _mm512_add_ps(a, b)
static float p_sum(pvec v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__) && defined(__FMA__)
#define PEAK_ISA "AVX2+FMA"
#define PEAK_LANES 8
#define PEAK_CHAINS 12
typedef __m256 pvec;
#define p_set1(x) _mm256_set1_ps(x)
#define p_fma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define p_add(a, b) _mm256_add_ps(a, b)
static float p_sum(pvec v) {
    float f[8];
    _mm256_storeu_ps(f, v);
    return f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7];
}
#else
#define PEAK_ISA "portable"
#define PEAK_LANES 4
#define PEAK_CHAINS 12
typedef float pvec __attribute__((vector_size(16)));
#define p_set1(x) ((pvec){(x), (x), (x), (x)})
#define p_fma(a, b, c) ((a) * (b) + (c))
#define p_add(a, b) ((a) + (b))
static float p_sum(pvec v) { return v[0] + v[1] + v[2] + v[3]; }
#endif
#define PEAK_FLOPS_PER_ITER (2.0 * PEAK_LANES * PEAK_CHAINS)

// Runs `iters` rounds of PEAK_CHAINS FMAs; returns their sum so that the
// compiler has to compute them.
static float fma_loop(long iters) {
    pvec acc[PEAK_CHAINS];
    for (int j = 0; j < PEAK_CHAINS; j++) acc[j] = p_set1(1.0f + (float)j);
    pvec x = p_set1(0.999999f), y = p_set1(1e-7f);
    for (long it = 0; it < iters; it++) {
#pragma GCC unroll 16
        for (int j = 0; j < PEAK_CHAINS; j++) acc[j] = p_fma(acc[j], x, y);
    }
    pvec s = acc[0];
    for (int j = 1; j < PEAK_CHAINS; j++) s = p_add(s, acc[j]);
    return p_sum(s);
}

static volatile float peak_sink;  // where the loops' results go, so they are not optimized away

// Seconds for `threads` threads each running fma_loop(iters) at once.
static double time_fma(int threads, long iters) {
    float sum = 0.0f;
    double t0 = now_seconds();
    NM_OMP(parallel num_threads(threads) reduction(+ : sum))
    sum += fma_loop(iters);
    double dt = now_seconds() - t0;
    peak_sink = sum;
    return dt;
}

// Best GFLOP/s of `tries` runs that each last about `seconds`.
static double peak_gflops(int threads, double seconds, int tries) {
#ifndef _OPENMP
    threads = 1;  // without OpenMP there is only one thread to measure
#endif
    long iters = 1024;
    while (time_fma(1, iters) < 0.005) iters *= 2;  // calibrate on one thread
    iters = (long)(iters * (seconds / time_fma(1, iters))) + 1;
    double best = 0.0;
    for (int t = 0; t < tries; t++) {
        double g = threads * iters * PEAK_FLOPS_PER_ITER / time_fma(threads, iters) / 1e9;
        if (g > best) best = g;
    }
    return best;
}

double bench_peak_gflops(int threads) { return peak_gflops(threads, 0.05, 5); }

// ---------------------------------------------------------------------------
// GEMM timings.

typedef struct {
    int M, K, N;
    double seconds, gflops, pct_peak;
} Timing;

// out (M,N) = inp (M,K) @ W (N,K)^T, best of `reps` after one warm-up call
// (which also faults in the pages of out).
static Timing time_gemm(int M, int K, int N, int reps, double peak, Rng *rng) {
    float *inp = xmalloc((size_t)M * K * sizeof(float));  // (M, K)
    float *w = xmalloc((size_t)N * K * sizeof(float));    // (N, K)
    float *out = xmalloc((size_t)M * N * sizeof(float));  // (M, N)
    rng_fill_normal(rng, inp, (size_t)M * K, 0.0f, 1.0f);
    rng_fill_normal(rng, w, (size_t)N * K, 0.0f, 1.0f);
    Timing t = {M, K, N, 1e30, 0, 0};
    for (int r = -1; r < reps; r++) {
        double t0 = now_seconds();
        sgemm_cpu(false, true, M, N, K, 1.0f, inp, K, w, K, 0.0f, out, N);
        double dt = now_seconds() - t0;
        if (r >= 0 && dt < t.seconds) t.seconds = dt;
    }
    t.gflops = 2.0 * M * N * K / t.seconds / 1e9;
    t.pct_peak = 100.0 * t.gflops / peak;
    free(inp), free(w), free(out);
    return t;
}

// One Linear layer's forward and backward, as training runs it.
static Timing time_linear(int M, int K, int N, int reps, double peak, Rng *rng) {
    size_t mk = (size_t)M * K, nk = (size_t)N * K, mn = (size_t)M * N;
    float *inp = xmalloc(mk * sizeof(float));   // (M, K)
    float *w = xmalloc(nk * sizeof(float));     // (N, K)
    float *b = xmalloc(N * sizeof(float));      // (N)
    float *out = xmalloc(mn * sizeof(float));   // (M, N)
    float *dout = xmalloc(mn * sizeof(float));  // (M, N)
    float *dinp = xcalloc(mk, sizeof(float));   // (M, K)
    float *dw = xcalloc(nk, sizeof(float));     // (N, K)
    float *db = xcalloc(N, sizeof(float));      // (N)
    rng_fill_normal(rng, inp, mk, 0.0f, 1.0f);
    rng_fill_normal(rng, w, nk, 0.0f, 0.02f);
    rng_fill_normal(rng, b, N, 0.0f, 0.02f);
    rng_fill_normal(rng, dout, mn, 0.0f, 1.0f);
    Timing t = {M, K, N, 1e30, 0, 0};
    for (int r = -1; r < reps; r++) {
        double t0 = now_seconds();
        matmul_forward_cpu(out, inp, w, b, M, K, N);
        matmul_backward_cpu(dinp, dw, db, dout, inp, w, M, K, N);
        double dt = now_seconds() - t0;
        if (r >= 0 && dt < t.seconds) t.seconds = dt;
    }
    t.gflops = 6.0 * M * N * K / t.seconds / 1e9;
    t.pct_peak = 100.0 * t.gflops / peak;
    free(inp), free(w), free(b), free(out), free(dout), free(dinp), free(dw), free(db);
    return t;
}

// ---------------------------------------------------------------------------
// The command.

#define MAX_SIZES 16

// "1024" -> 1024^3, "4096x1024x1024" -> M=4096, K=1024, N=1024: one side, or
// three joined by 'x', each a whole number in 1..65536 (parse_whole, common.h).
static bool parse_size(const char *s, int *M, int *K, int *N) {
    int64_t v[3];
    int n = 0;
    for (const char *p = s;;) {
        const char *x = strchr(p, 'x');
        size_t len = x ? (size_t)(x - p) : strlen(p);
        char piece[16];
        if (n == 3 || len >= sizeof piece) return false;
        memcpy(piece, p, len);
        piece[len] = '\0';
        if (!parse_whole(piece, 1, 65536, &v[n++])) return false;
        if (!x) break;
        p = x + 1;
    }
    if (n == 2) return false;
    if (n == 1) v[1] = v[2] = v[0];
    *M = (int)v[0], *K = (int)v[1], *N = (int)v[2];
    return true;
}

static int bench_usage(void) {
    fprintf(stderr, "usage: ./01_tensor/run bench [--threads N] [--json] [--sizes S,MxKxN,...] [--reps N] [--quick]"
                    " [--device cpu]\n");
    return 2;
}

int bench_main(int argc, char **argv) {
    bool json = false, quick = false;
    const char *device = NULL;
    int threads = ctx_num_threads(), reps = 5, nsizes = 0;
    int sizes[MAX_SIZES][3];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            printf("usage: ./01_tensor/run bench [--threads N] [--json] [--sizes S,MxKxN,...] [--reps N] [--quick]"
                   " [--device cpu]\n"
                   "  peak fp32 GFLOP/s of this CPU, then sgemm_cpu GFLOP/s (out = inp @ W^T) and %% of peak;\n"
                   "  the CPU only (the GPU's timings are make bench-gpu's), so --device cuda is an error\n");
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--quick") == 0) {
            quick = true;
        } else if (strcmp(a, "--threads") == 0 && i + 1 < argc) {
            threads = parse_int_arg("--threads", argv[++i], 1, 4096);
        } else if (strcmp(a, "--reps") == 0 && i + 1 < argc) {
            reps = parse_int_arg("--reps", argv[++i], 1, 4096);
        } else if (strcmp(a, "--device") == 0 && i + 1 < argc) {
            device = argv[++i];
        } else if (strcmp(a, "--sizes") == 0 && i + 1 < argc) {
            char *list = xstrdup(argv[++i]), *save = NULL;
            nsizes = 0;
            for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (nsizes == MAX_SIZES || !parse_size(tok, &sizes[nsizes][0], &sizes[nsizes][1], &sizes[nsizes][2])) {
                    fprintf(stderr, "error: bench: bad size '%s' in --sizes (want S or MxKxN, at most %d of them)\n",
                            tok, MAX_SIZES);
                    free(list);
                    return 2;
                }
                nsizes++;
            }
            free(list);
            if (nsizes == 0) return bench_usage();
        } else {
            fprintf(stderr, "error: bench: unknown option '%s'\n", a);
            return bench_usage();
        }
    }
    device_select(device, "bench", false, cuda_available());
#ifndef _OPENMP
    threads = 1;
#endif
    nm_ctx.threads = threads;
    ctx_apply_threads();

    // The default sizes: two squares around the caches' sizes, one that is
    // mostly out of cache, and a transformer's Linear layer (4096 tokens,
    // width 1024). --quick (the tour of ./01_tensor/run) does a single small
    // one, so that the tour stays fast even in the sanitizer build.
    int linear[3] = {4096, 1024, 1024};
    if (nsizes == 0) {
        static const int dflt[4][3] = {{256, 256, 256}, {1024, 1024, 1024}, {2048, 2048, 2048}, {4096, 1024, 1024}};
        static const int qck[1][3] = {{256, 256, 256}};
        nsizes = quick ? 1 : 4;
        memcpy(sizes, quick ? qck : dflt, (size_t)nsizes * sizeof sizes[0]);
    }
    if (quick) {
        reps = reps < 2 ? reps : 2;
        linear[0] = 256, linear[1] = 256, linear[2] = 256;
    }

    // Peak for 1 .. threads threads (--quick: only the one that is used).
    double peaks[64] = {0};
    int tmax = threads < 64 ? threads : 64;
    for (int t = quick ? tmax : 1; t <= tmax; t++)
        peaks[t - 1] = quick ? peak_gflops(t, 0.01, 2) : bench_peak_gflops(t);
    double peak = peaks[tmax - 1];

    Rng rng;
    rng_seed(&rng, 1234, 0);
    Timing g[MAX_SIZES];
    for (int s = 0; s < nsizes; s++) g[s] = time_gemm(sizes[s][0], sizes[s][1], sizes[s][2], reps, peak, &rng);
    Timing lin = time_linear(linear[0], linear[1], linear[2], reps, peak, &rng);

    if (json) {
        printf("{\"isa\": \"%s\", \"threads\": %d, \"peak\": [", PEAK_ISA, threads);
        for (int t = quick ? tmax : 1, first = 1; t <= tmax; t++, first = 0)
            printf("%s{\"threads\": %d, \"gflops\": %.2f}", first ? "" : ", ", t, peaks[t - 1]);
        printf("], \"peak_gflops\": %.2f, \"gemm\": [", peak);
        for (int s = 0; s < nsizes; s++)
            printf("%s{\"M\": %d, \"K\": %d, \"N\": %d, \"seconds\": %.6e, \"gflops\": %.2f, \"pct_peak\": %.1f}",
                   s ? ", " : "", g[s].M, g[s].K, g[s].N, g[s].seconds, g[s].gflops, g[s].pct_peak);
        printf("], \"linear_fwd_bwd\": {\"M\": %d, \"K\": %d, \"N\": %d, \"seconds\": %.6e, \"gflops\": %.2f, "
               "\"pct_peak\": %.1f}}\n",
               lin.M, lin.K, lin.N, lin.seconds, lin.gflops, lin.pct_peak);
        return 0;
    }

    printf("sgemm_cpu (%s kernel), %d thread%s, best of %d after a warm-up\n", PEAK_ISA, threads,
           threads == 1 ? "" : "s", reps);
    printf("peak fp32 (a loop of FMAs):");
    for (int t = quick ? tmax : 1; t <= tmax; t++)
        printf("%s %d thread%s %.1f GFLOP/s", t > (quick ? tmax : 1) ? "," : "", t, t == 1 ? "" : "s", peaks[t - 1]);
    printf("\n\n%-28s %6s %6s %6s %10s %9s %7s\n", "op", "M", "K", "N", "ms", "GFLOP/s", "% peak");
    for (int s = 0; s < nsizes; s++)
        printf("%-28s %6d %6d %6d %10.3f %9.1f %6.1f%%\n", "out = inp @ W^T (sgemm)", g[s].M, g[s].K, g[s].N,
               1e3 * g[s].seconds, g[s].gflops, g[s].pct_peak);
    printf("%-28s %6d %6d %6d %10.3f %9.1f %6.1f%%\n", "Linear forward + backward", lin.M, lin.K, lin.N,
           1e3 * lin.seconds, lin.gflops, lin.pct_peak);
    return 0;
}
