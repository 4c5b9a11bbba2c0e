/*
 * test_tokenizer.c - the byte-level BPE tokenizer against real data.
 *
 * From ../shared/data/tokenizer/qwen.tiktoken (ranks only) this test derives
 * the merges, writes a Hugging Face tokenizer.json (merges as "a b" strings),
 * a second one with [a, b] pair merges, and a GGUF vocabulary through the GGUF
 * writer, then checks every case of llama.cpp's Qwen2 suite
 * (ggml-vocab-qwen2.gguf.inp/.out) through all three, random round trips, BPE
 * against a naive rank-order reference, special-token parsing, streaming decode
 * and error paths.
 *
 * `test_tokenizer --make-fixtures DIR` only writes DIR/tokenizer.json,
 * DIR/tokenizer_config.json and DIR/qwen-vocab.gguf (used by tests/cli).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

#include "test.h"

#include <unistd.h>
#include "model/tokenizer.h"
#include "model/tok_internal.h"
#include "formats/gguf.h"

#define DATA_DIR LOPAD_SOURCE_DIR "/../shared/data/tokenizer"
#define N_BASE 151643

/* ------------------------------------------------------- tiktoken vocabulary */

struct tik {
    int n;
    char **tok; /* [n] bytes */
    int *len;
    int *hmap; /* open addressing bytes -> rank */
    uint32_t mask;
    int *merge_l, *merge_r; /* [n] the derived merge of rank r, -1 for single bytes */
};

static uint64_t h64(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int tik_rank(const struct tik *k, const char *s, size_t n) {
    uint32_t i = (uint32_t)h64(s, n) & k->mask;
    for (;; i = (i + 1) & k->mask) {
        int r = k->hmap[i];
        if (r < 0) return -1;
        if ((size_t)k->len[r] == n && !memcmp(k->tok[r], s, n)) return r;
    }
}

static int b64val(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* naive BPE as tiktoken does it: merge the adjacent pair whose concatenation
 * has the lowest rank (< limit), leftmost on ties; parts as (offset) list */
static int naive_bpe(const struct tik *k, const char *s, int n, int limit, int *start) {
    int np = n;
    for (int i = 0; i <= n; i++)
        start[i] = i;
    for (;;) {
        int best = -1, bi = -1;
        for (int i = 0; i + 1 < np; i++) {
            int r = tik_rank(k, s + start[i], (size_t)(start[i + 2] - start[i]));
            if (r >= 0 && r < limit && (best < 0 || r < best)) best = r, bi = i;
        }
        if (bi < 0) break;
        memmove(start + bi + 1, start + bi + 2, sizeof(int) * (size_t)(np - bi - 1));
        np--;
    }
    return np;
}

static bool tik_load(struct tik *k) {
    memset(k, 0, sizeof *k);
    FILE *f = fopen(DATA_DIR "/qwen.tiktoken", "rb");
    if (!f) return false;
    k->tok = calloc(N_BASE, sizeof(char *));
    k->len = calloc(N_BASE, sizeof(int));
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        char *sp = strchr(line, ' ');
        if (!sp) continue;
        int rank = atoi(sp + 1);
        if (rank < 0 || rank >= N_BASE) continue;
        char buf[768];
        int o = 0, bits = 0;
        uint32_t acc = 0;
        for (char *p = line; p < sp; p++) {
            int v = b64val(*p);
            if (v < 0) continue; /* '=' padding */
            acc = ((acc << 6) | (uint32_t)v) & 0xFFFFFFu;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                buf[o++] = (char)((acc >> bits) & 0xFF);
            }
        }
        k->tok[rank] = malloc((size_t)o + 1);
        memcpy(k->tok[rank], buf, (size_t)o);
        k->len[rank] = o;
        k->n = rank + 1 > k->n ? rank + 1 : k->n;
    }
    fclose(f);
    uint32_t size = 1 << 19;
    k->mask = size - 1;
    k->hmap = malloc(sizeof(int) * size);
    memset(k->hmap, 0xff, sizeof(int) * size);
    for (int r = 0; r < k->n; r++) {
        if (!k->tok[r]) return false;
        uint32_t i = (uint32_t)h64(k->tok[r], (size_t)k->len[r]) & k->mask;
        while (k->hmap[i] >= 0)
            i = (i + 1) & k->mask;
        k->hmap[i] = r;
    }
    /* derive the merge that creates each multi-byte token */
    k->merge_l = malloc(sizeof(int) * (size_t)k->n);
    k->merge_r = malloc(sizeof(int) * (size_t)k->n);
    int start[800];
    for (int r = 0; r < k->n; r++) {
        k->merge_l[r] = k->merge_r[r] = -1;
        if (k->len[r] < 2) continue;
        int np = naive_bpe(k, k->tok[r], k->len[r], r, start);
        if (np != 2) continue; /* unreachable token: no merge produces it */
        k->merge_l[r] = tik_rank(k, k->tok[r], (size_t)start[1]);
        k->merge_r[r] = tik_rank(k, k->tok[r] + start[1], (size_t)(k->len[r] - start[1]));
    }
    return true;
}

static void tik_free(struct tik *k) {
    for (int r = 0; r < k->n; r++)
        free(k->tok[r]);
    free(k->tok);
    free(k->len);
    free(k->hmap);
    free(k->merge_l);
    free(k->merge_r);
}

/* --------------------------------------------------------- fixture writers */

static const struct {
    int id;
    const char *content;
    bool special;
} ADDED[] = {
    {151643, "<|endoftext|>", true},      {151644, "<|im_start|>", true},
    {151645, "<|im_end|>", true},         {151646, "<|object_ref_start|>", true},
    {151647, "<|object_ref_end|>", true}, {151648, "<|box_start|>", true},
    {151649, "<|box_end|>", true},        {151650, "<|quad_start|>", true},
    {151651, "<|quad_end|>", true},       {151652, "<|vision_start|>", true},
    {151653, "<|vision_end|>", true},     {151654, "<|vision_pad|>", true},
    {151655, "<|image_pad|>", true},      {151656, "<|video_pad|>", true},
    {151657, "<tool_call>", false},       {151658, "</tool_call>", false},
    {151659, "<|fim_prefix|>", false},    {151660, "<|fim_middle|>", false},
    {151661, "<|fim_suffix|>", false},    {151662, "<|fim_pad|>", false},
    {151663, "<|repo_name|>", false},     {151664, "<|file_sep|>", false},
    {151665, "<|beginoftext|>", true},    {151666, "<|mask|>", true},
};
#define N_ADDED ((int)(sizeof ADDED / sizeof ADDED[0]))

static const char *DREAM_TEMPLATE =
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful "
    "assistant.<|im_end|>\\n' }}{% endif %}{% for message in messages %}{{'<|im_start|>' + "
    "message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* JSON string literal of s[0..n) (UTF-8 passes through) */
