// book/source.c: reading one source file and cutting it into sections.
//
// The rule that turns C into a book is small. A comment that *starts in column
// 0* (a run of `//` lines, or a `/* ... */` block whose `*/` ends its line) is
// prose; the code after it, up to the next such comment, is what the prose
// talks about. Comments indented inside a function stay in the code, where
// they belong to the lines beside them. Two prose blocks separated only by
// blank lines are one block, unless the second opens with a rule line
// (`// ------`), which starts a new part; a short line right after the rule
// (or a rule with a title inside, `// ---- writing ----`) becomes the part's
// heading and gets an anchor.
//
// The same pass finds the file's symbols, so that `@ref(file:name)` can point
// at them: a function (a column-0 line `type name(...` whose parameter list is
// followed by `{`, or by `;` for a declaration), a type (`typedef ... Name;`,
// `} Name;`, `struct Name {`), a macro (`#define NAME`).
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "book/book.h"

// ---- prose or code? ------------------------------------------------------------

static bool is_line_comment(const char *l) { return l[0] == '/' && l[1] == '/'; }

// A column-0 "/*" whose block closes with "*/" at the end of a line. Returns
// the index one past the closing line, or -1 when this is not a prose block.
static int block_comment_end(char **lines, int n, int i) {
    if (!starts_with(lines[i], "/*")) return -1;
    for (int j = i; j < n; j++) {
        const char *from = (j == i) ? lines[j] + 2 : lines[j];
        const char *close = strstr(from, "*/");
        if (!close) continue;
        return *skip_spaces(close + 2) == '\0' ? j + 1 : -1;
    }
    return -1;   // never closed: leave it to the compiler to complain
}

static bool is_blank(const char *l) { return *skip_spaces(l) == '\0'; }

// Comment text of prose line j: the markers and one following space removed.
static const char *strip_comment(const Source *s, const Section *sec, int j) {
    const char *l = s->lines[j];
    if (is_line_comment(l)) {
        l += 2;
        return *l == ' ' ? l + 1 : l;
    }
    // inside a /* */ block: drop "/*" or "/**", a leading " * ", and the closing "*/"
    if (j == sec->prose_begin || starts_with(l, "/*")) {
        l += 2;
        while (*l == '*') l++;
    } else {
        const char *t = skip_spaces(l);
        if (*t == '*' && (t[1] == ' ' || t[1] == '\0')) l = t + 1;
    }
    return *l == ' ' ? l + 1 : l;
}

// "-----", "=====", "*****": a visual separator, at least 8 characters.
bool is_rule_line(const char *text) {
    const char *t = skip_spaces(text);
    size_t n = 0;
    while (t[n] == '-' || t[n] == '=' || t[n] == '*' || t[n] == '~' || t[n] == '#') n++;
    return n >= 8 && *skip_spaces(t + n) == '\0';
}

// "---- writing ------" gives "writing"; NULL if the line is not a titled rule.
static char *titled_rule(const char *text) {
    const char *t = skip_spaces(text);
    size_t a = strspn(t, "-=");
    if (a < 3) return NULL;
    const char *title = skip_spaces(t + a);
    const char *end = title;
    while (*end && *end != '-' && *end != '=') end++;
    if (end == title || strspn(end, "-= ") < strlen(end) || strspn(end, "-=") < 3) return NULL;
    while (end > title && end[-1] == ' ') end--;
    return xstrndup(title, (size_t)(end - title));
}

// ---- cutting into sections -------------------------------------------------------

static Section *new_section(Source *s, int cap_hint) {
    s->secs = xrealloc(s->secs, sizeof(Section) * (size_t)(s->nsecs + 1));
    Section *sec = &s->secs[s->nsecs++];
    *sec = (Section){.prose_begin = cap_hint, .prose_end = cap_hint, .code_begin = cap_hint, .code_end = cap_hint};
    return sec;
}

