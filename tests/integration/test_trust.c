/*
 * test_trust.c - libtcast talks only to the user's own daemon (issue 10,
 * finding 2): a socket directory squatted by another uid, a symlinked
 * directory and a daemon served by another uid are all refused before a
 * single byte (or fd) is sent, and `tcast daemon start` refuses a directory
 * it does not own.  Needs root (to become another uid); skipped otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tcast/client.h"
#include "tcast/errors.h"
#include "tlib.h"

#define OTHER_UID 65534 /* nobody */

struct fake {
	pid_t pid;
	int report; /* read end: "conns bytes fds\n" when the fake exits */
};

static void become_other(void)
{
	if (setgroups(0, NULL) < 0 || setgid(OTHER_UID) < 0 ||
	    setuid(OTHER_UID) < 0)
		_exit(90);
}

/*
 * A fake daemon: binds `sock` (as root when bind_as_root, so it can sit in
 * a directory only root can write), then becomes another uid before
 * listen(), which is what SO_PEERCRED reports to a client.  It accepts for
 * `secs` seconds and reports how many connections, bytes and fds it got.
 * A fake that wanted to be believed would answer HELLO; this one only
 * counts, which is enough: the client must not send anything at all.
 */
static struct fake fake_start(const char *sock, bool bind_as_root, int secs)
{
	struct fake f;
	int p[2], ready[2];
	char c;