static void json_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static bool write_hf_json(const struct tik *k, const char *path, bool pair_merges) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    fputs("{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[", f);
    for (int i = 0; i < N_ADDED; i++)
        fprintf(f,
                "%s{\"id\":%d,\"content\":\"%s\",\"single_word\":false,\"lstrip\":false,"
                "\"rstrip\":false,\"normalized\":false,\"special\":%s}",
                i ? "," : "", ADDED[i].id, ADDED[i].content, ADDED[i].special ? "true" : "false");
    fputs("],\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":{\"type\":\"Sequence\","
          "\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":",
          f);
    json_str(f, LP_PAT_QWEN2, strlen(LP_PAT_QWEN2));
    fputs("},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\","
          "\"add_prefix_space\":false,\"trim_offsets\":false,\"use_regex\":false}]},"
          "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},"
          "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,"
          "\"continuing_subword_prefix\":\"\",\"end_of_word_suffix\":\"\",\"fuse_unk\":false,"
          "\"byte_fallback\":false,\"vocab\":{",
          f);
    char buf[2048];
    for (int r = 0; r < k->n; r++) {
        if (r) fputc(',', f);
        size_t n = lp_bytelevel_encode(k->tok[r], (size_t)k->len[r], buf);
        json_str(f, buf, n);
        fprintf(f, ":%d", r);
    }
    fputs("},\"merges\":[", f);
    bool first = true;
    for (int r = 0; r < k->n; r++) {
        if (k->merge_l[r] < 0) continue;
        if (!first) fputc(',', f);
        first = false;
        const int l = k->merge_l[r], rr = k->merge_r[r];
        size_t na = lp_bytelevel_encode(k->tok[l], (size_t)k->len[l], buf);
        if (pair_merges) {
            fputc('[', f);
            json_str(f, buf, na);
            fputc(',', f);
            size_t nb = lp_bytelevel_encode(k->tok[rr], (size_t)k->len[rr], buf);
            json_str(f, buf, nb);
            fputc(']', f);
        } else {
            buf[na] = ' ';
            size_t nb = lp_bytelevel_encode(k->tok[rr], (size_t)k->len[rr], buf + na + 1);
            json_str(f, buf, na + 1 + nb);
        }
    }
    fputs("]}}\n", f);
    return fclose(f) == 0;
}

static bool write_hf_config(const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    fputs("{\"bos_token\":null,\"eos_token\":\"<|im_end|>\",\"pad_token\":\"<|endoftext|>\","
          "\"added_tokens_decoder\":{\"151666\":{\"content\":\"<|mask|>\",\"special\":true}},"
          "\"chat_template\":",
          f);
    json_str(f, DREAM_TEMPLATE, strlen(DREAM_TEMPLATE));
    fputs("}\n", f);
    return fclose(f) == 0;
}

static bool write_gguf(const struct tik *k, const char *path, const char *pre) {
    int n = N_BASE + N_ADDED;
    char **toks = calloc((size_t)n, sizeof *toks);
    int32_t *types = calloc((size_t)n, sizeof *types);
    char **merges = calloc((size_t)k->n, sizeof *merges);
    int nm = 0;
    char buf[2048];
    for (int r = 0; r < k->n; r++) {
        size_t m = lp_bytelevel_encode(k->tok[r], (size_t)k->len[r], buf);
        toks[r] = strndup(buf, m);
        types[r] = 1;
        if (k->merge_l[r] >= 0) {
            size_t na =
                lp_bytelevel_encode(k->tok[k->merge_l[r]], (size_t)k->len[k->merge_l[r]], buf);
            buf[na] = ' ';
            size_t nb = lp_bytelevel_encode(k->tok[k->merge_r[r]], (size_t)k->len[k->merge_r[r]],
                                            buf + na + 1);
            merges[nm++] = strndup(buf, na + 1 + nb);
        }
    }
    for (int i = 0; i < N_ADDED; i++) {
        toks[ADDED[i].id] = strdup(ADDED[i].content);
        types[ADDED[i].id] = ADDED[i].special ? 3 : 4;
    }
    struct lp_gguf_writer *w;
    bool ok = lp_gguf_writer_create(path, &w) == LOPAD_OK;
    if (ok) {
        ok = !lp_gguf_writer_add_str(w, "general.architecture", "dream") &&
             !lp_gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2") &&
             (!pre || !lp_gguf_writer_add_str(w, "tokenizer.ggml.pre", pre)) &&
             !lp_gguf_writer_add_arr(w, "tokenizer.ggml.tokens", LP_GGUF_STRING, toks,
                                     (uint64_t)n) &&
             !lp_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", LP_GGUF_I32, types,
                                     (uint64_t)n) &&
             !lp_gguf_writer_add_arr(w, "tokenizer.ggml.merges", LP_GGUF_STRING, merges,
                                     (uint64_t)nm) &&
             !lp_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 151665) &&
             !lp_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 151643) &&
             !lp_gguf_writer_add_str(w, "tokenizer.chat_template", DREAM_TEMPLATE);
        if (ok)
            ok = lp_gguf_writer_finish(w) == LOPAD_OK;
        else
            lp_gguf_writer_abort(w);
    }
    for (int i = 0; i < n; i++)
        free(toks[i]);
    for (int i = 0; i < nm; i++)
        free(merges[i]);
    free(toks);
    free(types);
    free(merges);
    return ok;
}

/* ----------------------------------------------------------- the fixtures */

static struct tik K;
static bool have_data;
static char dir[1024], p_json[1100], p_json_pairs[1100], p_cfg[1100], p_gguf[1100];
static struct lp_tokenizer *tk_json, *tk_pairs, *tk_gguf;

static bool make_fixtures(const char *d) {
    mkdir(d, 0755);
    snprintf(p_json, sizeof p_json, "%s/tokenizer.json", d);
    snprintf(p_json_pairs, sizeof p_json_pairs, "%s/tokenizer_pairs.json", d);
    snprintf(p_cfg, sizeof p_cfg, "%s/tokenizer_config.json", d);
    snprintf(p_gguf, sizeof p_gguf, "%s/qwen-vocab.gguf", d);
    double t0 = lp_time();
    if (!tik_load(&K)) return false;
    double t1 = lp_time();
    bool ok = write_hf_json(&K, p_json, false) && write_hf_json(&K, p_json_pairs, true) &&
              write_hf_config(p_cfg) && write_gguf(&K, p_gguf, "qwen2");
    /* a GGUF with no tokenizer keys (for error tests) */
    char p_notok[1100];
    snprintf(p_notok, sizeof p_notok, "%s/notok.gguf", d);
    struct lp_gguf_writer *w;
    ok = ok && lp_gguf_writer_create(p_notok, &w) == LOPAD_OK;
    if (ok && lp_gguf_writer_add_str(w, "general.architecture", "dream")) {
        lp_gguf_writer_abort(w);
        ok = false;
    }
    ok = ok && lp_gguf_writer_finish(w) == LOPAD_OK;
    fprintf(stderr, "  fixtures: tiktoken + merge derivation %.2f s, writing %.2f s\n", t1 - t0,
            lp_time() - t1);
    return ok;
}

/* ------------------------------------------------------------------ tests */

