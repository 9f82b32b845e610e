// verify_ch04_tok.h: the tokenizer against HF `tokenizers`, and the BPE trainer.
//
// Included by tests/verify_ch04.c, which calls verify_tokenizer(DIR) with the
// directory that tests/reference/ref_ch04.py filled (ref_ch04_tok.py's
// write_tokenizer_refs wrote DIR/tok_cases.json and DIR/tok_train_corpus.txt).
//
//   1. Every corpus string: our ids == HF's ids, and decode(ids) == HF's decode
//      == NFC(string). One PASS/FAIL line per string.
//   2. The decode cases (ids that split characters, special tokens, unknown
//      ids): decode, decode skipping specials, and streaming decode, all equal
//      to HF's text.
//   3. The trainer: train on DIR/tok_train_corpus.txt, write
//      DIR/trained_tokenizer.json, load it back, check round trips, and write
//      our encodings of the corpus to DIR/trained_expected.json, which
//      tests/reference/check_ch04_tok.py compares with HF's encoding.
// Load time and encoding speed are printed as `#` lines (information only).
//
// Returns the number of failed checks.
#ifndef NM_VERIFY_CH04_TOK_H
#define NM_VERIFY_CH04_TOK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "01_tensor/check.h"
#include "01_tensor/common.h"
#include "01_tensor/json.h"
#include "04_qwen/bpe_train.h"
#include "04_qwen/tokenizer.h"
#include "04_qwen/unicode.h"

// A short printable rendering of a test string for PASS/FAIL lines.
static void vtok_snippet(const char *s, size_t n, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') { out[o++] = '\\'; out[o++] = 'n'; }
        else if (c == '\r') { out[o++] = '\\'; out[o++] = 'r'; }
        else if (c == '\t') { out[o++] = '\\'; out[o++] = 't'; }
        else if (c < 0x20 || c == 0x7f) o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
        else out[o++] = (char)c;
        if (o > 40 && (c < 0x80 || c >= 0xC0)) { memcpy(out + o, "...", 3); o += 3; break; }
    }
    // never cut a UTF-8 character in half
    while (o > 0 && ((unsigned char)out[o - 1] & 0xC0) == 0x80) o--;
    if (o > 0 && (unsigned char)out[o - 1] >= 0xC0) o--;
    out[o] = '\0';
}

static int32_t *vtok_ids(const JsonValue *arr, int *n) {
    *n = arr && arr->type == JSON_ARRAY ? (int)arr->len : 0;
    int32_t *ids = xmalloc(sizeof(int32_t) * (size_t)(*n + 1));
    for (int i = 0; i < *n; i++) ids[i] = (int32_t)arr->items[i]->integer;
    return ids;
}

