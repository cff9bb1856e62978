/*
 * cli.h - what the verbs of the `tcast` command share.
 *
 * The CLI parses arguments and calls libtcast; it holds no logic of its
 * own.  Exit codes: 0 success, 1 runtime error, 2 usage error.  Machine
 * output (--json) is exactly one JSON document on stdout, errors included
 * ({"error":{"code":"TC_ENAME","message":...}}); diagnostics go to stderr
 * as "error: TC_ENAME: message".  Everything printed for people passes
 * through cli_esc(), so names from files and other users cannot drive the
 * terminal.
 */
#ifndef TC_CLI_H
#define TC_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "tcast/client.h"
#include "tcast/view.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE   2

/* One verb of the table in tcast.c. */
struct cli_verb {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary; /* one line for `tcast help` */
	const char *usage;   /* the verb's synopsis and options */
};

/* Options every verb understands, and the verb being run. */
struct cli_global {
	const char *socket; /* --socket, else default */
	bool json;	    /* --json */
	const struct cli_verb *verb;
	/* Under --json: members merged into the error document of a verb
	 * that fails half-way (rm's "removed" so far). */
	json_t *partial;
};

extern struct cli_global cli;

/* Remove --socket/--json from argv wherever they appear (up to "--");
 * returns argc, or -1 after a usage error. */
int cli_take_global(int argc, char **argv);
/* Connect or print why not; NULL on failure. */
tc_client *cli_connect(void);
/* Report a runtime error: "error: NAME: msg" on stderr and, under --json,
 * the error document on stdout.  Returns EXIT_RUNTIME. */
int cli_fail(int rc, const char *msg);

/* The last `lines` lines of the file at `path` (malloc'd), NULL when it
 * cannot be read. */
char *cli_log_tail(const char *path, int lines);

/* Start a service in the background: a child in its own session, stdio on
 * /dev/null, runs run(arg, ready_fd) and writes one byte to ready_fd once
 * it serves.  Returns 0 with *pid_out once it is ready; TC_ENODAEMON when
 * it exited or did not get ready within 60 s (then it is killed and
 * reaped); -errno when it could not be forked. */
int cli_spawn_service(int (*run)(void *arg, int ready_fd), void *arg,
		      pid_t *pid_out);
/* Report a usage error (printf-style message, then the verb's usage) the
 * same way.  Returns EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print a verb's usage on `f`. */
void cli_print_usage(const struct cli_verb *v, FILE *f);

/*
 * Strict option values: the whole string must parse, no sign, no
 * overflow.  Each returns 0, or EXIT_USAGE after a usage error that names
 * the option and the value.
 */
/* "--name VALUE" or "--name=VALUE" at argv[*i]: 1 with *val set (and *i
 * moved past the value), 0 when argv[*i] is another argument, -1 after a
 * usage error when the value is missing. */
int cli_opt(int argc, char **argv, int *i, const char *name, const char **val);
/* The operands of a verb that takes no options: between `min` and `max`
 * of them (anything but "-" that starts with '-' before "--" is an unknown
 * option) into ops[].  Returns their number, or -1 after a usage error. */
int cli_operands(int argc, char **argv, int min, int max, const char **ops);
int cli_parse_uint(const char *opt, const char *val, uint64_t lo, uint64_t hi,
		   uint64_t *out);
/* Byte sizes: 8GiB, 512MiB, 1.5G, 1000000. */
int cli_parse_size(const char *opt, const char *val, uint64_t *out);
/* "cuda", "cuda:N" or "N": a CUDA ordinal. */
int cli_parse_device(const char *opt, const char *val, int32_t *out);
/* One of `choices` (NULL-terminated). */
int cli_parse_choice(const char *opt, const char *val,
		     const char *const *choices);
/* Any non-empty string. */
int cli_parse_nonempty(const char *opt, const char *val);

/* `s` made safe for a terminal: control characters, C1 controls, bidi
 * overrides (U+202A..U+202E, U+2066..U+2069), backslashes and invalid
 * UTF-8 become escapes (\x1b, \u202e, \\).  The result lives until 16
 * more calls; NULL becomes "". */