	assert_int_equal(pipe(p), 0);
	assert_int_equal(pipe(ready), 0);
	f.pid = fork();
	assert_true(f.pid >= 0);
	if (f.pid == 0) {
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		long conns = 0, bytes = 0, fds = 0;
		double end;
		char out[64];
		int l;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(p[0]);
		close(ready[0]);
		if (!bind_as_root)
			become_other();
		l = socket(AF_UNIX, SOCK_STREAM, 0);
		snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock);
		if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0)
			_exit(91);
		chmod(sock, 0777);
		if (bind_as_root)
			become_other();
		if (listen(l, 8) < 0)
			_exit(92);
		if (write(ready[1], "r", 1) != 1)
			_exit(93);
		end = t_now_ms() + secs * 1000.0;
		while (t_now_ms() < end) {
			struct pollfd pf = { l, POLLIN, 0 };
			int cfd;

			if (poll(&pf, 1, 50) != 1)
				continue;
			cfd = accept(l, NULL, NULL);
			if (cfd < 0)
				continue;
			conns++;
			t_drain_count(cfd, -1, end, &bytes, &fds);
			close(cfd);
		}
		snprintf(out, sizeof(out), "%ld %ld %ld\n", conns, bytes, fds);
		if (write(p[1], out, strlen(out)) < 0)
			_exit(94);
		_exit(0);
	}
	close(p[1]);
	close(ready[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	f.report = p[0];
	return f;
}

static void fake_finish(struct fake *f, long *conns, long *bytes, long *fds)
{
	char buf[64] = { 0 };

	t_read_line(f->report, buf, sizeof(buf));
	close(f->report);
	assert_int_equal(t_wait_status(f->pid), 0);
	assert_int_equal(sscanf(buf, "%ld %ld %ld", conns, bytes, fds), 3);
}

/* A private 0711 tree root can write and others can only traverse.  In
 * /tmp itself, not $TMPDIR: the other uid must reach it, and the suite's
 * $TMPDIR is private to root. */
static char *tree(void)
{
	char *d = strdup("/tmp/tcast-trust-XXXXXX");

	assert_non_null(d);
	assert_non_null(mkdtemp(d));
	assert_int_equal(chmod(d, 0711), 0);
	return d;
}

/* Try everything a victim would: connect, and import a private file. */
static int victim(const char *sock, const char *dir, char *err, size_t elen)
{
	char secret[600];
	tc_client *c = NULL;
	int rc, fd;

	snprintf(secret, sizeof(secret), "%s/secret.safetensors", dir);
	fd = open(secret, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	close(fd);
	rc = tc_client_connect(sock, &c, err, elen);
	if (rc == 0) {
		tc_import(c, secret, NULL, NULL);
		tc_client_close(c);
	}
	return rc;
}

static void squatted_directory_is_refused(void **state)
{
	char *d = tree(), sq[400], sock[500], err[512];
	long conns, bytes, fds;
	struct fake f;
	int rc;

	(void)state;
	/* Another user made the directory first (as in /tmp/tcast-$UID),
	 * mode 0700 so that only it can enter: root still can. */
	snprintf(sq, sizeof(sq), "%s/tcast-0", d);
	assert_int_equal(mkdir(sq, 0700), 0);
	assert_int_equal(chown(sq, OTHER_UID, OTHER_UID), 0);
	snprintf(sock, sizeof(sock), "%s/daemon.sock", sq);
	f = fake_start(sock, false, 2);
	rc = victim(sock, d, err, sizeof(err));
	assert_int_equal(rc, TC_EPERM);
	assert_non_null(strstr(err, "unsafe socket directory"));
	assert_non_null(strstr(err, "owned by uid 65534"));
	fake_finish(&f, &conns, &bytes, &fds);
	assert_int_equal(conns, 0);
	assert_int_equal(bytes, 0);
	assert_int_equal(fds, 0);
	/* Also a directory we own but others may enter. */
	assert_int_equal(chown(sq, 0, 0), 0);
	assert_int_equal(chmod(sq, 0755), 0);
	assert_int_equal(unlink(sock), 0);
	f = fake_start(sock, true, 1);
	rc = tc_client_connect(sock, &(tc_client *){ NULL }, err, sizeof(err));
	assert_int_equal(rc, TC_EPERM);
	assert_non_null(strstr(err, "mode 0755"));
	fake_finish(&f, &conns, &bytes, &fds);
	assert_int_equal(bytes, 0);
	t_rmtree(d);
	free(d);
}

static void daemon_of_another_uid_is_refused(void **state)
{
	char *d = tree(), run[400], sock[500], err[512];
	long conns, bytes, fds;
	struct fake f;
	int rc;

	(void)state;
	/* The directory is ours and private; the process answering is not
	 * (a daemon started by someone else, or a socket handed over). */
	snprintf(run, sizeof(run), "%s/run", d);
	assert_int_equal(mkdir(run, 0700), 0);
	snprintf(sock, sizeof(sock), "%s/daemon.sock", run);
	f = fake_start(sock, true, 2);
	rc = victim(sock, d, err, sizeof(err));
	assert_int_equal(rc, TC_EPERM);
	assert_non_null(strstr(err, "runs as uid 65534"));
	fake_finish(&f, &conns, &bytes, &fds);
	/* It was connected to (that is how its uid is known), but it got
	 * nothing: no HELLO, no file descriptor. */
	assert_int_equal(conns, 1);
	assert_int_equal(bytes, 0);
	assert_int_equal(fds, 0);
	t_rmtree(d);
	free(d);
}

static void symlinked_directory_is_refused(void **state)
{
	char link[400], err[512], sock[500];
	struct t_daemon D;
	tc_client *c = NULL;

	(void)state;
	t_daemon_start(&D, "64MiB", NULL);
	snprintf(link, sizeof(link), "%s/link", D.dir);
	assert_int_equal(symlink("run", link), 0);
	snprintf(sock, sizeof(sock), "%s/d.sock", link);
	assert_int_equal(tc_client_connect(sock, &c, err, sizeof(err)),
			 TC_EPERM);
	assert_non_null(strstr(err, "symlink"));
	/* The real path works, so the refusal is about the link. */
	assert_int_equal(tc_client_connect(D.sock, &c, err, sizeof(err)), 0);
	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&D), 0);
	t_rmtree(D.dir);
}

/* `tcast daemon start` on a squatted directory: refused, not "a daemon
 * already serves" (which used to ask the squatter and believe it). */
