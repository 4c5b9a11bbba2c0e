/*
 * test_chat.c - chat prompt rendering: ChatML (Dream / DiffuCoder / Qwen) and
 * LLaMA-3 headers (LLaDA), default system prompts, multi-turn, template
 * detection from real-looking templates, errors.
 */
#include <string.h>

#include "test.h"
#include "model/chat.h"

/* templates as they appear (JSON-decoded) in the models' tokenizer_config.json */
static const char *DREAM_TMPL =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

static const char *QWEN25_TMPL =
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0]['role'] == 'system' %}"
    "{{- messages[0]['content'] }}{%- else %}{{- 'You are Qwen, created by Alibaba Cloud. You are "
    "a helpful assistant.' }}{%- endif %}{%- else %}{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}{%- endif %}{%- endif %}";

static const char *LLADA_TMPL =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

static void expect(const struct lp_chat_style *st, const struct lp_chat_msg *m, int n,
                   const char *sys, bool gen, const char *want) {
    char *out = NULL;
    size_t len = 0;
    enum lopad_status s = lp_chat_render(st, m, n, sys, gen, &out, &len);
    CHECK_MSG(s == LOPAD_OK, "%s", lopad_errmsg());
    CHECK_MSG(out && !strcmp(out, want) && len == strlen(want), "got\n%s\nwant\n%s", out ? out : "",
              want);
    lp_free(out);
}

static void test_detect(void) {
    struct lp_chat_style st;
    CHECK(lp_chat_style_detect(DREAM_TMPL, -1, NULL, &st) == LOPAD_OK);
    CHECK(st.format == LP_CHAT_CHATML &&
          !strcmp(st.default_system, "You are a helpful assistant."));
    CHECK(!strcmp(lp_chat_format_name(st.format), "chatml"));

    CHECK(lp_chat_style_detect(QWEN25_TMPL, -1, NULL, &st) == LOPAD_OK);
    CHECK(st.format == LP_CHAT_CHATML);
    CHECK_MSG(!strcmp(st.default_system,
                      "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
              "'%s'", st.default_system);

    /* ChatML without a default system prompt */
    CHECK(lp_chat_style_detect("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n' + "
                               "m['content'] + '<|im_end|>\\n'}}{% endfor %}",
                               -1, NULL, &st) == LOPAD_OK);
    CHECK(st.format == LP_CHAT_CHATML && st.default_system[0] == 0);

    CHECK(lp_chat_style_detect(LLADA_TMPL, -1, NULL, &st) == LOPAD_OK);
    CHECK(st.format == LP_CHAT_LLAMA3 && !strcmp(st.bos, "<|startoftext|>") && st.trim);
    CHECK(!strcmp(lp_chat_format_name(st.format), "llama3"));
    CHECK(lp_chat_style_detect(LLADA_TMPL, -1, "<|begin_of_text|>", &st) == LOPAD_OK);
    CHECK(!strcmp(st.bos, "<|begin_of_text|>"));

    /* by architecture when there is no template */
    CHECK(lp_chat_style_detect(NULL, LOPAD_ARCH_DREAM, NULL, &st) == LOPAD_OK);
    CHECK(st.format == LP_CHAT_CHATML &&
          !strcmp(st.default_system, "You are a helpful assistant."));
    CHECK(lp_chat_style_detect(NULL, LOPAD_ARCH_LLADA, NULL, &st) == LOPAD_OK);
    CHECK(st.format == LP_CHAT_LLAMA3 && !strcmp(st.bos, "<|startoftext|>") && st.trim);

    CHECK(lp_chat_style_detect(NULL, 7, NULL, &st) == LOPAD_ERR_ARG);
    CHECK(lp_chat_style_detect("{{ messages }} [INST]", -1, NULL, &st) == LOPAD_ERR_UNSUPPORTED);
    CHECK(strstr(lopad_errmsg(), "not recognised") != NULL);
}

static void test_chatml(void) {
    struct lp_chat_style st;
    CHECK(lp_chat_style_detect(DREAM_TMPL, -1, NULL, &st) == LOPAD_OK);
    struct lp_chat_msg one[] = {{"user", "What is 2+2?"}};
    expect(&st, one, 1, NULL, true,
           "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
           "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
    /* explicit system prompt replaces the default */
    expect(&st, one, 1, "Be brief.", true,
           "<|im_start|>system\nBe brief.<|im_end|>\n"
           "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
    /* a system message in the conversation also does; multi-turn; no generation prompt */
    struct lp_chat_msg multi[] = {
        {"system", "S"}, {"user", "  hi  "}, {"assistant", "hello"}, {"user", "more"}};
    expect(&st, multi, 4, NULL, false,
           "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n  hi  <|im_end|>\n"
           "<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>user\nmore<|im_end|>\n");
    /* without a default system prompt */
    st.default_system[0] = 0;
    expect(&st, one, 1, NULL, true,
           "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
    expect(&st, NULL, 0, NULL, false, "");

    char *out = NULL;
    CHECK(lp_chat_render(&st, multi, 4, "X", true, &out, NULL) == LOPAD_ERR_ARG && !out);
    struct lp_chat_msg bad[] = {{"user", NULL}};
    CHECK(lp_chat_render(&st, bad, 1, NULL, true, &out, NULL) == LOPAD_ERR_ARG && !out);
}

static void test_llama3(void) {
    struct lp_chat_style st;
    CHECK(lp_chat_style_detect(LLADA_TMPL, -1, NULL, &st) == LOPAD_OK);
    struct lp_chat_msg one[] = {{"user", " What is 2+2?\n"}};
    expect(&st, one, 1, NULL, true,
           "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\n");
    /* no default system prompt for LLaDA; explicit one goes first, after BOS */
    expect(&st, one, 1, "Be brief.", true,
           "<|startoftext|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\n");
    struct lp_chat_msg multi[] = {{"user", "a"}, {"assistant", "b"}, {"user", "c"}};
    expect(&st, multi, 3, NULL, false,
           "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\na<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\nb<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nc<|eot_id|>");
    /* a template without | trim keeps the content as is */
    st.trim = false;
    expect(&st, one, 1, NULL, false,
           "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\n What is 2+2?\n<|eot_id|>");
}

static void test_alloc_failure(void) {
    struct lp_chat_style st;
    CHECK(lp_chat_style_detect(NULL, LOPAD_ARCH_DREAM, NULL, &st) == LOPAD_OK);
    struct lp_chat_msg one[] = {{"user", "hello"}};
    lp_alloc_fail_after(0);
    char *out = NULL;
    CHECK(lp_chat_render(&st, one, 1, NULL, true, &out, NULL) == LOPAD_ERR_NOMEM && !out);
    lp_alloc_fail_after(-1);
}

int main(void) {
    TEST_RUN(test_detect);
    TEST_RUN(test_chatml);
    TEST_RUN(test_llama3);
    TEST_RUN(test_alloc_failure);
    return test_report();
}