static bool code_is_blank(const Source *s, const Section *sec) {
    for (int j = sec->code_begin; j < sec->code_end; j++)
        if (!is_blank(s->lines[j])) return false;
    return true;
}

// The heading of a section that opens with a rule line: the rule's own title
// (`// ---- writing ----`), or a single short line right after a plain rule.
// source_prose() then leaves the rule and heading lines out of the prose.
static void find_heading(Source *s, Section *sec) {
    sec->heading_line = -1;
    int b = sec->prose_begin, e = sec->prose_end;
    if (b == e) return;
    const char *first = strip_comment(s, sec, b);
    char *title = titled_rule(first);
    if (title) {
        sec->major = true;
        sec->heading = title;
        return;
    }
    if (!is_rule_line(first)) return;
    sec->major = true;
    if (e - b < 2) return;
    const char *h = strip_comment(s, sec, b + 1);
    const char *next = (e - b >= 3) ? strip_comment(s, sec, b + 2) : "";
    if (!is_blank(h) && !is_rule_line(h) && (is_blank(next) || is_rule_line(next)) && strlen(h) <= 100) {
        // "Packing. Two shapes of copy cover ..." : the first sentence is the
        // heading, the rest of the line stays prose
        h = skip_spaces(h);
        const char *stop = strstr(h, ". ");
        size_t n = stop ? (size_t)(stop - h) : strlen(h);
        sec->heading_rest = stop ? skip_spaces(stop + 1) : NULL;
        while (n && (h[n - 1] == '.' || h[n - 1] == ':' || h[n - 1] == ' ')) n--;
        sec->heading = xstrndup(h, n);
        sec->heading_line = b + 1;
    }
}

static void cut_sections(Source *s) {
    Section *cur = new_section(s, 0);
    int i = 0;
    while (i < s->nlines) {
        int end = -1;
        if (is_line_comment(s->lines[i])) {
            end = i;
            while (end < s->nlines && is_line_comment(s->lines[end])) end++;
        } else {
            end = block_comment_end(s->lines, s->nlines, i);
        }
        if (end < 0) {   // code (or a blank line)
            cur->code_end = i + 1;
            i++;
            continue;
        }
        if (!is_line_comment(s->lines[i])) {
            // the prose ends at "*/": cut the line there (prose lines are never shown as code)
            char *close = strstr(s->lines[end - 1] + (end - 1 == i ? 2 : 0), "*/");
            *close = '\0';
        }
        const char *first = s->lines[i] + 2;   // after "//" or "/*"
        char *title = titled_rule(skip_spaces(first));
        bool opens_part = is_rule_line(first) || title != NULL;
        free(title);
        bool merge = cur->prose_end > cur->prose_begin && code_is_blank(s, cur) && !opens_part;
        if (!merge) {
            cur = new_section(s, i);
        }
        cur->prose_end = end;
        cur->code_begin = cur->code_end = end;
        i = end;
    }
    // The first section may be empty (a file that starts with prose).
    if (s->nsecs > 1 && s->secs[0].prose_end == s->secs[0].prose_begin && code_is_blank(s, &s->secs[0])) {
        memmove(&s->secs[0], &s->secs[1], sizeof(Section) * (size_t)(s->nsecs - 1));
        s->nsecs--;
    }
    for (int k = 0; k < s->nsecs; k++) {
        find_heading(s, &s->secs[k]);
        s->secs[k].id = xsprintf("%s-%d", s->id, k + 1);
    }
}

Prose source_prose(const Source *s, const Section *sec) {
    Prose p = {.file = s->path, .lines = xmalloc(sizeof(ProseLine) * (size_t)(sec->prose_end - sec->prose_begin + 1))};
    for (int j = sec->prose_begin; j < sec->prose_end; j++) {
        const char *t = strip_comment(s, sec, j);
        if (j == sec->heading_line) {
            if (sec->heading_rest) p.lines[p.n++] = (ProseLine){sec->heading_rest, j + 1};
            continue;
        }
        if (is_rule_line(t)) continue;
        if (j == sec->prose_begin && sec->heading && sec->heading_line < 0) continue;   // a titled rule
        p.lines[p.n++] = (ProseLine){t, j + 1};
    }
    return p;
}

