// data.c: reading LLaVA-style rows, the chat template, labels and batches (see data.h).
#define _GNU_SOURCE   // qsort_r, for the length buckets and batch packing
#include "05_training/data.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "01_tensor/attention.h"
#include "01_tensor/common.h"
#include "01_tensor/json.h"
#include "01_tensor/rng.h"
#include "05_training/loss.h"

static const char IMAGE_TAG[] = "<image>";

static int count_images(const char *s) {
    int n = 0;
    for (const char *p = strstr(s, IMAGE_TAG); p; p = strstr(p + 1, IMAGE_TAG)) n++;
    return n;
}

static bool file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

// One row object -> Conversation, or dies naming the file and the line.
static void parse_row(Conversation *c, const JsonValue *v, const char *path, int line, const char *images_dir) {
    memset(c, 0, sizeof *c);
    c->line = line;
    if (!v || v->type != JSON_OBJECT) fail_input(path, "line %d: a row must be a JSON object", line);
    const JsonValue *id = json_get(v, "id");
    if (id && id->type == JSON_STRING) c->id = xstrdup(id->str);
    else if (id && id->type == JSON_NUMBER) c->id = xsprintf("%.0f", id->number);
    else c->id = xsprintf("line%d", line);
    const JsonValue *img = json_get(v, "image"), *imgs = json_get(v, "images");
    if (img && img->type == JSON_STRING) {
        c->n_images = 1;
        c->images = xmalloc(sizeof(char *));
        c->images[0] = xstrdup(img->str);
    } else if (imgs && imgs->type == JSON_ARRAY) {
        c->n_images = (int)imgs->len;
        c->images = xcalloc(imgs->len + 1, sizeof(char *));
        for (size_t i = 0; i < imgs->len; i++) {
            if (imgs->items[i]->type != JSON_STRING)
                fail_input(path, "line %d (id %s): \"images\" must hold strings", line, c->id);
            c->images[i] = xstrdup(imgs->items[i]->str);
        }
    } else if ((img && img->type != JSON_NULL) || (imgs && imgs->type != JSON_NULL)) {
        fail_input(path, "line %d (id %s): \"image\" must be a string, \"images\" an array", line, c->id);
    }
    const JsonValue *conv = json_get(v, "conversations");
    if (!conv || conv->type != JSON_ARRAY) fail_input(path, "line %d (id %s): no \"conversations\" array", line, c->id);
    if (conv->len == 0) fail_input(path, "line %d (id %s): empty conversation", line, c->id);
    c->n_turns = (int)conv->len;
    c->role = xcalloc(conv->len, sizeof(Role));
    c->text = xcalloc(conv->len, sizeof(char *));
    int tags = 0;
    bool has_answer = false;
    for (size_t i = 0; i < conv->len; i++) {
        const JsonValue *t = conv->items[i];
        const char *from = json_get_str(t, "from", NULL);
        const JsonValue *val = json_get(t, "value");
        if (!from || !val || val->type != JSON_STRING)
            fail_input(path, "line %d (id %s): turn %zu needs string \"from\" and \"value\"", line, c->id, i);
        if (!strcmp(from, "human") || !strcmp(from, "user")) c->role[i] = ROLE_USER;
        else if (!strcmp(from, "gpt") || !strcmp(from, "assistant")) c->role[i] = ROLE_ASSISTANT, has_answer = true;
        else if (!strcmp(from, "system")) c->role[i] = ROLE_SYSTEM;
        else fail_input(path, "line %d (id %s): unknown speaker \"%s\"", line, c->id, from);
        if (strlen(val->str) != val->len) fail_input(path, "line %d (id %s): NUL byte in a value", line, c->id);
        c->text[i] = xstrdup(val->str);
        if (c->role[i] == ROLE_ASSISTANT && count_images(c->text[i]))
            fail_input(path, "line %d (id %s): <image> in an assistant answer", line, c->id);
        tags += count_images(c->text[i]);
    }
    if (!has_answer) fail_input(path, "line %d (id %s): no assistant turn to learn from", line, c->id);
    if (tags != c->n_images)
        fail_input(path, "line %d (id %s): %d <image> tags for %d images", line, c->id, tags, c->n_images);
    // an image path stays inside --images (or the cache's list): no absolute path,
    // no '..' part
    for (int i = 0; i < c->n_images; i++) {
        const char *p = c->images[i];
        bool up = !strcmp(p, "..") || !strncmp(p, "../", 3) || strstr(p, "/../") ||
                  (strlen(p) >= 3 && !strcmp(p + strlen(p) - 3, "/.."));
        if (p[0] == '/' || up || !p[0])
            fail_input(path, "line %d (id %s): image path '%s' leaves the image folder (absolute, empty or with '..')",
                       line, c->id, p);
    }
    if (images_dir)
        for (int i = 0; i < c->n_images; i++) {
            char *p = xsprintf("%s/%s", images_dir, c->images[i]);
            if (!file_exists(p)) fail_input(p, "image of line %d (id %s) not found", line, c->id);
            free(p);
        }
}