static void test_derivation(void) {
    if (!have_data) TEST_SKIP("../shared/data/tokenizer absent");
    int n_merges = 0, unreachable = 0;
    for (int r = 0; r < K.n; r++) {
        if (K.len[r] < 2) continue;
        if (K.merge_l[r] >= 0)
            n_merges++;
        else
            unreachable++;
    }
    fprintf(stderr, "  %d merges derived, %d unreachable multi-byte tokens\n", n_merges,
            unreachable);
    CHECK(K.n == N_BASE);
    CHECK(n_merges > 151000);
    /* the merged parts always have lower ranks than the result */
    for (int r = 0; r < K.n; r++)
        if (K.merge_l[r] >= 0) CHECK(K.merge_l[r] < r && K.merge_r[r] < r);
}

static void test_load(void) {
    if (!have_data) TEST_SKIP("../shared/data/tokenizer absent");
    double t0 = lp_time();
    CHECK(lp_tokenizer_from_hf_json(p_json, p_cfg, &tk_json) == LOPAD_OK);
    double t1 = lp_time();
    CHECK(lp_tokenizer_from_hf_json(p_json_pairs, NULL, &tk_pairs) == LOPAD_OK);
    double t2 = lp_time();
    CHECK_MSG(lp_tokenizer_from_gguf(p_gguf, &tk_gguf) == LOPAD_OK, "%s", lopad_errmsg());
    fprintf(stderr, "  load: json %.2f s, json(pairs) %.2f s, gguf %.2f s\n", t1 - t0, t2 - t1,
            lp_time() - t2);
    struct lp_tokenizer *all[3] = {tk_json, tk_pairs, tk_gguf};
    for (int i = 0; i < 3; i++) {
        if (!all[i]) continue;
        CHECK(lp_tokenizer_n_vocab(all[i]) == 151667);
        CHECK(lp_tokenizer_nfc(all[i]));
        CHECK(lp_tokenizer_n_patterns(all[i]) == 1);
        CHECK(lp_tokenizer_find(all[i], "<|im_start|>") == 151644);
        CHECK(lp_tokenizer_find(all[i], "<|mask|>") == 151666);
        CHECK(lp_tokenizer_find(all[i], "<tool_call>") == 151657);
        CHECK(lp_tokenizer_find(all[i], "Hello") == 9707);
        CHECK(lp_tokenizer_find(all[i], "<|nope|>") == -1);
        CHECK(lp_tokenizer_is_special(all[i], 151645));
        CHECK(!lp_tokenizer_is_special(all[i], 151657));
        CHECK(!lp_tokenizer_is_special(all[i], 9707));
        size_t len = 0;
        const char *s = lp_tokenizer_token(all[i], 220, &len);
        CHECK(s && len == 1 && s[0] == ' ');
        s = lp_tokenizer_token(all[i], 151644, &len);
        CHECK(s && len == 12 && !memcmp(s, "<|im_start|>", 12));
        CHECK(lp_tokenizer_token(all[i], 151667, &len) == NULL);
        CHECK(lp_tokenizer_token(all[i], -1, &len) == NULL);
    }
    if (tk_json) {
        CHECK(lp_tokenizer_eos_id(tk_json) == 151645);
        CHECK(lp_tokenizer_pad_id(tk_json) == 151643);
        CHECK(lp_tokenizer_bos_id(tk_json) == -1);
        CHECK(lp_tokenizer_chat_template(tk_json) &&
              strstr(lp_tokenizer_chat_template(tk_json), "You are a helpful assistant."));
    }
    if (tk_pairs) CHECK(lp_tokenizer_chat_template(tk_pairs) == NULL);
    if (tk_gguf) {
        CHECK(lp_tokenizer_bos_id(tk_gguf) == 151665);
        CHECK(lp_tokenizer_eos_id(tk_gguf) == 151643);
        CHECK(lp_tokenizer_chat_template(tk_gguf) &&
              !strcmp(lp_tokenizer_chat_template(tk_gguf), DREAM_TEMPLATE));
    }
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    *len = fread(s, 1, (size_t)n, f);
    s[*len] = 0;
    fclose(f);
    return s;
}

static void check_suite(struct lp_tokenizer *t, const char *name) {
    size_t ni, no;
    char *inp = read_all(DATA_DIR "/ggml-vocab-qwen2.gguf.inp", &ni);
    char *outp = read_all(DATA_DIR "/ggml-vocab-qwen2.gguf.out", &no);
    CHECK(inp && outp);
    if (!inp || !outp) {
        free(inp);
        free(outp);
        return;
    }
    const char *sep = "\n__ggml_vocab_test__\n";
    char *p = inp, *line = outp;
    int cases = 0, bad = 0;
    for (;;) {
        char *e = strstr(p, sep);
        if (!e) break;
        char *nl = strchr(line, '\n');
        CHECK(nl != NULL);
        if (!nl) break;
        *nl = 0;
        /* expected ids */
        int32_t want[512];
        int nw = 0;
        for (char *q = line; *q;) {
            char *end;
            long v = strtol(q, &end, 10);
            if (end == q) break;
            want[nw++] = (int32_t)v;
            q = end;
        }
        struct lp_ids ids = {0};
        enum lopad_status st = lp_tokenizer_encode(t, p, (size_t)(e - p), false, &ids);
        bool same = st == LOPAD_OK && ids.n == (size_t)nw &&
                    (nw == 0 || !memcmp(ids.v, want, sizeof(int32_t) * (size_t)nw));
        if (!same) {
            bad++;
            fprintf(stderr, "  %s: case %d '%.*s' mismatch: got", name, cases, (int)(e - p), p);
            for (size_t i = 0; i < ids.n; i++)
                fprintf(stderr, " %d", ids.v[i]);
            fprintf(stderr, "\n    want %s\n", line);
        }
        /* and back (the inputs are NFC already) */
        char *dec = NULL;
        size_t dl = 0;
        if (st == LOPAD_OK && lp_tokenizer_decode(t, ids.v, ids.n, false, &dec, &dl) == LOPAD_OK)
            CHECK(dl == (size_t)(e - p) && !memcmp(dec, p, dl));
        lp_free(dec);
        lp_ids_free(&ids);
        cases++;
        p = e + strlen(sep);
        line = nl + 1;
    }
    fprintf(stderr, "  %s: %d cases, %d mismatches\n", name, cases, bad);
    CHECK(cases == 46);
    CHECK(bad == 0);
    free(inp);
    free(outp);
}

static void test_suite_json(void) {
    if (!tk_json) TEST_SKIP("no tokenizer (../shared absent or load failed)");
    check_suite(tk_json, "tokenizer.json");
}
static void test_suite_json_pairs(void) {
    if (!tk_pairs) TEST_SKIP("no tokenizer (../shared absent or load failed)");
    check_suite(tk_pairs, "tokenizer.json [a,b] merges");
}
static void test_suite_gguf(void) {
    if (!tk_gguf) TEST_SKIP("no tokenizer (../shared absent or load failed)");
    check_suite(tk_gguf, "gguf");
}

/* ---- random text */

static uint64_t rng = 0x1234567887654321ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

