/*
 * cli.h - the subcommands of the imgq program.  Each takes the arguments after its own name
 * (argv[0] is the subcommand name) and returns the process exit status: 0 success, 1 failure
 * of the operation, 2 bad usage.  Errors go to stderr, results to stdout.
 */
#ifndef IMGQ_CLI_H
#define IMGQ_CLI_H

int imgq_cmd_submit(int argc, char **argv);
int imgq_cmd_batch(int argc, char **argv);
int imgq_cmd_job(int argc, char **argv);
int imgq_cmd_cost(int argc, char **argv);
int imgq_cmd_presign(int argc, char **argv);

#endif
