/*
 * test_eval_sandbox.c - the code-execution sandbox of `lopad eval` (cli/eval_score.c,
 * compiled into this test): programs that try to write outside their private /tmp,
 * reach the network, outlive the timeout through setsid() + fork(), fork without
 * end or take all memory are contained; without a working bwrap code is refused
 * unless unsafe execution is allowed.
 */
#include "../../cli/eval_score.c"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "test.h"

static bool have_sandbox;

/* the sandbox is probed again (the probe is cached in eval_score.c) */
static void reprobe(void) {
    probe_state = -1;
}

static enum lp_exec_result run(const char *program, double timeout_s) {
    return lp_eval_exec_python(program, timeout_s);
}

/* processes whose command line holds tag (sleepers left by a program); killed
 * when kill_them (clean-up after a failed check) */
static int scan_procs(const char *tag, bool kill_them) {
    DIR *d = opendir("/proc");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0])) continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        for (size_t i = 0; i < len; i++)
            if (!buf[i]) buf[i] = ' ';
        buf[len] = 0;
        if (strstr(buf, tag)) {
            n++;
            if (kill_them) kill((pid_t)atoi(e->d_name), SIGKILL);
        }
    }
    closedir(d);
    return n;
}

/* wait up to 2 s for the processes tagged tag to be gone; their count */
static int procs_after(const char *tag) {
    int n = scan_procs(tag, false);
    for (int i = 0; i < 100 && n > 0; i++) {
        struct timespec nap = {0, 20000000};
        nanosleep(&nap, NULL);
        n = scan_procs(tag, false);
    }
    if (n) scan_procs(tag, true);
    return n;
}

static void test_basic_results(void) {
    if (!have_sandbox) TEST_SKIP("bwrap absent");
    CHECK(run("assert 2 + 3 == 5\n", 10) == LP_EXEC_PASS);
    CHECK(run("assert 2 + 3 == 6\n", 10) == LP_EXEC_FAIL);
    CHECK(run("def f(:\n", 10) == LP_EXEC_FAIL);
    CHECK(run("while True:\n    pass\n", 1) == LP_EXEC_TIMEOUT);
    /* the program is in a private /tmp, its working directory, and may write there */
    CHECK(run("import os\nassert os.getcwd() == '/tmp'\nopen('x', 'w').write('y')\n"
              "assert open('/tmp/x').read() == 'y'\n",
              10) == LP_EXEC_PASS);
    /* own PID namespace, not root */
    CHECK(run("import os\nassert os.getpid() < 10, os.getpid()\nassert os.getuid() != 0 or "
              "open('/proc/self/uid_map').read().split()[1] != '0'\n",
              10) == LP_EXEC_PASS);
}

static void test_no_writes_outside(void) {
    if (!have_sandbox) TEST_SKIP("bwrap absent");
    char target[4][512];
    const char *home = getenv("HOME");
    snprintf(target[0], sizeof target[0], "%s/sandbox-escape-%d", LOPAD_BINARY_DIR, (int)getpid());
    snprintf(target[1], sizeof target[1], "%s/sandbox-escape-%d", LOPAD_SOURCE_DIR, (int)getpid());
    snprintf(target[2], sizeof target[2], "%s/sandbox-escape-%d", home ? home : "/root",
             (int)getpid());
    snprintf(target[3], sizeof target[3], "/usr/sandbox-escape-%d", (int)getpid());
    for (int i = 0; i < 4; i++) {
        char prog[2400];
        snprintf(prog, sizeof prog,
                 "import os\nos.makedirs(os.path.dirname('%.300s'), exist_ok=True)\n"
                 "open('%.300s', 'w').write('escaped')\n",
                 target[i], target[i]);
        /* a path under /tmp exists in the sandbox too (its private /tmp): there only the
         * host side is checked */
        enum lp_exec_result r = run(prog, 10);
        CHECK_MSG(r == LP_EXEC_FAIL || !strncmp(target[i], "/tmp/", 5), "%s", target[i]);
        CHECK_MSG(access(target[i], F_OK) != 0, "%s was written", target[i]);
        unlink(target[i]);
    }
    /* the system is read-only even where a directory exists in the sandbox */
    CHECK(run("open('/usr/bin/lopad-escape', 'w')\n", 10) == LP_EXEC_FAIL);
    CHECK(access("/usr/bin/lopad-escape", F_OK) != 0);
    /* a file over the size limit fails */
    CHECK(run("open('big', 'wb').write(b'x' * (32 << 20))\n", 10) == LP_EXEC_FAIL);
}

static void test_no_network(void) {
    if (!have_sandbox) TEST_SKIP("bwrap absent");
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    CHECK(s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 && listen(s, 4) == 0 &&
          getsockname(s, (struct sockaddr *)&a, &al) == 0);
    char prog[400];
    snprintf(prog, sizeof prog,
             "import socket\ns = socket.create_connection(('127.0.0.1', %d), timeout=3)\n"
             "s.sendall(b'escaped')\n",
             ntohs(a.sin_port));
    CHECK(run(prog, 10) == LP_EXEC_FAIL);
    CHECK(accept(s, NULL, NULL) < 0); /* nobody connected */
    close(s);
    /* name resolution fails too */
    CHECK(run("import socket\nsocket.getaddrinfo('example.com', 80)\n", 10) == LP_EXEC_FAIL);
}