static int32_t random_cp(void) {
    static const int32_t ranges[][2] = {
        {0x20, 0x7E},       {'\n', '\n'},       {'\t', '\r'},       {0xA0, 0x24F},
        {0x300, 0x36F},     {0x370, 0x3FF},     {0x400, 0x4FF},     {0x591, 0x5F4},
        {0x600, 0x6FF},     {0x900, 0x97F},     {0xE00, 0xE7F},     {0x1780, 0x17FF},
        {0x1E00, 0x1EFF},   {0x2000, 0x206F},   {0x3000, 0x303F},   {0x3040, 0x30FF},
        {0x4E00, 0x9FFF},   {0xAC00, 0xD7A3},   {0x1100, 0x11FF},   {0xFE00, 0xFE0F},
        {0xFF00, 0xFFEF},   {0x1F300, 0x1F6FF}, {0x1F900, 0x1F9FF}, {0x20000, 0x2A6DF},
        {0x10000, 0x1007F}, {0xE0000, 0xE007F}, {0x1D400, 0x1D7FF}, {0x200D, 0x200D},
    };
    int k = (int)(rnd() % (sizeof ranges / sizeof ranges[0]));
    if (rnd() % 3 == 0) k = 0; /* plenty of ASCII */
    return ranges[k][0] + (int32_t)(rnd() % (uint32_t)(ranges[k][1] - ranges[k][0] + 1));
}

static void test_roundtrip(void) {
    if (!tk_json || !tk_gguf) TEST_SKIP("no tokenizer");
    int bad = 0;
    for (int iter = 0; iter < 300; iter++) {
        char text[4096];
        size_t n = 0;
        int ncp = 1 + (int)(rnd() % 200);
        for (int i = 0; i < ncp; i++)
            n += (size_t)utf8proc_encode_char(random_cp(), (utf8proc_uint8_t *)text + n);
        text[n] = 0;
        utf8proc_uint8_t *nfc = utf8proc_NFC((const utf8proc_uint8_t *)text);
        CHECK(nfc != NULL);
        if (!nfc) continue;
        size_t nn = strlen((char *)nfc);
        struct lp_ids a = {0}, b = {0};
        CHECK(lp_tokenizer_encode(tk_json, text, n, false, &a) == LOPAD_OK);
        CHECK(lp_tokenizer_encode(tk_gguf, text, n, false, &b) == LOPAD_OK);
        CHECK(a.n == b.n && !memcmp(a.v, b.v, a.n * sizeof(int32_t)));
        for (size_t i = 0; i < a.n; i++)
            CHECK(a.v[i] >= 0 && a.v[i] < N_BASE);
        char *dec = NULL;
        size_t dl = 0;
        CHECK(lp_tokenizer_decode(tk_json, a.v, a.n, false, &dec, &dl) == LOPAD_OK);
        if (!dec || dl != nn || memcmp(dec, nfc, nn)) bad++;
        lp_free(dec);
        /* re-encoding the NFC text gives the same ids (normalisation is idempotent) */
        struct lp_ids c = {0};
        CHECK(lp_tokenizer_encode(tk_json, (char *)nfc, nn, false, &c) == LOPAD_OK);
        CHECK(c.n == a.n && !memcmp(c.v, a.v, a.n * sizeof(int32_t)));
        lp_ids_free(&a);
        lp_ids_free(&b);
        lp_ids_free(&c);
        free(nfc);
    }
    CHECK_MSG(bad == 0, "%d random texts did not round-trip", bad);

    /* NFC actually applies: "e" + combining acute -> "é" */
    struct lp_ids a = {0}, b = {0};
    CHECK(lp_tokenizer_encode(tk_json, "caf\x65\xcc\x81", 6, false, &a) == LOPAD_OK);
    CHECK(lp_tokenizer_encode(tk_json, "caf\xc3\xa9", 5, false, &b) == LOPAD_OK);
    CHECK(a.n == b.n && !memcmp(a.v, b.v, a.n * sizeof(int32_t)));
    lp_ids_free(&a);
    lp_ids_free(&b);

    /* invalid UTF-8 (bytes that never form NFC-changing characters) round-trips exactly */
    for (int iter = 0; iter < 200; iter++) {
        char text[300];
        size_t n = 1 + rnd() % 250;
        for (size_t i = 0; i < n; i++) {
            uint32_t r = rnd() % 4;
            uint8_t c = r == 0   ? (uint8_t)(0x80 + rnd() % 0x40)
                        : r == 1 ? (uint8_t)(0xF5 + rnd() % 11)
                        : r == 2 ? (uint8_t)(0xC0 + rnd() % 2)
                                 : (uint8_t)(rnd() % 0x80);
            text[i] = (char)c;
        }
        struct lp_ids ids = {0};
        CHECK(lp_tokenizer_encode(tk_json, text, n, false, &ids) == LOPAD_OK);
        char *dec = NULL;
        size_t dl = 0;
        CHECK(lp_tokenizer_decode(tk_json, ids.v, ids.n, false, &dec, &dl) == LOPAD_OK);
        CHECK(dec && dl == n && !memcmp(dec, text, n));
        lp_free(dec);
        lp_ids_free(&ids);
    }
}

/* BPE (heap + linked list, via merges) equals the naive rank-order BPE. */
static void test_bpe_reference(void) {
    if (!tk_json) TEST_SKIP("no tokenizer");
    int bad = 0;
    int start[2100];
    for (int iter = 0; iter < 400; iter++) {
        char w[2100];
        int n = 1 + (int)(rnd() % (iter < 390 ? 40 : 2000));
        const char *alpha = iter % 2 ? "etaoinshrdlucmfwyp" : "abcdefghijklmnopqrstuvwxyz";
        size_t na = strlen(alpha);
        for (int i = 0; i < n; i++)
            w[i] = alpha[rnd() % na];
        struct lp_ids ids = {0};
        CHECK(lp_tokenizer_encode(tk_json, w, (size_t)n, false, &ids) == LOPAD_OK);
        int np = naive_bpe(&K, w, n, K.n, start);
        bool same = ids.n == (size_t)np;
        for (int i = 0; same && i < np; i++)
            same = ids.v[i] == tik_rank(&K, w + start[i], (size_t)(start[i + 1] - start[i]));
        bad += !same;
        lp_ids_free(&ids);
    }
    CHECK_MSG(bad == 0, "%d words differ from the naive BPE", bad);

    /* a long run (one piece) is not quadratic: 256 KiB of letters */
    size_t n = 1 << 18;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = "abcdefghijklmnopqrstuvwxyz"[rnd() % 26];
    struct lp_ids ids = {0};
    double t0 = lp_time();
    CHECK(lp_tokenizer_encode(tk_json, big, n, false, &ids) == LOPAD_OK);
    double dt = lp_time() - t0;
    fprintf(stderr, "  256 KiB single piece: %zu ids in %.3f s\n", ids.n, dt);
    CHECK(dt < 20.0); /* quadratic would be hours; generous for sanitizers */
    char *dec = NULL;
    size_t dl = 0;
    CHECK(lp_tokenizer_decode(tk_json, ids.v, ids.n, false, &dec, &dl) == LOPAD_OK);
    CHECK(dec && dl == n && !memcmp(dec, big, n));
    lp_free(dec);
    lp_ids_free(&ids);
    free(big);
}

