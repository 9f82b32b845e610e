// comm.h: a communicator: the ranks of one training job and the collectives between them.
//
// Data parallelism runs the same model in N processes (ranks), each on its
// own part of the batch, and makes them agree after every backward. Five
// collective operations are all it needs; on n numbers per rank:
//
//   all-reduce      every rank ends with the sum over ranks of its n numbers
//   reduce-scatter  the sum too, but rank r keeps only its slice r of it
//   all-gather      every rank contributes its slice and ends with all of them
//   broadcast       one rank's numbers are copied to every other
//   barrier         nobody leaves before everybody has arrived
//
// An all-reduce is a reduce-scatter followed by an all-gather. On a ring of
// N ranks each of the two halves moves (N - 1)/N of the n numbers through
// every link, so an all-reduce costs each rank 2 (N - 1)/N n numbers sent
// and as many received, whatever N is: the bandwidth term of the ring is
// flat in the number of ranks, which is why data parallelism scales.
//
// Two backends. MPI (Open MPI, MPICH) on CPU memory: it launches the ranks
// (mpirun, or srun on Slurm), tells each its rank, and is what the CPU
// trainer reduces with. NCCL on GPU memory (comm_nccl.h): the same
// collectives between GPUs over NVLink, PCIe or InfiniBand; it needs a
// rendezvous to start, which MPI gives it.
//
// No hang, ever. A rank that dies makes the launcher end the job (mpirun and
// srun kill the others when one exits abnormally). A rank that stops answering
// (a deadlock, a hung file system, a GPU fault) is caught by a watchdog:
// every wait below carries a deadline `timeout` seconds away, and a thread
// that sees it pass prints one error line naming what was awaited and ends
// every rank (MPI_Abort). Before each step's reduction the ranks also check
// in with rank 0 (comm_checkin), which is how the message can name the rank
// that did not arrive rather than only "somebody".
#ifndef NM_COMM_H
#define NM_COMM_H

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int rank, world;            // this process and how many there are
    int local_rank, local_world;// the same among the ranks of this machine (a GPU is chosen by local_rank)
    double timeout;             // seconds any wait may take before the job is ended
    bool threads_ok;            // MPI_THREAD_MULTIPLE: the watchdog may call MPI_Abort itself
    MPI_Comm mpi;               // the job's communicator (MPI_COMM_WORLD, errors returned, not fatal)
} Comm;

// MPI_Init (or the singleton of a process started without a launcher), the
// local rank, the error handler and the watchdog thread.
void comm_init(Comm *c, int *argc, char ***argv, double timeout);
void comm_finalize(Comm *c);
// One line `error: rank R: ...` on stderr, then every rank ends (exit status 1).
void comm_abort(const Comm *c, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

// Every collective names what it is for (`what`), which the watchdog's
// message repeats. counts[r]: the numbers of rank r's slice; the slices lie
// end to end in rank order in a vector x of sum(counts) numbers, and every
// call works in place: a rank's slice is read from and written to its place in x.
void comm_allreduce_sum(Comm *c, float *x, int64_t n, const char *what);   // x (n,)
// x (sum counts,) on every rank in; the sum of this rank's slice out, at its place
void comm_reduce_scatter_sum(Comm *c, float *x, const int64_t *counts, const char *what);
void comm_allgather(Comm *c, float *x, const int64_t *counts, const char *what);
void comm_allgather_f64(Comm *c, double *x, const int64_t *counts, const char *what);
// root's x (sum counts,) in; every rank's slice of it out, at its place
void comm_scatter(Comm *c, float *x, const int64_t *counts, int root, const char *what);
void comm_bcast(Comm *c, void *buf, int64_t bytes, int root, const char *what);
void comm_barrier(Comm *c, const char *what);

// The sum in a fixed order. Rank r holds nlocal[r] vectors of n numbers
// (local[0..nlocal-1]); the result, on the last rank, is
//     acc = ((0 + v_0) + v_1) + ... + v_{K-1}
// over every rank's vectors, rank 0's first, each rank's in its own order:
// the very operations one process adding K vectors would do, so the bits do
// not depend on how the vectors are spread over ranks. It runs as a chain,
// rank 0 -> 1 -> ... -> N-1, in chunks, so that rank r adds chunk c while
// rank r - 1 works on chunk c + 1: each rank receives and sends the n numbers
// once, the bandwidth of a reduce, with a latency of N chunks.
// acc (n,) is scratch on every rank but the last.
void comm_ordered_sum(Comm *c, float *const *local, int nlocal, float *acc, int64_t n, const char *what);

// Every rank tells rank 0 it has reached `step` and waits for rank 0's go.
// Rank 0 names the ranks that do not arrive within the timeout and sends the
// ones that did the verdict instead of a go, so that each of them names the
// missing rank too; the others name rank 0 when neither comes. Either ends the job.
void comm_checkin(Comm *c, int64_t step);

// The watchdog's deadline around a blocking call of the caller's own
// (comm_* functions set it themselves).
void comm_wait_begin(Comm *c, const char *what);
void comm_wait_end(Comm *c);

#ifdef __cplusplus
}
#endif
#endif
