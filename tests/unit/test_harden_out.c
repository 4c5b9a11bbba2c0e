/*
 * test_harden_out.c - output files (src/core/atomic_file.c, used by
 * lopad_model_save_gguf and `lopad logits`): written in a private staging
 * directory and renamed, so a symlink planted at a temporary name is never
 * followed, an error leaves neither a partial file nor a temporary one, and
 * SIGINT / SIGTERM during a write remove the temporary files.
 */
#include "test.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "core/atomic_file.h"
#include "core/common.h"
#include "model/synthetic.h"

#define TMP LOPAD_BINARY_DIR "/test_tmp_harden_out"

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

static char *read_text(const char *path, char *buf, size_t n) {
    buf[0] = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return buf;
    size_t k = fread(buf, 1, n - 1, f);
    buf[k] = 0;
    fclose(f);
    return buf;
}

/* A fresh empty directory under TMP. */
static const char *fresh_dir(const char *name) {
    static char p[512];
    snprintf(p, sizeof p, "rm -rf '%s/%s' && mkdir -p '%s/%s'", TMP, name, TMP, name);
    if (system(p) != 0) exit(2);
    snprintf(p, sizeof p, "%s/%s", TMP, name);
    return p;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Names in dir other than . and .., sorted and joined with spaces into out. */
static int list_dir(const char *dir, char *out, size_t n) {
    DIR *d = opendir(dir);
    char names[64][256];
    const char *ptr[64];
    int count = 0;
    out[0] = 0;
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d)) && count < 64) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(names[count], sizeof names[count], "%s", e->d_name);
        ptr[count] = names[count];
        count++;
    }
    closedir(d);
    qsort(ptr, (size_t)count, sizeof ptr[0], cmp_str);
    for (int i = 0; i < count; i++) {
        size_t l = strlen(out);
        snprintf(out + l, n - l, "%s ", ptr[i]);
    }
    return count;
}

static void expect_only(const char *dir, const char *names, int count) {
    char got[2048];
    int n = list_dir(dir, got, sizeof got);
    CHECK_MSG(n == count && !strcmp(got, names), "%s holds [%s], want [%s]", dir, got, names);
}

static void test_commit_and_abort(void) {
    const char *d = fresh_dir("basic");
    char target[512], victim[512], buf[64];
    snprintf(target, sizeof target, "%s/out.bin", d);
    snprintf(victim, sizeof victim, "%s/victim", d);
    struct lp_atomic_file af;
    CHECK(lp_atomic_begin(target, &af) == LOPAD_OK);
    CHECK(lp_atomic_open(&af) == LOPAD_OK && lp_atomic_write(&af, "hello", 5) == LOPAD_OK);
    CHECK(access(target, F_OK) != 0); /* nothing at the target before the commit */
    CHECK(lp_atomic_commit(&af) == LOPAD_OK);
    CHECK(!strcmp(read_text(target, buf, sizeof buf), "hello"));
    expect_only(d, "out.bin ", 1);
    /* a symlink at the target is replaced, not followed */
    write_text(victim, "secret");
    unlink(target);
    CHECK(symlink(victim, target) == 0);
    CHECK(lp_atomic_begin(target, &af) == LOPAD_OK);
    CHECK(lp_atomic_open(&af) == LOPAD_OK && lp_atomic_write(&af, "new", 3) == LOPAD_OK);
    CHECK(lp_atomic_commit(&af) == LOPAD_OK);
    struct stat sb;
    CHECK(lstat(target, &sb) == 0 && S_ISREG(sb.st_mode));
    CHECK(!strcmp(read_text(victim, buf, sizeof buf), "secret"));
    /* abort: the old target stays as it was, no temporary is left */
    CHECK(lp_atomic_begin(target, &af) == LOPAD_OK);
    CHECK(lp_atomic_open(&af) == LOPAD_OK && lp_atomic_write(&af, "partial", 7) == LOPAD_OK);
    lp_atomic_abort(&af);
    lp_atomic_abort(&af); /* twice is harmless */
    CHECK(!strcmp(read_text(target, buf, sizeof buf), "new"));
    /* an output the rename cannot replace (a directory): error, nothing left */
    char sub[512];
    snprintf(sub, sizeof sub, "%s/adir", d);
    mkdir(sub, 0755);
    CHECK(lp_atomic_begin(sub, &af) == LOPAD_OK);
    CHECK(lp_atomic_open(&af) == LOPAD_OK && lp_atomic_write(&af, "x", 1) == LOPAD_OK);
    CHECK(lp_atomic_commit(&af) == LOPAD_ERR_IO && strstr(lopad_errmsg(), "adir"));
    expect_only(d, "adir out.bin victim ", 3);
    /* a directory that does not exist: the reason is in the message */
    char nodir[512];
    snprintf(nodir, sizeof nodir, "%s/missing/out.bin", d);
    CHECK(lp_atomic_begin(nodir, &af) == LOPAD_ERR_IO &&
          strstr(lopad_errmsg(), "No such file or directory"));
    CHECK(lp_atomic_begin(TMP "/", &af) == LOPAD_ERR_ARG);
}

