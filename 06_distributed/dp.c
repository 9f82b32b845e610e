// dp.c: data parallelism and ZeRO-1 (see dp.h).
#include "06_distributed/dp.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "01_tensor/common.h"
#include "01_tensor/json.h"
#include "01_tensor/safetensors.h"

void dp_micro_range(int K, int world, int rank, int *first, int *count) {
    int a = (int)((int64_t)rank * K / world), b = (int)((int64_t)(rank + 1) * K / world);
    *first = a;
    *count = b - a;
}

void dp_partition(int64_t P, int world, int64_t *lo) {
    int64_t nb = (P + DP_BLOCK - 1) / DP_BLOCK;
    for (int r = 0; r <= world; r++) {
        int64_t x = nb * r / world * DP_BLOCK;
        lo[r] = x < P ? x : P;
    }
}

// ----------------------------------------------------------------------------
// The flat view

void dp_init(Dp *d, Comm *c, const AdamW *o, bool zero, bool ordered, int n_local) {
    memset(d, 0, sizeof *d);
    d->c = c;
    d->zero = zero;
    d->ordered = ordered;
    adamw_init(&d->hp, o->beta1, o->beta2, o->eps, o->weight_decay);
    int n = 0;
    for (int g = 0; g < o->n; g++)
        if (!o->g[g].frozen) n += o->g[g].grads->n;
    d->seg = xcalloc((size_t)n + 1, sizeof *d->seg);
    for (int g = 0; g < o->n; g++) {
        const AdamGroup *G = &o->g[g];
        if (G->frozen) continue;
        for (int e = 0; e < G->grads->n; e++) {
            const TableEntry *ge = &G->grads->entries[e];
            Tensor gt = table_tensor(G->grads, e);
            Tensor pt = table_get(G->params, ge->name);
            DpSeg *s = &d->seg[d->nseg++];
            s->param = pt.data;
            s->grad = gt.data;
            s->n = tensor_numel(gt);
            NM_CHECK(s->n == tensor_numel(pt), "%s: gradient and parameter sizes differ", ge->name);
            s->off = d->P;
            s->lr = G->lr;
            s->decay = ge->ndim >= 2;   // adamw.h's rule: no decay for norms' gains and biases
            d->P += s->n;
        }
    }
    d->nblocks = (d->P + DP_BLOCK - 1) / DP_BLOCK;
    d->shard_lo = xcalloc((size_t)c->world + 1, sizeof *d->shard_lo);
    d->counts = xcalloc((size_t)c->world, sizeof *d->counts);
    dp_partition(d->P, c->world, d->shard_lo);
    for (int r = 0; r < c->world; r++) d->counts[r] = d->shard_lo[r + 1] - d->shard_lo[r];
    d->lo = zero ? d->shard_lo[c->rank] : 0;
    d->hi = zero ? d->shard_lo[c->rank + 1] : d->P;
    d->m = xcalloc((size_t)(d->hi - d->lo) + 1, sizeof(float));
    d->v = xcalloc((size_t)(d->hi - d->lo) + 1, sizeof(float));
    d->grad = xcalloc((size_t)d->P + 1, sizeof(float));
    d->flat = zero ? xcalloc((size_t)d->P + 1, sizeof(float)) : NULL;
    // the ordered sum keeps each micro-batch's gradient until the chain reaches this
    // rank; the ring adds them up as they come (dp_keep_grad)
    d->n_local = ordered ? n_local : 0;
    d->local = xcalloc((size_t)d->n_local + 1, sizeof *d->local);
    for (int i = 0; i < d->n_local; i++) d->local[i] = xmalloc(((size_t)d->P + 1) * sizeof(float));
    d->blk = xcalloc((size_t)d->nblocks + 1, sizeof(double));
}

void dp_free(Dp *d) {
    for (int i = 0; i < d->n_local; i++) free(d->local[i]);
    free(d->local);
    free(d->seg);
    free(d->shard_lo);
    free(d->counts);
    free(d->m);
    free(d->v);
    free(d->grad);
    free(d->flat);
    free(d->blk);
    memset(d, 0, sizeof *d);
}

