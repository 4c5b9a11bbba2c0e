/*
 * json.c - reading JSON files and typed access to their members, with error
 * messages that name the file and the key (see json.h).
 */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

enum lopad_status lp_read_file(const char *path, size_t max_bytes, char **out, size_t *len) {
    *out = NULL;
    *len = 0;
    if (max_bytes == 0) max_bytes = LP_JSON_MAX_BYTES;
    int fd;
    uint64_t fsize;
    enum lopad_status st = lp_open_regular(path, &fd, &fsize);
    if (st) return st;
    if (fsize > max_bytes) {
        close(fd);
        return lp_error(LOPAD_ERR_FORMAT, "%s: file is %llu bytes, more than the %zu allowed", path,
                        (unsigned long long)fsize, max_bytes);
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        return lp_error(LOPAD_ERR_IO, "%s: cannot read: %s", path, strerror(e));
    }
    size_t n = (size_t)fsize;
    char *buf = lp_malloc(n + 1, path);
    if (!buf) {
        fclose(f);
        return LOPAD_ERR_NOMEM;
    }
    size_t got = n ? fread(buf, 1, n, f) : 0;
    int err = ferror(f);
    fclose(f);
    if (got != n || err) {
        lp_free(buf);
        return lp_error(LOPAD_ERR_IO, "%s: read error (got %zu of %zu bytes)", path, got, n);
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return LOPAD_OK;
}

/* What stands at the error position, without quoting the file: the file may
 * be a symlink to a secret, so only JSON punctuation is shown verbatim. */
static const char *describe_byte(const char *p, size_t off, size_t len, char *buf) {
    if (off >= len) return "the end of the file";
    unsigned char c = (unsigned char)p[off];
    if (c && strchr("{}[],:\"", c)) {
        snprintf(buf, 8, "'%c'", c);
        return buf;
    }
    if (c >= 0x80) return "a non-ASCII byte";
    if (c < 0x20 || c == 0x7f) return "a control byte";
    if (c == ' ') return "a space";
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return "a letter";
    if (c >= '0' && c <= '9') return "a digit";
    return "a punctuation character";
}

/* Parse p[0..len) where p[len] == 0 and there is no NUL before it. cJSON then
 * rejects trailing garbage (require_null_terminated). */
static enum lopad_status parse_terminated(const char *p, size_t len, const char *source,
                                          cJSON **out) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(p, len + 1, &end, 1);
    if (!root) {
        size_t off = end && end >= p && end <= p + len ? (size_t)(end - p) : len;
        size_t line = 1, col = 1;
        for (size_t i = 0; i < off; i++) {
            col = p[i] == '\n' ? 1 : col + 1;
            line += p[i] == '\n';
        }
        char buf[8];
        return lp_error(LOPAD_ERR_FORMAT,
                        "%s: malformed JSON at byte %zu (line %zu, column %zu): found %s",
                        source, off, line, col, describe_byte(p, off, len, buf));
    }
    *out = root;
    return LOPAD_OK;
}

static enum lopad_status check_no_nul(const char *text, size_t len, const char *source) {
    const char *z = memchr(text, 0, len);
    if (z)
        return lp_error(LOPAD_ERR_FORMAT, "%s: malformed JSON: NUL byte at offset %zu", source,
                        (size_t)(z - text));
    return LOPAD_OK;
}

enum lopad_status lp_json_parse(const char *text, size_t len, const char *source, cJSON **out) {
    *out = NULL;
    enum lopad_status st = check_no_nul(text, len, source);
    if (st) return st;
    /* the caller's buffer need not be terminated: parse a terminated copy */
    char *copy = lp_malloc(len + 1, source);
    if (!copy) return LOPAD_ERR_NOMEM;
    memcpy(copy, text, len);
    copy[len] = 0;
    st = parse_terminated(copy, len, source, out);
    lp_free(copy);
    return st;
}

struct member {
    cJSON *item;
    int pos;
};

static int cmp_member(const void *a, const void *b) {
    const struct member *x = a, *y = b;
    int c = strcmp(x->item->string, y->item->string);
    if (c) return c;
    return x->pos < y->pos ? -1 : x->pos > y->pos; /* file order */
}

/* Within one object: of members with equal keys keep only the last. */
static enum lopad_status dedup_object(cJSON *obj, int n) {
    struct member *v = lp_malloc(sizeof *v * (size_t)n, "JSON key check");
    if (!v) return LOPAD_ERR_NOMEM;
    int i = 0;
    for (cJSON *e = obj->child; e; e = e->next, i++)
        v[i] = (struct member){e, i};
    qsort(v, (size_t)n, sizeof *v, cmp_member);
    for (i = 0; i + 1 < n; i++)
        if (!strcmp(v[i].item->string, v[i + 1].item->string))
            cJSON_Delete(cJSON_DetachItemViaPointer(obj, v[i].item));
    lp_free(v);
    return LOPAD_OK;
}

