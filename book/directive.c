// book/directive.c: the three directives that tie the book to the code.
//
//   @ref(01_tensor/matmul.c:matmul_forward)   a link to a function, type or macro
//   @ref(01_tensor/matmul.c:120)              a link to a line
//   @ref(01_tensor/matmul.c)                  a link to a file
//   @ref(TARGET|the label)                    the same, with the label given
//   @run(./01_tensor/run inspect x)           run a command, show its output
//   @embed(bench/RESULTS.md#sgemm)            show a results file (or one of its sections)
//
// They are resolved while the book is built, and each one that cannot be
// resolved stops the build with `error: FILE:LINE: reason`: a reference to a
// file that is not in the book or a name that is not in that file, a command
// that exits non-zero, a results file that is missing or does not say when
// and where it was recorded. That is what keeps the book from drifting from
// the code: a renamed function breaks `make book` instead of leaving a dead
// link, and the memory tables are the program's own output, not a copy.
//
// @ref may appear anywhere in a paragraph; @run and @embed stand alone on a
// line, because what they produce is a block. Commands run through /bin/sh in
// the directory the weaver runs in (the repository root); their stdout is
// shown, their stderr is kept only to explain a failure.
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "book/book.h"

size_t directive_at(const char *s, const char *start) {
    if (*s != '@' || (s > start && is_ident_char((unsigned char)s[-1]))) return 0;
    size_t n = 0;
    while (islower((unsigned char)s[1 + n])) n++;
    return (n && s[1 + n] == '(') ? n : 0;
}

static bool named(const char *s, size_t n, const char *word) { return strlen(word) == n && strncmp(s, word, n) == 0; }

// The argument of "@word(...)" at s: balanced parentheses, on one line.
// Returns it (allocated) and sets *used to the characters consumed.
static char *argument(const char *s, size_t word, size_t *used, const char *file, int line) {
    const char *a = s + 1 + word + 1, *c = a;
    int depth = 1;
    for (; *c && *c != '\n'; c++) {
        if (*c == '(') depth++;
        if (*c == ')' && --depth == 0) break;
    }
    if (*c != ')') fail_at(file, line, "@%.*s( is never closed on its line", (int)word, s + 1);
    *used = (size_t)(c + 1 - s);
    char *arg = xstrndup(a, (size_t)(c - a));
    char *t = arg + strlen(arg);
    while (t > arg && t[-1] == ' ') *--t = '\0';
    if (!*skip_spaces(arg)) fail_at(file, line, "@%.*s() is empty", (int)word, s + 1);
    memmove(arg, skip_spaces(arg), strlen(skip_spaces(arg)) + 1);
    return arg;
}

bool directive_is_block(const char *line) {
    const char *t = skip_spaces(line);
    size_t n = directive_at(t, t);
    if (!n || !(named(t + 1, n, "run") || named(t + 1, n, "embed") || named(t + 1, n, "image"))) return false;
    // the whole line is the directive
    int depth = 0;
    const char *c = t + 1 + n;
    for (; *c; c++) {
        if (*c == '(') depth++;
        if (*c == ')' && --depth == 0) break;
    }
    return *c == ')' && *skip_spaces(c + 1) == '\0';
}

// ---- @ref ------------------------------------------------------------------------------

static Source *find_source(Weave *w, const char *path) {
    for (int k = 0; k < w->nsources; k++)
        if (strcmp(w->sources[k]->path, path) == 0) return w->sources[k];
    return NULL;
}