void dataset_load(Dataset *d, const char *path, const char *images_dir) {
    memset(d, 0, sizeof *d);
    d->path = xstrdup(path);
    size_t len;
    const char *err;
    char *text = read_file(path, &len, &err);
    if (!text) fail_input(path, "%s", err);
    size_t i = 0;
    while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t')) i++;
    char jerr[256];
    int cap = 0;
    if (i < len && text[i] == '[') {
        // a JSON array of rows
        JsonDoc *doc = json_parse(text, len, jerr, sizeof jerr);
        if (!doc) fail_input(path, "bad JSON: %s", jerr);
        const JsonValue *root = json_root(doc);
        d->n = (int)root->len;
        d->rows = xcalloc(root->len + 1, sizeof *d->rows);
        for (size_t r = 0; r < root->len; r++) parse_row(&d->rows[r], root->items[r], path, (int)r + 1, images_dir);
        json_free(doc);
    } else {
        // JSONL: one row per line; blank lines are allowed
        int line = 0;
        size_t p = 0;
        while (p < len) {
            size_t e = p;
            while (e < len && text[e] != '\n') e++;
            line++;
            size_t q = p;
            while (q < e && (text[q] == ' ' || text[q] == '\t' || text[q] == '\r')) q++;
            if (q < e) {
                JsonDoc *doc = json_parse(text + p, e - p, jerr, sizeof jerr);
                if (!doc) fail_input(path, "line %d: bad JSON: %s", line, jerr);
                if (d->n == cap) {
                    cap = cap ? 2 * cap : 64;
                    d->rows = xrealloc(d->rows, (size_t)cap * sizeof *d->rows);
                }
                parse_row(&d->rows[d->n++], json_root(doc), path, line, images_dir);
                json_free(doc);
            }
            p = e + 1;
        }
    }
    free(text);
    if (d->n == 0) fail_input(path, "no rows");
}

void dataset_free(Dataset *d) {
    for (int r = 0; r < d->n; r++) {
        Conversation *c = &d->rows[r];
        free(c->id);
        for (int i = 0; i < c->n_images; i++) free(c->images[i]);
        free(c->images);
        for (int i = 0; i < c->n_turns; i++) free(c->text[i]);
        free(c->text);
        free(c->role);
    }
    free(d->rows);
    free(d->path);
    memset(d, 0, sizeof *d);
}

// ----------------------------------------------------------------------------
// The template

void chat_format_init(ChatFormat *f, const Tokenizer *tok, int stage, int n_vis, int max_len, bool truncate) {
    memset(f, 0, sizeof *f);
    f->tok = tok;
    f->stage = stage;
    f->n_vis = n_vis;
    f->max_len = max_len;
    f->truncate = truncate;
    f->image_id = tok_project_id(tok, TOK_IMAGE);
    f->im_start = tok_token_to_id(tok, "<|im_start|>");
    f->im_end = tok_token_to_id(tok, "<|im_end|>");
    f->eos_id = tok_token_to_id(tok, "<|endoftext|>");
    f->pad_id = f->eos_id;   // Qwen's pad_token is <|endoftext|>
    NM_CHECK(f->image_id >= 0 && f->im_start >= 0 && f->im_end >= 0 && f->eos_id >= 0,
             "the tokenizer lacks <image>, <|im_start|>, <|im_end|> or <|endoftext|>");
}

