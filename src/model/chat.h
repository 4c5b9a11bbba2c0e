/*
 * chat.h - render a conversation into the prompt text a chat model expects.
 *
 * No Jinja engine: the two template families of the supported models are
 * recognised from their markers and rendered natively.
 *   ChatML (Dream, DiffuCoder, Qwen):
 *       <|im_start|>ROLE\nCONTENT<|im_end|>\n ...  then  <|im_start|>assistant\n
 *     with a default system prompt when the conversation has none (Dream:
 *     "You are a helpful assistant."; read from the template when present).
 *   LLaMA-3 headers (LLaDA):
 *       BOS <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|> ...
 *       then <|start_header_id|>assistant<|end_header_id|>\n\n
 *     BOS ("<|startoftext|>" for LLaDA) only before the first message, content
 *     trimmed of surrounding whitespace when the template says `| trim`.
 * The rendered text contains the special tokens as text: encode it with
 * parse_special = true.
 */
#ifndef LP_CHAT_H
#define LP_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include "../core/common.h"

enum lp_chat_format {
    LP_CHAT_CHATML = 1,
    LP_CHAT_LLAMA3 = 2,
};

struct lp_chat_msg {
    const char *role; /* "system", "user", "assistant", ... */
    const char *content;
};

struct lp_chat_style {
    enum lp_chat_format format;
    char default_system[1024]; /* ChatML: used when no system message is given; "" = none */
    char bos[64];              /* LLaMA-3: text before the first message; "" = none */
    bool trim;                 /* LLaMA-3: strip whitespace around each content */
};

const char *lp_chat_format_name(enum lp_chat_format f); /* "chatml", "llama3" */

/* Choose the style from a chat template (tokenizer_config.json chat_template or
 * GGUF tokenizer.chat_template; NULL when the model has none) and, without a
 * template, from the architecture (enum lopad_arch; -1 = unknown). bos_token is
 * the model's BOS text when known (else NULL: LLaDA's "<|startoftext|>" is used).
 * A template with neither marker -> LOPAD_ERR_UNSUPPORTED. */
enum lopad_status lp_chat_style_detect(const char *tmpl, int arch, const char *bos_token,
                                       struct lp_chat_style *out);

/* Render msgs[0..n) into a NUL-terminated lp_malloc'd string (*len excludes the
 * NUL; len may be NULL). system: an explicit system prompt put first (then
 * msgs must not start with a system message), or NULL for the style's default.
 * add_generation_prompt: end with the assistant header, ready to generate. */
enum lopad_status lp_chat_render(const struct lp_chat_style *style, const struct lp_chat_msg *msgs,
                                 int n, const char *system, bool add_generation_prompt, char **out,
                                 size_t *len);

/* Where the template put its control-token markers in a rendered prompt
 * (lp_chat_render_marked): message text between them stays plain text. */
struct lp_chat_mark {
    size_t off, len;
};
struct lp_chat_marks {
    struct lp_chat_mark *v; /* lp_free */
    int n, cap;
};
enum lopad_status lp_chat_render_marked(const struct lp_chat_style *style,
                                        const struct lp_chat_msg *msgs, int n, const char *system,
                                        bool add_generation_prompt, char **out, size_t *len,
                                        struct lp_chat_marks *marks);

#endif