static int verify_tokenizer(const char *dir) {
    int failed_before = check_failed;
    char *path = xsprintf("%s/tok_cases.json", dir);
    size_t len;
    const char *rerr = NULL;
    char *text = read_file(path, &len, &rerr);
    if (!text) {
        check_true("tok_cases_json", false, "%s: %s", path, rerr);
        free(path);
        return check_failed - failed_before;
    }
    char jerr[256];
    JsonDoc *doc = json_parse(text, len, jerr, sizeof jerr);
    if (!doc) {
        check_true("tok_cases_json", false, "%s: %s", path, jerr);
        free(text); free(path);
        return check_failed - failed_before;
    }
    const JsonValue *root = json_root(doc);
    const char *tpath = json_get_str(root, "tokenizer", "data/qwen3/tokenizer.json");

    // Load (timed) and the project's four tokens.
    char err[512];
    double t0 = now_seconds();
    Tokenizer *tok = tok_load(tpath, err, sizeof err);
    double t_load = now_seconds() - t0;
    if (!check_true("tok_load", tok != NULL, "%s %s", tpath, tok ? "" : err)) {
        json_free(doc); free(text); free(path);
        return check_failed - failed_before;
    }
    printf("# tokenizer load: %.3f s for %d ids (%s)\n", t_load, tok_vocab_size(tok), tpath);
    tok_add_project_tokens(tok);
    const JsonValue *proj = json_get(root, "project_tokens");
    for (int k = 0; k < TOK_PROJECT_COUNT; k++) {
        int64_t want = json_get_int(proj, tok_project_tokens[k], -2);
        check_true("tok_project_token", tok_project_id(tok, k) == want, "%s: ours %d, HF %lld", tok_project_tokens[k],
                   tok_project_id(tok, k), (long long)want);
    }

    // 1. The corpus.
    const JsonValue *cases = json_get(root, "cases");
    size_t n_cases = cases ? cases->len : 0, n_ok = 0, total_bytes = 0, qwen_ids = 0;
    // the cases made of the code points whose letter/number class moved between Unicode versions
    const JsonValue *moved = json_get(root, "moved");
    size_t moved_lo = (size_t)json_get_int(moved, "first_case", 0), moved_n = (size_t)json_get_int(moved, "n_cases", 0);
    size_t moved_ok = 0;
    for (size_t i = 0; i < n_cases; i++) {
        const JsonValue *c = cases->items[i];
        const JsonValue *s = json_get(c, "text");
        const JsonValue *dec = json_get(c, "decoded");
        int nwant;
        int32_t *want = vtok_ids(json_get(c, "ids"), &nwant);
        int32_t *got;
        int ngot = tok_encode(tok, s->str, s->len, &got, true);
        total_bytes += s->len;
        qwen_ids += (size_t)ngot;
        int first_diff = -1;
        for (int k = 0; k < (ngot < nwant ? ngot : nwant) && first_diff < 0; k++) if (got[k] != want[k]) first_diff = k;
        if (first_diff < 0 && ngot != nwant) first_diff = ngot < nwant ? ngot : nwant;
        size_t dl;
        char *d = tok_decode_len(tok, got, ngot, false, &dl);
        size_t nfc_len;
        char *nfc = uni_nfc(s->str, s->len, &nfc_len);
        bool dec_ok = dl == dec->len && memcmp(d, dec->str, dec->len) == 0;
        bool rt_ok = dl == nfc_len && memcmp(d, nfc, nfc_len) == 0;
        char snip[128], name[64];
        vtok_snippet(s->str, s->len, snip, sizeof snip);
        snprintf(name, sizeof name, "tok_case_%04zu", i);
        bool ok = first_diff < 0 && dec_ok && rt_ok;
        if (ok) n_ok++;
        if (ok && i >= moved_lo && i < moved_lo + moved_n) moved_ok++;
        if (first_diff >= 0)
            check_true(name, false, "ids differ at %d (ours %d, HF %d; %d vs %d ids) \"%s\"", first_diff,
                       first_diff < ngot ? got[first_diff] : -1, first_diff < nwant ? want[first_diff] : -1, ngot,
                       nwant, snip);
        else
            check_true(name, ok, "%d ids%s%s \"%s\"", ngot, dec_ok ? "" : " DECODE differs from HF",
                       rt_ok ? " round-trip" : " ROUND-TRIP differs from NFC(text)", snip);
        free(want); free(got); free(d); free(nfc);
    }
    printf("# tokenizer corpus: %zu strings, %zu bytes, %zu identical to HF\n", n_cases, total_bytes, n_ok);
    check_true("tok_unicode_moved_code_points", moved && moved_n > 0 && moved_lo + moved_n <= n_cases && moved_ok == moved_n,
               "%zu of %zu strings made of the %lld code points whose class moved from Unicode %s to %s identical to "
               "HF (tables: %s)", moved_ok, moved_n, (long long)json_get_int(moved, "code_points", 0),
               json_get_str(moved, "from", "?"), json_get_str(moved, "to", "?"), uni_tables_version);

    // 2. Decoding ids that split characters; special tokens skipped or not; streaming.
    const JsonValue *decs = json_get(root, "decode");
    size_t nd = decs ? decs->len : 0, bad_dec = 0, bad_skip = 0, bad_stream = 0, first_bad = 0;
    for (size_t i = 0; i < nd; i++) {
        const JsonValue *c = decs->items[i];
        int n;
        int32_t *ids = vtok_ids(json_get(c, "ids"), &n);
        const JsonValue *want = json_get(c, "text"), *want_skip = json_get(c, "text_skip");
        size_t dl, dsl;
        char *d = tok_decode_len(tok, ids, n, false, &dl), *ds = tok_decode_len(tok, ids, n, true, &dsl);
        bool e1 = dl == want->len && memcmp(d, want->str, want->len) == 0;
        bool e2 = dsl == want_skip->len && memcmp(ds, want_skip->str, want_skip->len) == 0;
        // streaming: the concatenation of every push and the flush
        TokStream st = {{0}, 0};
        size_t cap = 64, sl = 0;
        char *streamed = xmalloc(cap);
        for (int k = 0; k <= n; k++) {
            char *piece;
            size_t pl = k < n ? tok_stream_push(tok, &st, ids[k], false, &piece) : tok_stream_flush(&st, &piece);
            if (sl + pl + 1 > cap) { cap = 2 * (sl + pl + 1); streamed = xrealloc(streamed, cap); }
            memcpy(streamed + sl, piece, pl);
            sl += pl;
            free(piece);
        }
        bool e3 = sl == want->len && memcmp(streamed, want->str, sl) == 0;
        if (!(e1 && e2 && e3) && !(bad_dec + bad_skip + bad_stream)) first_bad = i;
        bad_dec += !e1; bad_skip += !e2; bad_stream += !e3;
        free(ids); free(d); free(ds); free(streamed);
    }
    check_true("tok_decode_invalid_utf8", bad_dec == 0, "%zu id lists, %zu differ from HF decode (first: case %zu)", nd,
               bad_dec, first_bad);
    check_true("tok_decode_skip_special", bad_skip == 0, "%zu id lists, %zu differ from HF decode(skip_special_tokens)",
               nd, bad_skip);
    check_true("tok_decode_streaming", bad_stream == 0, "%zu id lists, %zu streamed texts differ from the full decode",
               nd, bad_stream);

    // Speed (information only): encode the whole corpus, a few times over.
    {
        size_t cap = total_bytes + 1, o = 0;
        char *all = xmalloc(cap);
        for (size_t i = 0; i < n_cases; i++) {
            const JsonValue *s = json_get(cases->items[i], "text");
            memcpy(all + o, s->str, s->len);
            o += s->len;
        }
        double best = 1e30;
        int nids = 0;
        for (int rep = 0; rep < 3; rep++) {
            double t1 = now_seconds();
            int32_t *ids;
            nids = tok_encode(tok, all, o, &ids, true);
            double dt = now_seconds() - t1;
            if (dt < best) best = dt;
            free(ids);
        }
        printf("# tokenizer encode: %.1f MB/s (%zu bytes -> %d ids in %.4f s, one call)\n", o / best / 1e6, o, nids,
               best);
        // per string, no cross-string cache: what a data loader calling once per row sees
        double t1 = now_seconds();
        for (size_t i = 0; i < n_cases; i++) {
            const JsonValue *s = json_get(cases->items[i], "text");
            int32_t *ids;
            tok_encode(tok, s->str, s->len, &ids, true);
            free(ids);
        }
        printf("# tokenizer encode: %.1f MB/s one call per string\n", o / (now_seconds() - t1) / 1e6);
        free(all);
    }

    // 3. The trainer.
    {
        char *cpath = xsprintf("%s/tok_train_corpus.txt", dir);
        char *opath = xsprintf("%s/trained_tokenizer.json", dir);
        char *epath = xsprintf("%s/trained_expected.json", dir);
        const char *paths[1] = {cpath};
        BpeTrainStats st;
        int rc = bpe_train_files(paths, 1, 1000, 2, opath, &st, err, sizeof err);
        check_true("tok_train", rc == 0, "%s: %d merges, %d ids, %zu corpus bytes, %zu words, %.2f s%s%s", opath,
                   st.merges, st.vocab_size, st.corpus_bytes, st.words, st.seconds, rc ? " " : "", rc ? err : "");
        Tokenizer *tt = rc == 0 ? tok_load(opath, err, sizeof err) : NULL;
        check_true("tok_train_load", tt != NULL, "%s %s", opath, tt ? "loads in our reader" : err);
        if (tt) {
            check_true("tok_train_vocab_size", tok_vocab_size(tt) == st.vocab_size && tok_project_id(tt, TOK_IMAGE) >= 0 &&
                       tok_add_project_tokens(tt) == 0,
                       "%d ids, project tokens present", tok_vocab_size(tt));
            size_t ocap = 1 << 20, ol = 0, bad_rt = 0, first_rt = 0;
            char *out = xmalloc(ocap);
            // {"strings": [...], "ids": [[...], ...]}
            size_t total_ids = 0;
            char *ids_json = xmalloc(1 << 20);
            size_t il = 0, icap = 1 << 20;
#define VT_PUT(buf, l, cap, s)                                                                     \
    do {                                                                                           \
        size_t sl_ = strlen(s);                                                                    \
        if (l + sl_ + 1 > cap) { cap = 2 * (l + sl_ + 1); buf = xrealloc(buf, cap); }              \
        memcpy(buf + l, s, sl_ + 1); l += sl_;                                                     \
    } while (0)
            VT_PUT(out, ol, ocap, "{\"strings\": [");
            VT_PUT(ids_json, il, icap, "], \"ids\": [");
            for (size_t i = 0; i < n_cases; i++) {
                const JsonValue *s = json_get(cases->items[i], "text");
                if (i) VT_PUT(out, ol, ocap, ", ");
                json_write_string(&out, &ol, &ocap, s->str, s->len);
                int32_t *ids;
                int n = tok_encode(tt, s->str, s->len, &ids, true);
                total_ids += (size_t)n;
                VT_PUT(ids_json, il, icap, i ? ", [" : "[");
                for (int k = 0; k < n; k++) {
                    char num[16];
                    snprintf(num, sizeof num, k ? ", %d" : "%d", ids[k]);
                    VT_PUT(ids_json, il, icap, num);
                }
                VT_PUT(ids_json, il, icap, "]");
                size_t dl;
                char *d = tok_decode_len(tt, ids, n, false, &dl);
                size_t nfc_len;
                char *nfc = uni_nfc(s->str, s->len, &nfc_len);
                if (!(dl == nfc_len && memcmp(d, nfc, nfc_len) == 0)) { if (!bad_rt++) first_rt = i; }
                free(d); free(nfc); free(ids);
            }
            VT_PUT(ids_json, il, icap, "]}\n");
            VT_PUT(out, ol, ocap, ids_json);
#undef VT_PUT
            check_true("tok_train_roundtrip", bad_rt == 0, "%zu strings (%zu ids), %zu do not round-trip (first %zu)",
                       n_cases, total_ids, bad_rt, first_rt);
            printf("# trained tokenizer: %.2f ids per byte vs Qwen's %.2f on the same corpus\n",
                   (double)total_ids / (double)(total_bytes ? total_bytes : 1),
                   (double)qwen_ids / (double)(total_bytes ? total_bytes : 1));
            check_true("tok_train_expected_written", write_file_atomic(epath, out, ol) == 0, "%s", epath);
            free(out); free(ids_json);
            tok_free(tt);
        }
        free(cpath); free(opath); free(epath);
    }

    tok_free(tok);
    json_free(doc);
    free(text);
    free(path);
    return check_failed - failed_before;
}

#endif