typedef struct { int32_t *ids, *labels, *pos, *seg; int n, cap, n_images; } Seq;

static void push(Seq *s, int32_t id, bool sup) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->ids = xrealloc(s->ids, (size_t)s->cap * sizeof(int32_t));
        s->labels = xrealloc(s->labels, (size_t)s->cap * sizeof(int32_t));
        s->pos = xrealloc(s->pos, (size_t)s->cap * sizeof(int32_t));
        s->seg = xrealloc(s->seg, (size_t)s->cap * sizeof(int32_t));
    }
    s->ids[s->n] = id;
    s->labels[s->n] = sup ? id : LOSS_IGNORE;
    s->pos[s->n] = s->n;   // a plain row: position = index, one segment
    s->seg[s->n] = 0;
    s->n++;
}

static void seq_free(Seq *s) {
    free(s->ids);
    free(s->labels);
    free(s->pos);
    free(s->seg);
    memset(s, 0, sizeof *s);
}

static void push_text(Seq *s, const ChatFormat *f, const char *text, size_t len, bool sup) {
    if (len == 0) return;
    int32_t *ids;
    int n = tok_encode(f->tok, text, len, &ids, false);
    for (int i = 0; i < n; i++) push(s, ids[i], sup);
    free(ids);
}

// A value with <image> tags: text segments and n_vis placeholders per tag.
static void push_value(Seq *s, const ChatFormat *f, const char *v, bool sup) {
    const char *p = v;
    for (const char *q = strstr(p, IMAGE_TAG); q; q = strstr(p, IMAGE_TAG)) {
        push_text(s, f, p, (size_t)(q - p), sup);
        for (int i = 0; i < f->n_vis; i++) push(s, f->image_id, false);
        s->n_images++;
        p = q + strlen(IMAGE_TAG);
    }
    push_text(s, f, p, strlen(p), sup);
}

static const char *role_name(Role r) { return r == ROLE_SYSTEM ? "system" : r == ROLE_USER ? "user" : "assistant"; }

// One turn in the template of the stage; `prefix` (may be "") goes before its value.
static void push_turn(Seq *s, const ChatFormat *f, Role role, const char *prefix, const char *value) {
    bool answer = role == ROLE_ASSISTANT;
    char *v = prefix[0] ? xsprintf("%s%s", prefix, value) : (char *)value;
    if (f->stage == 1) {
        // captions: {image + prompt}{caption}<|endoftext|>
        push_value(s, f, v, answer);
        if (answer) push(s, f->eos_id, true);
    } else {
        push(s, f->im_start, false);
        char head[16];
        snprintf(head, sizeof head, "%s\n", role_name(role));
        push_text(s, f, head, strlen(head), false);
        push_value(s, f, v, answer);
        push(s, f->im_end, answer);
        push_text(s, f, "\n", 1, false);
    }
    if (v != value) free(v);
}