enum lopad_status lp_json_keep_last(cJSON *node) {
    enum lopad_status st;
    for (cJSON *e = node ? node->child : NULL; e; e = e->next)
        if ((cJSON_IsObject(e) || cJSON_IsArray(e)) && (st = lp_json_keep_last(e))) return st;
    if (!cJSON_IsObject(node) || !node->child || !node->child->next) return LOPAD_OK;
    int n = 0;
    for (cJSON *e = node->child; e; e = e->next)
        n++;
    return dedup_object(node, n);
}

enum lopad_status lp_json_read_file(const char *path, size_t max_bytes, cJSON **out) {
    *out = NULL;
    char *buf;
    size_t len;
    enum lopad_status st = lp_read_file(path, max_bytes, &buf, &len);
    if (st) return st;
    st = check_no_nul(buf, len, path);
    if (!st) st = parse_terminated(buf, len, path, out); /* lp_read_file terminated it */
    lp_free(buf);
    if (!st && (st = lp_json_keep_last(*out))) {
        cJSON_Delete(*out);
        *out = NULL;
    }
    return st;
}

const cJSON *lp_json_item(const cJSON *obj, const char *key) {
    if (!cJSON_IsObject(obj)) return NULL;
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

bool lp_json_absent(const cJSON *obj, const char *key) {
    const cJSON *it = lp_json_item(obj, key);
    return !it || cJSON_IsNull(it);
}

static const char *kind_name(int type) {
    switch (type & 0xff) {
    case cJSON_False:
    case cJSON_True: return "a boolean";
    case cJSON_NULL: return "null";
    case cJSON_Number: return "a number";
    case cJSON_String: return "a string";
    case cJSON_Array: return "an array";
    case cJSON_Object: return "an object";
    default: return "an unknown value";
    }
}

static bool is_kind(const cJSON *it, int type) {
    if (type == cJSON_True || type == cJSON_False) return cJSON_IsBool(it);
    return (it->type & 0xff) == type;
}

enum lopad_status lp_json_get_item(const cJSON *obj, const char *key, int cjson_type,
                                   const char *source, const cJSON **out) {
    *out = NULL;
    if (!cJSON_IsObject(obj))
        return lp_error(LOPAD_ERR_FORMAT, "%s: expected an object holding key '%s'", source, key);
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it) return lp_error(LOPAD_ERR_FORMAT, "%s: missing key '%s'", source, key);
    if (!is_kind(it, cjson_type))
        return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s' must be %s, found %s", source, key,
                        kind_name(cjson_type), kind_name(it->type));
    *out = it;
    return LOPAD_OK;
}

/* the largest integer a double holds exactly */
#define EXACT_LIMIT 9007199254740992.0

enum lopad_status lp_json_as_i64(const cJSON *it, int64_t min, int64_t max, const char *source,
                                 const char *what, int64_t *out) {
    if (!cJSON_IsNumber(it))
        return lp_error(LOPAD_ERR_FORMAT, "%s: '%s' must be an integer, found %s", source, what,
                        kind_name(it ? it->type : cJSON_Invalid));
    double v = it->valuedouble;
    if (!isfinite(v) || v != floor(v) || fabs(v) > EXACT_LIMIT)
        return lp_error(LOPAD_ERR_FORMAT, "%s: '%s' must be an integer, found %.17g", source, what,
                        v);
    int64_t iv = (int64_t)v;
    if (iv < min || iv > max)
        return lp_error(LOPAD_ERR_FORMAT, "%s: '%s' = %lld is outside [%lld, %lld]", source, what,
                        (long long)iv, (long long)min, (long long)max);
    *out = iv;
    return LOPAD_OK;
}

enum lopad_status lp_json_get_i64(const cJSON *obj, const char *key, int64_t min, int64_t max,
                                  const char *source, int64_t *out) {
    const cJSON *it;
    enum lopad_status st = lp_json_get_item(obj, key, cJSON_Number, source, &it);
    if (st) return st;
    return lp_json_as_i64(it, min, max, source, key, out);
}

enum lopad_status lp_json_opt_i64(const cJSON *obj, const char *key, int64_t min, int64_t max,
                                  int64_t def, const char *source, int64_t *out) {
    if (lp_json_absent(obj, key)) {
        *out = def;
        return LOPAD_OK;
    }
    return lp_json_get_i64(obj, key, min, max, source, out);
}

