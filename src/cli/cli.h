/*
 * cli.h - what the verbs of the `tcast` command share.
 *
 * The CLI parses arguments and calls libtcast; it holds no logic of its
 * own.  Exit codes: 0 success, 1 runtime error, 2 usage error.  Machine
 * output (--json) goes to stdout, diagnostics to stderr as
 * "error: TC_ENAME: message".
 */
#ifndef TC_CLI_H
#define TC_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "tcast/client.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE   2

/* Options every verb understands. */
struct cli_global {
	const char *socket; /* --socket, else default */
	bool json;	    /* --json */
};

extern struct cli_global cli;

/* Remove --socket/--json from argv wherever they appear; returns argc. */
int cli_take_global(int argc, char **argv);
/* Connect or print why not; NULL on failure. */
tc_client *cli_connect(void);
/* Print "error: NAME: msg" and return EXIT_RUNTIME. */
int cli_fail(int rc, const char *msg);
int cli_usage(const char *usage);
/* Human sizes: "1.5 GiB". */
const char *cli_bytes(uint64_t n, char *buf, size_t len);
/* Print a JSON document pretty (for humans) or as is (--json). */
void cli_print_json(const char *json);
/* A progress callback that draws a bar on stderr when it is a terminal. */
void cli_progress(uint64_t done, uint64_t total, void *arg);

int cmd_daemon(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_keys(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_doctor(int argc, char **argv);

#endif /* TC_CLI_H */
