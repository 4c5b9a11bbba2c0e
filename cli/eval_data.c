/*
 * eval_data.c - benchmark files for `lopad eval` (see eval_data.h). The shared
 * data is the repository's data/ folder ($LOPAD_DATA, else found by walking up from
 * the lopad executable and from the current directory), with the project's
 * ../shared/data/bench as a last resort for benchmark files. Prompts follow the usual formats:
 * GSM8K "Question: / Answer:" with "#### N", MBPP's "[BEGIN] ... [DONE]", HumanEval as a
 * completion.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "eval_data.h"
#include "eval_score.h"

static const char *const task_names[LP_TASK_COUNT] = {"tiny-gsm", "gsm8k",   "humaneval",
                                                      "mbpp",     "math500", "lopa-demo"};

const char *lp_eval_task_name(enum lp_eval_task t) {
    return t < LP_TASK_COUNT ? task_names[t] : "?";
}

bool lp_eval_task_parse(const char *s, enum lp_eval_task *out) {
    for (int i = 0; i < LP_TASK_COUNT; i++)
        if (!strcmp(s, task_names[i])) {
            *out = (enum lp_eval_task)i;
            return true;
        }
    return false;
}

bool lp_eval_task_is_code(enum lp_eval_task t) {
    return t == LP_TASK_HUMANEVAL || t == LP_TASK_MBPP;
}

int lp_eval_task_default_shots(enum lp_eval_task t) {
    return t == LP_TASK_GSM8K ? 4 : t == LP_TASK_MBPP ? 3 : 0;
}

/* tiny-gsm: the length docs/RESULTS.md measured the demo model with (its answers are
 * 30-40 tokens, its context 256); the benchmarks: 256, what Fast-dLLM, D2F and the
 * LLaDA / Dream evaluation scripts use for GSM8K, HumanEval, MBPP and MATH */
int lp_eval_task_default_gen(enum lp_eval_task t) {
    return t == LP_TASK_TINY_GSM ? 48 : t == LP_TASK_LOPA_DEMO ? 64 : 256;
}

int lp_eval_fit_gen(const char *cmd, enum lp_eval_task task, int gen, int align, int n_ctx,
                    int longest_prompt) {
    if (align < 1) align = 1;
    if (n_ctx <= 0 || longest_prompt + gen <= n_ctx) return gen;
    int room = n_ctx - longest_prompt;
    int fit = room > 0 ? room / align * align : 0;
    int need = align > 8 ? align : 8; /* below this no task's answer fits */
    if (fit < need) {
        fprintf(stderr,
                "lopad %s: %s: the longest prompt takes %d of the model's %d positions, leaving "
                "%d for the answer; at least %d are needed%s (use fewer --shots, --limit, or "
                "--data with shorter problems)\n",
                cmd, lp_eval_task_name(task), longest_prompt, n_ctx, room > 0 ? room : 0, need,
                align > 1 ? " (a whole --block)" : "");
        return 0;
    }
    fprintf(stderr,
            "lopad %s: %s: --gen %d -> %d to fit the model's context (%d positions, longest "
            "prompt %d)\n",
            cmd, lp_eval_task_name(task), gen, fit, n_ctx, longest_prompt);
    return fit;
}

/* ------------------------------------------------------------- locating */