static void test_special(void) {
    if (!tk_json) TEST_SKIP("no tokenizer");
    const char *text = "<|im_start|>user\nHi<|im_end|>\n<tool_call><|mask|>";
    struct lp_ids on = {0}, off = {0};
    CHECK(lp_tokenizer_encode(tk_json, text, strlen(text), true, &on) == LOPAD_OK);
    CHECK(lp_tokenizer_encode(tk_json, text, strlen(text), false, &off) == LOPAD_OK);
    /* with parsing: <|im_start|> user \n Hi <|im_end|> \n <tool_call> <|mask|> */
    CHECK(on.n >= 8 && on.v[0] == 151644 && on.v[on.n - 1] == 151666 && on.v[on.n - 2] == 151657);
    int n_special_on = 0, n_special_off = 0;
    for (size_t i = 0; i < on.n; i++)
        n_special_on += on.v[i] >= N_BASE;
    for (size_t i = 0; i < off.n; i++)
        n_special_off += off.v[i] >= N_BASE;
    CHECK(n_special_on == 4);
    /* without: special tokens are plain text, the non-special <tool_call> still matches */
    CHECK(n_special_off == 1);
    for (size_t i = 0; i < off.n; i++)
        CHECK(off.v[i] < N_BASE || off.v[i] == 151657);
    char *a = NULL, *b = NULL;
    CHECK(lp_tokenizer_decode(tk_json, on.v, on.n, false, &a, NULL) == LOPAD_OK);
    CHECK(lp_tokenizer_decode(tk_json, off.v, off.n, false, &b, NULL) == LOPAD_OK);
    CHECK(a && !strcmp(a, text));
    CHECK(b && !strcmp(b, text));
    lp_free(a);
    lp_free(b);
    CHECK(lp_tokenizer_decode(tk_json, on.v, on.n, true, &a, NULL) == LOPAD_OK);
    CHECK(a && !strcmp(a, "user\nHi\n<tool_call>")); /* only special ones are skipped */
    lp_free(a);
    /* adjacent and partial markers */
    struct lp_ids x = {0};
    CHECK(lp_tokenizer_encode(tk_json, "<|im_end|><|im_end|><|im_en", 27, true, &x) == LOPAD_OK);
    CHECK(x.n >= 3 && x.v[0] == 151645 && x.v[1] == 151645 && x.v[2] < N_BASE);
    lp_ids_free(&x);
    lp_ids_free(&on);
    lp_ids_free(&off);
    /* GGUF control / user-defined types give the same result */
    if (tk_gguf) {
        struct lp_ids g = {0};
        CHECK(lp_tokenizer_encode(tk_gguf, text, strlen(text), true, &g) == LOPAD_OK);
        CHECK(lp_tokenizer_encode(tk_json, text, strlen(text), true, &on) == LOPAD_OK);
        CHECK(g.n == on.n && !memcmp(g.v, on.v, g.n * sizeof(int32_t)));
        lp_ids_free(&g);
        lp_ids_free(&on);
    }
}

static void test_decode_stream(void) {
    if (!tk_json) TEST_SKIP("no tokenizer");
    /* "你" = E4 BD A0 fed as three single-byte tokens */
    int32_t e4 = lp_tokenizer_find(tk_json, "\xe4"), bd = lp_tokenizer_find(tk_json, "\xbd"),
            a0 = lp_tokenizer_find(tk_json, "\xa0"), ff = lp_tokenizer_find(tk_json, "\xff"),
            la = lp_tokenizer_find(tk_json, "a");
    CHECK(e4 >= 0 && bd >= 0 && a0 >= 0 && ff >= 0 && la >= 0);
    struct lp_tok_stream s = {0};
    const char *out;
    size_t n;
    CHECK(lp_tok_stream_push(tk_json, &s, e4, false, &out, &n) == LOPAD_OK && n == 0);
    CHECK(lp_tok_stream_push(tk_json, &s, bd, false, &out, &n) == LOPAD_OK && n == 0);
    CHECK(lp_tok_stream_push(tk_json, &s, a0, false, &out, &n) == LOPAD_OK && n == 3 &&
          !memcmp(out, "\xe4\xbd\xa0", 3));
    /* an invalid byte is passed through at once */
    CHECK(lp_tok_stream_push(tk_json, &s, ff, false, &out, &n) == LOPAD_OK && n == 1 &&
          (uint8_t)out[0] == 0xff);
    /* a lead byte followed by a non-continuation: both come out raw */
    CHECK(lp_tok_stream_push(tk_json, &s, e4, false, &out, &n) == LOPAD_OK && n == 0);
    CHECK(lp_tok_stream_push(tk_json, &s, la, false, &out, &n) == LOPAD_OK && n == 2 &&
          !memcmp(out,
                  "\xe4"
                  "a",
                  2));
    /* held bytes come out on flush */
    CHECK(lp_tok_stream_push(tk_json, &s, e4, false, &out, &n) == LOPAD_OK && n == 0);
    lp_tok_stream_flush(&s, &out, &n);
    CHECK(n == 1 && (uint8_t)out[0] == 0xe4);
    CHECK(lp_tok_stream_push(tk_json, &s, 151644, true, &out, &n) == LOPAD_OK && n == 0);
    CHECK(lp_tok_stream_push(tk_json, &s, 151644, false, &out, &n) == LOPAD_OK && n == 12);
    CHECK(lp_tok_stream_push(tk_json, &s, 999999, false, &out, &n) == LOPAD_ERR_ARG);
    lp_tok_stream_free(&s);

    /* decode of invalid sequences: raw bytes, no substitution */
    int32_t ids[] = {e4, la, ff, bd};
    char *d = NULL;
    size_t dl = 0;
    CHECK(lp_tokenizer_decode(tk_json, ids, 4, false, &d, &dl) == LOPAD_OK);
    CHECK(dl == 4 && !memcmp(d,
                             "\xe4"
                             "a\xff\xbd",
                             4));
    lp_free(d);
    int32_t badid[] = {9707, 151667};
    CHECK(lp_tokenizer_decode(tk_json, badid, 2, false, &d, &dl) == LOPAD_ERR_ARG);
    CHECK(strstr(lopad_errmsg(), "151667") != NULL);
    int32_t neg[] = {-5};
    CHECK(lp_tokenizer_decode(tk_json, neg, 1, false, &d, &dl) == LOPAD_ERR_ARG);

    /* complete-prefix helper */
    CHECK(lp_utf8_complete_prefix("ab\xe4\xbd", 4) == 2);
    CHECK(lp_utf8_complete_prefix("ab\xe4\xbd\xa0", 5) == 5);
    CHECK(lp_utf8_complete_prefix("\xf0\x9f\x98", 3) == 0);
    CHECK(lp_utf8_complete_prefix("\xf0\x80", 2) == 2); /* can never be valid */
    CHECK(lp_utf8_complete_prefix("\xed\xa0", 2) == 2); /* surrogate: invalid */
    CHECK(lp_utf8_complete_prefix("\xc3", 1) == 0);
    CHECK(lp_utf8_complete_prefix("", 0) == 0);
}

