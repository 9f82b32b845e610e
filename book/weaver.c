// book/weaver.c: the weaver. It reads the chapters' sources and writes the book.
//
//   build/book/weaver [--sources FILE] [--out DIR] [--check]
//   build/book/weaver --file SOURCE --out PAGE.html
//   build/book/weaver --check-links DIR
//
// The first form builds the whole book. FILE is the output of `make
// print-sources` (one line per chapter, `NN_name: a.c b.c ... NN_name/run.c`,
// the files in the order they are built; without --sources the weaver runs
// make itself). For every chapter it reads book/intro/NN_name.md and the
// chapter's files, each header (.h) beside its .c, and writes
// DIR/NN_name.html; then DIR/index.html with the chapter map, DIR/style.css
// (a copy of book/style.css) and DIR/manifest.txt, the list of every file
// rendered and every directive resolved, which the tests read. With --check
// it does all of that except writing: every reference is resolved, every
// command run, every results file read. Run it from the repository root.
//
// The second form renders one annotated file as a page: it is how the
// weaver's golden test sees it. The third checks that every href and src of
// the pages in DIR points at a file that exists and, for `#anchor`, an id in
// it: the browser test runs it on the pages as Chromium parsed them.
//
// What a chapter page holds, in order: the intro (its `# ` line is the title),
// a table of contents, each file as sections of prose beside code, and the end
// matter: what the chapter added (files and lines, counted here), its memory
// (the intro's `## Memory` section, whose @run tables come from the chapter's
// `run --mem`), how to run and verify it (the commands, the chapter's tests,
// and `run --help` as the program prints it, plus the intro's `## Run and
// verify`), and the intro's `## Exercises`. Chapters without files yet are
// listed as planned on the index.
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "book/book.h"

typedef struct {
    char *name;     // "01_tensor"
    char *num;      // "01"
    char *title;    // from the intro's "# " line, else the name
    char *page;     // "01_tensor.html", or NULL when the chapter has no files yet
    char *intro_path;
    char *intro_text;   // split into intro_lines in place
    char **intro_lines;
    int nintro;
    char **listed;      // the files `make print-sources` names, in build order
    int nlisted;
    Source **files;     // what the page shows: headers beside their .c, run.c last
    int nfiles;
    bool has_run;
} Chapter;

typedef struct {
    Chapter *ch;
    int n;
} Book;

// ---- reading the chapter list ------------------------------------------------------------

static void add_str(char ***list, int *n, char *s) {
    *list = xrealloc(*list, sizeof(char *) * (size_t)(*n + 1));
    (*list)[(*n)++] = s;
}

static bool listed(const Chapter *c, const char *path) {
    for (int k = 0; k < c->nlisted; k++)
        if (strcmp(c->listed[k], path) == 0) return true;
    return false;
}

static Book read_chapter_list(const char *sources_file) {
    char *text;
    if (sources_file) {
        text = read_text(sources_file, NULL);
        if (!text) fail("%s: cannot read: %s", sources_file, strerror(errno));
    } else {
        text = run_command("make -s --no-print-directory print-sources", "Makefile", 1);
    }
    Book b = {0};
    int n = 0;
    char **lines = split_lines(text, &n);
    for (int i = 0; i < n; i++) {
        char *colon = strchr(lines[i], ':');
        if (!*skip_spaces(lines[i])) continue;
        if (!colon || colon == lines[i])
            fail_at(sources_file ? sources_file : "make print-sources", i + 1, "expected 'NN_name: files...'");
        b.ch = xrealloc(b.ch, sizeof(Chapter) * (size_t)(b.n + 1));
        Chapter *c = &b.ch[b.n++];
        *c = (Chapter){.name = xstrndup(lines[i], (size_t)(colon - lines[i]))};
        const char *u = strchr(c->name, '_');
        c->num = xstrndup(c->name, u ? (size_t)(u - c->name) : strlen(c->name));
        for (char *tok = strtok(colon + 1, " \t"); tok; tok = strtok(NULL, " \t")) add_str(&c->listed, &c->nlisted, xstrdup(tok));
    }
    free(lines);
    free(text);
    return b;
}

// ---- the files of a chapter, in reading order -------------------------------------------

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// The chapter's headers (*.h, *.cuh), sorted.
static char **chapter_headers(const char *dir, int *n) {
    char **list = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return NULL;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && (ends_with(e->d_name, ".h") || ends_with(e->d_name, ".cuh")))
            add_str(&list, n, xsprintf("%s/%s", dir, e->d_name));
    closedir(d);
    if (*n) qsort(list, (size_t)*n, sizeof(char *), cmp_str);
    return list;
}

static void add_file(Chapter *c, const char *path, char ***order, int *n) {
    for (int k = 0; k < *n; k++)
        if (strcmp((*order)[k], path) == 0) return;
    add_str(order, n, xstrdup(path));
}