// ---- turn blocks ---------------------------------------------------------------
// A conversation of several questions about one image, packed so that each
// question sees the image and itself only (data.h). Block k is rendered as
// the one-question conversation a user would send: the system turns, the
// first user turn's image part (its text up to the last <image>, and the
// newline after it) in front of question k, and question k's answers. Every
// block then starts with the same tokens up to the last image placeholder:
// the shared prefix, kept once (segment 0). The rest of block k follows as
// segment k + 1, its positions continuing from the prefix's end, so RoPE sees
// the numbers it would see in the lone conversation.
static int encode_blocks(const ChatFormat *f, const Conversation *c, Seq *out, char *why, size_t whylen) {
    int first_user = -1;
    for (int i = 0; i < c->n_turns && first_user < 0; i++)
        if (c->role[i] == ROLE_USER) first_user = i;
    if (first_user < 0) {
        snprintf(why, whylen, "turn blocks: no user turn");
        return 1;
    }
    for (int i = first_user; i < c->n_turns; i++)
        if (c->role[i] == ROLE_SYSTEM) {
            snprintf(why, whylen, "turn blocks: a system turn after the first question");
            return 1;
        }
    // the image part of the first user turn: up to its last <image> (+ '\n')
    const char *u0 = c->text[first_user], *last = NULL;
    for (const char *q = strstr(u0, IMAGE_TAG); q; q = strstr(q + 1, IMAGE_TAG)) last = q;
    size_t plen = last ? (size_t)(last - u0) + strlen(IMAGE_TAG) : 0;
    if (last && u0[plen] == '\n') plen++;
    char *prefix = xmalloc(plen + 1);
    memcpy(prefix, u0, plen);
    prefix[plen] = '\0';

    int L = -1, seg = 0;   // the shared prefix's length in tokens; the segment of the block
    for (int i = first_user; i < c->n_turns;) {
        if (i > first_user && strstr(c->text[i], IMAGE_TAG)) {
            snprintf(why, whylen, "turn blocks: an <image> after the first user turn (turn %d)", i + 1);
            free(prefix);
            seq_free(out);
            return 1;
        }
        // one block: the system turns, the user turn i, its answers
        Seq b = {0};
        for (int j = 0; j < first_user; j++) push_turn(&b, f, c->role[j], "", c->text[j]);
        push_turn(&b, f, ROLE_USER, i == first_user ? "" : prefix, c->text[i]);
        int j = i + 1;
        for (; j < c->n_turns && c->role[j] == ROLE_ASSISTANT; j++) push_turn(&b, f, ROLE_ASSISTANT, "", c->text[j]);
        if (L < 0) {   // the first block fixes the prefix: up to its last image placeholder
            L = 0;
            for (int t = 0; t < b.n; t++)
                if (b.ids[t] == f->image_id) L = t + 1;
            out->n_images = b.n_images;
        } else if (b.n < L || memcmp(b.ids, out->ids, (size_t)L * sizeof(int32_t)) != 0) {
            snprintf(why, whylen, "turn blocks: question at turn %d does not share the image prefix", i + 1);
            seq_free(&b);
            free(prefix);
            seq_free(out);
            return 1;
        }
        seg++;
        for (int t = seg == 1 ? 0 : L; t < b.n; t++) {   // the prefix once, then each block's own tokens
            push(out, b.ids[t], b.labels[t] != LOSS_IGNORE);
            out->pos[out->n - 1] = t;
            out->seg[out->n - 1] = t < L ? 0 : seg;
        }
        seq_free(&b);
        i = j;
    }
    free(prefix);
    return 0;
}

int chat_encode(const ChatFormat *f, const Conversation *c, Sample *out, char *why, size_t whylen) {
    Seq s = {0};
    if (f->turn_blocks && f->stage == 2) {
        if (encode_blocks(f, c, &s, why, whylen) != 0) return 1;
    } else {
        for (int i = 0; i < c->n_turns; i++) push_turn(&s, f, c->role[i], "", c->text[i]);
    }
    int n_sup = 0;
    if (s.n > f->max_len) {
        int cut = f->max_len;
        bool splits_image = cut < s.n && s.ids[cut] == f->image_id && cut > 0 && s.ids[cut - 1] == f->image_id;
        for (int t = 1; t < cut; t++) n_sup += s.labels[t] != LOSS_IGNORE;
        if (!f->truncate || splits_image || n_sup == 0) {
            snprintf(why, whylen, "%d tokens > max_len %d (%s)", s.n, f->max_len,
                     !f->truncate ? "policy skip" : splits_image ? "the cut would split an image"
                                                                 : "nothing supervised before the cut");
            seq_free(&s);
            return 1;
        }
        // count the images left whole before the cut
        int imgs = 0;
        for (int t = 0; t < cut; t++)
            if (s.ids[t] == f->image_id && (t == 0 || s.ids[t - 1] != f->image_id)) imgs++;
        s.n = cut;
        s.n_images = imgs;
        snprintf(why, whylen, "truncated to %d tokens", cut);
    }
    n_sup = 0;
    for (int t = 1; t < s.n; t++) n_sup += s.labels[t] != LOSS_IGNORE;   // (a block starts with its question)
    out->ids = s.ids;
    out->labels = s.labels;
    out->pos = s.pos;
    out->seg = s.seg;
    out->n = s.n;
    out->n_images = s.n_images;
    out->n_sup = n_sup;
    return 0;
}

