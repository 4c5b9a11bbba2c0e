/*
 * dist.h (cli) - `mpirun -np R lopad COMMAND ...`: joining the job and leaving it
 * (docs/DISTRIBUTED.md). main() calls lp_cli_dist_init() before running a command and
 * passes the command's exit status through lp_cli_dist_exit().
 */
#ifndef LP_CLI_DIST_H
#define LP_CLI_DIST_H

/* Under a launcher with R > 1 ranks: refuse commands that do not run across ranks and
 * a build without MPI (exit status 2, said by rank 0 alone), else join the job
 * (deadline of every exchange: $LOPAD_DIST_TIMEOUT seconds, default 300); ranks > 0
 * then print nothing (stdout and stderr to /dev/null; their fault messages still
 * reach the terminal). Returns 0 to go on, else the exit status. One process: 0. */
int lp_cli_dist_init(int argc, char **argv);
/* The command's exit status rc: a failure ends every rank at once (MPI_Abort), so
 * that none waits for the failed one until its deadline. Returns rc. */
int lp_cli_dist_exit(int rc);

#endif