/* The staging directory cannot be entered by others: a symlink planted in the
 * target directory under any predictable name is never written through. */
static void test_planted_symlink_save(void) {
    const char *d = fresh_dir("planted");
    char target[512], victim[512], trap[600], buf[64];
    snprintf(target, sizeof target, "%s/m.gguf", d);
    snprintf(victim, sizeof victim, "%s/victim", d);
    write_text(victim, "secret");
    lopad_model *m = NULL;
    CHECK(lp_model_synthetic("tiny", LOPAD_TYPE_F32, 1, &m) == LOPAD_OK);
    if (!m) return;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* the old temporary name, "<out>.tmp.<pid>" */
        snprintf(trap, sizeof trap, "%s.tmp.%ld", target, (long)getpid());
        if (symlink(victim, trap) != 0) _exit(3);
        _exit(lopad_model_save_gguf(m, target, LOPAD_TYPE_Q8_0) == LOPAD_OK ? 0 : 4);
    }
    int ws;
    waitpid(pid, &ws, 0);
    CHECK_MSG(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "child status %d", ws);
    CHECK(!strcmp(read_text(victim, buf, sizeof buf), "secret"));
    snprintf(trap, sizeof trap, "%s.tmp.%ld", target, (long)pid);
    struct stat sb;
    CHECK(lstat(trap, &sb) == 0 && S_ISLNK(sb.st_mode)); /* the trap was set, and stays unused */
    unlink(trap);
    CHECK(lstat(target, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 1000);
    lopad_model *back = NULL;
    CHECK(lopad_model_load(target, NULL, &back) == LOPAD_OK);
    lopad_model_free(back);
    /* a save failing half-way (the tokenizer of the model's directory is
     * broken JSON, read after the tensors are described) leaves the old
     * target as it was and no temporary file */
    char tok[600];
    snprintf(tok, sizeof tok, "%s/tokenizer.json", d);
    write_text(tok, "{\"model\": [");
    write_text(target, "old");
    unlink(victim);
    char *path = m->path;
    const char *format = m->format;
    m->path = (char *)d;
    m->format = "hf";
    CHECK(lopad_model_save_gguf(m, target, LOPAD_TYPE_F16) == LOPAD_ERR_FORMAT);
    m->path = path;
    m->format = format;
    CHECK(!strcmp(read_text(target, buf, sizeof buf), "old"));
    expect_only(d, "m.gguf tokenizer.json ", 2);
    lopad_model_free(m);
}

/* A tokenizer.json of a few bytes with one huge added id: refused (it is
 * outside the model's vocabulary) instead of sizing every table by it. */