void sample_free(Sample *s) {
    free(s->ids);
    free(s->labels);
    free(s->pos);
    free(s->seg);
    memset(s, 0, sizeof *s);
}

// ----------------------------------------------------------------------------
// Batches

// First fit, longest first: sample order[k] (longest first) goes into the
// first row with room for it within cap tokens, else a new row. Writes each
// sample's row into row_of (NS) and returns the number of rows; *T gets the
// longest row's length.
static int first_fit(const Sample *s, const int *order, int NS, int cap, int *row_of, int *T) {
    int *fill = xcalloc((size_t)NS, sizeof(int));   // tokens in each row so far
    int R = 0;
    for (int k = 0; k < NS; k++) {
        int i = order[k], r = 0;
        while (r < R && fill[r] + s[i].n > cap) r++;
        if (r == R) R++;
        fill[r] += s[i].n;
        row_of[i] = r;
    }
    *T = 0;
    for (int r = 0; r < R; r++) *T = fill[r] > *T ? fill[r] : *T;
    free(fill);
    return R;
}

static int longer_first(const void *a, const void *b, void *ctx) {
    const Sample *s = ctx;
    int i = *(const int *)a, j = *(const int *)b;
    return s[i].n != s[j].n ? s[j].n - s[i].n : i - j;   // ties keep the samples' order
}