// ---- symbols ---------------------------------------------------------------------

static void add_symbol(Source *s, const char *name, size_t n, int line, SymKind kind) {
    for (int k = 0; k < s->nsyms; k++) {
        Symbol *y = &s->syms[k];
        if (strlen(y->name) == n && strncmp(y->name, name, n) == 0) {
            // a definition wins over an earlier prototype of the same name
            if (y->kind == SYM_DECLARATION && kind == SYM_DEFINITION) {
                y->line = line;
                y->kind = kind;
            }
            return;
        }
    }
    s->syms = xrealloc(s->syms, sizeof(Symbol) * (size_t)(s->nsyms + 1));
    s->syms[s->nsyms++] = (Symbol){xstrndup(name, n), line, kind};
}

static bool is_keyword_like(const char *w, size_t n) {
    static const char *const not_functions[] = {"if", "for", "while", "switch", "return", "sizeof", "do", "else",
                                                "case", "_Static_assert", "static_assert", "defined", NULL};
    for (int k = 0; not_functions[k]; k++)
        if (strlen(not_functions[k]) == n && strncmp(not_functions[k], w, n) == 0) return true;
    return false;
}

// After the '(' at lines[i][at]: finds the matching ')' and then the next '{'
// or ';' (looking a few lines ahead). Returns that character, or 0.
static char after_parameters(const Source *s, int i, const char *at) {
    int depth = 0;
    for (int j = i; j < s->nlines && j < i + 16; j++) {
        const char *c = (j == i) ? at : s->lines[j];
        for (; *c; c++) {
            if (c[0] == '/' && c[1] == '/') break;
            if (*c == '(') depth++;
            else if (*c == ')') depth--;
            else if (depth == 0 && (*c == '{' || *c == ';' || *c == '=')) return *c;
        }
    }
    return 0;
}

// A column-0 line that might start a function: returns the name's position.
static const char *function_name(const char *l, size_t *n) {
    if (!is_ident_start((unsigned char)*l) || starts_with(l, "typedef") || starts_with(l, "extern \"C\"")) return NULL;
    const char *c = l;
    int words = 0;
    while (*c) {
        if (is_ident_start((unsigned char)*c)) {
            const char *w = c;
            while (is_ident_char((unsigned char)*c)) c++;
            const char *after = skip_spaces(c);
            if (*after == '(') {
                size_t len = (size_t)(c - w);
                if (strncmp(w, "__attribute__", len) == 0 || strncmp(w, "__launch_bounds__", len) == 0 ||
                    strncmp(w, "__declspec", len) == 0) {
                    int depth = 0;   // skip the attribute's parenthesised arguments
                    for (c = after; *c; c++) {
                        if (*c == '(') depth++;
                        if (*c == ')' && --depth == 0) { c++; break; }
                    }
                    continue;
                }
                if (words == 0 || is_keyword_like(w, len)) return NULL;
                *n = len;
                return w;
            }
            words++;
        } else if (*c == '=' || *c == ';' || *c == '{') {
            return NULL;   // a variable, or a statement
        } else {
            c++;
        }
    }
    return NULL;
}

