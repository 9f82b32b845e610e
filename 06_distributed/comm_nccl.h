// comm_nccl.h: the communicator's NCCL backend: the same collectives between GPUs.
//
// NCCL runs each collective as a CUDA kernel on a stream, over NVLink, PCIe,
// InfiniBand or TCP sockets, whichever links the GPUs. Starting it takes a
// rendezvous: rank 0 makes a unique id (ncclGetUniqueId) and every rank must
// receive it before ncclCommInitRank. Under MPI the id is broadcast over MPI
// (nccl_comm_init); where the ranks have no MPI between them (srun on a Slurm
// without PMIx, or a launcher of one's own) rank 0 writes it to a file on a
// shared file system and the others read it when it appears (nccl_comm_init_file).
//
// Each rank drives the GPU of its local rank (cudaSetDevice(local_rank %
// devices)): one process per GPU, the layout NCCL expects.
//
// No hang: the communicator is created non-blocking (config.blocking = 0).
// Every call returns at once; nccl_wait polls ncclCommGetAsyncError and the
// stream until the work is done or the Comm's timeout passes, and then calls
// ncclCommAbort, which frees the GPU from a collective whose peer is gone, and
// ends the job naming what was awaited.
//
// Only a binary built with nvcc has the real backend; cuda_stub.c stands in
// for it otherwise, and nccl_available() says which one this is.
#ifndef NM_COMM_NCCL_H
#define NM_COMM_NCCL_H

#include <stdbool.h>
#include <stdint.h>

#include "06_distributed/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct NcclComm NcclComm;

bool nccl_available(void);
// Under MPI: the unique id broadcast over c (every rank of c calls it).
NcclComm *nccl_comm_init(Comm *c);
// Without MPI: rank 0 writes the id to id_path, the others wait for it (up to timeout seconds).
NcclComm *nccl_comm_init_file(int rank, int world, int local_rank, const char *id_path, double timeout);
void nccl_comm_free(NcclComm *nc);
int nccl_device(const NcclComm *nc);   // the CUDA device this rank drives

// On device memory; each waits for its result (nccl_wait) before returning.
void nccl_allreduce_sum(NcclComm *nc, float *x_dev, int64_t n, const char *what);
void nccl_reduce_scatter_sum(NcclComm *nc, const float *x_dev, float *mine_dev, int64_t per_rank, const char *what);
void nccl_allgather(NcclComm *nc, const float *mine_dev, float *x_dev, int64_t per_rank, const char *what);
void nccl_bcast(NcclComm *nc, float *x_dev, int64_t n, int root, const char *what);
void nccl_barrier(NcclComm *nc, const char *what);

#ifdef __cplusplus
}
#endif
#endif
