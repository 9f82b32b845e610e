// json.h: a small, strict JSON reader.
//
// We meet JSON in three places: every model's config.json, the header of every
// safetensors file, and the 11 MB tokenizer.json of Qwen. The reader is a
// single recursive-descent pass that builds a tree of JsonValue nodes in one
// arena (so freeing a document is one free). It is *strict*: exactly RFC 8259,
// no trailing commas, no comments, no NaN, no leading zeros, valid UTF-8 only,
// \u escapes including surrogate pairs, nesting limited (a hostile file cannot
// blow the stack), and trailing garbage is an error. On failure it returns NULL
// and an error message with the byte offset, which the caller turns into
// `error: PATH: bad JSON at byte N: reason`.
//
// Strings are decoded into the arena as NUL-terminated UTF-8 and also carry
// their length (JSON strings may contain \u0000). Object members keep their
// file order; lookups are linear, which is fine for configs and headers; the
// tokenizer builds its own hash tables from the parsed vocab.
#ifndef NM_JSON_H
#define NM_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

typedef struct JsonValue JsonValue;
struct JsonValue {
    JsonType type;
    bool boolean;
    double number;         // JSON_NUMBER (as strtod reads it)
    bool is_integer;       // number written with no fraction/exponent and fits int64
    int64_t integer;       // valid when is_integer
    const char *str;       // JSON_STRING: decoded, NUL-terminated
    size_t len;            // JSON_STRING: byte length; ARRAY/OBJECT: number of items
    JsonValue **items;     // ARRAY: elements; OBJECT: values
    const char **keys;     // OBJECT: member names (decoded)
    size_t *key_lens;
};

typedef struct JsonDoc JsonDoc;

// Parses `len` bytes. On error returns NULL and writes a message to err.
JsonDoc *json_parse(const char *text, size_t len, char *err, size_t errlen);
JsonValue *json_root(JsonDoc *doc);
// Reads and parses a whole file; a missing file or bad JSON is bad user input:
// `error: PATH: reason` and exit 1 (fail_input). For tools and tests.
JsonDoc *json_load_file(const char *path);
void json_free(JsonDoc *doc);

// Object member by name, or NULL (also NULL if v is not an object).
JsonValue *json_get(const JsonValue *v, const char *key);
// Typed getters with defaults, for configs.
int64_t json_get_int(const JsonValue *obj, const char *key, int64_t dflt);
double json_get_num(const JsonValue *obj, const char *key, double dflt);
const char *json_get_str(const JsonValue *obj, const char *key, const char *dflt);
bool json_get_bool(const JsonValue *obj, const char *key, bool dflt);

// Appends `s` (len bytes) to out as a JSON string literal with escapes;
// `out` grows as needed (*cap tracks its capacity). Used by the writers.
void json_write_string(char **out, size_t *len, size_t *cap, const char *s, size_t slen);

#endif