static void find_symbols(Source *s) {
    for (int i = 0; i < s->nlines; i++) {
        const char *l = s->lines[i];
        if (!source_line_is_code(s, i + 1)) continue;
        size_t n = 0;
        if (starts_with(l, "#define")) {   // a macro
            const char *w = skip_spaces(l + 7);
            while (is_ident_char((unsigned char)w[n])) n++;
            if (n) add_symbol(s, w, n, i + 1, SYM_MACRO);
            continue;
        }
        const char *w = function_name(l, &n);
        if (w) {
            char next = after_parameters(s, i, w + n);
            if (next == '{') add_symbol(s, w, n, i + 1, SYM_DEFINITION);
            else if (next == ';') add_symbol(s, w, n, i + 1, SYM_DECLARATION);
            continue;
        }
        // "typedef struct Name {" / "struct Name {" / "typedef T Name;" / "} Name;"
        const char *t = l;
        if (starts_with(t, "typedef ")) t += 8;
        if (starts_with(t, "struct ") || starts_with(t, "enum ") || starts_with(t, "union ")) {
            t = skip_spaces(strchr(t, ' '));
            while (is_ident_char((unsigned char)t[n])) n++;
            if (n && *skip_spaces(t + n) == '{') add_symbol(s, t, n, i + 1, SYM_TYPE);
            n = 0;
        }
        // the last ';' of the line before any comment ends the declaration
        const char *comment = strstr(l, "//");
        const char *semi = NULL;
        for (const char *q = l; *q && (!comment || q < comment); q++)
            if (*q == ';') semi = q;
        if ((starts_with(l, "}") || starts_with(l, "typedef ")) && semi && !strchr(l, '(')) {
            // the last identifier before the ';' is the type's name
            const char *e = semi;
            while (e > l && e[-1] == ' ') e--;
            const char *b = e;
            while (b > l && is_ident_char((unsigned char)b[-1])) b--;
            if (e > b && is_ident_start((unsigned char)*b)) {
                // a "} Name;" names the typedef that opened a few lines up: link there
                int at = i;
                if (l[0] == '}')
                    while (at > 0 && !starts_with(s->lines[at], "typedef") && i - at < 400) at--;
                add_symbol(s, b, (size_t)(e - b), at + 1, SYM_TYPE);
            }
        }
    }
}

// ---- loading ---------------------------------------------------------------------

Source *source_load(const char *path, const char *page, const char *id) {
    Source *s = xmalloc(sizeof *s);
    *s = (Source){.path = xstrdup(path), .page = xstrdup(page), .id = xstrdup(id)};
    s->text = read_text(path, NULL);
    if (!s->text) fail("%s: cannot read: %s", path, strerror(errno));
    s->lines = split_lines(s->text, &s->nlines);
    cut_sections(s);
    for (int k = 0; k < s->nsecs; k++) {
        const Section *sec = &s->secs[k];
        s->prose_lines += sec->prose_end - sec->prose_begin;
        for (int j = sec->code_begin; j < sec->code_end; j++) {
            if (is_blank(s->lines[j])) s->blank_lines++;
            else s->code_lines++;
        }
    }
    find_symbols(s);
    return s;
}

void source_free(Source *s) {
    if (!s) return;
    for (int k = 0; k < s->nsecs; k++) {
        free(s->secs[k].heading);
        free(s->secs[k].id);
    }
    for (int k = 0; k < s->nsyms; k++) free(s->syms[k].name);
    free(s->secs);
    free(s->syms);
    free(s->lines);
    free(s->text);
    free(s->path);
    free(s->page);
    free(s->id);
    free(s);
}

const Symbol *source_symbol(const Source *s, const char *name) {
    for (int k = 0; k < s->nsyms; k++)
        if (strcmp(s->syms[k].name, name) == 0) return &s->syms[k];
    return NULL;
}

const Section *source_section_of_line(const Source *s, int line) {
    for (int k = 0; k < s->nsecs; k++) {
        const Section *sec = &s->secs[k];
        if ((line > sec->prose_begin && line <= sec->prose_end) || (line > sec->code_begin && line <= sec->code_end))
            return sec;
    }
    return NULL;
}

bool source_line_is_code(const Source *s, int line) {
    for (int k = 0; k < s->nsecs; k++)
        if (line > s->secs[k].code_begin && line <= s->secs[k].code_end) return true;
    return false;
}
