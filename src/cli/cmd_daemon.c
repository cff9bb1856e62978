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

static const char usage[] =
	"tcast daemon start|run [--config FILE.yaml] [--host-memory SIZE]\n"
	"                       [--io-threads N] [--log-level LEVEL] "
	"[--set KEY=VALUE]\n"
	"                       [--log-format text|json] [--metrics-port PORT]\n"
	"       tcast daemon stop [--timeout SECONDS]\n"
	"       tcast daemon restart [options of start]\n"
	"       tcast daemon status [--json]\n"
	"       tcast daemon logs [-n LINES] [-f]\n"
	"       (every verb takes --socket PATH; default $TCAST_SOCKET)";

/* Apply "key=value" as if it were a line of the config file. */
static int config_set(struct tc__store_config *cfg, const char *kv)
{
	char path[] = "/tmp/tcast-set-XXXXXX", err[512];
	const char *eq = strchr(kv, '=');
	int fd, rc;
	FILE *f;

	if (!eq)
		return cli_usage(usage);
	fd = mkstemp(path);
	if (fd < 0)
		return cli_fail(-errno, "cannot create a temporary file");
	f = fdopen(fd, "w");
	fprintf(f, "%.*s: \"%s\"\n", (int)(eq - kv), kv, eq + 1);
	fclose(f);
	rc = tc__config_load(cfg, path, err, sizeof(err));
	unlink(path);
	if (rc < 0)
		return cli_fail(rc, err);
	return 0;
}

static int parse_config(int argc, char **argv, struct tc__store_config *cfg)
{
	char err[1024];
	int rc;

	tc__config_defaults(cfg);
	/* The config file first, so flags override it wherever they are. */
	for (int i = 2; i < argc; i++)
		if (!strcmp(argv[i], "--config") && i + 1 < argc) {
			rc = tc__config_load(cfg, argv[i + 1], err,
					     sizeof(err));
			if (rc < 0)
				return cli_fail(rc, err);
		}
	if (cli.socket) {
		if (strlen(cli.socket) >= sizeof(cfg->socket))
			return cli_fail(TC_ELIMIT, "socket path too long");
		strcpy(cfg->socket, cli.socket);
	}
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char kv[PATH_MAX + 32];

		if (!strcmp(a, "--config") && v) {
			i++;
			continue;
		}
		if (!v && strcmp(a, "--foreground"))
			return cli_usage(usage);
		if (!strcmp(a, "--host-memory"))
			snprintf(kv, sizeof(kv), "host_memory=%s", v);
		else if (!strcmp(a, "--io-threads"))
			snprintf(kv, sizeof(kv), "io_threads=%s", v);
		else if (!strcmp(a, "--log-level"))
			snprintf(kv, sizeof(kv), "log_level=%s", v);
		else if (!strcmp(a, "--log-file"))
			snprintf(kv, sizeof(kv), "log_file=%s", v);
		else if (!strcmp(a, "--log-format"))
			snprintf(kv, sizeof(kv), "log_format=%s", v);
		else if (!strcmp(a, "--metrics-port"))
			snprintf(kv, sizeof(kv), "metrics_port=%s", v);
		else if (!strcmp(a, "--set"))
			snprintf(kv, sizeof(kv), "%s", v);
		else
			return cli_usage(usage);
		i++;
		rc = config_set(cfg, kv);
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
	}
	rc = tc__server_run(cfg, ready_fd, err, sizeof(err));
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

static void print_log_tail(const char *path, int lines);

static int start(struct tc__store_config *cfg)
{
	char err[512], logpath[PATH_MAX];
	int pfd[2], rc, status;
	pid_t pid, other;
	struct pollfd p;
	char byte;

	other = running_pid(cfg->socket);
	if (other) {
		fprintf(stderr,
			"error: TC_EEXIST: a daemon (pid %d) already serves '%s'\n",
			(int)other, cfg->socket);
		return EXIT_RUNTIME;
	}
	rc = tc__sock_prepare_dir(cfg->socket, err, sizeof(err));
	if (rc < 0)
		return cli_fail(rc, err);
	if (!cfg->log_file[0])
		side_path(cfg->socket, "daemon.log", cfg->log_file,
			  sizeof(cfg->log_file));
	snprintf(logpath, sizeof(logpath), "%s", cfg->log_file);
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return cli_fail(-errno, "pipe");
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return cli_fail(-errno, "fork");
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		close(pfd[0]);
		setsid();
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		close(null);
		_exit(run_foreground(cfg, pfd[1]));
	}
	close(pfd[1]);
	p.fd = pfd[0];
	p.events = POLLIN;
	rc = poll(&p, 1, 60000);
	if (rc == 1 && read(pfd[0], &byte, 1) == 1) {
		close(pfd[0]);
		if (cli.json)
			printf("{\"pid\":%d,\"socket\":\"%s\",\"log\":\"%s\"}\n",
			       (int)pid, cfg->socket, logpath);
		else
			printf("tcast daemon started (pid %d, socket %s, log %s)\n",
			       (int)pid, cfg->socket, logpath);
		return 0;
	}
	close(pfd[0]);
	if (waitpid(pid, &status, WNOHANG) == 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	fprintf(stderr, "error: the daemon did not start; its log says:\n");
	print_log_tail(logpath, 10);
	return EXIT_RUNTIME;
}

