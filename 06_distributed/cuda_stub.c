// cuda_stub.c: the NCCL backend of a build without nvcc (or an ASan build):
// every entry point says so in a sentence instead of failing to link.
#include "06_distributed/comm_nccl.h"

#include "01_tensor/common.h"

#define NO_NCCL() NM_DIE("this binary was built without CUDA and NCCL (no nvcc found, or an ASan build)")

bool nccl_available(void) { return false; }
NcclComm *nccl_comm_init(Comm *c) { NO_NCCL(); }
NcclComm *nccl_comm_init_file(int rank, int world, int local_rank, const char *id_path, double timeout) { NO_NCCL(); }
void nccl_comm_free(NcclComm *nc) { NO_NCCL(); }
int nccl_device(const NcclComm *nc) { NO_NCCL(); }
void nccl_allreduce_sum(NcclComm *nc, float *x_dev, int64_t n, const char *what) { NO_NCCL(); }
void nccl_reduce_scatter_sum(NcclComm *nc, const float *x_dev, float *mine_dev, int64_t per_rank, const char *what) {
    NO_NCCL();
}
void nccl_allgather(NcclComm *nc, const float *mine_dev, float *x_dev, int64_t per_rank, const char *what) {
    NO_NCCL();
}
void nccl_bcast(NcclComm *nc, float *x_dev, int64_t n, int root, const char *what) { NO_NCCL(); }
void nccl_barrier(NcclComm *nc, const char *what) { NO_NCCL(); }