size_t directive_inline(Buf *out, const char *s, const char *file, int line, Weave *w) {
    size_t used;
    char *arg = argument(s, 3, &used, file, line);
    char *label = strchr(arg, '|');
    if (label) *label++ = '\0';
    char *what = strchr(arg, ':');
    if (what) *what++ = '\0';
    Source *src = find_source(w, arg);
    if (!src) fail_at(file, line, "@ref(%s): %s is not a file of the book", arg, arg);
    char *anchor = NULL, *text = NULL;
    bool code = true;
    if (!what || !*what) {
        anchor = xstrdup(src->id);
        text = xstrdup(src->path);
    } else if (strspn(what, "0123456789") == strlen(what)) {
        int n = atoi(what);
        if (n < 1 || n > src->nlines) fail_at(file, line, "@ref(%s:%s): %s has %d lines", arg, what, arg, src->nlines);
        const Section *sec = source_section_of_line(src, n);
        anchor = source_line_is_code(src, n) ? xsprintf("%s-L%d", src->id, n) : xstrdup(sec ? sec->id : src->id);
        const char *base = strrchr(src->path, '/');
        text = xsprintf("%s:%d", base ? base + 1 : src->path, n);
    } else {
        const Symbol *y = source_symbol(src, what);
        if (!y) fail_at(file, line, "@ref(%s:%s): no function, type or macro '%s' in %s", arg, what, what, arg);
        anchor = xsprintf("%s-L%d", src->id, y->line);
        text = xsprintf("%s%s", y->name, y->kind == SYM_DEFINITION || y->kind == SYM_DECLARATION ? "()" : "");
    }
    if (label && *label) {
        free(text);
        text = xstrdup(label);
        code = false;
    }
    const char *page = (w->page && strcmp(w->page, src->page) == 0) ? "" : src->page;
    buf_printf(out, "<a class=\"ref\" href=\"%s#%s\">%s", page, anchor, code ? "<code>" : "");
    buf_esc_puts(out, text);
    buf_puts(out, code ? "</code></a>" : "</a>");
    buf_printf(&w->manifest, "directive %s:%d ref %s%s%s -> %s#%s\n", file, line, arg, what ? ":" : "", what ? what : "",
               src->page, anchor);
    w->ndirectives++;
    free(anchor);
    free(text);
    free(arg);
    return used;
}

// ---- @run ------------------------------------------------------------------------------

// Output as shown: terminal escape sequences dropped, and of a line rewritten
// with '\r' (a progress line) only its last state kept.
static char *clean_output(const char *s) {
    Buf b = {0};
    size_t line_start = 0;
    for (const char *c = s; *c; c++) {
        if (*c == '\x1b') {
            if (c[1] == '[') {
                c += 2;
                while (*c && !isalpha((unsigned char)*c)) c++;
                if (!*c) break;
            }
            continue;
        }
        if (*c == '\r') {
            if (c[1] == '\n') continue;
            b.n = line_start;   // the line starts over
            continue;
        }
        buf_putc(&b, *c);
        if (*c == '\n') line_start = b.n;
    }
    while (b.n && b.s[b.n - 1] == '\n') b.s[--b.n] = '\0';
    return buf_take(&b);
}

char *run_command(const char *cmd, const char *file, int line) {
    char errpath[] = "/tmp/weaver_stderr_XXXXXX";
    int fd = mkstemp(errpath);
    if (fd < 0) fail("cannot create a temporary file: %s", strerror(errno));
    close(fd);
    char *full = xsprintf("( %s ) 2>%s", cmd, errpath);
    fflush(NULL);
    FILE *p = popen(full, "r");
    if (!p) fail_at(file, line, "@run(%s): cannot start /bin/sh: %s", cmd, strerror(errno));
    Buf out = {0};
    char chunk[8192];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, p)) > 0) buf_put(&out, chunk, got);
    int status = pclose(p);
    free(full);
    if (status != 0) {
        // the last line of its stderr says why
        char *err = read_text(errpath, NULL);
        unlink(errpath);
        char *last = NULL;
        if (err) {
            int n = 0;
            char **lines = split_lines(err, &n);
            for (int k = n - 1; k >= 0 && !last; k--)
                if (*skip_spaces(lines[k])) last = xstrdup(lines[k]);
            free(lines);
            free(err);
        }
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        fail_at(file, line, "@run(%s) failed (exit status %d)%s%s", cmd, code, last ? ": " : "", last ? last : "");
    }
    unlink(errpath);
    if (memchr(out.s ? out.s : "", '\0', out.n) != NULL && out.n)
        fail_at(file, line, "@run(%s) printed binary output", cmd);
    char *clean = clean_output(out.s ? out.s : "");
    buf_free(&out);
    return clean;
}

static void block_run(Buf *out, const char *cmd, const char *file, int line, Weave *w) {
    char *text = run_command(cmd, file, line);
    buf_puts(out, "<figure class=\"live\">\n<figcaption><span class=\"prompt\">$</span> <code>");
    buf_esc_puts(out, cmd);
    buf_puts(out, "</code><span class=\"note\">output at build time</span></figcaption>\n<pre><code>");
    buf_esc_puts(out, text);
    buf_puts(out, "</code></pre>\n</figure>\n");
    int nl = 1;
    for (const char *c = text; *c; c++) nl += *c == '\n';
    buf_printf(&w->manifest, "directive %s:%d run %s (%d lines)\n", file, line, cmd, *text ? nl : 0);
    w->ndirectives++;
    free(text);
}

