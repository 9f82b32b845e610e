// verify_gpu_ch06.c: the NCCL backend's collectives on GPUs against the MPI backend's on the CPU.
//
//   build/release/tests/verify_gpu_ch06                      one rank (make verify-gpu)
//   mpirun -np 2 build/release/tests/verify_gpu_ch06         two ranks, one GPU each
//
// Every rank fills vectors with small whole numbers that depend on its rank
// (exact in fp32, so any order of addition gives the same sum), runs each
// collective once over NCCL on device memory and once over MPI on host
// memory, and compares the two results number for number: all-reduce,
// reduce-scatter, all-gather, broadcast from the last rank, a barrier.
// The sizes are odd on purpose (NCCL's reduce-scatter and all-gather take
// equal slices, which the caller pads to). Then the rendezvous without MPI:
// a one-rank communicator from an id written to a file. Without a GPU it
// prints one FAIL line saying so (it runs only under `make verify-gpu`).
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "01_tensor/common.h"
#include "01_tensor/cuda_util.h"
#include "01_tensor/matmul.h"
#include "06_distributed/comm.h"
#include "06_distributed/comm_nccl.h"

static int failed = 0;

static void check(const Comm *c, const char *name, const float *got, const float *want, int64_t n) {
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (got[i] != want[i]) { if (first < 0) first = i; bad++; }
    if (c->rank != 0) return;
    if (bad == 0) printf("PASS ch06 nccl %s: %lld numbers equal to MPI's on %d rank(s)\n", name, (long long)n, c->world);
    else {
        printf("FAIL ch06 nccl %s: %lld of %lld differ, first at %lld: %g vs %g\n", name, (long long)bad, (long long)n,
               (long long)first, (double)got[first], (double)want[first]);
        failed++;
    }
}

static void fill(float *x, int64_t n, int rank, int salt) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)((i * 7 + rank * 13 + salt) % 97) - 48.0f;
}

int main(int argc, char **argv) {
    Comm c;
    comm_init(&c, &argc, &argv, 60);
    if (!nccl_available() || !cuda_available()) {
        if (c.rank == 0)
            printf("FAIL ch06 nccl: %s\n", nccl_available() ? "no usable GPU" : "built without CUDA and NCCL");
        comm_finalize(&c);
        return 1;
    }
    char dev[256];
    if (c.rank == 0) printf("# %s\n", cuda_device_summary(dev, sizeof dev));
    NcclComm *nc = nccl_comm_init(&c);
    const int64_t per = 100003, n = per * c.world;   // an odd slice
    float *h = xmalloc((size_t)n * sizeof(float)), *want = xmalloc((size_t)n * sizeof(float));
    float *got = xmalloc((size_t)n * sizeof(float));
    float *d = cuda_malloc((size_t)n * sizeof(float)), *d2 = cuda_malloc((size_t)n * sizeof(float));
    int64_t *counts = xmalloc((size_t)c.world * sizeof(int64_t));
    for (int r = 0; r < c.world; r++) counts[r] = per;

    fill(h, n, c.rank, 1);
    memcpy(want, h, (size_t)n * sizeof(float));
    comm_allreduce_sum(&c, want, n, "MPI all-reduce");
    cuda_upload(d, h, (size_t)n * sizeof(float));
    nccl_allreduce_sum(nc, d, n, "NCCL all-reduce");
    cuda_download(got, d, (size_t)n * sizeof(float));
    check(&c, "all-reduce", got, want, n);

    fill(h, n, c.rank, 2);
    memcpy(want, h, (size_t)n * sizeof(float));
    comm_reduce_scatter_sum(&c, want, counts, "MPI reduce-scatter");
    cuda_upload(d, h, (size_t)n * sizeof(float));
    nccl_reduce_scatter_sum(nc, d, d2, per, "NCCL reduce-scatter");
    cuda_download(got, d2, (size_t)per * sizeof(float));
    check(&c, "reduce-scatter", got, want + per * c.rank, per);

    fill(h, n, c.rank, 3);
    memcpy(want, h, (size_t)n * sizeof(float));
    comm_allgather(&c, want, counts, "MPI all-gather");
    cuda_upload(d2, h + per * c.rank, (size_t)per * sizeof(float));
    nccl_allgather(nc, d2, d, per, "NCCL all-gather");
    cuda_download(got, d, (size_t)n * sizeof(float));
    check(&c, "all-gather", got, want, n);

    fill(h, n, c.rank, 4);
    memcpy(want, h, (size_t)n * sizeof(float));
    comm_bcast(&c, want, n * (int64_t)sizeof(float), c.world - 1, "MPI broadcast");
    cuda_upload(d, h, (size_t)n * sizeof(float));
    nccl_bcast(nc, d, n, c.world - 1, "NCCL broadcast");
    cuda_download(got, d, (size_t)n * sizeof(float));
    check(&c, "broadcast", got, want, n);

    nccl_barrier(nc, "NCCL barrier");
    if (c.rank == 0) printf("PASS ch06 nccl barrier: returned on %d rank(s)\n", c.world);
    nccl_comm_free(nc);

    if (c.world == 1) {   // the rendezvous through a file, as srun without PMIx would use it
        char path[] = "/tmp/nm_nccl_id.XXXXXX";
        int fd = mkstemp(path);
        if (fd >= 0) close(fd);
        unlink(path);
        NcclComm *f = nccl_comm_init_file(0, 1, 0, path, 30);
        fill(h, per, 0, 5);
        memcpy(want, h, (size_t)per * sizeof(float));
        cuda_upload(d, h, (size_t)per * sizeof(float));
        nccl_allreduce_sum(f, d, per, "NCCL all-reduce (file rendezvous)");
        cuda_download(got, d, (size_t)per * sizeof(float));
        check(&c, "file rendezvous + all-reduce", got, want, per);
        nccl_comm_free(f);
        unlink(path);
    }
    cuda_free(d);
    cuda_free(d2);
    free(h);
    free(want);
    free(got);
    free(counts);
    comm_finalize(&c);
    return failed ? 1 : 0;
}
