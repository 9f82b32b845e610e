// checkpoint.c: atomic, marker-completed checkpoints (see checkpoint.h).
#include "05_training/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "01_tensor/json.h"
#include "01_tensor/safetensors.h"

// Removes NAME under the directory DIRFD and everything in it, never following a
// symbolic link: a link is removed as a name, and what it points to is not
// touched. 0, or -1 with errno.
static int rm_tree_at(int dirfd, const char *name) {
    struct stat sb;
    if (fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(sb.st_mode)) return unlinkat(dirfd, name, 0);
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (fd < 0) return -1;
    DIR *d = fdopendir(fd);
    if (!d) { close(fd); return -1; }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) rc = rm_tree_at(fd, e->d_name);
    closedir(d);
    return rc ? rc : unlinkat(dirfd, name, AT_REMOVEDIR);
}

int checkpoint_remove(const char *path) { return rm_tree_at(AT_FDCWD, path); }

// A checkpoint directory that is a symbolic link is someone else's: refused.
static int refuse_link(const char *path, char *err, size_t errlen) {
    struct stat sb;
    if (lstat(path, &sb) == 0 && !S_ISDIR(sb.st_mode))
        return set_error(err, errlen, "%s is %s, not a checkpoint directory; not touching it", path,
                         S_ISLNK(sb.st_mode) ? "a symbolic link" : "a file");
    return 0;
}