static void test_huge_token_id(void) {
    const char *d = fresh_dir("huge_id");
    char tok[600], target[600];
    snprintf(tok, sizeof tok, "%s/tokenizer.json", d);
    snprintf(target, sizeof target, "%s/m.gguf", d);
    write_text(tok, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                    " \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"added_tokens\": "
                    "[{\"id\": 16777215, \"content\": \"<x>\", \"special\": true}]}");
    lopad_model *m = NULL;
    CHECK(lp_model_synthetic("tiny", LOPAD_TYPE_F32, 1, &m) == LOPAD_OK);
    if (!m) return;
    char *path = m->path;
    const char *format = m->format;
    m->path = (char *)d;
    m->format = "hf";
    CHECK(lopad_model_save_gguf(m, target, -1) == LOPAD_ERR_FORMAT);
    CHECK_MSG(strstr(lopad_errmsg(), "id 16777215, outside the model's vocabulary (ids 0..299)"),
              "%s", lopad_errmsg());
    expect_only(d, "tokenizer.json ", 1);
    /* the same file with an id inside the vocabulary converts */
    write_text(tok, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []},"
                    " \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"added_tokens\": "
                    "[{\"id\": 299, \"content\": \"<x>\", \"special\": true}]}");
    CHECK_MSG(lopad_model_save_gguf(m, target, -1) == LOPAD_OK, "%s", lopad_errmsg());
    m->path = path;
    m->format = format;
    lopad_model_free(m);
}

/* A child stages a file and waits; the signal removes the staging directory
 * and the child dies of that signal. */
static void signal_case(int sig) {
    const char *d = fresh_dir(sig == SIGINT ? "sigint" : "sigterm");
    char target[512];
    snprintf(target, sizeof target, "%s/out.bin", d);
    int p[2];
    CHECK(pipe(p) == 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        struct lp_atomic_file af;
        if (lp_atomic_begin(target, &af) || lp_atomic_open(&af) ||
            lp_atomic_write(&af, "data", 4) || lp_atomic_also(&af, ".tmp.1"))
            _exit(3);
        write_text(af.extra, "writer temp"); /* a writer's own temporary name */
        if (write(p[1], "r", 1) != 1) _exit(4);
        for (;;)
            pause();
    }
    close(p[1]);
    char c;
    CHECK(read(p[0], &c, 1) == 1);
    close(p[0]);
    char names[512];
    CHECK(list_dir(d, names, sizeof names) == 1 && strstr(names, ".out.bin.lopad-"));
    kill(pid, sig);
    int ws;
    waitpid(pid, &ws, 0);
    CHECK_MSG(WIFSIGNALED(ws) && WTERMSIG(ws) == sig, "child status %d", ws);
    expect_only(d, "", 0);
}

static void test_signals(void) {
    signal_case(SIGINT);
    signal_case(SIGTERM);
}

/* Ctrl-C in the middle of a real save (a Dream-7B-wide layer requantised to
 * Q4_0 takes seconds): no temporary file or directory is left. */
static void test_sigint_during_save(void) {
    const char *d = fresh_dir("sigint_save");
    char target[512], names[2048];
    snprintf(target, sizeof target, "%s/big.gguf", d);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        lopad_model *m = NULL;
        if (lp_model_synthetic("dream-7b:1", LOPAD_TYPE_Q8_0, 1, &m)) _exit(3);
        _exit(lopad_model_save_gguf(m, target, LOPAD_TYPE_Q4_0) ? 4 : 0);
    }
    /* wait for the writer's temporary file to hold data, then interrupt */
    bool seen = false;
    double t0 = lp_time();
    while (!seen && lp_time() - t0 < 120) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "find '%s' -name '*.tmp.*' -size +64k | grep -q .", d);
        seen = system(cmd) == 0;
        if (!seen) {
            int ws;
            if (waitpid(pid, &ws, WNOHANG) == pid) break; /* it finished first */
            nanosleep(&(struct timespec){0, 2000000}, NULL);
        }
    }
    CHECK_MSG(seen, "the save never showed a temporary file");
    if (!seen) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return;
    }
    kill(pid, SIGINT);
    int ws;
    waitpid(pid, &ws, 0);
    CHECK_MSG(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGINT, "child status %d", ws);
    int n = list_dir(d, names, sizeof names);
    CHECK_MSG(n == 0, "left behind: %s", names);
}

int main(void) {
    mkdir(TMP, 0755);
    TEST_RUN(test_commit_and_abort);
    TEST_RUN(test_planted_symlink_save);
    TEST_RUN(test_huge_token_id);
    TEST_RUN(test_signals);
    TEST_RUN(test_sigint_during_save);
    return test_report();
}