void dp_keep_grad(Dp *d, int i) {
    if (!d->ordered) {   // ((0 + g_0) + g_1) + ...: this rank's sum, in its micro-batch order
        for (int s = 0; s < d->nseg; s++) {
            float *a = d->grad + d->seg[s].off;
            const float *g = d->seg[s].grad;
            for (int64_t j = 0; j < d->seg[s].n; j++) a[j] += g[j];
        }
        return;
    }
    float *dst = d->local[i];   // (P,)
    for (int s = 0; s < d->nseg; s++) memcpy(dst + d->seg[s].off, d->seg[s].grad, (size_t)d->seg[s].n * sizeof(float));
}

// ----------------------------------------------------------------------------
// The step

// Sums the micro-batch gradients of every rank into d->grad: all of it (plain
// data parallelism) or this rank's shard (ZeRO).
static void reduce_grads(Dp *d) {
    Comm *c = d->c;
    const int last = c->world - 1;
    if (d->ordered) {
        comm_ordered_sum(c, d->local, d->n_local, d->grad, d->P, "the gradient sum (ordered chain)");
        if (d->zero) comm_scatter(c, d->grad, d->counts, last, "the gradient shards (scatter)");
        else comm_bcast(c, d->grad, d->P * (int64_t)sizeof(float), last, "the gradient (broadcast)");
        return;
    }
    // each rank's own micro-batches are summed already (dp_keep_grad); MPI adds the ranks
    if (d->zero) comm_reduce_scatter_sum(c, d->grad, d->counts, "the gradient (reduce-scatter)");
    else comm_allreduce_sum(c, d->grad, d->P, "the gradient (all-reduce)");
}

// The global L2 norm over the block layout: per-block sums of squares of the
// numbers [lo, hi) this rank holds, gathered (ZeRO), added in block order.
static double grad_norm(Dp *d) {
    const int64_t b0 = d->lo / DP_BLOCK, b1 = (d->hi + DP_BLOCK - 1) / DP_BLOCK;
    for (int64_t b = b0; b < b1; b++) {
        int64_t a = b * DP_BLOCK, e = a + DP_BLOCK < d->P ? a + DP_BLOCK : d->P;
        double ss = 0;
        for (int64_t j = a; j < e; j++) ss += (double)d->grad[j] * d->grad[j];
        d->blk[b] = ss;
    }
    if (d->zero) {
        int64_t *nb = xcalloc((size_t)d->c->world, sizeof *nb);
        for (int r = 0; r < d->c->world; r++) nb[r] = (d->shard_lo[r + 1] + DP_BLOCK - 1) / DP_BLOCK - d->shard_lo[r] / DP_BLOCK;
        // shards start on block boundaries, so the block counts tile [0, nblocks)
        comm_allgather_f64(d->c, d->blk, nb, "the gradient norm's block sums (all-gather)");
        free(nb);
    }
    double ss = 0;
    for (int64_t b = 0; b < d->nblocks; b++) ss += d->blk[b];
    return sqrt(ss);
}