const char *cli_esc(const char *s);
/* cli_esc for error messages, which quote names already escaped by their
 * maker: backslashes kept as they are. */
const char *cli_esc_msg(const char *s);

/* Human sizes: "1.5 GiB". */
const char *cli_bytes(uint64_t n, char *buf, size_t len);
/* " (1.23 GB/s)", " (512.0 MB/s)", or "" when too little was moved in too
 * little time for a rate to mean anything. */
const char *cli_rate(uint64_t bytes, uint64_t ns, char *buf, size_t len);
/* Print a JSON document pretty (for humans) or as is (--json). */
void cli_print_json(const char *json);
/* Print `j` compact on stdout (one line) and drop the reference. */
void cli_put_json(json_t *j);

/* A progress callback that draws a bar on stderr when it is a terminal.
 * cli_progress_begin() arms it (and a handler that ends the line when
 * the user interrupts); cli_progress_end() ends a line left open, on
 * success and failure alike. */
void cli_progress(uint64_t done, uint64_t total, void *arg);
void cli_progress_begin(void);
void cli_progress_end(void);

int cmd_daemon(int argc, char **argv);
int cmd_global(int argc, char **argv);
int cmd_pull(int argc, char **argv);

/* The daemon's peer server (daemon_peer.c): started before the store when
 * peer_listen is set, stopped after it. */
struct tc__store_config;
int cli_daemon_peer_start(struct tc__store_config *cfg, char *err,
			  size_t errlen);
void cli_daemon_peer_stop(void);
/* Pull po->ref from peers into the daemon `c` is connected to, as a put
 * with options `o` (pull_sink.c): po's sink is set here.  Returns 0 with
 * `res` (and *t_pulled_ns, when not NULL: when the last chunk verified)
 * or a negative code with `err`; `r` says what each source did either
 * way. */
struct tc__peer_pull_opts;
struct tc__peer_pull_result;
int cli_pull_into(tc_client *c, const struct tc_opts *o,
		  struct tc__peer_pull_opts *po, struct tc__peer_pull_result *r,
		  struct tc_result *res, uint64_t *t_pulled_ns, char *err,
		  size_t errlen);
/* A view of REF pulled from peers (pull_sink.c): only the chunks that
 * cover its byte ranges are fetched (each verified), and the local daemon
 * keeps the view under its view id (tc_view_attach; device >= 0: with a
 * replica on that GPU).  po's sink is set here.  Returns 0 with `out` or
 * a negative code with `err`; `r` says what each source did either way
 * (want_bytes: what was pulled). */
struct cli_view_pulled {
	char kept_id[128];     /* the kept view's content id */
	char view_id[128];     /* its key */
	uint64_t bytes;	       /* the view's byte space */
	uint64_t bytes_needed; /* source bytes its ranges cover */
	bool held;	       /* kept here already: nothing pulled */
};
int cli_pull_view(tc_client *c, const tc_view *v, int32_t device,
		  struct tc__peer_pull_opts *po, struct tc__peer_pull_result *r,
		  struct cli_view_pulled *out, uint64_t *t_pulled_ns, char *err,
		  size_t errlen);
int cmd_import(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
/* tcast inspect REF --view SPEC [--keep] [--device D] (cmd_view.c). */
int cli_inspect_view(const char *ref, const char *spec, bool keep,
		     int32_t device);
int cmd_rm(int argc, char **argv);
int cmd_keys(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_doctor(int argc, char **argv);

/* Sources of REF (key or id) from the global store, asked through the
 * local daemon (cmd_global.c); reports its own errors. */
struct tc__gsp_source;
int cli_cluster_resolve(const char *ref, uint32_t max, char *id, uint64_t *gen,
			struct tc__gsp_source *src, uint32_t *n);
/* The same, quiet: returns 0 or a negative code with `err` set. */
int cli_cluster_sources(const char *ref, uint32_t max, char *id, uint64_t *gen,
			struct tc__gsp_source *src, uint32_t *n, char *err,
			size_t errlen);

#endif /* TC_CLI_H */
