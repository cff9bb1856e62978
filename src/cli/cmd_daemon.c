/*
 * cmd_daemon.c - tcast daemon start|stop|restart|status|logs|run
 *
 * `start` forks the daemon into the background and returns only once its
 * socket accepts connections (or prints why it failed to start); `run`
 * keeps it in the foreground (for systemd, containers and debugging).
 * The daemon writes its log next to its socket unless log_file is set.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "common/log.h"
#include "net/net.h"
#include "store/config.h"
#include "store/server.h"
#include "tcast/errors.h"

/* Read the running daemon's effective configuration (STATUS "config")
 * into `cfg`, so that `restart` keeps what it was given.  Returns 1 when a
 * daemon answered, 0 when none did. */
static int running_config(const char *socket, struct tc__store_config *cfg)
{
	char *doc = NULL, err[512];
	json_t *j = NULL, *v;
	const char *k;
	tc_client *c;
	int got = 0;

	if (tc_client_connect(socket, &c, NULL, 0) < 0)
		return 0;
	if (tc_status_json(c, &doc) == 0)
		j = json_loads(doc, 0, NULL);
	json_object_foreach(json_object_get(j, "config"), k, v)
	{
		got = 1;
		if (!json_is_string(v) ||
		    tc__config_set(cfg, k, json_string_value(v), err,
				   sizeof(err)) < 0)
			fprintf(stderr,
				"warning: the running daemon's setting '%s' "
				"is not kept: %s\n",
				cli_esc(k), cli_esc_msg(err));
	}
	if (!got && j)
		fprintf(stderr,
			"warning: the running daemon does not report "
			"its configuration; restarting with defaults\n");
	json_decref(j);
	tc_free(doc);
	tc_client_close(c);
	return 1;
}

static int set_key(struct tc__store_config *cfg, const char *key,
		   const char *val)
{
	char err[512];
	int rc = tc__config_set(cfg, key, val, err, sizeof(err));

	return rc < 0 ? cli_fail(rc, err) : 0;
}

/* Options of start, run and restart over `cfg` (defaults, or the running
 * daemon's configuration for restart): the config file first, so flags
 * override it wherever they are. */
static int parse_config(int argc, char **argv, struct tc__store_config *cfg)
{
	static const char *const levels[] = { "error", "warn", "info", "debug",
					      NULL };
	static const char *const formats[] = { "text", "json", NULL };
	char err[1024];
	const char *v;
	uint64_t n;
	int rc, m;

	for (int i = 2; i < argc; i++) {
		if ((m = cli_opt(argc, argv, &i, "--config", &v))) {
			if (m < 0 || cli_parse_nonempty("--config", v))
				return EXIT_USAGE;
			rc = tc__config_load(cfg, v, err, sizeof(err));
			if (rc < 0)
				return cli_fail(rc, err);
		}
	}
	if (cli.socket) {
		if (strlen(cli.socket) >= sizeof(cfg->socket))
			return cli_fail(TC_ELIMIT, "socket path too long");
		strcpy(cfg->socket, cli.socket);
	}
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];

		if ((m = cli_opt(argc, argv, &i, "--config", &v))) {
			continue; /* applied above */
		} else if ((m = cli_opt(argc, argv, &i, "--host-memory", &v))) {
			if (m < 0 || cli_parse_size("--host-memory", v, &n))
				return EXIT_USAGE;
			rc = set_key(cfg, "host_memory", v);
		} else if ((m = cli_opt(argc, argv, &i, "--io-threads", &v))) {
			if (m < 0 ||
			    cli_parse_uint("--io-threads", v, 1, 64, &n))
				return EXIT_USAGE;
			rc = set_key(cfg, "io_threads", v);
		} else if ((m = cli_opt(argc, argv, &i, "--log-level", &v))) {
			if (m < 0 || cli_parse_choice("--log-level", v, levels))
				return EXIT_USAGE;
			rc = set_key(cfg, "log_level", v);
		} else if ((m = cli_opt(argc, argv, &i, "--log-file", &v))) {
			if (m < 0 || cli_parse_nonempty("--log-file", v))
				return EXIT_USAGE;
			rc = set_key(cfg, "log_file", v);
		} else if ((m = cli_opt(argc, argv, &i, "--log-format", &v))) {
			if (m < 0 ||
			    cli_parse_choice("--log-format", v, formats))
				return EXIT_USAGE;
			rc = set_key(cfg, "log_format", v);
		} else if ((m = cli_opt(argc, argv, &i, "--metrics-port",
					&v))) {
			if (m < 0 ||
			    cli_parse_uint("--metrics-port", v, 1, 65535, &n))
				return EXIT_USAGE;
			rc = set_key(cfg, "metrics_port", v);
		} else if ((m = cli_opt(argc, argv, &i, "--set", &v))) {
			const char *eq = m > 0 ? strchr(v, '=') : NULL;
			char key[64];

			if (m < 0)
				return EXIT_USAGE;
			if (!eq || eq == v || (size_t)(eq - v) >= sizeof(key))
				return cli_usage_error(
					"--set: '%s' is not KEY=VALUE",
					cli_esc(v));
			snprintf(key, sizeof(key), "%.*s", (int)(eq - v), v);
			rc = set_key(cfg, key, eq + 1);
		} else {
			return cli_usage_error("unknown option '%s'",
					       cli_esc(a));
		}
		if (rc)
			return rc;
	}
	if (!cfg->socket[0])
		return cli_fail(TC_ELIMIT, "default socket path too long");
	return 0;
}

