/*
 * options.h - the one table of decoding options.
 *
 * Every decoding option is one row: its name (JSON key and request field;
 * the CLI flag is "--" + the name with '_' -> '-'), type, default, range or
 * choices, the decoders that read it and its help text. lopad_request_set()
 * and the JSON setter, the CLI's parser and --help, the settings JSON that
 * `lopad run --json` prints, `lopad eval --sweep` and the server's request
 * parser all read this table, so a new option is one row here plus the field
 * it fills in struct lp_decode_request.
 */
#ifndef LP_GEN_OPTIONS_H
#define LP_GEN_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include "decode/decode.h"

enum lp_opt_type {
    LP_OPT_INT,
    LP_OPT_FLOAT,
    LP_OPT_BOOL,
    LP_OPT_ENUM, /* one of choices[], stored as its index */
    LP_OPT_SEED, /* unsigned 64-bit */
    LP_OPT_NAME, /* a name resolved by the row (the DPad preset) */
};

/* decoders that read an option (bit per enum lp_decoder_kind) */
#define LP_D(k) (1u << (k))
#define LP_D_ALL (LP_D(LP_DEC_LLADA) | LP_D(LP_DEC_DREAM) | LP_D(LP_DEC_FAST) | LP_D(LP_DEC_D2F))

struct lp_opt {
    const char *name;
    enum lp_opt_type type;
    int field;                  /* offset into struct lp_decode_request, -1 = resolved specially */
    double lo, hi;              /* numbers: allowed range (inclusive) */
    const char *const *choices; /* enums: NULL-terminated, in enum order */
    unsigned decoders;          /* LP_D bits of the decoders that read it */
    bool strict;                /* setting it for a decoder that ignores it is an error */
    bool flag;                  /* bool shown on the CLI as a bare flag (--dpad) */
    const char *needs;          /* another option that must be on (dpad), NULL = none */
    const char *group;          /* help section */
    const char *def;            /* default, as help shows it */
    const char *metavar;        /* CLI value name */
    const char *help;
};

extern const struct lp_opt lp_opts[];
extern const int lp_n_opts;

const struct lp_opt *lp_opt_find(const char *name);

/* A set of options given by name: what the caller set, the rest left to the
 * decoder's defaults. */
struct lp_opt_value {
    bool set;
    union {
        int64_t i;
        double f;
        bool b;
        int e;
        uint64_t u;
    };
    char name[48]; /* LP_OPT_NAME */
};
struct lp_opt_set {
    struct lp_opt_value v[64];
};

/* Parse value text for option o into *out; LOPAD_ERR_ARG naming the option and
 * what it accepts. */
enum lopad_status lp_opt_parse(const struct lp_opt *o, const char *text, struct lp_opt_value *out);
enum lopad_status lp_opt_set_text(struct lp_opt_set *s, const char *name, const char *text);
/* A JSON object of options ({"lopa": 4, "decoder": "d2f"}); numbers, booleans
 * and strings as their types want. */
enum lopad_status lp_opt_set_json(struct lp_opt_set *s, const char *json, size_t len);
struct cJSON;
enum lopad_status lp_opt_set_cjson(struct lp_opt_set *s, const struct cJSON *obj);

/* The decode request for a model: the decoder (the one named, else the default
 * for the model: Fast-dLLM with the dual cache, or D2F with a LoRA adapter, or
 * D2F when only lopa is given), its reference defaults, then every set option,
 * checked against the decoder (strict rows) and needs. The prompt is left
 * empty. */
enum lopad_status lp_opt_resolve(const struct lp_opt_set *s, const struct lopad_hparams *hp,
                                 bool has_lora, struct lp_decode_request *rq);

/* The settings that decoder rq->decoder reads, as a JSON object (lp_malloc'd). */
char *lp_opt_settings_json(const struct lp_decode_request *rq);
struct cJSON *lp_opt_settings_cjson(const struct lp_decode_request *rq);

/* Help text for the table, grouped (lp_malloc'd). */
char *lp_opt_help(void);

#endif
