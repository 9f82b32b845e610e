// book/highlight.c: C and CUDA source to HTML, with syntax classes.
//
// A highlighter for a book does not need a parser. It needs to recognise, on
// each line, the six things a reader's eye looks for: keywords, types,
// strings (and character constants), comments, numbers and preprocessor
// directives, plus the names of functions where they are called or defined.
// Each becomes a <span> with a one-letter class the stylesheet colours:
//
//   k keyword   t type   s string   c comment   n number   p preprocessor
//   f function name      b CUDA built-in (threadIdx, blockIdx, ...)
//
// The only state carried from one line to the next is "inside a /* comment".
// Types are the C and CUDA ones plus every name the book's own sources
// typedef (Tensor, Table, ...), so project types read as types. Every code
// line becomes `<span class="l" id="FILE-LN" data-n="N">`, an anchor that
// @ref(file:line) and @ref(file:function) link to; the stylesheet draws the
// number from data-n, so copying code does not copy line numbers.
#include <stdlib.h>
#include <string.h>

#include "book/book.h"

static const char *const keywords[] = {
    "auto", "break", "case", "const", "continue", "default", "do", "else", "enum", "extern", "for", "goto", "if",
    "inline", "register", "restrict", "return", "signed", "sizeof", "static", "struct", "switch", "typedef",
    "union", "unsigned", "volatile", "while", "_Alignas", "_Alignof", "_Atomic", "_Generic", "_Noreturn",
    "_Static_assert", "_Thread_local", "__restrict__", "__global__", "__device__", "__host__", "__shared__",
    "__constant__", "__forceinline__", "__launch_bounds__", "__attribute__", "template", "typename", "constexpr",
    "namespace", "using", "nullptr", "true", "false", "NULL", "extern", "static_assert", "__restrict", NULL};

static const char *const types[] = {
    "void", "char", "short", "int", "long", "float", "double", "bool", "_Bool", "FILE", "va_list", "dim3", "__half",
    "__nv_bfloat16", "__nv_bfloat162", "half", "float2", "float4", "int2", "int4", "uint2", "uint4", "__m128",
    "__m256", "__m512", "__m128i", "__m256i", "__m512i", NULL};

static const char *const builtins[] = {"threadIdx", "blockIdx", "blockDim", "gridDim", "warpSize", "__syncthreads",
                                       "__syncwarp", NULL};

static bool in_list(const char *const *list, const char *w, size_t n) {
    for (int k = 0; list[k]; k++)
        if (strlen(list[k]) == n && strncmp(list[k], w, n) == 0) return true;
    return false;
}

static bool is_type(const char *w, size_t n, const Weave *w8) {
    if (in_list(types, w, n)) return true;
    if (n > 2 && w[n - 2] == '_' && w[n - 1] == 't') return true;   // size_t, uint16_t, cudaStream_t
    if (w8)
        for (int k = 0; k < w8->ntypes; k++)
            if (strlen(w8->types[k]) == n && strncmp(w8->types[k], w, n) == 0) return true;
    return false;
}

static void span(Buf *out, const char *cls, const char *s, size_t n) {
    buf_printf(out, "<span class=\"%s\">", cls);
    buf_esc(out, s, n);
    buf_puts(out, "</span>");
}

// ---- names that link to their definitions ------------------------------------------
// A function called in chapter 05 may be defined in chapter 01: in the code,
// its name is a link to the line that defines it, on whichever page that is.
// The index is every symbol of every source, sorted by name, so that each
// name in the code is one binary search.

static int symref_cmp(const void *a, const void *b) {
    const SymRef *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c) return c;
    c = strcmp(x->src->path, y->src->path);
    return c ? c : x->sym->line - y->sym->line;
}

void weave_symbols_build(Weave *w) {
    int n = 0;
    for (int k = 0; k < w->nsources; k++) n += w->sources[k]->nsyms;
    w->syms = xmalloc(sizeof(SymRef) * (size_t)(n ? n : 1));
    w->nsyms = 0;
    for (int k = 0; k < w->nsources; k++)
        for (int y = 0; y < w->sources[k]->nsyms; y++)
            w->syms[w->nsyms++] = (SymRef){w->sources[k]->syms[y].name, w->sources[k], &w->sources[k]->syms[y]};
    qsort(w->syms, (size_t)w->nsyms, sizeof(SymRef), symref_cmp);
}

void weave_symbols_free(Weave *w) {
    free(w->syms);
    w->syms = NULL;
    w->nsyms = 0;
}

static int name_cmp(const char *name, size_t n, const char *sym) {
    int c = strncmp(name, sym, n);
    return c ? c : (sym[n] ? -1 : 0);
}

const SymRef *weave_symbol(const Weave *w, const char *name, size_t n, bool type, const Source *from, int line) {
    if (!w || !w->syms) return NULL;
    int lo = 0, hi = w->nsyms;   // the first entry not below the name
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (name_cmp(name, n, w->syms[mid].name) > 0) lo = mid + 1;
        else hi = mid;
    }
    const SymRef *only = NULL, *same = NULL;
    int defs = 0;
    for (int k = lo; k < w->nsyms && name_cmp(name, n, w->syms[k].name) == 0; k++) {
        const SymRef *r = &w->syms[k];
        SymKind kind = r->sym->kind;
        if (type ? kind != SYM_TYPE : kind == SYM_TYPE || kind == SYM_DECLARATION) continue;
        if (r->src == from) same = r;
        only = r;
        defs++;
    }
    const SymRef *r = same ? same : defs == 1 ? only : NULL;
    if (r && r->src == from && r->sym->line == line) return NULL;   // the definition itself
    return r;
}

