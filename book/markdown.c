// book/markdown.c: the prose, from a small Markdown subset to HTML.
//
// The comments of the sources and the chapter intros are written in the
// Markdown everyone already writes in READMEs, restricted to what a book of C
// needs:
//
//   blocks   paragraphs; headings `#` to `######`; lists `-`, `*`, `+` and
//            `1.`, nested by indentation; fenced blocks ``` (```c and ```cuda
//            are highlighted); blocks indented by 4 spaces; pipe tables;
//            `>` quotes; and, from C comments, column-aligned lines (indented
//            and with runs of spaces inside, like a usage summary) kept as they
//            are laid out
//   inline   `code`, **strong**, *emphasis*, [links](url), bare http(s)://
//            addresses, backslash escapes, and the @ref directive
//
// Deliberately missing: `_emphasis_` with underscores (C names are full of
// them), raw HTML (it is escaped like everything else), images.
//
// Block directives (@run, @embed) are lines of their own and are handed to
// directive.c; inside `code` and fenced blocks nothing is a directive, which is
// how the book can show the directives themselves.
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "book/book.h"

typedef struct {
    const char *file;
    const MdOptions *o;
} Md;

static void blocks(Buf *out, ProseLine *L, int n, const Md *m, bool tight);

// ---- small helpers -------------------------------------------------------------

static int indent_of(const char *t) {
    int k = 0;
    while (t[k] == ' ') k++;
    return k;
}

static bool blank(const char *t) { return *skip_spaces(t) == '\0'; }

static const char *deindent(const char *t, int k) {
    while (k-- > 0 && *t == ' ') t++;
    return t;
}

// A list marker ("- ", "* ", "+ ", "12. ") after up to 3 spaces of indent.
// Returns the column where the item's text starts, or -1.
static int list_marker(const char *t, bool *ordered) {
    int i = indent_of(t);
    if (i > 3) return -1;
    const char *c = t + i;
    if ((*c == '-' || *c == '*' || *c == '+') && (c[1] == ' ' || c[1] == '\0')) {
        *ordered = false;
        c++;
    } else if (isdigit((unsigned char)*c)) {
        while (isdigit((unsigned char)*c)) c++;
        if (*c != '.' || (c[1] != ' ' && c[1] != '\0')) return -1;
        *ordered = true;
        c++;
    } else {
        return -1;
    }
    if (*c == ' ') c++;
    // "-    text" with more spaces is text that starts at the first character
    return (int)(c - t);
}

static bool is_fence(const char *t) { return starts_with(skip_spaces(t), "```"); }

static int heading_level(const char *t) {
    int k = 0;
    while (t[k] == '#') k++;
    return (k >= 1 && k <= 6 && (t[k] == ' ' || t[k] == '\0')) ? k : 0;
}

static bool is_table_rule(const char *t) {
    t = skip_spaces(t);
    if (*t != '|') return false;
    bool dash = false;
    for (; *t; t++) {
        if (*t == '-') dash = true;
        else if (!strchr("|: ", *t)) return false;
    }
    return dash;
}

static bool table_starts(ProseLine *L, int n, int i) {
    return i + 1 < n && *skip_spaces(L[i].text) == '|' && is_table_rule(L[i + 1].text);
}

// Column-aligned lines from a comment (a usage summary, a legend): indented,
// with a run of three spaces after some text. Shown as laid out.
static bool is_aligned(const char *t) {
    int k = indent_of(t);
    if (k < 2 || blank(t)) return false;
    const char *text = t + k;
    const char *gap = strstr(text, "   ");
    return gap && *skip_spaces(gap) != '\0';
}

// ---- ids -----------------------------------------------------------------------------

char *slugify(const char *s, size_t n) {
    Buf b = {0};
    bool dash = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || c == '_' || c == '.') {
            if (dash && b.n) buf_putc(&b, '-');
            buf_putc(&b, (char)tolower(c));
            dash = false;
        } else if (c != '`' && c != '*') {
            dash = true;
        }
    }
    if (b.n == 0) buf_puts(&b, "section");
    return buf_take(&b);
}

// ---- inline ------------------------------------------------------------------------

// The line of character s[at] when s begins on line `line`.
static int line_at(const char *s, size_t at, int line) {
    for (size_t i = 0; i < at; i++)
        if (s[i] == '\n') line++;
    return line;
}