static void test_setsid_child_killed(void) {
    if (!have_sandbox) TEST_SKIP("bwrap absent");
    const char *tag = "47.0713";
    /* a grandchild in its own session sleeps; the program then loops past the timeout */
    const char *prog = "import os, time\n"
                       "if os.fork() == 0:\n"
                       "    os.setsid()\n"
                       "    if os.fork() == 0:\n"
                       "        os.execv('/bin/sleep', ['sleep', '47.0713'])\n"
                       "    os._exit(0)\n"
                       "time.sleep(0.5)\n"
                       "while True:\n"
                       "    pass\n";
    CHECK(run(prog, 1.5) == LP_EXEC_TIMEOUT);
    int left = procs_after(tag);
    CHECK_MSG(left == 0, "%d sleepers outlived the timeout", left);
    /* the same when the program exits before its grandchild */
    const char *quick = "import os, time\n"
                        "if os.fork() == 0:\n"
                        "    os.setsid()\n"
                        "    if os.fork() == 0:\n"
                        "        os.execv('/bin/sleep', ['sleep', '47.0713'])\n"
                        "    os._exit(0)\n"
                        "time.sleep(0.5)\n";
    CHECK(run(quick, 10) == LP_EXEC_PASS);
    left = procs_after(tag);
    CHECK_MSG(left == 0, "%d sleepers outlived the program", left);
}

static void test_fork_bomb(void) {
    if (!have_sandbox) TEST_SKIP("bwrap absent");
    /* bounded, so that a broken limit cannot take the machine: fork must fail long
     * before 400 processes */
    const char *prog = "import os, sys\n"
                       "n = 0\n"
                       "for i in range(400):\n"
                       "    try:\n"
                       "        pid = os.fork()\n"
                       "    except OSError:\n"
                       "        break\n"
                       "    if pid == 0:\n"
                       "        os.execv('/bin/sleep', ['sleep', '58.3109'])\n"
                       "    n += 1\n"
                       "sys.exit(0 if n < 100 else 1)\n";
    CHECK(run(prog, 10) == LP_EXEC_PASS);
    int left = procs_after("58.3109");
    CHECK_MSG(left == 0, "%d bomb processes left", left);
    /* an unbounded one ends at the timeout, with nothing left */
    CHECK(run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
              "        pass\n",
              2) == LP_EXEC_TIMEOUT);
}

static void test_memory_hog(void) {
    if (!have_sandbox) TEST_SKIP("bwrap absent");
    CHECK(run("b = bytearray(8 << 30)\n", 10) == LP_EXEC_FAIL);
    CHECK(run("try:\n    b = bytearray(3 << 30)\nexcept MemoryError:\n    raise SystemExit(0)\n"
              "raise SystemExit(1)\n",
              10) == LP_EXEC_PASS);
}

static void test_refused_without_bwrap(void) {
    const char *ok = "assert 1 + 1 == 2\n";
    char why[1000];
    for (int k = 0; k < 2; k++) { /* missing, and present but not working */
        setenv("LOPAD_BWRAP", k == 0 ? "/nonexistent/bwrap" : "/bin/false", 1);
        reprobe();
        lp_eval_set_unsafe_exec(false);
        CHECK(lp_eval_sandbox_check(why, sizeof why) == 1);
        CHECK_MSG(strstr(why, "bwrap") && strstr(why, "--unsafe-exec"), "%s", why);
        CHECK(run(ok, 10) == LP_EXEC_NOSANDBOX);
        CHECK(!strcmp(lp_exec_result_name(LP_EXEC_NOSANDBOX), "no-sandbox"));
        lp_eval_set_unsafe_exec(true); /* the old unconfined run */
        CHECK(run(ok, 10) == LP_EXEC_PASS);
        CHECK(run("assert False\n", 10) == LP_EXEC_FAIL);
        lp_eval_set_unsafe_exec(false);
    }
    setenv("LOPAD_BWRAP", "", 1); /* empty: no sandbox */
    reprobe();
    CHECK(lp_eval_sandbox_check(why, sizeof why) == 1);
    unsetenv("LOPAD_BWRAP");
    reprobe();
}

int main(void) {
    char *bw = find_exe("bwrap");
    char why[1000];
    have_sandbox = bw && lp_eval_sandbox_check(why, sizeof why) == 0;
    if (bw && !have_sandbox) { /* installed but broken: a failure, not a skip */
        fprintf(stderr, "  FAIL: %s\n", why);
        test_cases_failed++;
    }
    if (!bw) fprintf(stderr, "  SKIP: bwrap absent (scripts/deps.sh --test installs it)\n");
    free(bw);
    TEST_RUN(test_basic_results);
    TEST_RUN(test_no_writes_outside);
    TEST_RUN(test_no_network);
    TEST_RUN(test_setsid_child_killed);
    TEST_RUN(test_fork_bomb);
    TEST_RUN(test_memory_hog);
    TEST_RUN(test_refused_without_bwrap);
    return test_report();
}