static int stop(const char *socket, int timeout_s)
{
	pid_t pid = running_pid(socket);
	struct timespec ts = { 0, 20 * 1000000 };

	if (!pid) {
		printf("tcast daemon is not running on '%s'\n", socket);
		return 0;
	}
	if (kill(pid, SIGTERM) < 0)
		return cli_fail(-errno, "cannot signal the daemon");
	for (int i = 0; i < timeout_s * 50; i++) {
		if (kill(pid, 0) < 0 && errno == ESRCH) {
			printf("tcast daemon stopped (pid %d)\n", (int)pid);
			return 0;
		}
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "daemon pid %d did not stop in %d s: killing it\n",
		(int)pid, timeout_s);
	kill(pid, SIGKILL);
	return 0;
}

static void print_log_tail(const char *path, int lines)
{
	char *buf = NULL, *p;
	size_t len = 0;
	FILE *f = fopen(path, "r");
	int n = 0;

	if (!f) {
		fprintf(stderr, "no log at '%s'\n", path);
		return;
	}
	FILE *m = open_memstream(&buf, &len);
	char chunk[65536];
	size_t k;

	while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0)
		fwrite(chunk, 1, k, m);
	fclose(m);
	fclose(f);
	for (p = buf + len; p > buf; p--)
		if (p[-1] == '\n' && p != buf + len && ++n >= lines)
			break;
	fwrite(p, 1, len - (size_t)(p - buf), stdout);
	free(buf);
}

static int logs(const char *socket, int argc, char **argv)
{
	char path[PATH_MAX];
	int lines = 50, follow = 0;

	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "-n") && i + 1 < argc)
			lines = atoi(argv[++i]);
		else if (!strcmp(argv[i], "-f"))
			follow = 1;
		else
			return cli_usage(usage);
	}
	side_path(socket, "daemon.log", path, sizeof(path));
	print_log_tail(path, lines);
	if (follow) {
		FILE *f = fopen(path, "r");
		char line[4096];

		if (!f)
			return EXIT_RUNTIME;
		fseek(f, 0, SEEK_END);
		for (;;) {
			if (fgets(line, sizeof(line), f)) {
				fputs(line, stdout);
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
	struct tc__store_config cfg;
	const char *verb = argc > 1 ? argv[1] : "";
	char sock[PATH_MAX];
	int rc;

	if (!strcmp(verb, "start") || !strcmp(verb, "run") ||
	    !strcmp(verb, "restart")) {
		rc = parse_config(argc, argv, &cfg);
		if (rc)
			return rc;
		if (!strcmp(verb, "run"))
			return run_foreground(&cfg, -1);
		if (!strcmp(verb, "restart"))
			stop(cfg.socket, 35);
		return start(&cfg);
	}
	if (cli.socket)
		snprintf(sock, sizeof(sock), "%s", cli.socket);
	else if (tc_default_socket(sock, sizeof(sock)) < 0)
		return cli_fail(TC_ELIMIT, "default socket path too long");
	if (!strcmp(verb, "stop")) {
		int timeout = 35;

		if (argc == 4 && !strcmp(argv[2], "--timeout"))
			timeout = atoi(argv[3]);
		else if (argc != 2)
			return cli_usage(usage);
		return stop(sock, timeout);
	}
	if (!strcmp(verb, "status")) {
		if (!running_pid(sock)) {
			if (cli.json)
				printf("{\"running\":false,\"socket\":\"%s\"}\n",
				       sock);
			else
				printf("tcast daemon is not running on '%s'\n",
				       sock);
			return EXIT_RUNTIME;
		}
		return cmd_status(argc - 1, argv + 1);
	}
	if (!strcmp(verb, "logs"))
		return logs(sock, argc, argv);
	return cli_usage(usage);
}