static void daemon_start_refuses_squatted_directory(void **state)
{
	char *d = tree(), sq[400], sock[500], cmd[2048], out[4096] = { 0 };
	long conns, bytes, fds;
	struct fake f;
	FILE *p;
	size_t n;
	int st;

	(void)state;
	snprintf(sq, sizeof(sq), "%s/tcast-0", d);
	assert_int_equal(mkdir(sq, 0700), 0);
	assert_int_equal(chown(sq, OTHER_UID, OTHER_UID), 0);
	snprintf(sock, sizeof(sock), "%s/daemon.sock", sq);
	f = fake_start(sock, false, 2);
	if (getenv("TCAST_BIN"))
		snprintf(cmd, sizeof(cmd),
			 "'%s' --socket '%s' daemon start 2>&1",
			 getenv("TCAST_BIN"), sock);
	else
		snprintf(cmd, sizeof(cmd),
			 "'%s/tcast' --socket '%s' daemon start 2>&1",
			 TC_TEST_BIN, sock);
	p = popen(cmd, "r");
	assert_non_null(p);
	n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	st = pclose(p);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) != 0);
	assert_non_null(strstr(out, "TC_EPERM"));
	assert_non_null(strstr(out, "unsafe socket directory"));
	assert_null(strstr(out, "already serves"));
	fake_finish(&f, &conns, &bytes, &fds);
	assert_int_equal(conns, 0);
	t_rmtree(d);
	free(d);
}

/* A user (not root) and a daemon run by root: refused by default; with
 * TCAST_TRUST_ROOT=1 a root-owned directory others cannot write and a root
 * peer are accepted (the daemon then decides whether to serve this uid). */
static void root_daemon_needs_trust_root(void **state)
{
	char *d = tree(), run[400], sock[500];
	long bytes;
	int p[2], status;
	pid_t pid;

	(void)state;
	snprintf(run, sizeof(run), "%s/run", d);
	assert_int_equal(mkdir(run, 0755), 0);
	snprintf(sock, sizeof(sock), "%s/daemon.sock", run);
	/* A root "daemon" (listens as root) that counts what it gets. */
	{
		int l = socket(AF_UNIX, SOCK_STREAM, 0);
		struct sockaddr_un a = { .sun_family = AF_UNIX };

		snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock);
		assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
		assert_int_equal(chmod(sock, 0777), 0);
		assert_int_equal(listen(l, 8), 0);
		assert_int_equal(pipe(p), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			char err[512];
			tc_client *c = NULL;
			int r1, r2;

			close(p[0]);
			become_other();
			unsetenv("TCAST_TRUST_ROOT");
			r1 = tc_client_connect(sock, &c, err, sizeof(err));
			if (r1 == TC_EPERM &&
			    !strstr(err, "TCAST_TRUST_ROOT=1"))
				r1 = -1;
			setenv("TCAST_TRUST_ROOT", "1", 1);
			/* Trusted now: it connects and says HELLO (our
			 * listener never answers, so that call fails
			 * later, not with TC_EPERM). */
			r2 = tc_client_connect(sock, &c, err, sizeof(err));
			_exit(r1 == TC_EPERM && r2 != TC_EPERM ? 0 : 1);
		}
		close(p[1]);
		/* Accept what comes: the trusted connection sends HELLO. */
		{
			struct pollfd pf = { l, POLLIN, 0 };
			long got = 0;

			if (poll(&pf, 1, 5000) == 1) {
				int cfd = accept(l, NULL, NULL);
				char buf[256];
				ssize_t n;

				assert_true(cfd >= 0);
				n = read(cfd, buf, sizeof(buf));
				got = n > 0 ? n : 0;
				close(cfd); /* the client's HELLO then fails */
			}
			bytes = got;
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		assert_true(bytes > 0); /* only the trusted attempt spoke */
		close(p[0]);
		close(l);
	}
	t_rmtree(d);
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(squatted_directory_is_refused),
		cmocka_unit_test(daemon_of_another_uid_is_refused),
		cmocka_unit_test(symlinked_directory_is_refused),
		cmocka_unit_test(daemon_start_refuses_squatted_directory),
		cmocka_unit_test(root_daemon_needs_trust_root),
	};

	if (geteuid() != 0) {
		fprintf(stderr, "test_trust: needs root to act as another "
				"uid; skipped\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