// Finds the closing delimiter `d` (length dn) for emphasis opened at s[i].
static size_t find_close(const char *s, size_t n, size_t from, const char *d, size_t dn) {
    for (size_t j = from; j + dn <= n; j++) {
        if (s[j] == '`') {   // a code span inside: skip it whole
            size_t k = j + 1;
            while (k < n && s[k] != '`') k++;
            j = k;
            continue;
        }
        if (strncmp(s + j, d, dn) == 0 && j > from && s[j - 1] != ' ' &&
            (j + dn == n || !isalnum((unsigned char)s[j + dn])))
            return j;
    }
    return 0;
}

static bool url_char(char c) { return c && !isspace((unsigned char)c) && c != '<' && c != '>' && c != '"'; }

static void link(Buf *out, const char *url, size_t un, const char *text, size_t tn, int line, const Md *m,
                 const Prose *p) {
    buf_puts(out, "<a href=\"");
    buf_esc(out, url, un);
    buf_puts(out, "\">");
    md_inline(out, text, tn, p, line, m->o);
    buf_puts(out, "</a>");
}

void md_inline(Buf *out, const char *s, size_t n, const Prose *p, int line, const MdOptions *o) {
    Md m = {.file = p ? p->file : "?", .o = o};
    size_t i = 0;
    while (i < n) {
        char c = s[i];
        if (c == '\\' && i + 1 < n && ispunct((unsigned char)s[i + 1])) {
            buf_esc(out, s + i + 1, 1);
            i += 2;
            continue;
        }
        if (c == '`') {   // a code span: backtick run, the same run closes it
            size_t run = 0;
            while (i + run < n && s[i + run] == '`') run++;
            size_t j = i + run;
            while (j < n && !(s[j] == '`' && strspn(s + j, "`") == run)) j++;
            if (j < n) {
                size_t a = i + run, b = j;
                if (b > a + 1 && s[a] == ' ' && s[b - 1] == ' ') a++, b--;
                buf_puts(out, "<code>");
                buf_esc(out, s + a, b - a);
                buf_puts(out, "</code>");
                i = j + run;
                continue;
            }
            buf_esc(out, s + i, run);
            i += run;
            continue;
        }
        if (c == '*' && i + 1 < n && s[i + 1] == '*' && i + 2 < n && s[i + 2] != ' ') {
            size_t j = find_close(s, n, i + 2, "**", 2);
            if (j) {
                buf_puts(out, "<strong>");
                md_inline(out, s + i + 2, j - i - 2, p, line_at(s, i, line), o);
                buf_puts(out, "</strong>");
                i = j + 2;
                continue;
            }
        }
        if (c == '*' && i + 1 < n && s[i + 1] != ' ' && s[i + 1] != '*' && (i == 0 || !isalnum((unsigned char)s[i - 1]))) {
            size_t j = find_close(s, n, i + 1, "*", 1);
            if (j) {
                buf_puts(out, "<em>");
                md_inline(out, s + i + 1, j - i - 1, p, line_at(s, i, line), o);
                buf_puts(out, "</em>");
                i = j + 1;
                continue;
            }
        }
        if (c == '[') {   // [text](url)
            size_t close = i + 1;
            int depth = 1;
            while (close < n && depth) {
                if (s[close] == '[') depth++;
                if (s[close] == ']') depth--;
                if (depth) close++;
            }
            if (close + 1 < n && s[close + 1] == '(') {
                size_t u = close + 2, ue = u;
                while (ue < n && s[ue] != ')' && url_char(s[ue])) ue++;
                if (ue < n && s[ue] == ')' && ue > u) {
                    link(out, s + u, ue - u, s + i + 1, close - i - 1, line_at(s, i, line), &m, p);
                    i = ue + 1;
                    continue;
                }
            }
        }
        if ((c == 'h') && (i == 0 || !isalnum((unsigned char)s[i - 1])) &&
            (strncmp(s + i, "http://", 7) == 0 || strncmp(s + i, "https://", 8) == 0)) {
            size_t j = i;
            while (j < n && url_char(s[j])) j++;
            while (j > i && strchr(".,;:)'", s[j - 1])) j--;   // sentence punctuation is not the address
            link(out, s + i, j - i, s + i, j - i, line, &m, p);
            i = j;
            continue;
        }
        if (c == '@' && o && o->directives) {
            char *rest = xstrndup(s + i, n - i);
            size_t len = directive_at(rest, rest);
            bool word_start = i == 0 || !is_ident_char((unsigned char)s[i - 1]);
            if (len && word_start) {
                if (len == 3 && strncmp(rest + 1, "ref", 3) == 0) {
                    size_t used = directive_inline(out, rest, m.file, line_at(s, i, line), o->w);
                    free(rest);
                    i += used;
                    continue;
                }
                if ((len == 3 && strncmp(rest + 1, "run", 3) == 0) || (len == 5 && strncmp(rest + 1, "embed", 5) == 0))
                    fail_at(m.file, line_at(s, i, line), "@%.*s must stand alone on its own line", (int)len, rest + 1);
            }
            free(rest);
        }
        buf_esc(out, s + i, 1);
        i++;
    }
}