// Headers beside their .c (or .cu), then headers with no .c of their own, then run.c.
static void load_chapter_files(Chapter *c) {
    int nh = 0, n = 0;
    char **headers = chapter_headers(c->name, &nh);
    char **order = NULL;
    char *run = xsprintf("%s/run.c", c->name);
    for (int k = 0; k < c->nlisted; k++) {
        const char *f = c->listed[k];
        if (strcmp(f, run) == 0) continue;
        const char *dot = strrchr(f, '.');
        size_t stem = dot ? (size_t)(dot - f) : strlen(f);
        for (int h = 0; h < nh; h++) {
            const char *hd = strrchr(headers[h], '.');
            if ((size_t)(hd - headers[h]) == stem && strncmp(headers[h], f, stem) == 0) add_file(c, headers[h], &order, &n);
        }
        add_file(c, f, &order, &n);
    }
    for (int h = 0; h < nh; h++) add_file(c, headers[h], &order, &n);
    if (listed(c, run)) {
        add_file(c, run, &order, &n);
        c->has_run = true;
    }
    if (n) c->page = xsprintf("%s.html", c->name);
    for (int k = 0; k < n; k++) {
        const char *base = strrchr(order[k], '/');
        c->files = xrealloc(c->files, sizeof(Source *) * (size_t)(c->nfiles + 1));
        c->files[c->nfiles++] = source_load(order[k], c->page, base ? base + 1 : order[k]);
        free(order[k]);
    }
    for (int h = 0; h < nh; h++) free(headers[h]);
    free(headers);
    free(order);
    free(run);
}

// The intro: required for a chapter with files, and it must open with "# Title".
static void load_intro(Chapter *c) {
    c->intro_path = xsprintf("book/intro/%s.md", c->name);
    c->intro_text = read_text(c->intro_path, NULL);
    if (!c->intro_text) {
        if (c->page) fail("%s: missing: every chapter with sources has an intro (%s)", c->intro_path, strerror(errno));
        c->title = xstrdup(c->name);
        return;
    }
    c->intro_lines = split_lines(c->intro_text, &c->nintro);
    if (c->nintro == 0 || !starts_with(c->intro_lines[0], "# "))
        fail_at(c->intro_path, 1, "an intro starts with its title: '# Title'");
    c->title = xstrdup(skip_spaces(c->intro_lines[0] + 2));
}

// ---- the page frame -------------------------------------------------------------------