enum lopad_status lp_json_get_int(const cJSON *obj, const char *key, int min, int max,
                                  const char *source, int *out) {
    int64_t v;
    enum lopad_status st = lp_json_get_i64(obj, key, min, max, source, &v);
    if (!st) *out = (int)v;
    return st;
}

enum lopad_status lp_json_opt_int(const cJSON *obj, const char *key, int min, int max, int def,
                                  const char *source, int *out) {
    int64_t v;
    enum lopad_status st = lp_json_opt_i64(obj, key, min, max, def, source, &v);
    if (!st) *out = (int)v;
    return st;
}

enum lopad_status lp_json_get_double(const cJSON *obj, const char *key, const char *source,
                                     double *out) {
    const cJSON *it;
    enum lopad_status st = lp_json_get_item(obj, key, cJSON_Number, source, &it);
    if (st) return st;
    if (!isfinite(it->valuedouble))
        return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s' is not a finite number", source, key);
    *out = it->valuedouble;
    return LOPAD_OK;
}

enum lopad_status lp_json_opt_double(const cJSON *obj, const char *key, double def,
                                     const char *source, double *out) {
    if (lp_json_absent(obj, key)) {
        *out = def;
        return LOPAD_OK;
    }
    return lp_json_get_double(obj, key, source, out);
}

enum lopad_status lp_json_get_string(const cJSON *obj, const char *key, const char *source,
                                     const char **out) {
    const cJSON *it;
    enum lopad_status st = lp_json_get_item(obj, key, cJSON_String, source, &it);
    if (st) return st;
    *out = it->valuestring;
    return LOPAD_OK;
}

enum lopad_status lp_json_opt_string(const cJSON *obj, const char *key, const char *def,
                                     const char *source, const char **out) {
    if (lp_json_absent(obj, key)) {
        *out = def;
        return LOPAD_OK;
    }
    return lp_json_get_string(obj, key, source, out);
}

enum lopad_status lp_json_get_bool(const cJSON *obj, const char *key, const char *source,
                                   bool *out) {
    const cJSON *it;
    enum lopad_status st = lp_json_get_item(obj, key, cJSON_True, source, &it);
    if (st) return st;
    *out = cJSON_IsTrue(it);
    return LOPAD_OK;
}

enum lopad_status lp_json_opt_bool(const cJSON *obj, const char *key, bool def, const char *source,
                                   bool *out) {
    if (lp_json_absent(obj, key)) {
        *out = def;
        return LOPAD_OK;
    }
    return lp_json_get_bool(obj, key, source, out);
}

enum lopad_status lp_json_get_strings(const cJSON *obj, const char *key, bool allow_single,
                                      const char *source, const char ***out, int *n) {
    *out = NULL;
    *n = 0;
    if (!cJSON_IsObject(obj))
        return lp_error(LOPAD_ERR_FORMAT, "%s: expected an object holding key '%s'", source, key);
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!it) return lp_error(LOPAD_ERR_FORMAT, "%s: missing key '%s'", source, key);
    if (allow_single && cJSON_IsString(it)) {
        const char **a = lp_malloc(sizeof *a, key);
        if (!a) return LOPAD_ERR_NOMEM;
        a[0] = it->valuestring;
        *out = a;
        *n = 1;
        return LOPAD_OK;
    }
    if (!cJSON_IsArray(it))
        return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s' must be %s, found %s", source, key,
                        allow_single ? "a string or an array of strings" : "an array of strings",
                        kind_name(it->type));
    int count = cJSON_GetArraySize(it);
    if (count == 0) return LOPAD_OK;
    const char **a = lp_malloc(sizeof *a * (size_t)count, key);
    if (!a) return LOPAD_ERR_NOMEM;
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, it) {
        if (!cJSON_IsString(e)) {
            lp_free(a);
            return lp_error(LOPAD_ERR_FORMAT, "%s: key '%s' element %d must be a string, found %s",
                            source, key, i, kind_name(e->type));
        }
        a[i++] = e->valuestring;
    }
    *out = a;
    *n = i;
    return LOPAD_OK;
}

enum lopad_status lp_json_opt_strings(const cJSON *obj, const char *key, bool allow_single,
                                      const char *source, const char ***out, int *n) {
    if (lp_json_absent(obj, key)) {
        *out = NULL;
        *n = 0;
        return LOPAD_OK;
    }
    return lp_json_get_strings(obj, key, allow_single, source, out, n);
}