typedef struct {
    bool in_comment;        // inside a /* comment that began on an earlier line
    const char *path;       // NULL for snippets: no directive check
    const Source *src;      // the file being highlighted (NULL for snippets)
    int line;
    const Weave *w;
} Highlighter;

// Directives live in prose; one inside a code comment would silently stay
// text, so it is an error that says where to move it.
static void check_comment(const Highlighter *h, const char *s, size_t n) {
    if (!h->path) return;
    char *text = xstrndup(s, n);
    for (const char *c = text; *c; c++) {
        size_t len = directive_at(c, text);
        if (len && (strncmp(c + 1, "ref", len) == 0 || strncmp(c + 1, "run", len) == 0 ||
                    strncmp(c + 1, "embed", len) == 0))
            fail_at(h->path, h->line,
                    "@%.*s inside code: directives are read only in prose (a comment that starts in column 0)",
                    (int)len, c + 1);
    }
    free(text);
}

static void highlight_line(Buf *out, Highlighter *h, const char *l) {
    const char *c = l;
    if (h->in_comment) {
        const char *end = strstr(c, "*/");
        size_t n = end ? (size_t)(end + 2 - c) : strlen(c);
        check_comment(h, c, n);
        span(out, "c", c, n);
        c += n;
        h->in_comment = end == NULL;
    }
    // a preprocessor line: "#word" coloured, the rest highlighted as usual
    const char *t = skip_spaces(c);
    bool include = false;
    if (!h->in_comment && *t == '#') {
        buf_esc(out, c, (size_t)(t - c));
        const char *w = skip_spaces(t + 1);
        while (is_ident_char((unsigned char)*w)) w++;
        span(out, "p", t, (size_t)(w - t));
        include = strncmp(skip_spaces(t + 1), "include", 7) == 0;
        c = w;
    }
    while (*c && !h->in_comment) {
        const char *s = c;
        if (c[0] == '/' && c[1] == '/') {
            check_comment(h, c, strlen(c));
            span(out, "c", c, strlen(c));
            return;
        }
        if (c[0] == '/' && c[1] == '*') {
            const char *end = strstr(c + 2, "*/");
            size_t n = end ? (size_t)(end + 2 - c) : strlen(c);
            check_comment(h, c, n);
            span(out, "c", c, n);
            c += n;
            h->in_comment = end == NULL;
            continue;
        }
        if (*c == '"' || *c == '\'' || (include && *c == '<')) {
            char close = *c == '<' ? '>' : *c;
            c++;
            while (*c && *c != close) c += (c[0] == '\\' && c[1]) ? 2 : 1;
            if (*c) c++;
            span(out, "s", s, (size_t)(c - s));
            continue;
        }
        if ((*c >= '0' && *c <= '9') || (*c == '.' && c[1] >= '0' && c[1] <= '9')) {
            while (is_ident_char((unsigned char)*c) || *c == '.' ||
                   ((*c == '+' || *c == '-') && strchr("eEpP", c[-1]) && !(s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && (c[-1] == 'e' || c[-1] == 'E'))))
                c++;
            span(out, "n", s, (size_t)(c - s));
            continue;
        }
        if (is_ident_start((unsigned char)*c)) {
            while (is_ident_char((unsigned char)*c)) c++;
            size_t n = (size_t)(c - s);
            const char *cls = in_list(keywords, s, n) ? "k"
                              : is_type(s, n, h->w) ? "t"
                              : in_list(builtins, s, n) ? "b"
                              : *skip_spaces(c) == '(' ? "f"
                                                        : NULL;
            const SymRef *r = h->src && cls && (cls[0] == 'f' || cls[0] == 't')
                                  ? weave_symbol(h->w, s, n, cls[0] == 't', h->src, h->line)
                                  : NULL;
            if (r) {
                const char *page = h->w->page && strcmp(h->w->page, r->src->page) == 0 ? "" : r->src->page;
                buf_printf(out, "<a class=\"sym\" href=\"%s#%s-L%d\">", page, r->src->id, r->sym->line);
            }
            if (cls) span(out, cls, s, n);
            else buf_esc(out, s, n);
            if (r) buf_puts(out, "</a>");
            continue;
        }
        buf_esc(out, c, 1);
        c++;
    }
}

void highlight_code(Buf *out, const Source *s, int begin, int end, const Weave *w) {
    Highlighter h = {.path = s->path, .src = s, .w = w};
    for (int j = begin; j < end; j++) {
        h.line = j + 1;
        buf_printf(out, "<span class=\"l\" id=\"%s-L%d\" data-n=\"%d\">", s->id, j + 1, j + 1);
        highlight_line(out, &h, s->lines[j]);
        buf_puts(out, "</span>\n");
    }
}

void highlight_snippet(Buf *out, const char *text, size_t n, const Weave *w) {
    char *copy = xstrndup(text, n);
    int nl = 0;
    char **lines = split_lines(copy, &nl);
    Highlighter h = {.w = w};
    for (int j = 0; j < nl; j++) {
        highlight_line(out, &h, lines[j]);
        buf_putc(out, '\n');
    }
    free(lines);
    free(copy);
}