/* ---- small synthetic tokenizers: the generic code paths and errors */

static bool write_text(const char *path, const char *s) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    fputs(s, f);
    return fclose(f) == 0;
}

/* GPT-2 style: ByteLevel(use_regex=true), ignore_merges, unk token, a tiny vocab
 * with all 256 bytes. */
static char *tiny_json(const char *pre, const char *merges_extra, bool ignore_merges) {
    size_t cap = 1 << 16, o = 0;
    char *s = malloc(cap);
    o += (size_t)snprintf(
        s + o, cap - o,
        "{\"added_tokens\":[{\"id\":300,\"content\":\"<|eot_id|>\",\"special\":true}],"
        "\"normalizer\":null,\"pre_tokenizer\":%s,\"model\":{\"type\":\"BPE\","
        "\"ignore_merges\":%s,\"vocab\":{",
        pre, ignore_merges ? "true" : "false");
    char buf[8];
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        size_t n = lp_bytelevel_encode(&c, 1, buf);
        buf[n] = 0;
        o += (size_t)snprintf(s + o, cap - o, "%s\"%s%s\":%d", b ? "," : "",
                              (buf[0] == '"' || buf[0] == '\\') ? "\\" : "", buf, b);
    }
    o += (size_t)snprintf(s + o, cap - o,
                          ",\"\\u0120t\":256,\"he\":257,\"\\u0120the\":258,\"ab\":259,\"abc\":260,"
                          "\"abcd\":261},\"merges\":[\"\\u0120 t\",\"h e\",\"\\u0120t he\",\"a b\","
                          "[\"ab\",\"c\"]%s]}}",
                          merges_extra);
    return s;
}

static void test_generic_json(void) {
    char path[1200];
    snprintf(path, sizeof path, "%s/tiny.json", dir);
    char *j = tiny_json("{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}",
                        "", false);
    CHECK(write_text(path, j));
    free(j);
    struct lp_tokenizer *t = NULL;
    CHECK_MSG(lp_tokenizer_from_hf_json(path, NULL, &t) == LOPAD_OK, "%s", lopad_errmsg());
    if (!t) return;
    CHECK(lp_tokenizer_n_vocab(t) == 301);
    CHECK(lp_tokenizer_n_patterns(t) == 1 && !lp_tokenizer_nfc(t));
    struct lp_ids ids = {0};
    /* GPT-2 pattern: " the" is one piece -> 258; "abcd" -> ab+c=abc, then abc+d has no merge */
    CHECK(lp_tokenizer_encode(t, "abcd the<|eot_id|>", 18, true, &ids) == LOPAD_OK);
    int32_t want[] = {260, 'd', 258, 300};
    CHECK(ids.n == 4 && !memcmp(ids.v, want, sizeof want));
    lp_ids_free(&ids);
    lp_tokenizer_free(t);

    /* ignore_merges: a piece that is itself a token wins */
    j = tiny_json("{\"type\":\"ByteLevel\",\"use_regex\":true}", "", true);
    CHECK(write_text(path, j));
    free(j);
    CHECK(lp_tokenizer_from_hf_json(path, NULL, &t) == LOPAD_OK);
    if (t) {
        CHECK(lp_tokenizer_encode(t, "abcd", 4, true, &ids) == LOPAD_OK);
        CHECK(ids.n == 1 && ids.v[0] == 261);
        lp_ids_free(&ids);
        lp_tokenizer_free(t);
    }

    /* Sequence of two splits (digits then the GPT-2 pattern) and NFC via Sequence */
    j = tiny_json("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
                  "{\"String\":\"|\"},\"behavior\":\"Isolated\",\"invert\":false},"
                  "{\"type\":\"ByteLevel\",\"use_regex\":true}]}",
                  "", false);
    CHECK(write_text(path, j));
    free(j);
    CHECK_MSG(lp_tokenizer_from_hf_json(path, NULL, &t) == LOPAD_OK, "%s", lopad_errmsg());
    if (t) {
        CHECK(lp_tokenizer_n_patterns(t) == 2);
        CHECK(lp_tokenizer_encode(t, "ab|c", 4, true, &ids) == LOPAD_OK);
        int32_t w2[] = {259, '|', 'c'};
        CHECK(ids.n == 3 && !memcmp(ids.v, w2, sizeof w2));
        lp_ids_free(&ids);
        lp_tokenizer_free(t);
    }

    /* errors: each names the file and the problem */
    struct {
        const char *pre, *merges;
        enum lopad_status want;
        const char *msg;
    } bad[] = {
        {"{\"type\":\"Whitespace\"}", "", LOPAD_ERR_UNSUPPORTED, "Whitespace"},
        {"{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Removed\"}", "",
         LOPAD_ERR_UNSUPPORTED, "Removed"},
        {"{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(unclosed\"},\"behavior\":\"Isolated\"}", "",
         LOPAD_ERR_UNSUPPORTED, "does not compile"},
        {"null", ",\"zz qq\"", LOPAD_ERR_FORMAT, "not in the vocabulary"},
        {"null", ",\"abc\"", LOPAD_ERR_FORMAT, "not two tokens"},
        {"null", ",7", LOPAD_ERR_FORMAT, "merge 5"},
        {"{\"type\":\"ByteLevel\",\"add_prefix_space\":true}", "", LOPAD_ERR_UNSUPPORTED,
         "add_prefix_space"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        j = tiny_json(bad[i].pre, bad[i].merges, false);
        CHECK(write_text(path, j));
        free(j);
        t = NULL;
        enum lopad_status st = lp_tokenizer_from_hf_json(path, NULL, &t);
        CHECK_MSG(st == bad[i].want && t == NULL, "case %zu: status %d", i, (int)st);
        CHECK_MSG(strstr(lopad_errmsg(), bad[i].msg) && strstr(lopad_errmsg(), "tiny.json"),
                  "case %zu: message '%s'", i, lopad_errmsg());
        lp_tokenizer_free(t);
    }
    CHECK(write_text(path, "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}"));
    CHECK(lp_tokenizer_from_hf_json(path, NULL, &t) == LOPAD_ERR_UNSUPPORTED);
    CHECK(strstr(lopad_errmsg(), "Unigram") != NULL);
    CHECK(write_text(path, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-3},\"merges\":[]}}"));
    CHECK(lp_tokenizer_from_hf_json(path, NULL, &t) == LOPAD_ERR_FORMAT);
    CHECK(write_text(path, "{\"model\":"));
    CHECK(lp_tokenizer_from_hf_json(path, NULL, &t) == LOPAD_ERR_FORMAT);
    CHECK(lp_tokenizer_from_hf_json("/nonexistent/tokenizer.json", NULL, &t) == LOPAD_ERR_IO);
    CHECK(strstr(lopad_errmsg(), "/nonexistent/tokenizer.json") != NULL);
    CHECK(lp_tokenizer_load("/nonexistent", &t) == LOPAD_ERR_IO);
    t = NULL;
    if (have_data) { /* a directory with tokenizer.json + tokenizer_config.json */
        CHECK_MSG(lp_tokenizer_load(dir, &t) == LOPAD_OK, "%s", lopad_errmsg());
        CHECK(t && lp_tokenizer_eos_id(t) == 151645);
        lp_tokenizer_free(t);
        t = NULL;
    }

    /* allocation failures anywhere in loading and encoding: clean error, no leak */
    j = tiny_json("{\"type\":\"ByteLevel\",\"use_regex\":true}", "", false);
    CHECK(write_text(path, j));
    free(j);
    int ok_at = -1;
    for (int k = 0; k < 400 && ok_at < 0; k++) {
        lp_alloc_fail_after(k);
        t = NULL;
        enum lopad_status st = lp_tokenizer_from_hf_json(path, NULL, &t);
        if (st == LOPAD_OK) {
            struct lp_ids e = {0};
            st = lp_tokenizer_encode(t, "abcd the abcabc", 15, true, &e);
            lp_ids_free(&e);
            if (st == LOPAD_OK)
                ok_at = k;
            else
                CHECK(st == LOPAD_ERR_NOMEM);
        } else {
            CHECK_MSG(st == LOPAD_ERR_NOMEM, "k=%d st=%d %s", k, (int)st, lopad_errmsg());
        }
        lp_alloc_fail_after(-1);
        lp_tokenizer_free(t);
    }
    CHECK(ok_at > 0);
}