static void side_path(const char *socket, const char *name, char *out,
		      size_t len)
{
	char tmp[PATH_MAX];

	snprintf(tmp, sizeof(tmp), "%s", socket);
	snprintf(out, len, "%s/%s", dirname(tmp), name);
}

/* PID of the daemon serving `socket`, or 0 when none answers. */
static pid_t running_pid(const char *socket)
{
	tc_client *c;
	pid_t pid;

	if (tc_client_connect(socket, &c, NULL, 0) < 0)
		return 0;
	pid = tc_client_daemon_pid(c);
	tc_client_close(c);
	return pid;
}

static int run_foreground(struct tc__store_config *cfg, int ready_fd)
{
	char err[1024];
	FILE *log = NULL;
	int rc;

	tc__log_level = cfg->log_level;
	if (cfg->log_file[0]) {
		log = fopen(cfg->log_file, "a");
		if (!log)
			return cli_fail(-errno, "cannot open the log file");
		tc__log_set_file(log);
		/* A spawned daemon's stderr is /dev/null: what the C library
		 * or a sanitizer prints as the process dies goes to the log
		 * instead, where whoever looks at the death will look. */
		if (ready_fd >= 0)
			dup2(fileno(log), STDERR_FILENO);
	}
	rc = cli_daemon_peer_start(cfg, err, sizeof(err));
	if (rc == 0) {
		rc = tc__server_run(cfg, ready_fd, err, sizeof(err));
		cli_daemon_peer_stop();
	}
	if (rc < 0) {
		tc__log(TC_LOG_ERROR, "cannot start: %s", err);
		if (!log)
			return EXIT_RUNTIME;
		cli_fail(rc, err);
	}
	if (log)
		fclose(log);
	return rc < 0 ? EXIT_RUNTIME : 0;
}

/* Print `text` line by line, escaped (log lines quote client names,
 * keys and paths). */
static void put_escaped_lines(const char *text, FILE *f)
{
	const char *p = text, *nl;

	while (*p) {
		char *line;

		nl = strchr(p, '\n');
		line = strndup(p, nl ? (size_t)(nl - p) : strlen(p));
		if (line)
			fprintf(f, "%s\n", cli_esc(line));
		free(line);
		if (!nl)
			break;
		p = nl + 1;
	}
}

static int daemon_child(void *cfg, int ready_fd)
{
	return run_foreground(cfg, ready_fd);
}