bool batch_build(Batch *b, const Sample *s, const Conversation *const *convs, const int *rows, int NS, int pad_id,
                 int pack_len) {
    memset(b, 0, sizeof *b);
    int longest = 1;
    bool blocks = false;   // some sample has turn blocks
    for (int i = 0; i < NS; i++) {
        longest = s[i].n > longest ? s[i].n : longest;
        for (int t = 0; t < s[i].n && !blocks; t++) blocks = s[i].seg[t] != 0;
    }
    // ---- the layout: which row each sample goes into, in what order
    int *row_of = xmalloc((size_t)NS * sizeof(int));   // (NS) each sample's row
    int *order = xmalloc((size_t)NS * sizeof(int));    // (NS) samples, longest first
    for (int i = 0; i < NS; i++) order[i] = row_of[i] = i;
    int B = NS, T = longest;
    if (pack_len > 0 && NS > 1) {
        qsort_r(order, (size_t)NS, sizeof(int), longer_first, (void *)s);
        // every row length from the longest sample to pack_len, in steps of 8:
        // the layout with the fewest positions (B * T) wins, the shorter T on a tie
        int *trial = xmalloc((size_t)NS * sizeof(int));
        for (int cap = longest; cap <= (pack_len > longest ? pack_len : longest); cap += 8) {
            int Tc, R = first_fit(s, order, NS, cap, trial, &Tc);
            if ((int64_t)R * Tc < (int64_t)B * T) {
                B = R;
                T = Tc;
                memcpy(row_of, trial, (size_t)NS * sizeof(int));
            }
        }
        free(trial);
    }
    const bool packed = B < NS;
    NM_CHECK(NS < (1 << (31 - SEG_GROUP_BITS)), "batch: %d samples are too many to pack", NS);
    b->B = B;
    b->T = T;
    b->n_samples = NS;
    size_t BT = (size_t)B * T;
    b->ids = xmalloc(BT * sizeof(int32_t));
    b->labels = xmalloc(BT * sizeof(int32_t));
    b->targets = xmalloc(BT * sizeof(int32_t));
    b->pos = xmalloc(BT * sizeof(int32_t));
    b->seg = blocks || packed ? xmalloc(BT * sizeof(int32_t)) : NULL;
    b->mask = xcalloc(BT, 1);
    b->len = xcalloc((size_t)B, sizeof(int));
    b->rows = xmalloc((size_t)NS * sizeof(int));
    int NI = 0;
    for (int i = 0; i < NS; i++) NI += s[i].n_images;
    b->images = xcalloc((size_t)NI + 1, sizeof(char *));
    b->weights = NULL;
    for (size_t o = 0; o < BT; o++) {   // padding everywhere first; the samples overwrite it
        b->ids[o] = pad_id;
        b->labels[o] = b->targets[o] = LOSS_IGNORE;
        b->pos[o] = 0;
        if (b->seg) b->seg[o] = -1;
    }
    // ---- the samples, row by row, each in its order: images then appear in
    // the batch in the order of their placeholders, as the VLM reads them
    int ns = 0;
    for (int r = 0; r < B; r++) {
        int group = 0;   // the sample's place in its row: its segment group
        for (int k = 0; k < NS; k++) {
            const int i = packed ? order[k] : k;
            if (row_of[i] != r) continue;
            const Sample *si = &s[i];
            const int32_t g = (int32_t)group++ << SEG_GROUP_BITS;
            NM_CHECK(!b->seg || si->n == 0 || si->seg[si->n - 1] < (1 << SEG_GROUP_BITS),
                     "batch: a sample of %d blocks is too many to pack", si->seg[si->n - 1]);
            b->rows[ns++] = rows ? rows[i] : i;
            for (int k2 = 0; k2 < si->n_images; k2++) b->images[b->n_images++] = convs[i]->images[k2];
            const size_t o0 = (size_t)r * T + b->len[r];   // where the sample starts
            for (int t = 0; t < si->n; t++) {
                size_t o = o0 + t;
                b->ids[o] = si->ids[t];
                b->labels[o] = si->labels[t];
                b->pos[o] = si->pos[t];
                if (b->seg) b->seg[o] = g | si->seg[t];
                b->mask[o] = 1;
                // the target: the next token of the same sample and block (the
                // prefix, segment 0 of the sample, predicts its first block's start)
                bool same_block = t + 1 < si->n && (si->seg[t + 1] == si->seg[t] || si->seg[t] == 0);
                b->targets[o] = same_block ? si->labels[t + 1] : LOSS_IGNORE;
                b->n_sup += b->targets[o] != LOSS_IGNORE;
            }
            b->len[r] += si->n;
            b->n_tokens += si->n;
        }
    }
    free(row_of);
    free(order);
    b->sup_weight = b->n_sup;
    return b->n_sup > 0;
}

void batch_weight_answers(Batch *b) {
    size_t BT = (size_t)b->B * b->T;
    free(b->weights);
    b->weights = xcalloc(BT, sizeof(float));
    b->sup_weight = 0;
    for (int i = 0; i < b->B; i++) {
        const int32_t *tg = b->targets + (size_t)i * b->T;   // (T) one row's targets
        float *w = b->weights + (size_t)i * b->T;
        for (int t = 0; t < b->T;) {
            if (tg[t] == LOSS_IGNORE) { t++; continue; }
            int end = t;   // the answer's run of targets: [t, end)
            while (end < b->T && tg[end] != LOSS_IGNORE) end++;
            for (int k = t; k < end; k++) w[k] = 1.0f / (float)(end - t);
            b->sup_weight += 1;
            t = end;
        }
    }
}

void batch_free(Batch *b) {
    free(b->ids);
    free(b->labels);
    free(b->targets);
    free(b->pos);
    free(b->seg);
    free(b->mask);
    free(b->len);
    free(b->rows);
    free(b->images);
    free(b->weights);
    memset(b, 0, sizeof *b);
}

// ----------------------------------------------------------------------------
// The order

void data_order_init(DataOrder *o, const Dataset *d, uint64_t seed, bool shuffle) {
    o->d = d;
    o->seed = seed;
    o->shuffle = shuffle;
    o->batch = 1;
    o->bucket_batches = 0;
    o->epoch = -1;
    o->perm = xmalloc((size_t)d->n * sizeof(int));
}

// A row's length in characters, the sort key of the length buckets.
static long row_chars(const Conversation *c) {
    long n = 0;
    for (int t = 0; t < c->n_turns; t++) n += (long)strlen(c->text[t]);
    return n;
}

