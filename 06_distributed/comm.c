// comm.c: the MPI backend of the communicator and its watchdog (see comm.h).
#include "06_distributed/comm.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "01_tensor/common.h"

// ----------------------------------------------------------------------------
// Ending the job

// The rank in the error line is this process's: set once comm_init knows it.
static int g_rank = -1;
static bool g_abort_ok = false;   // MPI is up and MPI_Abort may be called from any thread

static void end_job(void) __attribute__((noreturn));
static void end_job(void) {
    // MPI_Abort ends every rank of the job; mpirun reports it and exits non-zero
    if (g_abort_ok) MPI_Abort(MPI_COMM_WORLD, 1);
    _exit(1);
}

static void vsay(const char *fmt, va_list ap) {
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(stderr, "error: rank %d: %s\n", g_rank, msg);
    fflush(stderr);
}

static void vabort(const char *fmt, va_list ap) __attribute__((noreturn));
static void vabort(const char *fmt, va_list ap) {
    vsay(fmt, ap);
    end_job();
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
}

void comm_abort(const Comm *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vabort(fmt, ap);
}

static void die_rank(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_rank(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vabort(fmt, ap);
}

// Every MPI call's status is checked: the communicator returns errors
// (MPI_ERRORS_RETURN) instead of MPI's default of ending with its own text.
#define MPI_TRY(call, what)                                                     \
    do {                                                                        \
        int rc_ = (call);                                                       \
        if (rc_ != MPI_SUCCESS) {                                               \
            char s_[MPI_MAX_ERROR_STRING];                                      \
            int l_ = 0;                                                         \
            MPI_Error_string(rc_, s_, &l_);                                     \
            die_rank("%s: %s failed: %s", (what), #call, s_);                   \
        }                                                                       \
    } while (0)

// ----------------------------------------------------------------------------
// The watchdog: a thread that ends the job when a wait outlives its deadline

static pthread_mutex_t wd_lock = PTHREAD_MUTEX_INITIALIZER;
static double wd_deadline = 0;      // monotonic seconds; 0: nothing awaited
static double wd_timeout = 60;
static char wd_what[256];
static atomic_bool wd_stop;
static pthread_t wd_thread;

static double mono(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void *watchdog(void *arg) {
    (void)arg;
    while (!atomic_load(&wd_stop)) {
        usleep(100000);
        pthread_mutex_lock(&wd_lock);
        bool late = wd_deadline > 0 && mono() > wd_deadline;
        char what[256];
        memcpy(what, wd_what, sizeof what);
        pthread_mutex_unlock(&wd_lock);
        if (late) die_rank("%s did not complete within %g s: a rank is dead or hung; ending the job", what, wd_timeout);
    }
    return NULL;
}

void comm_wait_begin(Comm *c, const char *what) {
    pthread_mutex_lock(&wd_lock);
    snprintf(wd_what, sizeof wd_what, "%s", what);
    wd_deadline = mono() + c->timeout;
    pthread_mutex_unlock(&wd_lock);
}

void comm_wait_end(Comm *c) {
    pthread_mutex_lock(&wd_lock);
    wd_deadline = 0;
    pthread_mutex_unlock(&wd_lock);
}

// ----------------------------------------------------------------------------
// Start and end

void comm_init(Comm *c, int *argc, char ***argv, double timeout) {
    memset(c, 0, sizeof *c);
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "error: MPI_Init failed (is this an MPI launch? try mpirun -np 1)\n");
        exit(1);
    }
    c->mpi = MPI_COMM_WORLD;
    MPI_Comm_set_errhandler(c->mpi, MPI_ERRORS_RETURN);
    MPI_Comm_rank(c->mpi, &c->rank);
    MPI_Comm_size(c->mpi, &c->world);
    g_rank = c->rank;
    c->threads_ok = provided >= MPI_THREAD_MULTIPLE;
    // without MPI_THREAD_MULTIPLE the watchdog's own exit still ends the job:
    // the launcher sees a rank leave without MPI_Finalize and kills the rest
    g_abort_ok = c->threads_ok;
    c->timeout = timeout;
    wd_timeout = timeout;
    // the ranks of this machine: those that can share memory with this one
    MPI_Comm node;
    MPI_TRY(MPI_Comm_split_type(c->mpi, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node), "start");
    MPI_Comm_rank(node, &c->local_rank);
    MPI_Comm_size(node, &c->local_world);
    MPI_Comm_free(&node);
    atomic_store(&wd_stop, false);
    NM_CHECK(pthread_create(&wd_thread, NULL, watchdog, NULL) == 0, "cannot start the watchdog thread");
}

void comm_finalize(Comm *c) {
    atomic_store(&wd_stop, true);
    pthread_join(wd_thread, NULL);
    g_abort_ok = false;
    MPI_Finalize();
}

// ----------------------------------------------------------------------------
// Collectives
//
// MPI counts are ints: a vector longer than INT_MAX numbers goes in pieces
// (a 0.6B-parameter model's gradient is 0.6e9 floats, within one piece; a
// larger one is not refused).

static int icount(int64_t n) {
    NM_CHECK(n >= 0 && n <= INT_MAX, "a slice of %lld numbers is more than one MPI call takes", (long long)n);
    return (int)n;
}

// displacements and int counts of slices end to end
static void slices(const Comm *c, const int64_t *counts, int *cnt, int *disp) {
    int64_t off = 0;
    for (int r = 0; r < c->world; r++) {
        cnt[r] = icount(counts[r]);
        disp[r] = icount(off);
        off += counts[r];
    }
}

void comm_allreduce_sum(Comm *c, float *x, int64_t n, const char *what) {
    comm_wait_begin(c, what);
    for (int64_t off = 0; off < n; off += INT_MAX) {
        int k = (int)(n - off < INT_MAX ? n - off : INT_MAX);
        MPI_TRY(MPI_Allreduce(MPI_IN_PLACE, x + off, k, MPI_FLOAT, MPI_SUM, c->mpi), what);
    }
    comm_wait_end(c);
}

void comm_reduce_scatter_sum(Comm *c, float *x, const int64_t *counts, const char *what) {
    int *cnt = xmalloc(2 * (size_t)c->world * sizeof(int)), *disp = cnt + c->world;
    slices(c, counts, cnt, disp);
    comm_wait_begin(c, what);
    // in place, MPI leaves the result at the start of x: moved to the slice's place
    MPI_TRY(MPI_Reduce_scatter(MPI_IN_PLACE, x, cnt, MPI_FLOAT, MPI_SUM, c->mpi), what);
    comm_wait_end(c);
    memmove(x + disp[c->rank], x, (size_t)cnt[c->rank] * sizeof(float));
    free(cnt);
}

static void allgather_type(Comm *c, void *x, const int64_t *counts, MPI_Datatype t, const char *what) {
    int *cnt = xmalloc(2 * (size_t)c->world * sizeof(int)), *disp = cnt + c->world;
    slices(c, counts, cnt, disp);
    comm_wait_begin(c, what);
    MPI_TRY(MPI_Allgatherv(MPI_IN_PLACE, 0, t, x, cnt, disp, t, c->mpi), what);
    comm_wait_end(c);
    free(cnt);
}

void comm_allgather(Comm *c, float *x, const int64_t *counts, const char *what) {
    allgather_type(c, x, counts, MPI_FLOAT, what);
}

void comm_allgather_f64(Comm *c, double *x, const int64_t *counts, const char *what) {
    allgather_type(c, x, counts, MPI_DOUBLE, what);
}

void comm_scatter(Comm *c, float *x, const int64_t *counts, int root, const char *what) {
    int *cnt = xmalloc(2 * (size_t)c->world * sizeof(int)), *disp = cnt + c->world;
    slices(c, counts, cnt, disp);
    comm_wait_begin(c, what);
    float *mine = x + disp[c->rank];
    if (c->rank == root) MPI_TRY(MPI_Scatterv(x, cnt, disp, MPI_FLOAT, MPI_IN_PLACE, 0, MPI_FLOAT, root, c->mpi), what);
    else MPI_TRY(MPI_Scatterv(NULL, cnt, disp, MPI_FLOAT, mine, cnt[c->rank], MPI_FLOAT, root, c->mpi), what);
    comm_wait_end(c);
    free(cnt);
}

void comm_bcast(Comm *c, void *buf, int64_t bytes, int root, const char *what) {
    comm_wait_begin(c, what);
    for (int64_t off = 0; off < bytes; off += INT_MAX) {
        int k = (int)(bytes - off < INT_MAX ? bytes - off : INT_MAX);
        MPI_TRY(MPI_Bcast((char *)buf + off, k, MPI_BYTE, root, c->mpi), what);
    }
    comm_wait_end(c);
}

void comm_barrier(Comm *c, const char *what) {
    comm_wait_begin(c, what);
    MPI_TRY(MPI_Barrier(c->mpi), what);
    comm_wait_end(c);
}

// ----------------------------------------------------------------------------
// The fixed-order sum: a chain of ranks, chunk by chunk

enum { TAG_CHAIN = 11, TAG_CHECKIN = 12, TAG_GO = 13 };
#define CHAIN_CHUNK ((int64_t)1 << 18)   // 1 MiB of floats per message

void comm_ordered_sum(Comm *c, float *const *local, int nlocal, float *acc, int64_t n, const char *what) {
    comm_wait_begin(c, what);
    for (int64_t off = 0; off < n; off += CHAIN_CHUNK) {
        int k = (int)(n - off < CHAIN_CHUNK ? n - off : CHAIN_CHUNK);
        float *a = acc + off;   // (k,)
        if (c->rank == 0) memset(a, 0, (size_t)k * sizeof(float));
        else MPI_TRY(MPI_Recv(a, k, MPI_FLOAT, c->rank - 1, TAG_CHAIN, c->mpi, MPI_STATUS_IGNORE), what);
        for (int i = 0; i < nlocal; i++) {
            const float *v = local[i] + off;
            for (int j = 0; j < k; j++) a[j] += v[j];
        }
        if (c->rank + 1 < c->world) MPI_TRY(MPI_Send(a, k, MPI_FLOAT, c->rank + 1, TAG_CHAIN, c->mpi), what);
    }
    comm_wait_end(c);
}

// ----------------------------------------------------------------------------
// Check-in: who has reached this step

// Polls a set of requests until all complete or the deadline passes; returns
// whether they completed. done[i] says which did.
static bool poll_all(int n, MPI_Request *req, int *done, double deadline, const char *what) {
    for (;;) {
        bool all = true;
        for (int i = 0; i < n; i++) {
            if (done[i]) continue;
            int flag = 0;
            MPI_TRY(MPI_Test(&req[i], &flag, MPI_STATUS_IGNORE), what);
            if (flag) done[i] = 1;
            else all = false;
        }
        if (all) return true;
        if (mono() > deadline) return false;
        usleep(200);
    }
}

void comm_checkin(Comm *c, int64_t step) {
    if (c->world == 1) return;
    char what[96];
    snprintf(what, sizeof what, "step %lld's check-in", (long long)step);
    double deadline = mono() + c->timeout;
    long long mine = step;
    if (c->rank == 0) {
        int N = c->world - 1;
        long long *got = xcalloc((size_t)N, sizeof *got);
        MPI_Request *req = xcalloc((size_t)N, sizeof *req);
        int *done = xcalloc((size_t)N, sizeof *done);
        for (int r = 1; r <= N; r++)
            MPI_TRY(MPI_Irecv(&got[r - 1], 1, MPI_LONG_LONG, r, TAG_CHECKIN, c->mpi, &req[r - 1]), what);
        if (!poll_all(N, req, done, deadline, what)) {
            char list[512] = "";
            size_t len = 0;
            int missing = 0, first = -1;
            for (int i = 0; i < N; i++)
                if (!done[i] && len + 16 < sizeof list) {
                    len += (size_t)snprintf(list + len, sizeof list - len, "%s%d", missing ? ", " : "", i + 1);
                    if (first < 0) first = i + 1;
                    missing++;
                }
            say("rank%s %s did not reach step %lld within %g s (dead or hung); ending the job", missing > 1 ? "s" : "",
                list, (long long)step, c->timeout);
            // the ranks that did arrive get the verdict instead of a go, and say it too
            static long long verdict;
            verdict = -1 - first;
            MPI_Request *vr = xcalloc((size_t)N, sizeof *vr);
            int *vd = xcalloc((size_t)N, sizeof *vd), nv = 0;
            for (int i = 0; i < N; i++)
                if (done[i] && MPI_Isend(&verdict, 1, MPI_LONG_LONG, i + 1, TAG_GO, c->mpi, &vr[nv]) == MPI_SUCCESS) nv++;
            poll_all(nv, vr, vd, mono() + 2, what);
            usleep(500000);   // their lines before the abort
            end_job();
        }
        for (int i = 0; i < N; i++)
            if (got[i] != step)
                die_rank("rank %d reached step %lld while rank 0 is at step %lld: the ranks disagree", i + 1,
                         got[i], (long long)step);
        static long long go_step;   // outlives the sends, which nobody waits for
        go_step = step;
        for (int r = 1; r <= N; r++) {
            MPI_Request g;
            MPI_TRY(MPI_Isend(&go_step, 1, MPI_LONG_LONG, r, TAG_GO, c->mpi, &g), what);
            MPI_TRY(MPI_Request_free(&g), what);
        }
        free(got);
        free(req);
        free(done);
    } else {
        MPI_Request req[2];
        int done[2] = {0, 0};
        long long go = -1;
        MPI_TRY(MPI_Isend(&mine, 1, MPI_LONG_LONG, 0, TAG_CHECKIN, c->mpi, &req[0]), what);
        MPI_TRY(MPI_Irecv(&go, 1, MPI_LONG_LONG, 0, TAG_GO, c->mpi, &req[1]), what);
        // rank 0 waits up to the timeout for the slowest rank; its go may take twice that
        if (!poll_all(2, req, done, deadline + c->timeout, what))
            die_rank("no go from rank 0 for step %lld within %g s (rank 0 dead or hung); ending the job",
                     (long long)step, 2 * c->timeout);
        if (go < 0) {   // rank 0 is ending the job; one abort is enough, this rank just leaves
            say("rank %lld did not reach step %lld within %g s (dead or hung), says rank 0; ending the job", -1 - go,
                (long long)step, c->timeout);
            _exit(1);
        }
    }
}