static int start(struct tc__store_config *cfg, json_t **info)
{
	char err[512], logpath[PATH_MAX], msg[4096], *tail;
	pid_t pid, other;
	int rc;

	/* The directory first: one another user owns is refused before we
	 * ask whoever listens there whether it is "our" daemon. */
	rc = tc__sock_prepare_dir(cfg->socket, err, sizeof(err));
	if (rc < 0)
		return cli_fail(rc, err);
	other = running_pid(cfg->socket);
	if (other) {
		snprintf(msg, sizeof(msg),
			 "a daemon (pid %d) already serves '%s'", (int)other,
			 cfg->socket);
		return cli_fail(TC_EEXIST, msg);
	}
	if (!cfg->log_file[0])
		side_path(cfg->socket, "daemon.log", cfg->log_file,
			  sizeof(cfg->log_file));
	snprintf(logpath, sizeof(logpath), "%s", cfg->log_file);
	rc = cli_spawn_service(daemon_child, cfg, &pid);
	if (rc < 0 && rc != TC_ENODAEMON)
		return cli_fail(rc, "cannot start the daemon");
	if (rc == 0) {
		*info = json_pack("{s:i, s:s, s:s}", "pid", (int)pid, "socket",
				  cfg->socket, "log", logpath);
		if (!cli.json)
			printf("tcast daemon started (pid %d, socket %s, log "
			       "%s)\n",
			       (int)pid, cli_esc(cfg->socket),
			       cli_esc(logpath));
		return 0;
	}
	tail = cli_log_tail(logpath, 10);
	snprintf(msg, sizeof(msg), "the daemon did not start; %s%s",
		 tail ? "its log says:\n" : "no log at ",
		 tail ? tail : logpath);
	free(tail);
	return cli_fail(TC_ENODAEMON, msg);
}

/* What stopping drops: the artifacts the daemon holds only in memory.  The
 * status counts them all today; a daemon that keeps durable artifacts
 * reports them apart ("durable_artifacts", "durable_bytes"), and those
 * survive a stop. */
static void volatile_state(const char *socket, long long *arts,
			   long long *bytes)
{
	char *doc = NULL;
	tc_client *c;
	json_t *j = NULL;

	*arts = *bytes = -1;
	if (tc_client_connect(socket, &c, NULL, 0) < 0)
		return;
	if (tc_status_json(c, &doc) == 0)
		j = json_loads(doc, 0, NULL);
	if (j) {
		*arts = json_integer_value(json_object_get(j, "artifacts")) -
			json_integer_value(
				json_object_get(j, "durable_artifacts"));
		*bytes =
			json_integer_value(
				json_object_get(j, "host_used_bytes")) -
			json_integer_value(json_object_get(j, "durable_bytes"));
	}
	json_decref(j);
	tc_free(doc);
	tc_client_close(c);
}

static int stop(const char *socket, int timeout_s, json_t **info)
{
	pid_t pid = running_pid(socket);
	struct timespec ts = { 0, 20 * 1000000 };
	long long arts, bytes;
	bool killed = true;
	char b[32];

	if (!pid) {
		*info = json_pack("{s:b, s:s}", "stopped", 0, "socket", socket);
		if (!cli.json)
			printf("tcast daemon is not running on '%s'\n",
			       cli_esc(socket));
		return 0;
	}
	volatile_state(socket, &arts, &bytes);
	if (kill(pid, SIGTERM) < 0)
		return cli_fail(-errno, "cannot signal the daemon");
	for (int i = 0; i < timeout_s * 50; i++) {
		if (kill(pid, 0) < 0 && errno == ESRCH) {
			killed = false;
			break;
		}
		nanosleep(&ts, NULL);
	}
	if (killed) {
		fprintf(stderr,
			"daemon pid %d did not stop in %d s: killing it\n",
			(int)pid, timeout_s);
		kill(pid, SIGKILL);
	}
	*info = json_pack("{s:b, s:i, s:b, s:I, s:I}", "stopped", 1, "pid",
			  (int)pid, "killed", killed, "dropped_artifacts",
			  (json_int_t)arts, "dropped_bytes", (json_int_t)bytes);
	if (!cli.json) {
		printf("tcast daemon stopped (pid %d)", (int)pid);
		if (arts >= 0)
			printf("; dropped %lld artifact%s (%s) held only in "
			       "memory",
			       arts, arts == 1 ? "" : "s",
			       cli_bytes((uint64_t)(bytes > 0 ? bytes : 0), b,
					 sizeof(b)));
		putchar('\n');
	}
	return 0;
}

