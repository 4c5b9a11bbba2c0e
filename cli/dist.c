/* dist.c (cli) - joining and leaving an mpirun job (dist.h). */
#include "dist.h"
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "dist/dist.h"

/* the commands whose decoding runs across ranks (the others would each run alone) */
static const char *const dist_commands[] = {"run", "eval", "serve"};

static int env_rank(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK",
                                       "SLURM_PROCID"};
    for (unsigned i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    return 0;
}

static void quiet(void) {
    int fd = open("/dev/null", O_WRONLY);
    if (fd < 0) return;
    fflush(stdout);
    fflush(stderr);
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
}

int lp_cli_dist_init(int argc, char **argv) {
    const int R = lp_dist_env_size();
    if (R <= 1) return 0;
    const bool speak = env_rank() == 0;
    const char *cmd = argc > 1 ? argv[1] : "";
    if (!lp_dist_built()) {
        if (speak)
            fprintf(stderr,
                    "lopad: this build has no MPI (configured with -DLOPAD_MPI=OFF or without "
                    "OpenMPI's development files), but mpirun started it as one of %d ranks; "
                    "rebuild with MPI or run lopad without mpirun\n",
                    R);
        return 2;
    }
    bool ok = false;
    for (unsigned i = 0; i < sizeof dist_commands / sizeof dist_commands[0]; i++)
        ok |= !strcmp(cmd, dist_commands[i]);
    if (!ok) {
        if (speak)
            fprintf(stderr,
                    "lopad %s: does not run across ranks (mpirun -np %d); only `lopad run`, "
                    "`lopad eval` and `lopad serve` spread their decoding over ranks\n",
                    cmd, R);
        return 2;
    }
    double timeout = 300;
    const char *t = getenv("LOPAD_DIST_TIMEOUT");
    if (t && *t) {
        char *end;
        timeout = strtod(t, &end);
        if (*end || !(timeout > 0)) {
            if (speak)
                fprintf(stderr, "lopad: LOPAD_DIST_TIMEOUT must be seconds > 0, got '%s'\n", t);
            return 2;
        }
    }
    if (!strcmp(cmd, "serve")) {
        /* the server takes SIGINT / SIGTERM with sigwait: block them before MPI starts
         * its threads, which would otherwise take them and end the process */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
    }
    enum lopad_status st = lp_dist_init(timeout);
    if (st != LOPAD_OK) {
        fprintf(stderr, "lopad: %s\n", lopad_errmsg());
        return 1;
    }
    atexit(lp_dist_finalize);
    if (lp_dist_rank(lp_dist_world()) > 0) quiet();
    return 0;
}

int lp_cli_dist_exit(int rc) {
    if (rc != 0 && lp_dist_world()) {
        fflush(NULL);
        lp_dist_abort(rc);
    }
    return rc;
}