double dp_step(Dp *d, double max_norm, float lr_factor) {
    reduce_grads(d);
    double norm = grad_norm(d);
    // torch.nn.utils.clip_grad_norm_'s rule, as adamw_clip
    if (max_norm > 0) {
        double coef = max_norm / (norm + 1e-6);
        if (coef < 1.0) {
            float cf = (float)coef;
            for (int64_t j = d->lo; j < d->hi; j++) d->grad[j] *= cf;
        }
    }
    d->hp.step++;
    for (int s = 0; s < d->nseg; s++) {
        const DpSeg *g = &d->seg[s];
        int64_t a = g->off > d->lo ? g->off : d->lo, b = g->off + g->n < d->hi ? g->off + g->n : d->hi;
        if (a >= b) continue;
        const float lr = g->lr * lr_factor;
        adamw_update(&d->hp, d->hp.step, lr, g->decay, g->param + (a - g->off), d->grad + a, d->m + (a - d->lo),
                     d->v + (a - d->lo), b - a);
    }
    if (d->zero) {
        // every rank's shard of the new parameters to every rank
        for (int s = 0; s < d->nseg; s++) memcpy(d->flat + d->seg[s].off, d->seg[s].param, (size_t)d->seg[s].n * sizeof(float));
        comm_allgather(d->c, d->flat, d->counts, "the parameters (all-gather)");
        for (int s = 0; s < d->nseg; s++) memcpy(d->seg[s].param, d->flat + d->seg[s].off, (size_t)d->seg[s].n * sizeof(float));
    }
    if (!d->ordered) memset(d->grad, 0, (size_t)d->P * sizeof(float));   // the next step's sum starts at zero
    return norm;
}

// ----------------------------------------------------------------------------
// Checkpoints

static void rm_dir_files(const char *dir) {
    DIR *dd = opendir(dir);
    if (!dd) return;
    struct dirent *e;
    while ((e = readdir(dd))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = xsprintf("%s/%s", dir, e->d_name);
        unlink(p);
        free(p);
    }
    closedir(dd);
    rmdir(dir);
}

static int text_file(const char *path, const char *s, char *err, size_t errlen) {
    if (write_file_atomic(path, s, strlen(s)) == 0) return 0;
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
}

