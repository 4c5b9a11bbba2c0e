/*
 * atomic_file.h - write an output file so that it appears complete or not at
 * all, and never through a name someone else planted.
 *
 * lp_atomic_begin(target) creates a private staging directory next to target
 * (mkdtemp: exclusive, mode 0700, ".<name>.lopad-XXXXXX"). Nobody else can
 * create names inside it, so neither the staged file ("<dir>/data", opened by
 * lp_atomic_open with O_CREAT|O_EXCL|O_NOFOLLOW) nor a writer that makes its
 * own temporary name there (the GGUF writer's "<staged>.tmp.<pid>") can be
 * redirected by a symlink. lp_atomic_commit fsyncs, renames the staged file
 * over target (rename replaces a symlink at target, never follows it), removes
 * the directory and syncs the parent directory. lp_atomic_abort removes it all.
 *
 * While something is staged, SIGINT, SIGTERM and SIGHUP (those still at their
 * default action) remove the staging directory and its files, then end the
 * process as the signal would have (the handler is async-signal-safe). Up to
 * LP_ATOMIC_SLOTS files are covered at once; more still work, unprotected.
 */
#ifndef LP_ATOMIC_FILE_H
#define LP_ATOMIC_FILE_H

#include <stddef.h>
#include "common.h"

#define LP_ATOMIC_SLOTS 4

struct lp_atomic_file {
    char *target; /* the final path */
    char *dir;    /* the private staging directory */
    char *staged; /* "<dir>/data": what is renamed over target */
    char *extra;  /* another name in dir a writer may leave behind, or NULL */
    int fd;       /* open on staged after lp_atomic_open, else -1 */
    int slot;     /* signal-cleanup slot, -1 when none */
};

/* Create the staging directory for target. Errors (LOPAD_ERR_IO) name the
 * directory and the reason. On failure nothing is left to abort. */
enum lopad_status lp_atomic_begin(const char *target, struct lp_atomic_file *af);

/* Create the staged file exclusively and open it for writing (af->fd). */
enum lopad_status lp_atomic_open(struct lp_atomic_file *af);

/* Write all n bytes to af->fd (retries short writes and EINTR). */
enum lopad_status lp_atomic_write(struct lp_atomic_file *af, const void *data, size_t n);

/* Also remove `suffix` appended to the staged path on abort / signal (a
 * writer's own temporary name, e.g. ".tmp.<pid>"). */
enum lopad_status lp_atomic_also(struct lp_atomic_file *af, const char *suffix);

/* Sync and close af->fd (if open), rename staged over target, remove the
 * directory. On failure everything staged is removed (target untouched). */
enum lopad_status lp_atomic_commit(struct lp_atomic_file *af);

/* Remove everything staged; target untouched. Safe on a zeroed or finished af. */
void lp_atomic_abort(struct lp_atomic_file *af);

#endif