// ---- blocks --------------------------------------------------------------------------

static void heading(Buf *out, const char *t, int line, const Md *m) {
    int level = heading_level(t);
    const char *text = skip_spaces(t + level);
    size_t tn = strlen(text);
    while (tn && (text[tn - 1] == '#' || text[tn - 1] == ' ')) tn--;
    int h = level + m->o->heading_shift;
    if (h > 6) h = 6;
    char *slug = slugify(text, tn);
    char *id = xsprintf("%s%s", m->o->id_prefix ? m->o->id_prefix : "", slug);
    buf_printf(out, "<h%d id=\"%s\">", h, id);
    Prose p = {.file = m->file};
    md_inline(out, text, tn, &p, line, m->o);
    buf_printf(out, " <a class=\"anchor\" href=\"#%s\" aria-label=\"link to this heading\">#</a></h%d>\n", id, h);
    if (m->o->on_heading) {
        char *plain = xstrndup(text, tn);
        m->o->on_heading(m->o->ctx, level, plain, id);
        free(plain);
    }
    free(slug);
    free(id);
}

static int fenced(Buf *out, ProseLine *L, int n, int i, const Md *m) {
    const char *open = skip_spaces(L[i].text);
    int ind = indent_of(L[i].text);
    char *lang = xstrdup(skip_spaces(open + 3));
    for (char *c = lang; *c; c++)
        if (*c == ' ') *c = '\0';
    Buf body = {0};
    int j = i + 1;
    for (; j < n && !is_fence(L[j].text); j++) {
        buf_puts(&body, deindent(L[j].text, ind));
        buf_putc(&body, '\n');
    }
    if (j == n) fail_at(m->file, L[i].line, "a fenced block (```) opened here is never closed");
    bool code = strcmp(lang, "c") == 0 || strcmp(lang, "cuda") == 0 || strcmp(lang, "cu") == 0 ||
                strcmp(lang, "h") == 0;
    buf_printf(out, "<pre class=\"block%s\"><code>", code ? " hl" : "");
    if (body.n) body.s[--body.n] = '\0';   // the last newline is the fence's
    if (code) highlight_snippet(out, body.s ? body.s : "", body.n, m->o->w);
    else buf_esc(out, body.s ? body.s : "", body.n);
    buf_puts(out, "</code></pre>\n");
    buf_free(&body);
    free(lang);
    return j + 1;
}

// Lines kept as laid out (indented code, aligned columns): common indent removed.
static int preformatted(Buf *out, ProseLine *L, int n, int i, int min_indent, const char *cls) {
    int j = i, strip = 1 << 20;
    while (j < n && (indent_of(L[j].text) >= min_indent || (blank(L[j].text) && j + 1 < n &&
                                                            indent_of(L[j + 1].text) >= min_indent && !blank(L[j + 1].text)))) {
        if (!blank(L[j].text) && indent_of(L[j].text) < strip) strip = indent_of(L[j].text);
        if (!blank(L[j].text) && min_indent < 4 && !is_aligned(L[j].text) && j > i &&
            indent_of(L[j].text) <= indent_of(L[i].text))
            break;   // an aligned table ends where a plain indented line starts
        j++;
    }
    buf_printf(out, "<pre class=\"%s\"><code>", cls);
    for (int k = i; k < j; k++) {
        buf_esc_puts(out, blank(L[k].text) ? "" : L[k].text + strip);
        if (k + 1 < j) buf_putc(out, '\n');
    }
    buf_puts(out, "</code></pre>\n");
    return j;
}

static void table_row(Buf *out, const char *t, int line, const char *cell, const char *const *align, int ncols,
                      const Md *m) {
    const char *c = skip_spaces(t);
    if (*c == '|') c++;
    buf_puts(out, "<tr>");
    for (int col = 0; *c; col++) {
        const char *e = c;
        while (*e && *e != '|') {
            if (*e == '`') {   // a | inside `code` does not split cells
                const char *close = strchr(e + 1, '`');
                if (close) e = close;
            }
            if (*e == '\\' && e[1]) e++;
            e++;
        }
        const char *a = skip_spaces(c), *b = e;
        while (b > a && b[-1] == ' ') b--;
        if (!(*e == '\0' && a == b)) {
            const char *al = col < ncols ? align[col] : "";
            buf_printf(out, "<%s%s>", cell, al);
            Prose p = {.file = m->file};
            md_inline(out, a, (size_t)(b - a), &p, line, m->o);
            buf_printf(out, "</%s>", cell);
        }
        c = *e ? e + 1 : e;
    }
    buf_puts(out, "</tr>\n");
}

