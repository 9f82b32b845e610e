// comm_nccl.cu: the NCCL backend (see comm_nccl.h).
#include <nccl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "01_tensor/cuda_common.h"
#include "06_distributed/comm_nccl.h"

struct NcclComm {
    ncclComm_t comm;
    cudaStream_t stream;
    int rank, world, device;
    double timeout;
};

static double mono_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void nccl_fail(NcclComm *nc, const char *what, const char *why) {
    fprintf(stderr, "error: rank %d: NCCL %s: %s; aborting the communicator\n", nc ? nc->rank : -1, what, why);
    fflush(stderr);
    if (nc && nc->comm) ncclCommAbort(nc->comm);
    _exit(1);
}

// Waits until the communicator's last call and the stream are done, polling
// the asynchronous error, for at most the timeout.
static void nccl_wait(NcclComm *nc, const char *what) {
    double deadline = mono_s() + nc->timeout;
    for (;;) {
        ncclResult_t st;
        ncclResult_t r = ncclCommGetAsyncError(nc->comm, &st);
        if (r != ncclSuccess) nccl_fail(nc, what, ncclGetErrorString(r));
        if (st != ncclSuccess && st != ncclInProgress) nccl_fail(nc, what, ncclGetErrorString(st));
        if (st == ncclSuccess) {
            cudaError_t q = cudaStreamQuery(nc->stream);
            if (q == cudaSuccess) return;
            if (q != cudaErrorNotReady) nccl_fail(nc, what, cudaGetErrorString(q));
        }
        if (mono_s() > deadline) {
            char why[96];
            snprintf(why, sizeof why, "did not complete within %g s (a rank is dead or hung)", nc->timeout);
            nccl_fail(nc, what, why);
        }
        usleep(50);
    }
}

#define NCCL_TRY(nc, call, what)                                               \
    do {                                                                       \
        ncclResult_t r_ = (call);                                              \
        if (r_ != ncclSuccess && r_ != ncclInProgress)                         \
            nccl_fail((nc), (what), ncclGetErrorString(r_));                   \
    } while (0)

static NcclComm *nccl_start(int rank, int world, int local_rank, ncclUniqueId id, double timeout) {
    NcclComm *nc = (NcclComm *)xcalloc(1, sizeof *nc);
    nc->rank = rank;
    nc->world = world;
    nc->timeout = timeout;
    int ndev = 0;
    CUDA_CHECK(cudaGetDeviceCount(&ndev));
    NM_CHECK(ndev > 0, "rank %d: no CUDA device", rank);
    nc->device = local_rank % ndev;
    CUDA_CHECK(cudaSetDevice(nc->device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&nc->stream, cudaStreamNonBlocking));
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;   // every call returns at once; nccl_wait polls
    NCCL_TRY(nc, ncclCommInitRankConfig(&nc->comm, world, id, rank, &cfg), "init");
    // initialisation itself is asynchronous in a non-blocking communicator
    double deadline = mono_s() + timeout;
    for (;;) {
        ncclResult_t st;
        NCCL_TRY(nc, ncclCommGetAsyncError(nc->comm, &st), "init");
        if (st == ncclSuccess) break;
        if (st != ncclInProgress) nccl_fail(nc, "init", ncclGetErrorString(st));
        if (mono_s() > deadline) nccl_fail(nc, "init", "the other ranks did not join within the timeout");
        usleep(1000);
    }
    return nc;
}

extern "C" bool nccl_available(void) { return true; }

extern "C" NcclComm *nccl_comm_init(Comm *c) {
    ncclUniqueId id;
    if (c->rank == 0) NCCL_TRY((NcclComm *)NULL, ncclGetUniqueId(&id), "unique id");
    comm_bcast(c, &id, sizeof id, 0, "the NCCL unique id");
    return nccl_start(c->rank, c->world, c->local_rank, id, c->timeout);
}

extern "C" NcclComm *nccl_comm_init_file(int rank, int world, int local_rank, const char *id_path, double timeout) {
    ncclUniqueId id;
    if (rank == 0) {
        NCCL_TRY((NcclComm *)NULL, ncclGetUniqueId(&id), "unique id");
        // written whole under a temporary name, then renamed: a reader never sees half an id
        if (write_file_atomic(id_path, (const char *)&id, sizeof id) != 0)
            NM_DIE("rank 0: cannot write the NCCL id to %s", id_path);
    } else {
        double deadline = mono_s() + timeout;
        for (;;) {
            size_t len = 0;
            const char *err;
            char *b = read_file(id_path, &len, &err);
            if (b && len == sizeof id) {
                memcpy(&id, b, sizeof id);
                free(b);
                break;
            }
            free(b);
            if (mono_s() > deadline) NM_DIE("rank %d: no NCCL id in %s after %g s (is rank 0 up?)", rank, id_path, timeout);
            usleep(10000);
        }
    }
    return nccl_start(rank, world, local_rank, id, timeout);
}

extern "C" void nccl_comm_free(NcclComm *nc) {
    if (!nc) return;
    ncclCommFinalize(nc->comm);
    nccl_wait(nc, "finalize");
    ncclCommDestroy(nc->comm);
    cudaStreamDestroy(nc->stream);
    free(nc);
}

extern "C" int nccl_device(const NcclComm *nc) { return nc->device; }

extern "C" void nccl_allreduce_sum(NcclComm *nc, float *x_dev, int64_t n, const char *what) {
    NCCL_TRY(nc, ncclAllReduce(x_dev, x_dev, (size_t)n, ncclFloat32, ncclSum, nc->comm, nc->stream), what);
    nccl_wait(nc, what);
}

extern "C" void nccl_reduce_scatter_sum(NcclComm *nc, const float *x_dev, float *mine_dev, int64_t per_rank,
                                        const char *what) {
    NCCL_TRY(nc, ncclReduceScatter(x_dev, mine_dev, (size_t)per_rank, ncclFloat32, ncclSum, nc->comm, nc->stream),
             what);
    nccl_wait(nc, what);
}

extern "C" void nccl_allgather(NcclComm *nc, const float *mine_dev, float *x_dev, int64_t per_rank,
                               const char *what) {
    NCCL_TRY(nc, ncclAllGather(mine_dev, x_dev, (size_t)per_rank, ncclFloat32, nc->comm, nc->stream), what);
    nccl_wait(nc, what);
}

extern "C" void nccl_bcast(NcclComm *nc, float *x_dev, int64_t n, int root, const char *what) {
    NCCL_TRY(nc, ncclBroadcast(x_dev, x_dev, (size_t)n, ncclFloat32, root, nc->comm, nc->stream), what);
    nccl_wait(nc, what);
}

extern "C" void nccl_barrier(NcclComm *nc, const char *what) {
    // NCCL has no barrier: an all-reduce of one number is one
    float *one = (float *)cuda_malloc(sizeof(float));
    cuda_zero(one, sizeof(float));
    nccl_allreduce_sum(nc, one, 1, what);
    cuda_free(one);
}