static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}
static bool is_file(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* walk up from start looking for start/../.../rel; true with the path in out */
static bool walk_up(const char *start, const char *rel, char *out, size_t cap, bool dir) {
    char cur[PATH_MAX];
    if (!realpath(start, cur)) return false;
    for (int level = 0; level < 8; level++) {
        snprintf(out, cap, "%s/%s", cur, rel);
        if (dir ? is_dir(out) : is_file(out)) return true;
        char *sl = strrchr(cur, '/');
        if (!sl || sl == cur) break;
        *sl = 0;
    }
    return false;
}

/* the folder of the lopad executable, or "" */
static void exe_dir(char *out, size_t cap) {
    ssize_t n = readlink("/proc/self/exe", out, cap - 1);
    out[n > 0 ? n : 0] = 0;
    char *sl = strrchr(out, '/');
    if (sl) *sl = 0;
}

/* find rel above the executable or the current directory */
static bool locate(const char *rel, char *out, size_t cap, bool dir) {
    char exe[PATH_MAX];
    exe_dir(exe, sizeof exe);
    if (*exe && walk_up(exe, rel, out, cap, dir)) return true;
    return walk_up(".", rel, out, cap, dir);
}

/* NAME in the project's shared benchmark folder: $LOPAD_SHARED/data/bench, else a
 * shared/data/bench found above the executable or the current directory */
static int bench_file(const char *cmd, const char *name, char *out, size_t cap) {
    const char *env = getenv("LOPAD_SHARED");
    char dir[PATH_MAX];
    bool found = env && *env ? (snprintf(dir, sizeof dir, "%s/data/bench", env), is_dir(dir))
                             : locate("shared/data/bench", dir, sizeof dir, true);
    if (found) {
        snprintf(out, cap, "%s/%s", dir, name);
        if (is_file(out)) return 0;
    }
    fprintf(stderr,
            "lopad %s: cannot find the benchmark file %s (not in the repository's data/bench "
            "above the lopad binary or the current directory, nor in ../shared/data/bench): set "
            "LOPAD_DATA to the repository's data folder or give --data FILE\n",
            cmd, name);
    return 2;
}

/* A file of the data folder (rel = "bench/NAME" or "tiny-gsm/NAME"), searched in
 * $LOPAD_DATA; the folder compiled in (LOPAD_DATA_DIR); the repository's data/ (or an
 * installed share/lopad/data) above the executable, then above the current directory;
 * for bench files last the project's ../shared/data/bench ($LOPAD_SHARED or found above).
 * 0, or 2 with a message naming where it looked. */
static int data_file(const char *cmd, const char *rel, char *out, size_t cap) {
    const char *env = getenv("LOPAD_DATA");
    if (env && *env) {
        snprintf(out, cap, "%s/%s", env, rel);
        if (is_file(out)) return 0;
        fprintf(stderr, "lopad %s: LOPAD_DATA=%s has no %s\n", cmd, env, rel);
        return 2;
    }
#ifdef LOPAD_DATA_DIR
    snprintf(out, cap, "%s/%s", LOPAD_DATA_DIR, rel);
    if (is_file(out)) return 0;
#endif
    char exe[PATH_MAX], in_repo[PATH_MAX], installed[PATH_MAX];
    exe_dir(exe, sizeof exe);
    snprintf(in_repo, sizeof in_repo, "data/%s", rel);
    snprintf(installed, sizeof installed, "share/lopad/data/%s", rel);
    const char *starts[] = {exe, "."};
    for (int s = 0; s < 2; s++)
        if (*starts[s] && (walk_up(starts[s], in_repo, out, cap, false) ||
                           walk_up(starts[s], installed, out, cap, false)))
            return 0;
    if (!strncmp(rel, "bench/", 6)) return bench_file(cmd, rel + 6, out, cap);
    fprintf(stderr,
            "lopad %s: cannot find data/%s above the lopad binary (%s) or the current directory: "
            "set LOPAD_DATA to the repository's data folder or give --data FILE\n",
            cmd, rel, *exe ? exe : "?");
    return 2;
}

/* ---------------------------------------------------------------- reading */

static char *read_stream(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    if (!b) return NULL;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
        }
        size_t r = fread(b + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    b[n] = 0;
    *len = n;
    return b;
}

/* the whole file, gunzipped (through `gzip -dc`) when it ends in .gz */
static char *read_all(const char *cmd, const char *path) {
    size_t len = 0;
    char *b = NULL;
    size_t pl = strlen(path);
    if (pl > 3 && !strcmp(path + pl - 3, ".gz")) {
        if (!is_file(path)) goto missing;
        /* single-quoted for the shell; a quote inside becomes '\'' */
        char q[3 * PATH_MAX + 32];
        size_t k = 0;
        k += (size_t)snprintf(q, sizeof q, "gzip -dc '");
        for (const char *p = path; *p && k + 8 < sizeof q; p++) {
            if (*p == '\'') {
                memcpy(q + k, "'\\''", 4);
                k += 4;
            } else {
                q[k++] = *p;
            }
        }
        snprintf(q + k, sizeof q - k, "'");
        FILE *f = popen(q, "r");
        if (!f) goto missing;
        b = read_stream(f, &len);
        int st = pclose(f);
        if (b && st != 0) {
            fprintf(stderr, "lopad %s: cannot decompress %s (gzip -dc failed)\n", cmd, path);
            free(b);
            return NULL;
        }
    } else {
        FILE *f = fopen(path, "rb");
        if (!f) goto missing;
        b = read_stream(f, &len);
        fclose(f);
    }
    if (!b) fprintf(stderr, "lopad %s: out of memory reading %s\n", cmd, path);
    return b;
missing:
    fprintf(stderr, "lopad %s: cannot read data file %s: %s\n", cmd, path, strerror(errno));
    return NULL;
}

/* parse JSON lines (or one JSON array) into a cJSON array */
static cJSON *parse_records(const char *cmd, const char *path) {
    char *text = read_all(cmd, path);
    if (!text) return NULL;
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    cJSON *arr = NULL;
    if (*p == '[') {
        arr = cJSON_Parse(p);
        if (!arr || !cJSON_IsArray(arr)) {
            fprintf(stderr, "lopad %s: %s is not a JSON array\n", cmd, path);
            cJSON_Delete(arr);
            arr = NULL;
        }
    } else {
        arr = cJSON_CreateArray();
        int line = 0;
        for (char *s = text; arr && *s;) {
            char *nl = strchr(s, '\n');
            if (nl) *nl = 0;
            line++;
            const char *t = s;
            while (isspace((unsigned char)*t))
                t++;
            if (*t) {
                cJSON *o = cJSON_Parse(t);
                if (!o || !cJSON_IsObject(o)) {
                    fprintf(stderr, "lopad %s: %s line %d is not a JSON object\n", cmd, path, line);
                    cJSON_Delete(o);
                    cJSON_Delete(arr);
                    arr = NULL;
                    break;
                }
                cJSON_AddItemToArray(arr, o);
            }
            if (!nl) break;
            s = nl + 1;
        }
    }
    free(text);
    return arr;
}

static const char *str_field(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* printf into a new string; "\r" removed (MBPP's CRLF code) */
__attribute__((format(printf, 1, 2))) static char *fmt(const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    int n = vasprintf(&s, f, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *w = s;
    for (char *r = s; *r; r++)
        if (*r != '\r') *w++ = *r;
    *w = 0;
    return s;
}

static void item_free(struct lp_eval_item *it) {
    free(it->id);
    free(it->q_chat);
    free(it->a_chat);
    free(it->q_raw);
    free(it->a_raw);
    free(it->ref);
    free(it->code_prompt);
    free(it->tests);
    free(it->solution);
    memset(it, 0, sizeof *it);
}

void lp_eval_set_free(struct lp_eval_set *s) {
    for (int i = 0; i < s->n_items; i++)
        item_free(&s->items[i]);
    for (int i = 0; i < s->n_shots; i++)
        item_free(&s->shots[i]);
    free(s->items);
    free(s->shots);
    memset(s, 0, sizeof *s);
}

/* GSM8K solution text without the <<calculator>> annotations */
static char *gsm_solution(const char *a) {
    char *o = malloc(strlen(a) + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (const char *p = a; *p;) {
        if (p[0] == '<' && p[1] == '<') {
            const char *e = strstr(p, ">>");
            if (e) {
                p = e + 2;
                continue;
            }
        }
        o[k++] = *p++;
    }
    o[k] = 0;
    return o;
}

static const char *const gsm_instruction =
    "\nSolve the problem step by step and end your answer with a line \"#### <number>\".";

/* GSM format record -> item; false on a record without question / answer. The
 * instruction line is for instruction-tuned models (gsm8k); tiny-gsm asks the bare
 * question, the way the project's demo model was trained. */
static bool gsm_item(const cJSON *o, int idx, bool instruct, struct lp_eval_item *it) {
    const char *q = str_field(o, "question"), *a = str_field(o, "answer");
    if (!q || !a) return false;
    char *sol = gsm_solution(a);
    it->id = fmt("%d", idx);
    it->q_chat = fmt("%s%s", q, instruct ? gsm_instruction : "");
    it->a_chat = sol ? fmt("%s", sol) : NULL;
    it->q_raw = fmt("Question: %s\nAnswer:", q);
    it->a_raw = sol ? fmt(" %s\n\n", sol) : NULL;
    it->ref = lp_eval_gsm_reference(a);
    it->solution = sol ? fmt("%s", sol) : NULL;
    free(sol);
    return it->id && it->q_chat && it->a_chat && it->q_raw && it->a_raw && it->ref && it->solution;
}

static bool humaneval_item(const cJSON *o, struct lp_eval_item *it) {
    const char *id = str_field(o, "task_id"), *p = str_field(o, "prompt"),
               *t = str_field(o, "test"), *e = str_field(o, "entry_point"),
               *sol = str_field(o, "canonical_solution");
    if (!id || !p || !t || !e) return false;
    it->solution = fmt("%s", sol ? sol : "");
    it->id = fmt("%s", id);
    it->q_chat = fmt("Complete the following Python function. Reply with the complete function "
                     "in a ```python code block.\n```python\n%s```",
                     p);
    it->q_raw = fmt("%s", p);
    it->code_prompt = fmt("%s", p);
    it->tests = fmt("%s\n\ncheck(%s)\n", t, e);
    it->ref = fmt("%s", e); /* the entry point: tells a whole function from a body */
    return it->id && it->q_chat && it->q_raw && it->code_prompt && it->tests && it->ref &&
           it->solution;
}

static bool mbpp_item(const cJSON *o, struct lp_eval_item *it) {
    const cJSON *idv = cJSON_GetObjectItemCaseSensitive(o, "task_id");
    const cJSON *tl = cJSON_GetObjectItemCaseSensitive(o, "test_list");
    const char *text = str_field(o, "text"), *code = str_field(o, "code");
    const char *setup = str_field(o, "test_setup_code");
    if (!cJSON_IsNumber(idv) || !cJSON_IsArray(tl) || !text || !code) return false;
    size_t tlen = 1;
    const cJSON *t;
    cJSON_ArrayForEach(t, tl) {
        if (!cJSON_IsString(t)) return false;
        tlen += strlen(t->valuestring) + 1;
    }
    char *tests = calloc(1, tlen);
    if (!tests) return false;
    cJSON_ArrayForEach(t, tl) {
        strcat(tests, t->valuestring);
        strcat(tests, "\n");
    }
    char *task = fmt("You are an expert Python programmer, and here is your task: %s Your code "
                     "should pass these tests:\n\n%s",
                     text, tests);
    it->id = fmt("%d", idv->valueint);
    it->q_chat = task ? fmt("%s\nReply with the code in a ```python code block.", task) : NULL;
    it->a_chat = fmt("```python\n%s\n```", code);
    it->q_raw = task ? fmt("%s[BEGIN]\n", task) : NULL;
    it->a_raw = fmt("%s\n[DONE]\n\n", code);
    it->tests = fmt("%s\n%s", setup ? setup : "", tests);
    it->ref = fmt("%s", "");
    it->solution = fmt("```python\n%s\n```", code);
    free(task);
    free(tests);
    return it->id && it->q_chat && it->a_chat && it->q_raw && it->a_raw && it->tests && it->ref &&
           it->solution;
}

static bool math_item(const cJSON *o, int idx, struct lp_eval_item *it) {
    const char *q = str_field(o, "question"), *a = str_field(o, "ground_truth_answer");
    if (!q) q = str_field(o, "problem");
    if (!a) a = str_field(o, "answer");
    if (!q || !a) return false;
    it->id = fmt("%d", idx);
    it->q_chat =
        fmt("%s\nPlease reason step by step, and put your final answer within \\boxed{}.", q);
    it->q_raw = fmt("Problem: %s\nSolution:", q);
    it->ref = fmt("%s", a);
    it->solution = fmt("The answer is $\\boxed{%s}$.", a);
    return it->id && it->q_chat && it->q_raw && it->ref && it->solution;
}

static bool push(struct lp_eval_item **v, int *n, const struct lp_eval_item *it) {
    struct lp_eval_item *nv = realloc(*v, sizeof **v * (size_t)(*n + 1));
    if (!nv) return false;
    *v = nv;
    nv[(*n)++] = *it;
    return true;
}

/* convert records [from..] into items / shots */
static int convert(const char *cmd, const char *path, enum lp_eval_task task, const cJSON *recs,
                   bool as_shots, int limit, struct lp_eval_set *s) {
    int idx = 0;
    const cJSON *o;
    cJSON_ArrayForEach(o, recs) {
        int i = idx++;
        struct lp_eval_item it = {0};
        bool ok;
        if (task == LP_TASK_MBPP) {
            const cJSON *idv = cJSON_GetObjectItemCaseSensitive(o, "task_id");
            int tid = cJSON_IsNumber(idv) ? idv->valueint : -1;
            bool want = as_shots ? tid >= 2 && tid <= 4 : tid >= 11 && tid <= 510;
            if (!want) continue;
        }
        switch (task) {
        case LP_TASK_TINY_GSM:
        case LP_TASK_LOPA_DEMO: ok = gsm_item(o, i, false, &it); break;
        case LP_TASK_GSM8K: ok = gsm_item(o, i, true, &it); break;
        case LP_TASK_HUMANEVAL: ok = humaneval_item(o, &it); break;
        case LP_TASK_MBPP: ok = mbpp_item(o, &it); break;
        default: ok = math_item(o, i, &it); break;
        }
        if (!ok) {
            item_free(&it);
            fprintf(stderr, "lopad %s: %s record %d lacks the fields of a %s problem\n", cmd, path,
                    i + 1, lp_eval_task_name(task));
            return 2;
        }
        if (!(as_shots ? push(&s->shots, &s->n_shots, &it) : push(&s->items, &s->n_items, &it))) {
            item_free(&it);
            fprintf(stderr, "lopad %s: out of memory\n", cmd);
            return 1;
        }
        if (limit > 0 && (as_shots ? s->n_shots : s->n_items) >= limit) break;
    }
    return 0;
}

int lp_eval_load(const char *cmd, enum lp_eval_task task, const char *data, int limit, int shots,
                 struct lp_eval_set *out) {
    memset(out, 0, sizeof *out);
    out->task = task;
    static const char *const files[LP_TASK_COUNT] = {
        "tiny-gsm/heldout.jsonl", "bench/gsm8k_test.jsonl", "bench/HumanEval.jsonl.gz",
        "bench/mbpp.jsonl", "bench/MATH500.json", "lopa-demo/heldout.jsonl"};
    char path[PATH_MAX + 64], shot_path[PATH_MAX + 64];
    if (data) {
        snprintf(path, sizeof path, "%s", data);
        if (is_dir(path) || access(path, R_OK) != 0) { /* a pipe (<(...)) is fine */
            fprintf(stderr, "lopad %s: missing data file %s\n", cmd, path);
            return 2;
        }
    } else {
        int rc = data_file(cmd, files[task], path, sizeof path);
        if (rc) return rc;
    }
    if ((task == LP_TASK_HUMANEVAL || task == LP_TASK_MATH500) && shots > 0) {
        fprintf(stderr, "lopad %s: %s has no few-shot exemplars; --shots is ignored\n", cmd,
                lp_eval_task_name(task));
        shots = 0;
    }
    cJSON *recs = parse_records(cmd, path);
    if (!recs) return 2;
    int rc = 0;
    if ((task == LP_TASK_TINY_GSM || task == LP_TASK_LOPA_DEMO || (task == LP_TASK_GSM8K && data)) &&
        shots > 0) {
        /* exemplars are the file's first records, evaluation starts after them */
        rc = convert(cmd, path, task, recs, true, shots, out);
        for (int i = 0; i < out->n_shots && cJSON_GetArraySize(recs) > 0; i++)
            cJSON_DeleteItemFromArray(recs, 0);
    } else if (task == LP_TASK_GSM8K && shots > 0) {
        rc = data_file(cmd, "bench/gsm8k_train.jsonl", shot_path, sizeof shot_path);
        cJSON *train = rc ? NULL : parse_records(cmd, shot_path);
        if (!rc && !train) rc = 2;
        if (!rc) rc = convert(cmd, shot_path, task, train, true, shots, out);
        cJSON_Delete(train);
    } else if (task == LP_TASK_MBPP && shots > 0) {
        rc = convert(cmd, path, task, recs, true, shots, out);
    }
    if (!rc) rc = convert(cmd, path, task, recs, false, limit, out);
    cJSON_Delete(recs);
    if (!rc && out->n_items == 0) {
        fprintf(stderr, "lopad %s: %s holds no %s problems\n", cmd, path, lp_eval_task_name(task));
        rc = 2;
    }
    if (rc) lp_eval_set_free(out);
    return rc;
}