static int cmp_len(const void *a, const void *b, void *ctx) {
    const Dataset *d = ctx;
    int i = *(const int *)a, j = *(const int *)b;
    long li = row_chars(&d->rows[i]), lj = row_chars(&d->rows[j]);
    return li != lj ? (li < lj ? -1 : 1) : (i > j) - (i < j);   // ties by row: a total order
}

// Sorts each window of bucket_batches * batch rows of the epoch's permutation
// by length, then shuffles its batches (runs of `batch` rows) among
// themselves with the epoch's generator (data.h).
static void bucket_by_length(DataOrder *o, Rng *r) {
    const int n = o->d->n, B = o->batch, K = o->bucket_batches, W = B * K;
    int *tmp = xmalloc((size_t)W * sizeof(int));
    for (int w0 = 0; w0 + W <= n; w0 += W) {   // a last, partial window keeps its random order
        int *win = o->perm + w0;
        qsort_r(win, (size_t)W, sizeof(int), cmp_len, (void *)o->d);
        memcpy(tmp, win, (size_t)W * sizeof(int));
        int order[1024];
        for (int k = 0; k < K; k++) order[k] = k;
        for (int k = K - 1; k > 0; k--) {
            int j = (int)rng_below(r, (uint32_t)(k + 1)), t = order[k];
            order[k] = order[j];
            order[j] = t;
        }
        for (int k = 0; k < K; k++) memcpy(win + (size_t)k * B, tmp + (size_t)order[k] * B, (size_t)B * sizeof(int));
    }
    free(tmp);
}

int data_order_row(DataOrder *o, int64_t g) {
    int n = o->d->n;
    int64_t e = g / n;
    if (e != o->epoch) {
        for (int i = 0; i < n; i++) o->perm[i] = i;
        if (o->shuffle) {
            // Fisher-Yates with a stream of its own per epoch
            Rng r;
            rng_seed(&r, o->seed, 1000 + (uint64_t)e);
            for (int i = n - 1; i > 0; i--) {
                int j = (int)rng_below(&r, (uint32_t)(i + 1));
                int t = o->perm[i];
                o->perm[i] = o->perm[j];
                o->perm[j] = t;
            }
            if (o->bucket_batches > 1 && o->batch > 0) bucket_by_length(o, &r);
        }
        o->epoch = e;
    }
    return o->perm[g % n];
}

void data_order_free(DataOrder *o) {
    free(o->perm);
    o->perm = NULL;
}

void data_next_batch(Batch *b, DataOrder *o, const ChatFormat *f, int B, int64_t *cursor, FILE *log) {
    Sample *s = xcalloc((size_t)B, sizeof *s);
    const Conversation **convs = xcalloc((size_t)B, sizeof *convs);
    int *rows = xcalloc((size_t)B, sizeof(int));
    int skipped_run = 0;
    for (int i = 0; i < B;) {
        int r = data_order_row(o, *cursor);
        (*cursor)++;
        const Conversation *c = &o->d->rows[r];
        char why[160] = "";
        int rc = chat_encode(f, c, &s[i], why, sizeof why);
        if (rc != 0 || why[0]) {
            if (log) fprintf(log, "data: %s line %d (id %s): %s%s\n", o->d->path, c->line, c->id, why,
                             rc ? ", skipped" : "");
        }
        if (rc != 0) {
            if (++skipped_run > 2 * o->d->n)
                fail_input(o->d->path, "every row is longer than max_len %d tokens", f->max_len);
            continue;
        }
        skipped_run = 0;
        convs[i] = c;
        rows[i] = r;
        i++;
    }
    if (!batch_build(b, s, convs, rows, B, f->pad_id, f->pack_len))
        fail_input(o->d->path, "a batch (rows ending at stream position %lld) has no supervised token",
                   (long long)*cursor);
    if (f->answer_weights) batch_weight_answers(b);
    for (int i = 0; i < B; i++) sample_free(&s[i]);
    free(s);
    free(convs);
    free(rows);
}