static int logs(const char *socket, int argc, char **argv)
{
	char path[PATH_MAX], *tail;
	uint64_t lines = 50;
	int follow = 0, m;
	const char *v;

	for (int i = 2; i < argc; i++) {
		if ((m = cli_opt(argc, argv, &i, "-n", &v))) {
			if (m < 0 ||
			    cli_parse_uint("-n", v, 0, 100000000, &lines))
				return EXIT_USAGE;
		} else if (!strcmp(argv[i], "-f")) {
			follow = 1;
		} else {
			return cli_usage_error("unknown argument '%s'",
					       cli_esc(argv[i]));
		}
	}
	if (follow && cli.json)
		return cli_usage_error("-f cannot give one JSON document");
	side_path(socket, "daemon.log", path, sizeof(path));
	tail = cli_log_tail(path, (int)lines);
	if (!tail) {
		char msg[PATH_MAX + 32];

		snprintf(msg, sizeof(msg), "no log at '%s'", path);
		return cli_fail(-errno ? -errno : -ENOENT, msg);
	}
	if (cli.json) {
		json_t *a = json_array();
		char *save = NULL;

		for (char *l = strtok_r(tail, "\n", &save); l;
		     l = strtok_r(NULL, "\n", &save))
			json_array_append_new(a, json_string(l));
		cli_put_json(json_pack("{s:s, s:o}", "log", path, "lines", a));
	} else {
		put_escaped_lines(tail, stdout);
	}
	free(tail);
	if (follow) {
		FILE *f = fopen(path, "r");
		char line[4096];

		if (!f)
			return EXIT_RUNTIME;
		fseek(f, 0, SEEK_END);
		for (;;) {
			if (fgets(line, sizeof(line), f)) {
				put_escaped_lines(line, stdout);
				fflush(stdout);
			} else {
				clearerr(f);
				usleep(200000);
			}
		}
	}
	return 0;
}

int cmd_daemon(int argc, char **argv)
{
	static const char *const subverbs[] = { "start", "run",	   "restart",
						"stop",	 "status", "logs",
						NULL };
	struct tc__store_config cfg;
	const char *verb = argc > 1 ? argv[1] : "";
	json_t *down = NULL, *up = NULL;
	char sock[PATH_MAX];
	uint64_t timeout = 35;
	const char *v;
	int rc, m;

	if (argc < 2)
		return cli_usage_error("which daemon verb?");
	if (cli_parse_choice("daemon", verb, subverbs))
		return EXIT_USAGE;
	if (cli.socket)
		snprintf(sock, sizeof(sock), "%s", cli.socket);
	else if (tc_default_socket(sock, sizeof(sock)) < 0)
		return cli_fail(TC_ELIMIT, "default socket path too long");
	if (!strcmp(verb, "start") || !strcmp(verb, "run") ||
	    !strcmp(verb, "restart")) {
		tc__config_defaults(&cfg);
		/* restart keeps the running daemon's configuration; its
		 * options (and a --config file) override it. */
		if (!strcmp(verb, "restart"))
			running_config(sock, &cfg);
		rc = parse_config(argc, argv, &cfg);
		if (rc)
			return rc;
		if (!strcmp(verb, "run"))
			return run_foreground(&cfg, -1);
		if (!strcmp(verb, "restart")) {
			rc = stop(sock, 35, &down);
			if (rc)
				return rc;
		}
		rc = start(&cfg, &up);
		if (rc == 0 && cli.json) {
			cli_put_json(down ? json_pack("{s:o, s:o}", "stopped",
						      down, "started", up) :
					    up);
		} else {
			json_decref(down);
			json_decref(up);
		}
		return rc;
	}
	if (!strcmp(verb, "stop")) {
		for (int i = 2; i < argc; i++) {
			if ((m = cli_opt(argc, argv, &i, "--timeout", &v))) {
				if (m < 0 || cli_parse_uint("--timeout", v, 1,
							    86400, &timeout))
					return EXIT_USAGE;
			} else {
				return cli_usage_error("unknown argument '%s'",
						       cli_esc(argv[i]));
			}
		}
		rc = stop(sock, (int)timeout, &down);
		if (rc == 0 && cli.json)
			cli_put_json(down);
		else
			json_decref(down);
		return rc;
	}
	if (!strcmp(verb, "status"))
		return cmd_status(argc - 1, argv + 1);
	return logs(sock, argc, argv);
}