static void page_open(Buf *out, const char *title, const char *body_class) {
    buf_puts(out, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                  "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
    buf_esc_puts(out, title);
    buf_printf(out, "</title>\n<link rel=\"stylesheet\" href=\"style.css\">\n</head>\n<body class=\"%s\">\n", body_class);
}

static void page_close(Buf *out) { buf_puts(out, "</body>\n</html>\n"); }

// The bar at the top and the links at the bottom: the index, the previous and next chapters.
static void chapter_nav(Buf *out, const Book *b, int at, const char *cls) {
    int prev = -1, next = -1;
    for (int k = at - 1; k >= 0 && prev < 0; k--)
        if (b->ch[k].page) prev = k;
    for (int k = at + 1; k < b->n && next < 0; k++)
        if (b->ch[k].page) next = k;
    buf_printf(out, "<nav class=\"%s\">", cls);
    if (strcmp(cls, "bar") == 0) buf_puts(out, "<a class=\"home\" href=\"index.html\">nanoMolmo2 in C</a>");
    if (prev >= 0) {
        buf_printf(out, "<a class=\"prev\" href=\"%s\" rel=\"prev\">&larr; %s ", b->ch[prev].page, b->ch[prev].num);
        buf_esc_puts(out, b->ch[prev].title);
        buf_puts(out, "</a>");
    } else {
        buf_puts(out, "<a class=\"prev\" href=\"index.html\">&larr; Contents</a>");
    }
    if (next >= 0) {
        buf_printf(out, "<a class=\"next\" href=\"%s\" rel=\"next\">%s ", b->ch[next].page, b->ch[next].num);
        buf_esc_puts(out, b->ch[next].title);
        buf_puts(out, " &rarr;</a>");
    }
    buf_puts(out, "</nav>\n");
}

// ---- one source file --------------------------------------------------------------------

static bool blank_line(const char *l) { return *skip_spaces(l) == '\0'; }

// A generated file (its first line says GENERATED, like 04_qwen/unicode_tables.c)
// is data a program wrote, not code to read: its page shows the prose and the
// top-level lines (what each table is called and holds), and every indented
// run of data becomes one line that says how many lines it stands for.
static bool source_is_generated(const Source *s) { return s->nlines > 0 && strstr(s->lines[0], "GENERATED"); }

static void highlight_summary(Buf *out, const Source *s, int begin, int end, Weave *w) {
    for (int j = begin; j < end;) {
        if (s->lines[j][0] != ' ' && s->lines[j][0] != '\t') {
            highlight_code(out, s, j, j + 1, w);
            j++;
            continue;
        }
        int k = j;
        while (k < end && (s->lines[k][0] == ' ' || s->lines[k][0] == '\t')) k++;
        buf_printf(out, "<span class=\"l gap\" data-n=\"\">    <span class=\"c\">... %d line%s of generated data "
                        "(lines %d-%d) ...</span></span>\n", k - j, k - j == 1 ? "" : "s", j + 1, k);
        j = k;
    }
}

static void render_section(Buf *out, const Source *s, const Section *sec, Weave *w) {
    int cb = sec->code_begin, ce = sec->code_end;
    while (cb < ce && blank_line(s->lines[cb])) cb++;
    while (ce > cb && blank_line(s->lines[ce - 1])) ce--;
    Prose p = source_prose(s, sec);
    bool has_prose = p.n > 0 || sec->heading;
    if (!has_prose && cb == ce) {
        free(p.lines);
        return;
    }
    buf_printf(out, "<section class=\"sec%s%s\" id=\"%s\">\n<div class=\"prose\">", sec->major ? " major" : "",
               cb == ce ? " prose-only" : "", sec->id);
    buf_printf(out, "<a class=\"mark\" href=\"#%s\" aria-label=\"link to this section\">&sect;</a>\n", sec->id);
    if (sec->heading) {
        buf_puts(out, "<h3>");
        MdOptions o = {.w = w, .directives = true};
        Prose hp = {.file = s->path};
        md_inline(out, sec->heading, strlen(sec->heading), &hp, sec->prose_begin + 1, &o);
        buf_puts(out, "</h3>\n");
    }
    char *prefix = xsprintf("%s-", s->id);
    MdOptions o = {.w = w, .id_prefix = prefix, .directives = true, .heading_shift = 2};
    md_render(out, &p, &o);
    free(prefix);
    free(p.lines);
    buf_puts(out, "</div>\n");
    if (cb < ce) {
        buf_puts(out, "<div class=\"code\"><pre><code>");
        if (source_is_generated(s)) highlight_summary(out, s, cb, ce, w);
        else highlight_code(out, s, cb, ce, w);
        buf_puts(out, "</code></pre></div>\n");
    }
    buf_puts(out, "</section>\n");
}

static void render_source(Buf *out, const Source *s, Weave *w) {
    buf_printf(out, "<article class=\"file\" id=\"%s\">\n<header class=\"file-head\"><h2><a href=\"#%s\">", s->id, s->id);
    buf_esc_puts(out, s->path);
    buf_printf(out, "</a></h2><p class=\"meta\">%d lines: %d of prose, %d of code%s</p></header>\n", s->nlines,
               s->prose_lines, s->code_lines, source_is_generated(s) ? "; generated, its data summarised" : "");
    for (int k = 0; k < s->nsecs; k++) render_section(out, s, &s->secs[k], w);
    buf_puts(out, "</article>\n");
    buf_printf(&w->manifest, "source %s %s#%s\n", s->path, s->page, s->id);
}

// ---- the intro and its end-matter sections ----------------------------------------------

// The intro's "## Memory", "## Run and verify" and "## Exercises" go to the end of the page.
static const char *const end_sections[] = {"Memory", "Run and verify", "Exercises"};
enum { END_MEMORY, END_RUN, END_EXERCISES, NEND };

static int end_section_of(const char *line) {
    if (!starts_with(line, "## ")) return -1;
    for (int k = 0; k < NEND; k++)
        if (strcasecmp(skip_spaces(line + 3), end_sections[k]) == 0) return k;
    return -1;
}

// Intro lines [begin, end) as Prose, with their line numbers.
static Prose intro_prose(const Chapter *c, int begin, int end) {
    Prose p = {.file = c->intro_path, .lines = xmalloc(sizeof(ProseLine) * (size_t)(end - begin + 1))};
    for (int k = begin; k < end; k++) p.lines[p.n++] = (ProseLine){c->intro_lines[k], k + 1};
    return p;
}

// Where each part of the intro starts: [0] the top, then each end section (-1: absent).
static void intro_parts(const Chapter *c, int start[NEND + 1], int stop[NEND + 1]) {
    for (int k = 0; k <= NEND; k++) start[k] = stop[k] = -1;
    start[0] = c->nintro ? 1 : 0;   // after the title
    int cur = 0;
    for (int i = 1; i < c->nintro; i++) {
        int e = end_section_of(c->intro_lines[i]);
        if (e < 0) continue;
        if (start[e + 1] >= 0) fail_at(c->intro_path, i + 1, "a second '## %s' section", end_sections[e]);
        stop[cur] = i;
        start[e + 1] = i + 1;
        cur = e + 1;
    }
    stop[cur] = c->nintro;
}

typedef struct {
    Buf *toc;
} TocCtx;

static void toc_heading(void *ctx, int level, const char *text, const char *id) {
    TocCtx *t = ctx;
    if (level != 2) return;
    buf_printf(t->toc, "<li><a href=\"#%s\">", id);
    buf_esc_puts(t->toc, text);
    buf_puts(t->toc, "</a></li>\n");
}

static void render_intro_part(Buf *out, const Chapter *c, int begin, int end, Weave *w, Buf *toc) {
    if (begin < 0 || end <= begin) return;
    Prose p = intro_prose(c, begin, end);
    TocCtx t = {toc};
    MdOptions o = {.w = w, .directives = true, .on_heading = toc ? toc_heading : NULL, .ctx = &t};
    md_render(out, &p, &o);
    free(p.lines);
}

// ---- the end matter ----------------------------------------------------------------------

static bool mentions(const char *text, const char *word) { return strstr(text, word) != NULL; }

static void end_added(Buf *out, const Chapter *c, Weave *w) {
    buf_puts(out, "<section class=\"end\" id=\"added\">\n<h2>What this chapter added <a class=\"anchor\" "
                  "href=\"#added\">#</a></h2>\n<div class=\"table\"><table>\n<thead><tr><th>file</th><th class=\"r\">"
                  "lines</th><th class=\"r\">prose</th><th class=\"r\">code</th></tr></thead>\n<tbody>\n");
    int lines = 0, prose = 0, code = 0;
    for (int k = 0; k < c->nfiles; k++) {
        const Source *s = c->files[k];
        buf_printf(out, "<tr><td><a href=\"#%s\"><code>", s->id);
        buf_esc_puts(out, s->path);
        buf_printf(out, "</code></a></td><td class=\"r\">%d</td><td class=\"r\">%d</td><td class=\"r\">%d</td></tr>\n",
                   s->nlines, s->prose_lines, s->code_lines);
        lines += s->nlines;
        prose += s->prose_lines;
        code += s->code_lines;
    }
    buf_printf(out, "</tbody>\n<tfoot><tr><td>%d files</td><td class=\"r\">%d</td><td class=\"r\">%d</td><td "
                    "class=\"r\">%d</td></tr></tfoot>\n</table></div>\n",
               c->nfiles, lines, prose, code);
    buf_puts(out, "<p class=\"small\">Lines are counted by the weaver: prose is the comment blocks that start in "
                  "column 0, code is every other non-blank line.</p>\n");
    // The chapter's interface: the functions its headers declare, each linked.
    int nfun = 0;
    for (int k = 0; k < c->nfiles; k++) {
        const Source *s = c->files[k];
        if (!ends_with(s->path, ".h")) continue;
        for (int y = 0; y < s->nsyms; y++) {
            if (s->syms[y].kind != SYM_DECLARATION && s->syms[y].kind != SYM_DEFINITION) continue;
            buf_puts(out, nfun++ ? ", " : "<p class=\"api\">New functions, as the headers declare them: ");
            buf_printf(out, "<a href=\"#%s-L%d\"><code>", s->id, s->syms[y].line);
            buf_esc_puts(out, s->syms[y].name);
            buf_puts(out, "</code></a>");
        }
    }
    if (nfun) buf_puts(out, ".</p>\n");
    (void)w;
}

static void end_memory(Buf *out, const Chapter *c, const char *help, int start[], int stop[], Weave *w) {
    buf_puts(out, "<section class=\"end\" id=\"memory\">\n<h2>Memory <a class=\"anchor\" href=\"#memory\">#</a></h2>\n");
    if (start[END_MEMORY + 1] >= 0) {
        render_intro_part(out, c, start[END_MEMORY + 1], stop[END_MEMORY + 1], w, NULL);
    } else if (help && mentions(help, "--mem")) {
        fail_at(c->intro_path, 1,
                "./%s/run has --mem: add a '## Memory' section whose @run(./%s/run --mem ...) tables show the nano "
                "and the full-size model",
                c->name, c->name);
    } else {
        buf_printf(out, "<p>%s, so this chapter has no memory table. The tables start with the first chapter "
                        "whose <code>run</code> plans a model's memory with <code>--mem</code>; each is the "
                        "program's own output, printed while the book is built.</p>\n",
                   c->has_run ? "This chapter's <code>run</code> has no <code>--mem</code> yet"
                              : "This chapter has no <code>run</code> yet");
    }
    buf_puts(out, "</section>\n");
}

static void end_run(Buf *out, const Chapter *c, int start[], int stop[], Weave *w) {
    buf_puts(out, "<section class=\"end\" id=\"run\">\n<h2>Run it, verify it <a class=\"anchor\" href=\"#run\">#</a></h2>\n");
    char *what = strcmp(c->num, "01") == 0 ? xstrdup("builds this chapter") : xsprintf("builds chapters 01 to %s", c->num);
    buf_printf(out, "<pre class=\"block\"><code>make ch%s%*s# %s%s\n", c->num, 20 - (int)strlen(c->num) - 7, "", what,
               c->has_run ? " and its command line" : "");
    free(what);
    if (c->has_run) buf_printf(out, "./%s/run%*s# runs on the embedded nano default\n", c->name, 20 - (int)strlen(c->name) - 6, "");
    buf_printf(out, "make test%11s# every test of every chapter, then parity with PyTorch</code></pre>\n", "");
    static const struct {
        const char *pattern, *what;
    } tests[] = {{"tests/test_ch%s.c", "unit tests"},
                 {"tests/cli_ch%s.sh", "command-line and bad-input tests"},
                 {"tests/reference/ref_ch%s.py", "the PyTorch reference outputs"},
                 {"tests/verify_ch%s.c", "the comparison with PyTorch"},
                 {"tests/verify_gpu_ch%s.c", "every CUDA op against its C twin"}};
    int found = 0;
    for (size_t k = 0; k < sizeof tests / sizeof tests[0]; k++) {
        char *path = xsprintf(tests[k].pattern, c->num);
        if (file_exists(path)) {
            buf_puts(out, found++ ? ";\n" : "<p>This chapter's tests: ");
            buf_printf(out, "<code>%s</code> (%s)", path, tests[k].what);
        }
        free(path);
    }
    buf_puts(out, found ? ".</p>\n" : "<p>This chapter has no tests of its own yet.</p>\n");
    render_intro_part(out, c, start[END_RUN + 1], stop[END_RUN + 1], w, NULL);
    if (c->has_run) {   // the program's own description of itself
        buf_puts(out, "<p>Everything <code>run</code> can do, as its <code>--help</code> says:</p>\n");
        char *line = xsprintf("@run(./%s/run --help)", c->name);
        char *runc = xsprintf("%s/run.c", c->name);
        MdOptions o = {.w = w, .directives = true};
        directive_block(out, line, runc, 1, &o);
        free(line);
        free(runc);
    }
    buf_puts(out, "</section>\n");
}

static void end_exercises(Buf *out, const Chapter *c, int start[], int stop[], Weave *w) {
    if (start[END_EXERCISES + 1] < 0) return;
    buf_puts(out, "<section class=\"end\" id=\"exercises\">\n<h2>Exercises <a class=\"anchor\" href=\"#exercises\">#</a></h2>\n");
    render_intro_part(out, c, start[END_EXERCISES + 1], stop[END_EXERCISES + 1], w, NULL);
    buf_puts(out, "</section>\n");
}

// ---- a chapter page -------------------------------------------------------------------------

// A chapter is taught, not only shown: its intro walks the reader through the
// code in the order to read it (a "## What to read first" section before the
// files) and ends with exercises (a "## Exercises" section with at least one
// numbered item). A page without either is an error, not a warning.
static void require_teaching(const Chapter *c, const int start[], const int stop[]) {
    bool guide = false;
    for (int i = start[0]; i >= 0 && i < stop[0]; i++)
        if (starts_with(c->intro_lines[i], "## ") && strncasecmp(skip_spaces(c->intro_lines[i] + 3), "What to read first", 18) == 0)
            guide = true;
    if (!guide) fail_at(c->intro_path, 1, "chapter %s has no reading guide: add a '## What to read first' section", c->name);
    bool items = false;
    for (int i = start[END_EXERCISES + 1]; i >= 0 && i < stop[END_EXERCISES + 1]; i++)
        if (isdigit((unsigned char)c->intro_lines[i][0]) && strstr(c->intro_lines[i], ". ")) items = true;
    if (!items) fail_at(c->intro_path, 1, "chapter %s has no exercises: add a '## Exercises' section with numbered items", c->name);
}

static char *render_chapter(const Book *b, int at, Weave *w) {
    const Chapter *c = &b->ch[at];
    w->page = c->page;
    int start[NEND + 1], stop[NEND + 1];
    intro_parts(c, start, stop);
    char *help = c->has_run ? NULL : NULL;
    if (c->has_run) {
        char *cmd = xsprintf("./%s/run --help", c->name);
        char *runc = xsprintf("%s/run.c", c->name);
        help = run_command(cmd, runc, 1);
        free(cmd);
        free(runc);
    }

    Buf out = {0}, toc = {0};
    char *title = xsprintf("%s %s", c->num, c->title);
    page_open(&out, title, "chapter");
    chapter_nav(&out, b, at, "bar");
    buf_printf(&out, "<main>\n<div class=\"front\">\n<p class=\"kicker\">Chapter %s</p>\n<h1>", c->num);
    buf_esc_puts(&out, c->title);
    buf_puts(&out, "</h1>\n");
    render_intro_part(&out, c, start[0], stop[0], w, &toc);

    buf_puts(&out, "<nav class=\"toc\" id=\"contents\">\n<h2>Contents</h2>\n<ol>\n");
    buf_puts(&out, toc.s ? toc.s : "");
    for (int k = 0; k < c->nfiles; k++) {
        const Source *s = c->files[k];
        buf_printf(&out, "<li><a href=\"#%s\"><code>", s->id);
        buf_esc_puts(&out, s->path);
        buf_printf(&out, "</code></a> <span class=\"n\">%d lines</span>", s->nlines);
        int nh = 0;
        for (int j = 0; j < s->nsecs; j++) {
            if (!s->secs[j].heading) continue;
            buf_puts(&out, nh++ ? "" : "\n<ol>");
            buf_printf(&out, "<li><a href=\"#%s\">", s->secs[j].id);
            buf_esc_puts(&out, s->secs[j].heading);
            buf_puts(&out, "</a></li>");
        }
        buf_puts(&out, nh ? "</ol>\n</li>\n" : "</li>\n");
    }
    buf_puts(&out, "<li><a href=\"#added\">What this chapter added</a></li>\n<li><a href=\"#memory\">Memory</a></li>\n"
                   "<li><a href=\"#run\">Run it, verify it</a></li>\n");
    if (start[END_EXERCISES + 1] >= 0) buf_puts(&out, "<li><a href=\"#exercises\">Exercises</a></li>\n");
    buf_puts(&out, "</ol>\n</nav>\n</div>\n");

    for (int k = 0; k < c->nfiles; k++) render_source(&out, c->files[k], w);

    buf_puts(&out, "<div class=\"back\">\n");
    end_added(&out, c, w);
    end_memory(&out, c, help, start, stop, w);
    end_run(&out, c, start, stop, w);
    end_exercises(&out, c, start, stop, w);
    require_teaching(c, start, stop);
    buf_puts(&out, "</div>\n</main>\n");
    chapter_nav(&out, b, at, "foot");
    page_close(&out);
    buf_free(&toc);
    free(title);
    free(help);
    return buf_take(&out);
}

// ---- the index ----------------------------------------------------------------------------

// The first paragraph of a chapter's intro, as its line on the chapter map.
static void intro_summary(Buf *out, const Chapter *c, Weave *w) {
    int i = 1;
    while (i < c->nintro && blank_line(c->intro_lines[i])) i++;
    int j = i;
    while (j < c->nintro && !blank_line(c->intro_lines[j]) && !starts_with(c->intro_lines[j], "#")) j++;
    if (j == i) return;
    Buf text = {0};
    for (int k = i; k < j; k++) {
        if (k > i) buf_putc(&text, ' ');
        buf_puts(&text, c->intro_lines[k]);
    }
    Prose p = {.file = c->intro_path};
    MdOptions o = {.w = w, .directives = true};
    buf_puts(out, "<p>");
    md_inline(out, text.s, text.n, &p, i + 1, &o);
    buf_puts(out, "</p>");
    buf_free(&text);
}

static char *render_index(const Book *b, Weave *w) {
    w->page = "index.html";
    Buf out = {0};
    page_open(&out, "nanoMolmo2 in C", "index");
    buf_puts(&out, "<main>\n<div class=\"front\">\n<p class=\"kicker\">A vision-language model trainer, written as a "
                   "book</p>\n<h1>nanoMolmo2 in C</h1>\n");
    char *text = read_text("book/intro/index.md", NULL);
    if (!text) fail("book/intro/index.md: cannot read: %s", strerror(errno));
    int n = 0;
    char **lines = split_lines(text, &n);
    Prose p = {.file = "book/intro/index.md", .lines = xmalloc(sizeof(ProseLine) * (size_t)(n + 1))};
    for (int k = 0; k < n; k++) p.lines[p.n++] = (ProseLine){lines[k], k + 1};
    MdOptions o = {.w = w, .directives = true};
    md_render(&out, &p, &o);
    free(p.lines);
    free(lines);
    free(text);

    buf_puts(&out, "<h2 id=\"chapters\">The chapters</h2>\n<ol class=\"chapters\">\n");
    for (int k = 0; k < b->n; k++) {
        const Chapter *c = &b->ch[k];
        buf_printf(&out, "<li class=\"%s\">", c->page ? "ready" : "planned");
        if (c->page) buf_printf(&out, "<a href=\"%s\">", c->page);
        buf_printf(&out, "<span class=\"num\">%s</span> <span class=\"title\">", c->num);
        buf_esc_puts(&out, c->title);
        buf_puts(&out, "</span>");
        if (c->page) buf_puts(&out, "</a>");
        else buf_puts(&out, " <span class=\"badge\">planned</span>");
        if (c->intro_lines) intro_summary(&out, c, w);
        if (c->page) {
            int lines = 0;
            for (int f = 0; f < c->nfiles; f++) lines += c->files[f]->nlines;
            buf_printf(&out, "<p class=\"meta\"><code>%s/</code>: %d files, %d lines</p>", c->name, c->nfiles, lines);
        }
        buf_puts(&out, "</li>\n");
    }
    buf_puts(&out, "</ol>\n");

    // The full table of contents: every page and every file on it.
    buf_puts(&out, "<nav class=\"toc\" id=\"contents\">\n<h2>Contents</h2>\n<ol>\n");
    for (int k = 0; k < b->n; k++) {
        const Chapter *c = &b->ch[k];
        if (!c->page) continue;
        buf_printf(&out, "<li><a href=\"%s\">%s ", c->page, c->num);
        buf_esc_puts(&out, c->title);
        buf_puts(&out, "</a>\n<ol class=\"files\">");
        for (int f = 0; f < c->nfiles; f++) {
            buf_printf(&out, "<li><a href=\"%s#%s\"><code>", c->page, c->files[f]->id);
            buf_esc_puts(&out, c->files[f]->path);
            buf_puts(&out, "</code></a></li>");
        }
        buf_printf(&out, "<li><a href=\"%s#added\">What this chapter added</a></li></ol>\n</li>\n", c->page);
    }
    buf_puts(&out, "</ol>\n</nav>\n</div>\n</main>\n");
    int first = -1;
    for (int k = 0; k < b->n && first < 0; k++)
        if (b->ch[k].page) first = k;
    if (first >= 0) {
        buf_printf(&out, "<nav class=\"foot\"><a class=\"next\" href=\"%s\" rel=\"next\">Start reading: %s ", b->ch[first].page,
                   b->ch[first].num);
        buf_esc_puts(&out, b->ch[first].title);
        buf_puts(&out, " &rarr;</a></nav>\n");
    }
    page_close(&out);
    return buf_take(&out);
}

// ---- the whole book -----------------------------------------------------------------------

static void collect_types(Weave *w) {
    for (int k = 0; k < w->nsources; k++) {
        const Source *s = w->sources[k];
        for (int y = 0; y < s->nsyms; y++)
            if (s->syms[y].kind == SYM_TYPE) add_str(&w->types, &w->ntypes, xstrdup(s->syms[y].name));
    }
}

static void write_page(const char *dir, const char *name, const char *html, bool check, Weave *w) {
    if (check) return;
    char *path = xsprintf("%s/%s", dir, name);
    write_text(path, html, strlen(html));
    buf_printf(&w->manifest, "page %s\n", name);
    free(path);
}

static void free_book(Book *b) {
    for (int k = 0; k < b->n; k++) {
        Chapter *c = &b->ch[k];
        for (int f = 0; f < c->nfiles; f++) source_free(c->files[f]);
        for (int f = 0; f < c->nlisted; f++) free(c->listed[f]);
        free(c->files);
        free(c->listed);
        free(c->name);
        free(c->num);
        free(c->title);
        free(c->page);
        free(c->intro_path);
        free(c->intro_text);
        free(c->intro_lines);
    }
    free(b->ch);
}

static void free_weave(Weave *w) {
    weave_symbols_free(w);
    for (int k = 0; k < w->ntypes; k++) free(w->types[k]);
    free(w->types);
    free(w->sources);
    buf_free(&w->manifest);
}

static int build_book(const char *sources_file, const char *dir, bool check) {
    Book b = read_chapter_list(sources_file);
    if (b.n == 0) fail("%s: no chapters listed", sources_file ? sources_file : "make print-sources");
    Weave w = {0};
    for (int k = 0; k < b.n; k++) {
        load_chapter_files(&b.ch[k]);
        load_intro(&b.ch[k]);
        for (int f = 0; f < b.ch[k].nfiles; f++) {
            w.sources = xrealloc(w.sources, sizeof(Source *) * (size_t)(w.nsources + 1));
            w.sources[w.nsources++] = b.ch[k].files[f];
        }
    }
    collect_types(&w);
    weave_symbols_build(&w);
    if (!check) make_dirs(dir);
    w.out_dir = check ? NULL : dir;
    int pages = 0;
    for (int k = 0; k < b.n; k++) {
        if (!b.ch[k].page) continue;
        char *html = render_chapter(&b, k, &w);
        write_page(dir, b.ch[k].page, html, check, &w);
        free(html);
        pages++;
    }
    char *index = render_index(&b, &w);
    write_page(dir, "index.html", index, check, &w);
    free(index);
    char *css = read_text("book/style.css", NULL);
    if (!css) fail("book/style.css: cannot read: %s", strerror(errno));
    write_page(dir, "style.css", css, check, &w);
    free(css);
    if (!check) {
        char *mpath = xsprintf("%s/manifest.txt", dir);
        write_text(mpath, w.manifest.s ? w.manifest.s : "", w.manifest.n);
        free(mpath);
    }
    printf("%s: %d chapter page%s, %d source files, %d directives resolved%s%s\n", check ? "book-check" : "book", pages,
           pages == 1 ? "" : "s", w.nsources, w.ndirectives, check ? "" : " -> ", check ? "" : dir);
    free_weave(&w);
    free_book(&b);
    return 0;
}

// One annotated file as a page of its own (the golden test).
static int weave_one(const char *path, const char *out_path) {
    const char *slash = strrchr(out_path, '/');
    const char *page = slash ? slash + 1 : out_path;
    const char *base = strrchr(path, '/');
    Source *s = source_load(path, page, base ? base + 1 : path);
    Weave w = {.sources = &s, .nsources = 1, .page = page};
    for (int y = 0; y < s->nsyms; y++)
        if (s->syms[y].kind == SYM_TYPE) add_str(&w.types, &w.ntypes, xstrdup(s->syms[y].name));
    Buf out = {0};
    page_open(&out, path, "chapter single");
    buf_puts(&out, "<main>\n");
    render_source(&out, s, &w);
    buf_puts(&out, "</main>\n");
    page_close(&out);
    write_text(out_path, out.s, out.n);
    buf_free(&out);
    for (int k = 0; k < w.ntypes; k++) free(w.types[k]);
    free(w.types);
    buf_free(&w.manifest);
    source_free(s);
    return 0;
}

// ---- checking the links of the written pages ---------------------------------------------

typedef struct {
    char *name;
    char *html;
    char **ids;   // sorted
    int nids;
} Page;

static int cmp_page_id(const void *key, const void *elem) { return strcmp(key, *(char *const *)elem); }

// Every value of `attr="..."` in html, entities &amp; decoded.
static char **attr_values(const char *html, const char *attr, int *n) {
    char **list = NULL;
    *n = 0;
    char *pat = xsprintf(" %s=\"", attr);
    for (const char *c = strstr(html, pat); c; c = strstr(c, pat)) {
        c += strlen(pat);
        const char *e = strchr(c, '"');
        if (!e) break;
        Buf v = {0};
        for (const char *q = c; q < e; q++) {
            if (starts_with(q, "&amp;")) {
                buf_putc(&v, '&');
                q += 4;
            } else {
                buf_putc(&v, *q);
            }
        }
        add_str(&list, n, buf_take(&v));
        c = e;
    }
    free(pat);
    return list;
}

static int check_links(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) fail("%s: cannot open: %s", dir, strerror(errno));
    Page *pages = NULL;
    int np = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!ends_with(e->d_name, ".html")) continue;
        pages = xrealloc(pages, sizeof(Page) * (size_t)(np + 1));
        Page *p = &pages[np++];
        *p = (Page){.name = xstrdup(e->d_name)};
        char *path = xsprintf("%s/%s", dir, e->d_name);
        p->html = read_text(path, NULL);
        if (!p->html) fail("%s: cannot read: %s", path, strerror(errno));
        free(path);
        p->ids = attr_values(p->html, "id", &p->nids);
        if (p->nids) qsort(p->ids, (size_t)p->nids, sizeof(char *), cmp_str);
        for (int k = 1; k < p->nids; k++)
            if (strcmp(p->ids[k], p->ids[k - 1]) == 0) fail("%s: the id \"%s\" is used twice", p->name, p->ids[k]);
    }
    closedir(d);
    int links = 0, broken = 0;
    for (int k = 0; k < np; k++) {
        for (int a = 0; a < 2; a++) {
            int n = 0;
            char **vals = attr_values(pages[k].html, a ? "src" : "href", &n);
            for (int v = 0; v < n; v++) {
                const char *h = vals[v];
                if (starts_with(h, "http://") || starts_with(h, "https://") || starts_with(h, "mailto:")) continue;
                links++;
                const char *hash = strchr(h, '#');
                char *file = hash ? xstrndup(h, (size_t)(hash - h)) : xstrdup(h);
                const Page *target = NULL;
                bool ok;
                if (!*file) {
                    target = &pages[k];
                    ok = true;
                } else {
                    for (int t = 0; t < np; t++)
                        if (strcmp(pages[t].name, file) == 0) target = &pages[t];
                    char *path = xsprintf("%s/%s", dir, file);
                    ok = strstr(file, "..") == NULL && file[0] != '/' && file_exists(path);
                    free(path);
                }
                if (ok && hash && hash[1])
                    ok = target && bsearch(hash + 1, target->ids, (size_t)target->nids, sizeof(char *), cmp_page_id);
                if (!ok) {
                    fprintf(stderr, "error: %s/%s: broken link %s\n", dir, pages[k].name, h);
                    broken++;
                }
                free(file);
            }
            for (int v = 0; v < n; v++) free(vals[v]);
            free(vals);
        }
    }
    printf("links: %d checked in %d pages, %d broken\n", links, np, broken);
    for (int k = 0; k < np; k++) {
        for (int i = 0; i < pages[k].nids; i++) free(pages[k].ids[i]);
        free(pages[k].ids);
        free(pages[k].html);
        free(pages[k].name);
    }
    free(pages);
    return broken ? 1 : 0;
}

// ---- main ------------------------------------------------------------------------------------

static void usage(FILE *f) {
    fprintf(f, "usage: weaver [--sources FILE] [--out DIR] [--check]   build the book (default DIR: build/book)\n"
               "       weaver --file SOURCE --out PAGE.html            one annotated file as a page\n"
               "       weaver --check-links DIR                        every link of DIR/*.html resolves\n"
               "Run it from the repository root. FILE is the output of `make print-sources`.\n");
}

int main(int argc, char **argv) {
    const char *sources = NULL, *out = NULL, *file = NULL, *links = NULL;
    bool check = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (strcmp(a, "--check") == 0) check = true;
        else if (strcmp(a, "--sources") == 0 && has_value) sources = argv[++i];
        else if (strcmp(a, "--out") == 0 && has_value) out = argv[++i];
        else if (strcmp(a, "--file") == 0 && has_value) file = argv[++i];
        else if (strcmp(a, "--check-links") == 0 && has_value) links = argv[++i];
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            fail("unknown or incomplete argument '%s'", a);
        }
    }
    if (links) return check_links(links);
    if (file) {
        if (!out) fail("--file needs --out PAGE.html");
        return weave_one(file, out);
    }
    return build_book(sources, out ? out : "build/book", check);
}