int dp_checkpoint_save(Dp *d, const char *out, const Vlm *v, const TrainState *st, const TrainConfig *cfg,
                       char *err, size_t errlen) {
    Comm *c = d->c;
    char *dir = xsprintf("%s/step_%08lld", out, (long long)st->step);
    char *tmp = xsprintf("%s.tmp", dir);
    int rc = 0;
    err[0] = 0;
    if (c->rank == 0) {
        rm_dir_files(tmp);
        rm_dir_files(dir);   // a stale, incomplete one
        if (mkdir(tmp, 0755) != 0) rc = set_error(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
    }
    float bad = (float)(rc != 0);
    comm_allreduce_sum(c, &bad, 1, "the checkpoint folder");
    if (bad > 0) {
        if (!err[0]) snprintf(err, errlen, "rank 0 could not create %s", tmp);
        goto done;
    }
    {   // this rank's shard of the ZeRO partition for this world size
        int64_t a = d->shard_lo[c->rank], n = d->shard_lo[c->rank + 1] - a;
        const float *m = d->m + (a - d->lo), *vv = d->v + (a - d->lo);
        StItem items[2] = {{"m", DT_F32, 1, &n, m}, {"v", DT_F32, 1, &n, vv}};
        char *p = xsprintf("%s/optimizer.rank_%d.safetensors", tmp, c->rank);
        rc = st_write(p, items, 2, NULL, 0, err, errlen);
        free(p);
    }
    if (rc == 0 && c->rank == 0) {
        rc = checkpoint_write_model(tmp, v, err, errlen);
        if (rc == 0) {
            char *p = xsprintf("%s/state.json", tmp);
            char *sj = xsprintf("{\"step\": %lld, \"cursor\": %lld, \"seed\": %llu, \"adam_step\": %lld, \"world\": %d, "
                                "\"numbers\": %lld}\n",
                                (long long)st->step, (long long)st->cursor, (unsigned long long)st->seed,
                                (long long)d->hp.step, c->world, (long long)d->P);
            rc = text_file(p, sj, err, errlen);
            free(sj);
            free(p);
        }
        if (rc == 0) {
            char *buf = NULL, *p = xsprintf("%s/train.conf", tmp);
            size_t len = 0;
            FILE *f = open_memstream(&buf, &len);
            config_write(cfg, f);
            fclose(f);
            if (write_file_atomic(p, buf, len) != 0) rc = set_error(err, errlen, "%s: %s", p, strerror(errno));
            free(buf);
            free(p);
        }
    }
    // the barrier that makes the marker honest: every shard is on disk (or not) before anyone goes on
    bad = (float)(rc != 0);
    comm_allreduce_sum(c, &bad, 1, "the checkpoint's shards");
    if (bad > 0) {
        if (!err[0]) snprintf(err, errlen, "another rank could not write its part of %s", tmp);
        rc = -1;
        goto done;
    }
    if (c->rank == 0) {
        if (rename(tmp, dir) != 0) {
            rc = set_error(err, errlen, "%s: cannot rename to %s: %s", tmp, dir, strerror(errno));
        } else {
            int fd = open(out, O_RDONLY);   // the rename durable before the marker says "complete"
            if (fd >= 0) { fsync(fd); close(fd); }
            char *p = xsprintf("%s/COMPLETE", dir);
            rc = text_file(p, "complete\n", err, errlen);
            free(p);
        }
    }
    bad = (float)(rc != 0);
    comm_allreduce_sum(c, &bad, 1, "the checkpoint's marker");
    if (bad > 0 && rc == 0) {
        snprintf(err, errlen, "rank 0 could not complete %s", dir);
        rc = -1;
    }
done:
    free(dir);
    free(tmp);
    return rc;
}

void dp_checkpoint_load(Dp *d, const char *dir, Vlm *v, TrainState *st) {
    checkpoint_load_model(dir, v);
    char *p = xsprintf("%s/state.json", dir);
    size_t len;
    const char *ferr;
    char err[512];
    char *text = read_file(p, &len, &ferr);
    if (!text) fail_input(p, "%s", ferr);
    JsonDoc *doc = json_parse(text, len, err, sizeof err);
    if (!doc) fail_input(p, "%s", err);
    JsonValue *r = json_root(doc);
    st->step = json_get_int(r, "step", -1);
    st->cursor = json_get_int(r, "cursor", -1);
    st->seed = (uint64_t)json_get_int(r, "seed", 0);
    d->hp.step = json_get_int(r, "adam_step", -1);
    int64_t world = json_get_int(r, "world", -1), P = json_get_int(r, "numbers", -1);
    if (st->step < 0 || st->cursor < 0 || d->hp.step < 0 || world < 1 || world > 1 << 20)
        fail_input(p, "missing step, cursor, adam_step or world (not a chapter-06 checkpoint?)");
    if (P != d->P) fail_input(p, "the optimizer state holds %lld numbers, this model trains %lld", (long long)P, (long long)d->P);
    json_free(doc);
    free(text);
    free(p);
    // re-sharding: the numbers [lo, hi) this rank needs, from the shards of the saved world size
    int64_t *olo = xcalloc((size_t)world + 1, sizeof *olo);
    dp_partition(P, (int)world, olo);
    for (int q = 0; q < world; q++) {
        int64_t a = olo[q] > d->lo ? olo[q] : d->lo, b = olo[q + 1] < d->hi ? olo[q + 1] : d->hi;
        if (a >= b) continue;
        p = xsprintf("%s/optimizer.rank_%d.safetensors", dir, q);
        StFile *f = st_open(p, err, sizeof err);
        if (!f) fail_input(p, "%s", err);
        float *buf = xmalloc(((size_t)(olo[q + 1] - olo[q]) + 1) * sizeof(float));
        for (int which = 0; which < 2; which++) {
            const StTensor *x = st_find(f, which ? "v" : "m");
            if (!x || st_numel(x) != olo[q + 1] - olo[q] || st_read(x, buf, DT_F32) != 0)
                fail_input(p, "missing or misshapen '%s' (%lld numbers expected)", which ? "v" : "m",
                           (long long)(olo[q + 1] - olo[q]));
            memcpy((which ? d->v : d->m) + (a - d->lo), buf + (a - olo[q]), (size_t)(b - a) * sizeof(float));
        }
        free(buf);
        st_close(f);
        free(p);
    }
    free(olo);
}