static void test_gguf_errors(void) {
    char path[1200];
    snprintf(path, sizeof path, "%s/notok.gguf", dir);
    struct lp_gguf_writer *w;
    CHECK(lp_gguf_writer_create(path, &w) == LOPAD_OK);
    CHECK(lp_gguf_writer_add_str(w, "general.architecture", "dream") == LOPAD_OK);
    CHECK(lp_gguf_writer_finish(w) == LOPAD_OK);
    struct lp_tokenizer *t = NULL;
    /* no tokenizer.ggml.* key at all: "absent" (UNSUPPORTED; load_opt gives OK + NULL) */
    CHECK(lp_tokenizer_from_gguf(path, &t) == LOPAD_ERR_UNSUPPORTED && !t);
    CHECK(strstr(lopad_errmsg(), "no tokenizer") && strstr(lopad_errmsg(), "notok.gguf"));
    t = (struct lp_tokenizer *)1;
    CHECK(lp_tokenizer_load_opt(path, &t) == LOPAD_OK && !t);
    /* special-id keys alone (converters write them for id-only models) are no tokenizer */
    snprintf(path, sizeof path, "%s/idsonly.gguf", dir);
    CHECK(lp_gguf_writer_create(path, &w) == LOPAD_OK);
    CHECK(lp_gguf_writer_add_str(w, "general.architecture", "dream") == LOPAD_OK);
    struct lp_gguf_value mask = {.type = LP_GGUF_U32, .u64 = 5};
    CHECK(lp_gguf_writer_add_value(w, "tokenizer.ggml.mask_token_id", &mask) == LOPAD_OK);
    CHECK(lp_gguf_writer_finish(w) == LOPAD_OK);
    CHECK(lp_tokenizer_from_gguf(path, &t) == LOPAD_ERR_UNSUPPORTED && !t);
    t = (struct lp_tokenizer *)1;
    CHECK(lp_tokenizer_load_opt(path, &t) == LOPAD_OK && !t);

    /* keys present but broken: FORMAT with the real reason, from both entry points */
    static const struct {
        const char *key, *val, *msg;
    } broken[] = {
        {"tokenizer.ggml.tokens", "x", "'tokenizer.ggml.model' is missing"},
        {"tokenizer.ggml.model", "gpt2", "tokenizer.ggml.tokens"},
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        snprintf(path, sizeof path, "%s/broken.gguf", dir);
        CHECK(lp_gguf_writer_create(path, &w) == LOPAD_OK);
        CHECK(lp_gguf_writer_add_str(w, "general.architecture", "dream") == LOPAD_OK);
        CHECK(lp_gguf_writer_add_str(w, broken[i].key, broken[i].val) == LOPAD_OK);
        CHECK(lp_gguf_writer_finish(w) == LOPAD_OK);
        CHECK(lp_tokenizer_from_gguf(path, &t) == LOPAD_ERR_FORMAT && !t);
        CHECK_MSG(strstr(lopad_errmsg(), broken[i].msg), "%s", lopad_errmsg());
        CHECK(lp_tokenizer_load_opt(path, &t) == LOPAD_ERR_FORMAT && !t);
        CHECK_MSG(strstr(lopad_errmsg(), broken[i].msg), "%s", lopad_errmsg());
    }

    if (!have_data) return;
    snprintf(path, sizeof path, "%s/badpre.gguf", dir);
    CHECK(write_gguf(&K, path, "made-up-pre"));
    CHECK(lp_tokenizer_from_gguf(path, &t) == LOPAD_ERR_UNSUPPORTED && !t);
    CHECK(strstr(lopad_errmsg(), "made-up-pre") != NULL);
    CHECK(write_gguf(&K, path, NULL));
    CHECK(lp_tokenizer_from_gguf(path, &t) == LOPAD_ERR_UNSUPPORTED && !t);
    CHECK(strstr(lopad_errmsg(), "tokenizer.ggml.pre") != NULL);
    /* "llama-bpe" selects the LLaMA-3 pattern and no NFC (the Qwen vocabulary has
     * only single digits, so the digit grouping itself is not visible here) */
    CHECK(write_gguf(&K, path, "llama-bpe"));
    CHECK(lp_tokenizer_from_gguf(path, &t) == LOPAD_OK);
    if (t) {
        CHECK(!lp_tokenizer_nfc(t) && lp_tokenizer_n_patterns(t) == 1);
        struct lp_ids a = {0}, b = {0};
        CHECK(lp_tokenizer_encode(t, "caf\x65\xcc\x81 1234567", 14, false, &a) == LOPAD_OK);
        CHECK(lp_tokenizer_encode(t, "caf\xc3\xa9 1234567", 13, false, &b) == LOPAD_OK);
        CHECK(a.n != b.n || memcmp(a.v, b.v, a.n * sizeof(int32_t)));
        CHECK(a.n >= 7 && a.v[a.n - 1] == tik_rank(&K, "7", 1));
        lp_ids_free(&a);
        lp_ids_free(&b);
        lp_tokenizer_free(t);
    }
}

/* A piece whose bytes all lack a token (no unk) encodes to zero ids; its
 * cached empty result, replayed, must not touch the still-NULL id cache
 * (clang UBSan: "applying zero offset to null pointer"). */