static int sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int write_text(const char *path, const char *s, char *err, size_t errlen) {
    if (write_file_atomic(path, s, strlen(s)) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

// HF's config.json for the LLM, enough for transformers to rebuild it.
static char *qwen_config_json(const QwenConfig *c) {
    return xsprintf("{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n  \"hidden_size\": %d,\n"
                    "  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
                    "  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n  \"vocab_size\": %d,\n"
                    "  \"max_position_embeddings\": %d,\n  \"rms_norm_eps\": %g,\n  \"rope_theta\": %.1f,\n"
                    "  \"tie_word_embeddings\": %s,\n  \"attention_bias\": %s,\n  \"hidden_act\": \"silu\",\n"
                    "  \"bos_token_id\": %d,\n  \"eos_token_id\": %d,\n  \"torch_dtype\": \"float32\"\n}\n",
                    c->family == QWEN3 ? "Qwen3ForCausalLM" : "Qwen2ForCausalLM", c->model_type, c->C, c->I, c->L,
                    c->NH, c->NKV, c->HD, c->V, c->max_pos, (double)c->eps, c->rope_theta, c->tied ? "true" : "false",
                    c->attn_bias && c->family == QWEN3 ? "true" : "false", c->bos_id < 0 ? 151643 : c->bos_id,
                    c->n_eos ? c->eos[0] : 151645);
}

static int save_optimizer(const char *path, const AdamW *o, char *err, size_t errlen) {
    int n = 0;
    for (int g = 0; g < o->n; g++) n += 2 * o->g[g].m.n;
    StItem *items = xcalloc((size_t)n + 1, sizeof *items);
    char **names = xcalloc((size_t)n + 1, sizeof(char *));
    int k = 0;
    for (int g = 0; g < o->n; g++)
        for (int which = 0; which < 2; which++) {
            const Table *t = which ? &o->g[g].v : &o->g[g].m;
            for (int e = 0; e < t->n; e++) {
                names[k] = xsprintf("%s.%s.%s", o->g[g].name, which ? "v" : "m", t->entries[e].name);
                Tensor x = table_tensor(t, e);
                items[k] = (StItem){names[k], DT_F32, x.ndim, t->entries[e].shape, x.data};
                k++;
            }
        }
    int rc = st_write(path, items, n, NULL, 0, err, errlen);
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    free(items);
    return rc;
}

int checkpoint_write_model(const char *dir, const Vlm *v, char *err, size_t errlen) {
    char *p = xsprintf("%s/model.safetensors", dir);
    int rc = table_save(&v->llm.params, p, false, err, errlen);
    free(p);
    if (rc) return rc;
    p = xsprintf("%s/config.json", dir);
    char *cj = qwen_config_json(&v->llm.cfg);
    rc = write_text(p, cj, err, errlen);
    free(cj);
    free(p);
    if (rc) return rc;
    p = xsprintf("%s/connector.safetensors", dir);
    rc = table_save(&v->conn.params, p, false, err, errlen);
    free(p);
    return rc;
}

int checkpoint_save(const char *out, const Vlm *v, const AdamW *o, const TrainState *st, const TrainConfig *cfg,
                    bool die_before_marker, char *err, size_t errlen) {
    char *dir = xsprintf("%s/step_%08lld", out, (long long)st->step);
    char *tmp = xsprintf("%s.tmp", dir);
    char *old = xsprintf("%s.old", dir);
    int rc = 0;
    char *p = NULL;
    if (refuse_link(tmp, err, errlen) || refuse_link(dir, err, errlen)) { rc = -1; goto done; }
    if (checkpoint_remove(tmp) != 0) {   // a stale one of an interrupted save
        snprintf(err, errlen, "%s: cannot remove: %s", tmp, strerror(errno));
        rc = -1;
        goto done;
    }
    if (mkdir(tmp, 0755) != 0) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        rc = -1;
        goto done;
    }
#define TRY(x) do { if ((rc = (x)) != 0) goto done; } while (0)
    TRY(checkpoint_write_model(tmp, v, err, errlen));
    free(p); p = xsprintf("%s/optimizer.safetensors", tmp);
    TRY(save_optimizer(p, o, err, errlen));
    free(p); p = xsprintf("%s/state.json", tmp);
    char *sj = xsprintf("{\"step\": %lld, \"cursor\": %lld, \"seed\": %llu, \"adam_step\": %lld, \"data\": \"%016llx\"}\n",
                        (long long)st->step, (long long)st->cursor, (unsigned long long)st->seed, (long long)o->step,
                        (unsigned long long)st->data_hash);
    rc = write_text(p, sj, err, errlen);
    free(sj);
    if (rc) goto done;
    free(p); p = xsprintf("%s/train.conf", tmp);
    {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        config_write(cfg, f);
        fclose(f);
        rc = write_file_atomic(p, buf, len);
        free(buf);
        if (rc) { snprintf(err, errlen, "%s: %s", p, strerror(errno)); goto done; }
    }
    // A step_N already there (a resumed run reaching the step of an interrupted save, or
    // the same step saved again) is moved to step_N.old, not deleted, until the new one
    // is complete: at every moment one whole copy exists. --resume ignores both
    // step_N.tmp and step_N.old (checkpoint_latest reads step_<digits> only).
    if (access(dir, F_OK) == 0) {
        if (checkpoint_remove(old) != 0 || rename(dir, old) != 0) {
            snprintf(err, errlen, "%s: cannot move aside to %s: %s", dir, old, strerror(errno));
            rc = -1;
            goto done;
        }
    }
    if (rename(tmp, dir) != 0) {
        snprintf(err, errlen, "%s: cannot rename to %s: %s", tmp, dir, strerror(errno));
        rc = -1;
        goto done;
    }
    // make the rename durable before the marker says "complete"
    if (sync_dir(out) != 0) {
        snprintf(err, errlen, "%s: cannot sync: %s", out, strerror(errno));
        rc = -1;
        goto done;
    }
    if (die_before_marker) raise(SIGKILL);
    free(p); p = xsprintf("%s/COMPLETE", dir);
    TRY(write_text(p, "complete\n", err, errlen));
    if (sync_dir(dir) != 0 || checkpoint_remove(old) != 0) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        rc = -1;
    }
#undef TRY
done:
    if (rc != 0) checkpoint_remove(tmp);   // a save that failed (a full disk) gives its space back
    free(old);
    free(p);
    free(dir);
    free(tmp);
    return rc;
}

char *checkpoint_latest(const char *out) {
    DIR *d = opendir(out);
    if (!d) return NULL;
    struct dirent *e;
    long long best = -1;
    while ((e = readdir(d))) {
        long long s;
        char tail;
        if (sscanf(e->d_name, "step_%lld%c", &s, &tail) != 1) continue;
        char *m = xsprintf("%s/%s/COMPLETE", out, e->d_name);
        struct stat sb;
        if (stat(m, &sb) == 0 && s > best) best = s;
        free(m);
    }
    closedir(d);
    return best < 0 ? NULL : xsprintf("%s/step_%08lld", out, best);
}

