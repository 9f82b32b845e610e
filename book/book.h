// book/book.h: the weaver's picture of the book.
//
// A *book* is a list of chapters; a *chapter* is an intro (book/intro/NN_name.md)
// and the chapter's source files in build order; a *source* is cut into
// *sections*, each a block of prose (a comment that starts in column 0) and the
// code that follows it up to the next such comment. Sources also know their
// *symbols* (functions, types, macros and the line each starts on) so that a
// `@ref(file:symbol)` in any prose can become a link.
//
// The pieces, each in its own file:
//   source.c     reading a file, cutting it into sections, finding its symbols
//   highlight.c  C and CUDA code to HTML with syntax classes and line anchors
//   markdown.c   the prose: a small Markdown subset to HTML
//   directive.c  @ref, @run and @embed, resolved while the prose is rendered
//   weaver.c     chapters, pages, the index, the end matter, and main()
#ifndef BOOK_BOOK_H
#define BOOK_BOOK_H

#include <stdbool.h>

#include "book/util.h"

typedef enum { SYM_DEFINITION, SYM_DECLARATION, SYM_TYPE, SYM_MACRO } SymKind;

typedef struct {
    char *name;
    int line;   // 1-based
    SymKind kind;
} Symbol;

// Lines are 0-based indices into Source.lines; [begin, end) ranges.
typedef struct {
    int prose_begin, prose_end;   // the comment block(s); empty when the section is code only
    int code_begin, code_end;     // the code after it (blank lines at either end are not shown)
    bool major;                   // the prose opened with a rule line (// ----...)
    char *heading;                // a title taken from a rule line, or NULL
    int heading_line;             // the line the title came from, or -1
    const char *heading_rest;     // what follows the title's first sentence on that line, or NULL
    char *id;                     // its anchor on the page: "matmul.c-3"
} Section;

typedef struct {
    char *path;   // relative to the repository root: "01_tensor/matmul.c"
    char *page;   // the page it is rendered on: "01_tensor.html"
    char *id;     // the anchor prefix on that page: "matmul.c"
    char *text;   // the file, split into lines in place
    char **lines;
    int nlines;
    Section *secs;
    int nsecs;
    Symbol *syms;
    int nsyms;
    int prose_lines, code_lines, blank_lines;   // for "what this chapter added"
} Source;

// One line of prose and the source line it came from (for error messages).
typedef struct {
    const char *text;
    int line;
} ProseLine;

typedef struct {
    const char *file;   // where these lines came from, for `error: FILE:LINE:`
    ProseLine *lines;
    int n;
} Prose;

// One symbol of the book, in the index that links names in code to their definitions.
typedef struct {
    const char *name;
    const Source *src;
    const Symbol *sym;
} SymRef;

// What every part of the weaver may need to know about the whole book.
typedef struct {
    Source **sources;   // every source file of the book, for @ref
    int nsources;
    char **types;       // typedef'd names of all sources, highlighted as types
    int ntypes;
    SymRef *syms;       // every symbol of every source, sorted by name (NULL: names are not linked)
    int nsyms;
    Buf manifest;       // "source PATH PAGE" and "directive FILE:LINE KIND ARG" lines
    int ndirectives;
    const char *page;   // the page being rendered (links to it need no file name)
    const char *out_dir;   // where the pages go (@image copies its file there); NULL when checking
} Weave;

// ---- source.c ----
// Reads and cuts up a file (fails with `error: PATH: ...` if it cannot be read).
Source *source_load(const char *path, const char *page, const char *id);
void source_free(Source *s);
// The section's prose, comment markers stripped, heading lines removed.
Prose source_prose(const Source *s, const Section *sec);
const Symbol *source_symbol(const Source *s, const char *name);
// The section that shows 1-based line `line` (in its prose or its code).
const Section *source_section_of_line(const Source *s, int line);
bool source_line_is_code(const Source *s, int line);
bool is_rule_line(const char *text);

// ---- highlight.c ----
// Builds w->syms from w->sources (freed by weave_symbols_free).
void weave_symbols_build(Weave *w);
void weave_symbols_free(Weave *w);
// Where a name used in code at line `line` of `from` is defined, or NULL: the
// definition in the same file if there is one, else the only definition in
// the book (a name defined in several files, like a static helper, links
// nowhere). Functions and macros when `type` is false, types when true.
const SymRef *weave_symbol(const Weave *w, const char *name, size_t n, bool type, const Source *from, int line);
// Appends lines [begin, end) of s as highlighted HTML, one span per line with
// the id "ID-LN" (ID = s->id, N = line number). Directives inside code comments
// are an error: they are resolved only in prose.
void highlight_code(Buf *out, const Source *s, int begin, int end, const Weave *w);
// Highlights a free-standing snippet (a fenced block in the prose), no line anchors.
void highlight_snippet(Buf *out, const char *text, size_t n, const Weave *w);

// ---- markdown.c ----
typedef struct {
    Weave *w;
    const char *id_prefix;   // prefix for heading anchors
    bool directives;         // false inside embedded files: @... stays text
    int heading_shift;       // '#' renders as <h(1+shift)>
    // Each heading rendered is reported here (for the table of contents), may be NULL.
    void (*on_heading)(void *ctx, int level, const char *text, const char *id);
    void *ctx;
} MdOptions;
void md_render(Buf *out, const Prose *p, const MdOptions *o);
// What marks a prose line as telling history ("session", a commit hash), or
// NULL; md_render stops the build on such a line.
const char *md_history_mark(const char *line);
// Inline markdown only (emphasis, code, links, @ref), for one line of text.
void md_inline(Buf *out, const char *s, size_t n, const Prose *p, int line, const MdOptions *o);
// "Hello, World!" -> "hello-world"
char *slugify(const char *s, size_t n);

// ---- directive.c ----
// A block directive alone on a prose line: "@run(...)" or "@embed(...)".
bool directive_is_block(const char *line);
void directive_block(Buf *out, const char *line, const char *file, int lineno, const MdOptions *o);
// "@ref(...)" at s; returns the number of characters consumed.
size_t directive_inline(Buf *out, const char *s, const char *file, int lineno, Weave *w);
// Finds "@word(" at the start of s (preceded by a non-word character); returns
// the word length or 0.
size_t directive_at(const char *s, const char *start);
// Runs a shell command from the repository root; returns its stdout or fails the build.
char *run_command(const char *cmd, const char *file, int lineno);

#endif