// ---- @embed ------------------------------------------------------------------------

// The value after "date:" / "machine:" on a line like "- **Date:** 2025-11-28".
static char *labelled_value(const char *line, const char *label) {
    const char *c = line;
    while (*c == ' ' || *c == '-' || *c == '*' || *c == '|' || *c == '_') c++;
    size_t n = strlen(label);
    if (strncasecmp(c, label, n) != 0) return NULL;
    c += n;
    while (*c == '*' || *c == '_') c++;
    if (*c != ':') return NULL;
    c++;
    while (*c == ' ' || *c == '*' || *c == '_') c++;
    const char *e = c + strlen(c);
    while (e > c && strchr(" *_|", e[-1])) e--;
    return e > c ? xstrndup(c, (size_t)(e - c)) : NULL;
}

// "Intel(R) Xeon(R) ... (16 CPUs), Linux 6.1.0 x86_64": where a result that
// this build produced was produced.
static char *this_machine(void) {
    char *cpu = NULL;
    char *info = read_text("/proc/cpuinfo", NULL);
    if (info) {
        int n = 0;
        char **lines = split_lines(info, &n);
        for (int k = 0; k < n && !cpu; k++)
            if (starts_with(lines[k], "model name")) {
                const char *v = strchr(lines[k], ':');
                if (v) cpu = xstrdup(skip_spaces(v + 1));
            }
        free(lines);
        free(info);
    }
    struct utsname u;
    if (uname(&u) != 0) strcpy(u.sysname, "?"), strcpy(u.release, "?"), strcpy(u.machine, "?");
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    char *m = cpu ? xsprintf("%s (%ld CPUs), %s %s %s", cpu, ncpu, u.sysname, u.release, u.machine)
                  : xsprintf("%ld CPUs, %s %s %s", ncpu, u.sysname, u.release, u.machine);
    free(cpu);
    return m;
}

static void block_embed(Buf *out, const char *arg, const char *file, int line, const MdOptions *o) {
    Weave *w = o->w;
    char *path = xstrdup(arg);
    char *section = strchr(path, '#');
    if (section) *section++ = '\0';
    char *text = read_text(path, NULL);
    if (!text) fail_at(file, line, "@embed(%s): cannot read %s: %s", arg, path, strerror(errno));
    int n = 0;
    char **lines = split_lines(text, &n);
    int begin = 0, end = n;
    bool md = ends_with(path, ".md");
    if (section) {   // the lines from the heading whose anchor is `section` to the next heading as high
        if (!md) fail_at(file, line, "@embed(%s): sections (#name) exist only in .md files", arg);
        int level = 0;
        begin = -1;
        for (int k = 0; k < n; k++) {
            int h = 0;
            while (lines[k][h] == '#') h++;
            if (h == 0 || lines[k][h] != ' ') continue;
            if (begin >= 0 && h <= level) {
                end = k;
                break;
            }
            char *slug = slugify(lines[k] + h, strlen(lines[k] + h));
            if (begin < 0 && strcmp(slug, section) == 0) {
                begin = k;
                level = h;
            }
            free(slug);
        }
        if (begin < 0) fail_at(file, line, "@embed(%s): %s has no heading '#%s'", arg, path, section);
    }
    // When and where: stated by the file itself, or this very build.
    char *date = NULL, *machine = NULL;
    bool built = starts_with(path, "build/");
    for (int k = begin; k < end; k++) {
        if (!date) date = labelled_value(lines[k], "date");
        if (!machine) machine = labelled_value(lines[k], "machine");
    }
    if (built && !date) {
        char stamp[64];
        time_t now = time(NULL);
        strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M UTC", gmtime(&now));
        date = xstrdup(stamp);
    }
    if (built && !machine) machine = this_machine();
    if (!date || !machine)
        fail_at(file, line, "@embed(%s): the embedded text does not say %s it was recorded (a 'Date:' and a 'Machine:' line)",
                arg, !date ? "when" : "on what machine");

    buf_puts(out, "<figure class=\"embed\">\n<figcaption><code>");
    buf_esc_puts(out, arg);
    buf_puts(out, "</code><span class=\"note\">");
    buf_puts(out, built ? "produced by this build, " : "recorded ");
    buf_esc_puts(out, date);
    buf_puts(out, " on ");
    buf_esc_puts(out, machine);
    buf_puts(out, "</span></figcaption>\n<div class=\"embedded\">\n");
    if (md) {
        Prose p = {.file = path, .lines = xmalloc(sizeof(ProseLine) * (size_t)(end - begin + 1))};
        for (int k = begin; k < end; k++) p.lines[p.n++] = (ProseLine){lines[k], k + 1};
        char *prefix = xsprintf("embed%d-", w->ndirectives + 1);
        MdOptions inner = {.w = w, .id_prefix = prefix, .directives = false, .heading_shift = 2};
        md_render(out, &p, &inner);
        free(prefix);
        free(p.lines);
    } else {
        buf_puts(out, "<pre><code>");
        for (int k = begin; k < end; k++) {
            buf_esc_puts(out, lines[k]);
            if (k + 1 < end) buf_putc(out, '\n');
        }
        buf_puts(out, "</code></pre>\n");
    }
    buf_puts(out, "</div>\n</figure>\n");
    buf_printf(&w->manifest, "directive %s:%d embed %s (%d lines, %s, %s)\n", file, line, arg, end - begin, date,
               machine);
    w->ndirectives++;
    free(date);
    free(machine);
    free(lines);
    free(text);
    free(path);
}

