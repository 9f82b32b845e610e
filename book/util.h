// book/util.h: the weaver's small toolbox: a growable string, HTML escaping,
// reading files, and failing with one line.
//
// The weaver is a batch program that either produces the whole book or stops
// at the first broken thing, so error handling is simple: print
// `error: FILE:LINE: reason` and exit 1. Nothing here is clever; it exists so
// that the interesting files (source.c, markdown.c, highlight.c, directive.c,
// weaver.c) can read like the description of what they do.
#ifndef BOOK_UTIL_H
#define BOOK_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

// A growable, always NUL-terminated string. Zero-initialise to start: `Buf b = {0};`
typedef struct {
    char *s;
    size_t n, cap;
} Buf;

void buf_put(Buf *b, const char *s, size_t n);
void buf_puts(Buf *b, const char *s);
void buf_putc(Buf *b, char c);
void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Appends s[0..n) with &, <, >, " and ' replaced by their entities: everything
// that comes from a source file passes through here (or esc_puts) on its way out.
void buf_esc(Buf *b, const char *s, size_t n);
void buf_esc_puts(Buf *b, const char *s);
void buf_free(Buf *b);
// Hands the string over to the caller (never NULL) and leaves b empty.
char *buf_take(Buf *b);

void *xmalloc(size_t n);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xsprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// The whole file as a NUL-terminated string, or NULL (errno set) if it cannot be read.
char *read_text(const char *path, size_t *len);
// Writes via a temporary name and a rename, so a page is either whole or absent.
void write_text(const char *path, const char *s, size_t n);
bool file_exists(const char *path);
void make_dirs(const char *path);   // mkdir -p

// Splits text into lines in place (the '\n's become NULs); *n gets the count.
char **split_lines(char *text, int *n);

bool starts_with(const char *s, const char *prefix);
bool ends_with(const char *s, const char *suffix);
const char *skip_spaces(const char *s);
bool is_ident_start(int c);
bool is_ident_char(int c);

// `error: reason` / `error: FILE:LINE: reason`, then exit(1).
_Noreturn void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void fail_at(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