static void load_table(Table *t, const char *path) {
    char err[512];
    StModel *m = st_model_open(path, err, sizeof err);
    if (!m) fail_input(path, "%s", err);
    if (table_load(t, m, NULL, err, sizeof err) != 0) fail_input(path, "%s", err);
    st_model_close(m);
}

void checkpoint_load_model(const char *dir, Vlm *v) {
    char *p = xsprintf("%s/model.safetensors", dir);
    load_table(&v->llm.params, p);
    free(p);
    p = xsprintf("%s/connector.safetensors", dir);
    load_table(&v->conn.params, p);
    free(p);
}

void checkpoint_load(const char *dir, Vlm *v, AdamW *o, TrainState *st) {
    checkpoint_load_model(dir, v);
    char *p = xsprintf("%s/optimizer.safetensors", dir);
    char err[512];
    StFile *f = st_open(p, err, sizeof err);
    if (!f) fail_input(p, "%s", err);
    for (int g = 0; g < o->n; g++)
        for (int which = 0; which < 2; which++) {
            Table *t = which ? &o->g[g].v : &o->g[g].m;
            for (int e = 0; e < t->n; e++) {
                char *nm = xsprintf("%s.%s.%s", o->g[g].name, which ? "v" : "m", t->entries[e].name);
                const StTensor *x = st_find(f, nm);
                Tensor dst = table_tensor(t, e);
                if (!x || st_numel(x) != tensor_numel(dst) || st_read(x, dst.data, DT_F32) != 0)
                    fail_input(p, "missing or misshapen optimizer tensor '%s'", nm);
                free(nm);
            }
        }
    st_close(f);
    free(p);
    p = xsprintf("%s/state.json", dir);
    size_t len;
    const char *ferr;
    char *text = read_file(p, &len, &ferr);
    if (!text) fail_input(p, "%s", ferr);
    if (checkpoint_parse_state(text, len, st, &o->step, err, sizeof err) != 0) fail_input(p, "%s", err);
    free(text);
    free(p);
}

int checkpoint_parse_state(const char *text, size_t len, TrainState *st, int64_t *adam_step, char *err, size_t errlen) {
    JsonDoc *doc = json_parse(text, len, err, errlen);
    if (!doc) return -1;
    JsonValue *r = json_root(doc);
    st->step = json_get_int(r, "step", -1);
    st->cursor = json_get_int(r, "cursor", -1);
    st->seed = (uint64_t)json_get_int(r, "seed", 0);
    *adam_step = json_get_int(r, "adam_step", -1);
    // the ranges a run can reach (max_steps is at most 1e9; a step reads at most 2^20
    // rows per micro-batch): a larger number is a damaged file, and would overflow later
    int rc = 0;
    if (st->step < 0 || st->cursor < 0 || *adam_step < 0) rc = set_error(err, errlen, "missing step, cursor or adam_step");
    else if (st->step > 1000000000 || *adam_step > 1000000000 || st->cursor > ((int64_t)1 << 52))
        rc = set_error(err, errlen, "step %lld, adam_step %lld or cursor %lld out of range", (long long)st->step,
                       (long long)*adam_step, (long long)st->cursor);
    const char *dh = json_get_str(r, "data", NULL);
    st->data_hash = 0;
    if (!rc && dh) {
        uint64_t h = 0;
        int k = 0;
        for (; k < 16 && ((dh[k] >= '0' && dh[k] <= '9') || (dh[k] >= 'a' && dh[k] <= 'f')); k++)
            h = h * 16 + (uint64_t)(dh[k] <= '9' ? dh[k] - '0' : dh[k] - 'a' + 10);
        if (k != 16 || dh[16]) rc = set_error(err, errlen, "'data' is not 16 hex digits");
        st->data_hash = h;
    }
    json_free(doc);
    return rc;
}