static int table(Buf *out, ProseLine *L, int n, int i, const Md *m) {
    const char *align[64];
    int ncols = 0;
    for (const char *c = skip_spaces(L[i + 1].text) + 1; *c && ncols < 64;) {
        const char *e = strchr(c, '|');
        if (!e) e = c + strlen(c);
        const char *a = skip_spaces(c);
        const char *b = e;
        while (b > a && b[-1] == ' ') b--;
        if (b > a) {
            bool left = *a == ':', right = b[-1] == ':';
            align[ncols++] = right && left ? " class=\"ctr\"" : right ? " class=\"r\"" : "";
        }
        c = *e ? e + 1 : e;
    }
    buf_puts(out, "<div class=\"table\"><table>\n<thead>");
    table_row(out, L[i].text, L[i].line, "th", align, ncols, m);
    buf_puts(out, "</thead>\n<tbody>\n");
    int j = i + 2;
    for (; j < n && *skip_spaces(L[j].text) == '|'; j++) table_row(out, L[j].text, L[j].line, "td", align, ncols, m);
    buf_puts(out, "</tbody></table></div>\n");
    return j;
}

static int list(Buf *out, ProseLine *L, int n, int i, const Md *m) {
    bool ordered = false, o2 = false;
    int content = list_marker(L[i].text, &ordered);
    int marker_indent = indent_of(L[i].text);
    // Collect items first, to know whether the list is tight (no blank lines).
    ProseLine *item = xmalloc(sizeof(ProseLine) * (size_t)(n - i));
    bool loose = false;
    Buf html = {0};
    int j = i;
    while (j < n) {
        int c = list_marker(L[j].text, &o2);
        if (c < 0 || o2 != ordered || indent_of(L[j].text) != marker_indent) break;
        int k = 0;
        item[k++] = (ProseLine){L[j].text + c, L[j].line};
        content = c;
        j++;
        while (j < n) {
            const char *t = L[j].text;
            if (blank(t)) {
                int next = j + 1;
                while (next < n && blank(L[next].text)) next++;
                if (next < n && indent_of(L[next].text) >= content && !blank(L[next].text)) {
                    loose = true;
                    item[k++] = (ProseLine){"", L[j].line};
                    j++;
                    continue;
                }
                if (next < n && list_marker(L[next].text, &o2) >= 0 && indent_of(L[next].text) == marker_indent &&
                    o2 == ordered)
                    loose = true;
                break;
            }
            if (indent_of(t) >= content) {
                item[k++] = (ProseLine){deindent(t, content), L[j].line};
            } else if (list_marker(t, &o2) >= 0 && indent_of(t) <= marker_indent) {
                break;   // the next item (or another list)
            } else if (is_fence(t) || heading_level(skip_spaces(t)) || (m->o->directives && directive_is_block(t))) {
                break;
            } else {
                item[k++] = (ProseLine){skip_spaces(t), L[j].line};   // a lazy continuation line
            }
            j++;
        }
        buf_puts(&html, "<li>");
        blocks(&html, item, k, m, true);
        buf_puts(&html, "</li>\n");
        while (j < n && blank(L[j].text)) {
            int next = j + 1;
            while (next < n && blank(L[next].text)) next++;
            if (next < n && list_marker(L[next].text, &o2) >= 0 && indent_of(L[next].text) == marker_indent &&
                o2 == ordered)
                j = next;
            else
                break;
        }
    }
    buf_printf(out, "<%s%s>\n", ordered ? "ol" : "ul", loose ? " class=\"loose\"" : "");
    buf_puts(out, html.s ? html.s : "");
    buf_printf(out, "</%s>\n", ordered ? "ol" : "ul");
    // A loose list's items were rendered tight; that only changes spacing, which
    // the "loose" class restores.
    buf_free(&html);
    free(item);
    return j;
}

static int quote(Buf *out, ProseLine *L, int n, int i, const Md *m) {
    int j = i;
    ProseLine *inner = xmalloc(sizeof(ProseLine) * (size_t)(n - i));
    int k = 0;
    for (; j < n && *skip_spaces(L[j].text) == '>'; j++) {
        const char *t = skip_spaces(L[j].text) + 1;
        inner[k++] = (ProseLine){*t == ' ' ? t + 1 : t, L[j].line};
    }
    buf_puts(out, "<blockquote>\n");
    blocks(out, inner, k, m, false);
    buf_puts(out, "</blockquote>\n");
    free(inner);
    return j;
}

