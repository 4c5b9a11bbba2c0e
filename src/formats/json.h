/*
 * json.h - small helpers over cJSON for the JSON lopad reads (config.json,
 * tokenizer.json, adapter_config.json, safetensors headers).
 *
 * Every helper takes `source`, the name used in error messages (usually the
 * file path, optionally with a key path such as "tokenizer.json: model"), and
 * returns enum lopad_status after lp_error() on bad input. Keys are matched
 * case-sensitively. Strings returned as `const char *` are borrowed from the
 * cJSON tree and live until cJSON_Delete() of its root.
 */
#ifndef LP_JSON_H
#define LP_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>
#include "../core/common.h"

/* Default bound on a JSON file read whole (tokenizer.json is a few MB; 64 MiB
 * leaves ample room while refusing absurd inputs). */
#define LP_JSON_MAX_BYTES ((size_t)64 << 20)

/* Read the file at `path` (at most max_bytes, 0 = LP_JSON_MAX_BYTES) and parse
 * it. LOPAD_ERR_IO when it cannot be read or is not a regular file,
 * LOPAD_ERR_FORMAT when malformed (the message gives the byte offset, line and
 * column and the kind of character found, never the file's bytes: it may be a
 * symlink to a secret). A key repeated in one object keeps its LAST value, as
 * Python's json (and so transformers) does. *out: free with cJSON_Delete. */
enum lopad_status lp_json_read_file(const char *path, size_t max_bytes, cJSON **out);

/* Read a whole file into a NUL-terminated lp_malloc'd buffer (*len excludes
 * the NUL). Used by lp_json_read_file; exposed for other text files. */
enum lopad_status lp_read_file(const char *path, size_t max_bytes, char **out, size_t *len);

/* Parse text[0..len) (need not be NUL-terminated; embedded NUL bytes are an
 * error). Trailing whitespace is allowed, any other trailing bytes are not.
 * Repeated keys are all kept (the safetensors header refuses them); call
 * lp_json_keep_last for Python's last-wins semantics. */
enum lopad_status lp_json_parse(const char *text, size_t len, const char *source, cJSON **out);

/* Drop every member of every object under `node` that a later member with
 * the same key overrides. O(n log n) in the number of members. */
enum lopad_status lp_json_keep_last(cJSON *node);

/* Member `key` of object `obj`, or NULL (also when obj is not an object). */
const cJSON *lp_json_item(const cJSON *obj, const char *key);
/* true when `key` is absent or JSON null */
bool lp_json_absent(const cJSON *obj, const char *key);

/* Required member of a given kind: cJSON_Object, cJSON_Array, cJSON_String,
 * cJSON_Number, ... (cJSON's type flags). */
enum lopad_status lp_json_get_item(const cJSON *obj, const char *key, int cjson_type,
                                   const char *source, const cJSON **out);

/* Integers: the number must be integral, finite, exactly representable (|v| <=
 * 2^53) and within [min, max]. The _opt variants store `def` when the key is
 * absent or null, but still fail on a present value of the wrong kind. */
enum lopad_status lp_json_get_i64(const cJSON *obj, const char *key, int64_t min, int64_t max,
                                  const char *source, int64_t *out);
enum lopad_status lp_json_opt_i64(const cJSON *obj, const char *key, int64_t min, int64_t max,
                                  int64_t def, const char *source, int64_t *out);
enum lopad_status lp_json_get_int(const cJSON *obj, const char *key, int min, int max,
                                  const char *source, int *out);
enum lopad_status lp_json_opt_int(const cJSON *obj, const char *key, int min, int max, int def,
                                  const char *source, int *out);
/* Check a number item (e.g. an array element) the same way; `what` names it. */
enum lopad_status lp_json_as_i64(const cJSON *item, int64_t min, int64_t max, const char *source,
                                 const char *what, int64_t *out);

/* Finite numbers (integers accepted). */
enum lopad_status lp_json_get_double(const cJSON *obj, const char *key, const char *source,
                                     double *out);
enum lopad_status lp_json_opt_double(const cJSON *obj, const char *key, double def,
                                     const char *source, double *out);

enum lopad_status lp_json_get_string(const cJSON *obj, const char *key, const char *source,
                                     const char **out);
/* def may be NULL */
enum lopad_status lp_json_opt_string(const cJSON *obj, const char *key, const char *def,
                                     const char *source, const char **out);

enum lopad_status lp_json_get_bool(const cJSON *obj, const char *key, const char *source,
                                   bool *out);
enum lopad_status lp_json_opt_bool(const cJSON *obj, const char *key, bool def, const char *source,
                                   bool *out);

/* An array of strings. With allow_single, a lone string counts as a list of
 * one. *out is an lp_malloc'd array of borrowed strings (lp_free it; NULL when
 * *n == 0). The _opt variant gives *out = NULL, *n = 0 when absent or null. */
enum lopad_status lp_json_get_strings(const cJSON *obj, const char *key, bool allow_single,
                                      const char *source, const char ***out, int *n);
enum lopad_status lp_json_opt_strings(const cJSON *obj, const char *key, bool allow_single,
                                      const char *source, const char ***out, int *n);

#endif