// ---- @image -------------------------------------------------------------------------

// @image(PATH|caption): a picture, where a reader would rather look than read.
// PATH is a PNG, JPEG or SVG file of the repository, or one this build wrote
// under build/ (book/figures.sh draws those); it is copied next to the pages,
// so the book stays one folder that works offline. The caption is also the
// picture's alt text, so it is required.
static const char *image_kind(const char *data, size_t n) {
    if (n >= 8 && memcmp(data, "\x89PNG\r\n\x1a\n", 8) == 0) return "png";
    if (n >= 3 && (unsigned char)data[0] == 0xFF && (unsigned char)data[1] == 0xD8 && (unsigned char)data[2] == 0xFF)
        return "jpeg";
    for (size_t i = 0; i + 4 <= n && i < 512; i++)
        if (memcmp(data + i, "<svg", 4) == 0) return "svg";
    return NULL;
}

static void block_image(Buf *out, const char *arg, const char *file, int line, Weave *w) {
    char *path = xstrdup(arg);
    char *caption = strchr(path, '|');
    if (caption) *caption++ = '\0';
    if (!caption || !*skip_spaces(caption)) fail_at(file, line, "@image(%s): a caption is required (PATH|caption)", arg);
    size_t len = 0;
    char *data = read_text(path, &len);
    if (!data) fail_at(file, line, "@image(%s): cannot read %s: %s", arg, path, strerror(errno));
    const char *kind = image_kind(data, len);
    if (!kind) fail_at(file, line, "@image(%s): %s is not a PNG, JPEG or SVG file", arg, path);
    char *name = xstrdup(path);   // build/book/fig/a.svg -> build_book_fig_a.svg
    for (char *c = name; *c; c++)
        if (*c == '/') *c = '_';
    if (w->out_dir) {
        char *dir = xsprintf("%s/img", w->out_dir);
        make_dirs(dir);
        char *dst = xsprintf("%s/%s", dir, name);
        write_text(dst, data, len);
        free(dst);
        free(dir);
    }
    buf_printf(out, "<figure class=\"image\">\n<img src=\"img/%s\" alt=\"", name);
    buf_esc_puts(out, caption);
    buf_puts(out, "\">\n<figcaption>");
    buf_esc_puts(out, caption);
    buf_puts(out, "</figcaption>\n</figure>\n");
    buf_printf(&w->manifest, "directive %s:%d image %s (%s, %zu bytes)\n", file, line, path, kind, len);
    w->ndirectives++;
    free(name);
    free(data);
    free(path);
}

void directive_block(Buf *out, const char *line_text, const char *file, int line, const MdOptions *o) {
    const char *t = skip_spaces(line_text);
    size_t n = directive_at(t, t), used;
    char *arg = argument(t, n, &used, file, line);
    if (named(t + 1, n, "run")) block_run(out, arg, file, line, o->w);
    else if (named(t + 1, n, "image")) block_image(out, arg, file, line, o->w);
    else block_embed(out, arg, file, line, o);
    free(arg);
}