static bool starts_block(ProseLine *L, int n, int i, const Md *m) {
    const char *t = L[i].text;
    bool o;
    return blank(t) || is_fence(t) || heading_level(skip_spaces(t)) || list_marker(t, &o) >= 0 ||
           table_starts(L, n, i) || *skip_spaces(t) == '>' || (m->o->directives && directive_is_block(t));
}

static int paragraph(Buf *out, ProseLine *L, int n, int i, const Md *m, bool tight) {
    Buf text = {0};
    int j = i;
    do {
        if (j > i) buf_putc(&text, '\n');
        const char *t = skip_spaces(L[j].text);
        size_t tn = strlen(t);
        while (tn && t[tn - 1] == ' ') tn--;
        buf_put(&text, t, tn);
        j++;
    } while (j < n && !starts_block(L, n, j, m) && !is_aligned(L[j].text));
    if (!tight) buf_puts(out, "<p>");
    Prose p = {.file = m->file};
    md_inline(out, text.s, text.n, &p, L[i].line, m->o);
    buf_puts(out, tight ? "\n" : "</p>\n");
    buf_free(&text);
    return j;
}

static void blocks(Buf *out, ProseLine *L, int n, const Md *m, bool tight) {
    // A tight list item holding more than one block gets paragraphs after all.
    int nblocks = 0;
    for (int i = 0; i < n; i++)
        if (!blank(L[i].text) && (i == 0 || blank(L[i - 1].text))) nblocks++;
    if (nblocks > 1) tight = false;
    int i = 0;
    while (i < n) {
        const char *t = L[i].text;
        bool ordered;
        if (blank(t)) i++;
        else if (is_fence(t)) i = fenced(out, L, n, i, m);
        else if (m->o->directives && directive_is_block(t)) {
            directive_block(out, skip_spaces(t), m->file, L[i].line, m->o);
            i++;
        } else if (heading_level(skip_spaces(t)) && indent_of(t) < 4) {
            heading(out, skip_spaces(t), L[i].line, m);
            i++;
        } else if (table_starts(L, n, i)) i = table(out, L, n, i, m);
        else if (*skip_spaces(t) == '>' && indent_of(t) < 4) i = quote(out, L, n, i, m);
        else if (list_marker(t, &ordered) >= 0) i = list(out, L, n, i, m);
        else if (indent_of(t) >= 4) i = preformatted(out, L, n, i, 4, "block");
        else if (is_aligned(t)) i = preformatted(out, L, n, i, 2, "block aligned");
        else i = paragraph(out, L, n, i, m, tight);
    }
}

// ---- prose that tells history -------------------------------------------------------
// The book explains its subject in the present tense; the order in which
// things were found belongs in version control. Two marks of history are
// easy to recognise and never belong to the subject: the word "session" (a
// numbered stretch of work) and a commit hash (7 to 40 hex digits, letters and
// digits both, standing alone as a word; a 0x constant is a number, not a hash).
static bool hex_word_is_hash(const char *w, size_t n) {
    if (n < 7 || n > 40) return false;
    bool digit = false, letter = false;
    for (size_t i = 0; i < n; i++) {
        if (w[i] >= '0' && w[i] <= '9') digit = true;
        else if (w[i] >= 'a' && w[i] <= 'f') letter = true;
        else return false;
    }
    return digit && letter;
}

const char *md_history_mark(const char *line) {
    for (const char *q = line; *q;) {
        if (!isalnum((unsigned char)*q)) { q++; continue; }
        const char *w = q;
        while (isalnum((unsigned char)*q)) q++;
        size_t n = (size_t)(q - w);
        bool after_0x = w >= line + 2 && w[-1] == 'x' && w[-2] == '0';
        if ((n == 7 || n == 8) && strncasecmp(w, "sessions", n) == 0) return "the word 'session' (history of the work)";
        if (!after_0x && (w == line || !strchr("+#&", w[-1])) && hex_word_is_hash(w, n)) return "a commit hash";
    }
    return NULL;
}

void md_render(Buf *out, const Prose *p, const MdOptions *o) {
    for (int i = 0; i < p->n; i++) {
        const char *why = md_history_mark(p->lines[i].text);
        if (why) fail_at(p->file, p->lines[i].line, "prose tells history (%s): say why in the present tense", why);
    }
    Md m = {.file = p->file, .o = o};
    blocks(out, p->lines, p->n, &m, false);
}