static void test_dropped_bytes_cache(void) {
    char path[1200];
    snprintf(path, sizeof path, "%s/dropped.json", dir);
    CHECK(write_text(path, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},"
                           "\"merges\":[]}}"));
    struct lp_tokenizer *t = NULL;
    CHECK_MSG(lp_tokenizer_from_hf_json(path, NULL, &t) == LOPAD_OK, "%s", lopad_errmsg());
    if (!t) return;
    for (int round = 0; round < 3; round++) {
        struct lp_ids ids = {0};
        CHECK(lp_tokenizer_encode(t, "xy", 2, false, &ids) == LOPAD_OK);
        CHECK(ids.n == 0);
        lp_ids_free(&ids);
    }
    struct lp_ids ids = {0};
    CHECK(lp_tokenizer_encode(t, "ab", 2, false, &ids) == LOPAD_OK);
    CHECK(ids.n == 2 && ids.v[0] == 0 && ids.v[1] == 1);
    lp_ids_free(&ids);
    lp_tokenizer_free(t);
}

/* One added token with id 2^24 - 1 in a tiny tokenizer.json is refused: the
 * per-id tables would otherwise take ~150 MB. Ids a little past the listed
 * entries (holes) still load. */
static void test_id_bound(void) {
    char path[1200];
    snprintf(path, sizeof path, "%s/bigid.json", dir);
    CHECK(write_text(path, "{\"added_tokens\":[{\"id\":16777215,\"content\":\"<x>\"}],"
                           "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}"));
    struct lp_tokenizer *t = NULL;
    long a0 = lp_alloc_count();
    CHECK(lp_tokenizer_from_hf_json(path, NULL, &t) == LOPAD_ERR_FORMAT && !t);
    CHECK_MSG(strstr(lopad_errmsg(), "16777215") && strstr(lopad_errmsg(), "bigid.json"), "%s",
              lopad_errmsg());
    CHECK(lp_alloc_count() - a0 < 100);
    CHECK(write_text(path, "{\"added_tokens\":[{\"id\":60000,\"content\":\"<x>\"}],"
                           "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}"));
    CHECK_MSG(lp_tokenizer_from_hf_json(path, NULL, &t) == LOPAD_OK && t, "%s", lopad_errmsg());
    if (t) CHECK(lp_tokenizer_n_vocab(t) == 60001);
    lp_tokenizer_free(t);
}

/* FIFOs and directories where tokenizer files are expected are refused at
 * once (open() must not block), with an error naming the file. */
static void test_special_files(void) {
    char d[1200], p[1300];
    snprintf(d, sizeof d, "%s/special", dir);
    mkdir(d, 0755);
    snprintf(p, sizeof p, "%s/tokenizer.json", d);
    unlink(p);
    rmdir(p);
    CHECK(mkfifo(p, 0600) == 0);
    struct lp_tokenizer *t = NULL;
    CHECK(lp_tokenizer_load(d, &t) == LOPAD_ERR_IO && !t);
    CHECK_MSG(strstr(lopad_errmsg(), "tokenizer.json") && strstr(lopad_errmsg(), "FIFO"), "%s",
              lopad_errmsg());
    CHECK(lp_tokenizer_load(p, &t) == LOPAD_ERR_IO && !t);
    CHECK_MSG(strstr(lopad_errmsg(), "FIFO"), "%s", lopad_errmsg());
    unlink(p);
    /* a FIFO tokenizer_config.json next to a valid tokenizer.json */
    char *j = tiny_json("null", "", false);
    CHECK(write_text(p, j));
    free(j);
    snprintf(p, sizeof p, "%s/tokenizer_config.json", d);
    unlink(p);
    CHECK(mkfifo(p, 0600) == 0);
    CHECK(lp_tokenizer_load(d, &t) == LOPAD_ERR_IO && !t);
    CHECK_MSG(strstr(lopad_errmsg(), "tokenizer_config.json") && strstr(lopad_errmsg(), "FIFO"),
              "%s", lopad_errmsg());
    unlink(p);
    /* a FIFO given as a GGUF tokenizer */
    snprintf(p, sizeof p, "%s/model.gguf", d);
    unlink(p);
    CHECK(mkfifo(p, 0600) == 0);
    CHECK(lp_tokenizer_load(p, &t) == LOPAD_ERR_IO && !t);
    CHECK_MSG(strstr(lopad_errmsg(), "model.gguf") && strstr(lopad_errmsg(), "FIFO"), "%s",
              lopad_errmsg());
    unlink(p);
}

static void test_throughput(void) {
    if (!tk_json) TEST_SKIP("no tokenizer");
    size_t n;
    char *text = read_all(LOPAD_SOURCE_DIR "/../shared/data/bench/gsm8k_test.jsonl", &n);
    if (!text) TEST_SKIP("gsm8k_test.jsonl absent");
    struct lp_ids ids = {0};
    double t0 = lp_time();
    CHECK(lp_tokenizer_encode(tk_json, text, n, false, &ids) == LOPAD_OK);
    double dt = lp_time() - t0;
    fprintf(stderr, "  gsm8k_test.jsonl (%.2f MB): %zu ids, %.1f MB/s (cold cache)\n", n / 1e6,
            ids.n, n / 1e6 / dt);
    char *dec = NULL;
    size_t dl = 0;
    CHECK(lp_tokenizer_decode(tk_json, ids.v, ids.n, false, &dec, &dl) == LOPAD_OK);
    CHECK(dec && dl == n && !memcmp(dec, text, n));
    lp_free(dec);
    lp_ids_free(&ids);
    free(text);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--make-fixtures")) {
        bool ok = make_fixtures(argv[2]);
        if (!ok) fprintf(stderr, "cannot make fixtures in %s (is ../shared present?)\n", argv[2]);
        tik_free(&K);
        return ok ? 0 : 1;
    }
    snprintf(dir, sizeof dir, "%s/test_tokenizer_tmp", LOPAD_BINARY_DIR);
    mkdir(dir, 0755);
    struct stat sb;
    have_data = stat(DATA_DIR "/qwen.tiktoken", &sb) == 0;
    if (have_data && !make_fixtures(dir)) {
        fprintf(stderr, "cannot build the fixtures in %s\n", dir);
        have_data = false;
        CHECK(0);
    }
    TEST_RUN(test_derivation);
    TEST_RUN(test_load);
    TEST_RUN(test_suite_json);
    TEST_RUN(test_suite_json_pairs);
    TEST_RUN(test_suite_gguf);
    TEST_RUN(test_roundtrip);
    TEST_RUN(test_bpe_reference);
    TEST_RUN(test_special);
    TEST_RUN(test_decode_stream);
    TEST_RUN(test_generic_json);
    TEST_RUN(test_gguf_errors);
    TEST_RUN(test_dropped_bytes_cache);
    TEST_RUN(test_id_bound);
    alarm(120); /* a blocking open() fails the test instead of hanging it */
    TEST_RUN(test_special_files);
    alarm(0);
    TEST_RUN(test_throughput);
    lp_tokenizer_free(tk_json);
    lp_tokenizer_free(tk_pairs);
    lp_tokenizer_free(tk_gguf);
    tik_free(&K);
    return test_report();
}
