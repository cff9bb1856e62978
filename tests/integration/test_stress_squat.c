/*
 * test_stress_squat.c - squatting stress (issue 10, "Tests"): a seeded
 * loop over random states of a socket's directory and its parent (owner
 * us or another uid, modes 0700/0750/0777/0711, a symlink in place of the
 * directory, a regular file, nothing) and of the socket itself (our real
 * daemon through a hard link or a symlink, a fake listener run by another
 * uid or by us, a symlink to a fake, a regular file, nothing).  For each,
 * libtcast connects (and, for some unsafe directories, `tcast daemon
 * start` runs), and the outcome must be the one the state allows:
 *  - an unsafe directory: TC_EPERM, and the fake got no connection at all;
 *  - a safe directory and another uid's listener: TC_EPERM, and the fake,
 *    connected to (that is how its uid is learnt), got 0 bytes and 0 fds;
 *  - a safe directory and our real daemon: connected, to that daemon;
 *  - a safe directory and our own fake: no TC_EPERM (it is ours), a
 *    failure once it does not answer HELLO;
 *  - nothing, or a regular file, to connect to: a clear error.
 * The parent's owner and mode (and a symlink in its place) do not change
 * the outcome: only the socket's own directory is checked, and a parent
 * someone else controls can at most swap that directory between the check
 * and connect(), which the peer-uid check then catches.
 * Needs root (to act as another uid); skipped otherwise.  The seed is
 * printed; TC_STRESS_SEED replays it (TC_STRESS_STATES sets the count).
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tcast/client.h"
#include "tcast/errors.h"
#include "tlib.h"

#define OTHER_UID 65534 /* nobody */

static struct t_daemon D;
static uint64_t seed;
static struct t_rng R;
static int stno;
static char desc[512];

static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr,
		"stress squat: FAILED at state %d [%s], seed %" PRIu64
		" (replay: TC_STRESS_SEED=%" PRIu64 "): ",
		stno, desc, seed, seed);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	kill(D.pid, SIGTERM);
	exit(1);
}

#define CHECK(cond, ...)                  \
	do {                              \
		if (!(cond))              \
			die(__VA_ARGS__); \
	} while (0)

/* ------------------------------------------------------- fake daemon */

struct fake {
	pid_t pid;
	int stop;   /* write end: closing it ends the fake */
	int report; /* read end: "conns bytes fds\n" */
};

/*
 * A listener on `sock`: bound as root (so it can sit in a directory only
 * root may write), then, when `other`, run as another uid from listen()
 * on, which is what SO_PEERCRED reports.  It answers nothing; it counts
 * connections, bytes and fds until told to stop, and closes a connection
 * that has been quiet for 100 ms (so a client waiting for HELLO's answer
 * fails rather than hangs).
 */
static struct fake fake_start(const char *sock, int other)
{
	struct fake f;
	int rep[2], stop[2], ready[2];
	char c;

	CHECK(pipe(rep) == 0 && pipe(stop) == 0 && pipe(ready) == 0, "pipe");
	f.pid = fork();
	CHECK(f.pid >= 0, "fork");
	if (f.pid == 0) {
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		long conns = 0, bytes = 0, fds = 0;
		char out[64];
		int l;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(rep[0]);
		close(stop[1]);
		close(ready[0]);
		l = socket(AF_UNIX, SOCK_STREAM, 0);
		snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock);
		if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0)
			_exit(91);
		chmod(sock, 0777);
		if (other && (setgroups(0, NULL) < 0 || setgid(OTHER_UID) < 0 ||
			      setuid(OTHER_UID) < 0))
			_exit(90);
		if (listen(l, 8) < 0)
			_exit(92);
		if (write(ready[1], "r", 1) != 1)
			_exit(93);
		for (;;) {
			struct pollfd pf[2] = { { l, POLLIN, 0 },
						{ stop[0], POLLIN, 0 } };
			int cfd;

			if (poll(pf, 2, -1) < 0)
				continue;
			if (pf[1].revents)
				break;
			cfd = accept(l, NULL, NULL);
			if (cfd < 0)
				continue;
			conns++;
			t_drain_count(cfd, 100, 0, &bytes, &fds);
			close(cfd);
		}
		snprintf(out, sizeof(out), "%ld %ld %ld\n", conns, bytes, fds);
		if (write(rep[1], out, strlen(out)) < 0)
			_exit(94);
		_exit(0);
	}
	close(rep[1]);
	close(stop[0]);
	close(ready[1]);
	if (read(ready[0], &c, 1) != 1) {
		int st = t_wait_status(f.pid);

		die("fake listener on '%s' did not start (status %d)", sock,
		    st);
	}
	close(ready[0]);
	f.stop = stop[1];
	f.report = rep[0];
	return f;
}

static void fake_finish(struct fake *f, long *conns, long *bytes, long *fds)
{
	char buf[64] = { 0 };

	close(f->stop);
	t_read_line(f->report, buf, sizeof(buf));
	close(f->report);
	CHECK(t_wait_status(f->pid) == 0, "fake exit status");
	CHECK(sscanf(buf, "%ld %ld %ld", conns, bytes, fds) == 3,
	      "fake report '%s'", buf);
}

/* ------------------------------------------------------- the states */

enum dir_kind { DIR_REAL, DIR_SYMLINK, DIR_FILE, DIR_MISSING, NDIR };
enum sock_kind {
	S_NONE,
	S_DAEMON_LINK, /* a hard link to our daemon's socket */
	S_DAEMON_SYMLINK,
	S_FAKE_OTHER,
	S_FAKE_OTHER_SYMLINK,
	S_FAKE_US,
	S_FILE,
	NSOCK
};
static const char *dir_name[NDIR] = { "dir", "symlink-dir", "file-dir",
				      "missing-dir" };
static const char *sock_name[NSOCK] = {
	"no socket",	  "daemon (hard link)",	       "daemon (symlink)",
	"fake other uid", "symlink to fake other uid", "fake of ours",
	"regular file"
};
static const mode_t modes[] = { 0700, 0750, 0777, 0711 };

/* Outcome counters for the summary. */
static long n_refused_dir, n_refused_peer, n_connected, n_own_fake, n_no_socket,
	n_daemon_start, n_hardlink;

static void own(const char *path, int other)
{
	uid_t u = other ? OTHER_UID : 0;

	CHECK(lchown(path, u, u) == 0, "lchown %s: %s", path, strerror(errno));
}

static void touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	CHECK(fd >= 0, "create %s: %s", path, strerror(errno));
	close(fd);
}

/* `tcast --socket sock daemon start` must refuse (TC_EPERM) without
 * starting anything. */
static void daemon_start_refused(const char *sock)
{
	char cmd[2048], out[4096] = { 0 };
	FILE *p;
	size_t n;
	int st;

	snprintf(cmd, sizeof(cmd), "'%s' --socket '%s' daemon start 2>&1",
		 getenv("TCAST_BIN") ? getenv("TCAST_BIN") :
				       TC_TEST_BIN "/tcast",
		 sock);
	p = popen(cmd, "r");
	CHECK(p, "popen");
	n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = '\0';
	st = pclose(p);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 0,
	      "daemon start succeeded: %s", out);
	CHECK(strstr(out, "TC_EPERM") && strstr(out, "unsafe socket directory"),
	      "daemon start: %s", out);
	n_daemon_start++;
}

static void one_state(const char *root)
{
	char par[300], parl[300], real[300], run[400], sock[500], target[300],
		err[512] = "", secret[400];
	int par_other = (int)t_rng_below(&R, 2),
	    par_link = t_rng_below(&R, 4) == 0;
	mode_t par_mode = t_rng_below(&R, 2) ? 0711 :
					       modes[1 + t_rng_below(&R, 3)];
	/* Weighted so that about a third of the states are safe ones. */
	enum dir_kind dk = t_rng_below(&R, 2) ?
				   DIR_REAL :
				   (enum dir_kind)t_rng_below(&R, NDIR);
	int dir_other = t_rng_below(&R, 3) == 0;
	mode_t dir_mode = t_rng_below(&R, 2) ? 0700 : modes[t_rng_below(&R, 4)];
	enum sock_kind sk = (enum sock_kind)t_rng_below(&R, NSOCK);
	int dir_ok, try_start = t_rng_below(&R, 4) == 0, rc, hard = 0;
	struct fake f = { -1, -1, -1 };
	long conns = 0, bytes = 0, fds = 0;
	tc_client *c = NULL;

	/* The parent: a real directory, or a symlink to one. */
	snprintf(par, sizeof(par), "%s/p%d", root, stno);
	snprintf(parl, sizeof(parl), "%s/l%d", root, stno);
	CHECK(mkdir(par, par_mode) == 0 && chmod(par, par_mode) == 0,
	      "mkdir %s", par);
	own(par, par_other);
	if (par_link)
		CHECK(symlink(par, parl) == 0, "symlink");
	snprintf(run, sizeof(run), "%s/run", par_link ? parl : par);
	snprintf(sock, sizeof(sock), "%s/daemon.sock", run);
	/* Where a symlinked directory points: ours, private, so that only
	 * the link is wrong. */
	snprintf(real, sizeof(real), "%s/r%d", root, stno);
	switch (dk) {
	case DIR_REAL:
		CHECK(mkdir(run, dir_mode) == 0 && chmod(run, dir_mode) == 0,
		      "mkdir %s", run);
		own(run, dir_other);
		break;
	case DIR_SYMLINK:
		CHECK(mkdir(real, 0700) == 0, "mkdir %s", real);
		CHECK(symlink(real, run) == 0, "symlink %s", run);
		own(run, dir_other);
		break;
	case DIR_FILE:
		touch(run);
		own(run, dir_other);
		break;
	default:
		break;
	}
	dir_ok = dk == DIR_REAL && !dir_other && !(dir_mode & 0077);
	if (dk == DIR_FILE || dk == DIR_MISSING)
		sk = S_NONE; /* no socket can be made inside */
	snprintf(desc, sizeof(desc),
		 "parent %s%s uid %d mode %04o; %s uid %d mode %04o; %s",
		 par_link ? "symlink to " : "", "dir",
		 par_other ? OTHER_UID : 0, (unsigned)par_mode, dir_name[dk],
		 dir_other ? OTHER_UID : 0, (unsigned)dir_mode, sock_name[sk]);
	switch (sk) {
	case S_DAEMON_LINK:
		if (link(D.sock, sock) == 0) {
			hard = 1;
			break;
		}
		sk = S_DAEMON_SYMLINK; /* another file system */
				       /* fall through */
	case S_DAEMON_SYMLINK:
		CHECK(symlink(D.sock, sock) == 0, "symlink %s", sock);
		break;
	case S_FAKE_OTHER:
		f = fake_start(sock, 1);
		break;
	case S_FAKE_OTHER_SYMLINK:
		snprintf(target, sizeof(target), "%s/f%d.sock", root, stno);
		f = fake_start(target, 1);
		CHECK(symlink(target, sock) == 0, "symlink %s", sock);
		break;
	case S_FAKE_US:
		f = fake_start(sock, 0);
		break;
	case S_FILE:
		touch(sock);
		break;
	default:
		break;
	}

	/* The victim: connect, and (if that worked) pass a private file. */
	snprintf(secret, sizeof(secret), "%s/secret.safetensors", root);
	rc = tc_client_connect(sock, &c, err, sizeof(err));
	if (rc == 0) {
		CHECK(tc_client_daemon_pid(c) == D.pid,
		      "connected to pid %d, not our daemon (%d)",
		      (int)tc_client_daemon_pid(c), (int)D.pid);
		tc_import(c, secret, NULL, NULL);
		tc_client_close(c);
	}
	if (!dir_ok && dk != DIR_MISSING && try_start)
		daemon_start_refused(sock);
	if (f.pid > 0)
		fake_finish(&f, &conns, &bytes, &fds);

	if (dk == DIR_MISSING) {
		CHECK(rc < 0 && rc != TC_EPERM && err[0],
		      "missing directory: %d (%s)", rc, err);
		n_no_socket++;
	} else if (!dir_ok) {
		CHECK(rc == TC_EPERM, "unsafe directory not refused: %d (%s)",
		      rc, err);
		CHECK(strstr(err, "unsafe socket directory"), "message: %s",
		      err);
		CHECK(conns == 0 && bytes == 0 && fds == 0,
		      "the squatter got %ld connections, %ld bytes, %ld fds",
		      conns, bytes, fds);
		n_refused_dir++;
	} else if (sk == S_FAKE_OTHER || sk == S_FAKE_OTHER_SYMLINK) {
		CHECK(rc == TC_EPERM && strstr(err, "runs as uid 65534"),
		      "another uid's listener not refused: %d (%s)", rc, err);
		CHECK(conns <= 1 && bytes == 0 && fds == 0,
		      "the squatter got %ld connections, %ld bytes, %ld fds",
		      conns, bytes, fds);
		n_refused_peer++;
	} else if (sk == S_DAEMON_LINK || sk == S_DAEMON_SYMLINK) {
		CHECK(rc == 0, "our own daemon refused: %d (%s)", rc, err);
		n_connected++;
		n_hardlink += hard;
	} else if (sk == S_FAKE_US) {
		/* Ours: trusted, so it spoke; the fake never answers. */
		CHECK(rc < 0 && rc != TC_EPERM && bytes > 0 && conns == 1,
		      "our own listener: %d (%s), %ld bytes", rc, err, bytes);
		n_own_fake++;
	} else {
		CHECK(rc < 0 && rc != TC_EPERM && err[0],
		      "nothing to connect to: %d (%s)", rc, err);
		n_no_socket++;
	}
	if (par_link)
		unlink(parl);
	t_rmtree(par);
	if (dk == DIR_SYMLINK)
		t_rmtree(real);
	if (sk == S_FAKE_OTHER_SYMLINK)
		unlink(target);
}

int main(void)
{
	long states = getenv("TC_STRESS_STATES") ?
			      atol(getenv("TC_STRESS_STATES")) :
			      1500;
	char root[] = "/tmp/tcast-squat-XXXXXX", secret[400];
	double t0 = t_now_ms();

	if (geteuid() != 0) {
		fprintf(stderr, "stress squat: needs root to act as another "
				"uid; skipped\n");
		return 77;
	}
	seed = t_rng_seed("TC_STRESS_SEED");
	t_rng_init(&R, seed);
	printf("stress squat: seed %" PRIu64 " (TC_STRESS_SEED=%" PRIu64
	       " replays it), %ld states\n",
	       seed, seed, states);
	fflush(stdout);
	/* TCAST_TRUST_ROOT would not change anything for root, but a state
	 * must mean the same in every environment. */
	unsetenv("TCAST_TRUST_ROOT");
	t_daemon_start(&D, "16MiB", NULL);
	/* In /tmp itself, 0711: the other uid must reach its listeners. */
	CHECK(mkdtemp(root) && chmod(root, 0711) == 0, "mkdtemp");
	snprintf(secret, sizeof(secret), "%s/secret.safetensors", root);
	touch(secret);
	for (stno = 0; stno < states; stno++)
		one_state(root);
	t_rmtree(root);
	CHECK(t_daemon_stop(&D) == 0, "daemon exit status");
	t_rmtree(D.dir);
	printf("stress squat: %ld states: %ld refused for the directory (%ld "
	       "also by daemon start), %ld refused for the peer's uid, %ld "
	       "connected to our daemon (%ld by a hard link), %ld to our own fake, %ld with "
	       "nothing to connect to; squatters got 0 bytes and 0 fds; "
	       "seed %" PRIu64 ", %.1f s\n",
	       states, n_refused_dir, n_daemon_start, n_refused_peer,
	       n_connected, n_hardlink, n_own_fake, n_no_socket, seed,
	       (t_now_ms() - t0) / 1000.0);
	return n_refused_dir && n_refused_peer && n_connected && n_own_fake &&
			       n_no_socket && n_daemon_start ?
		       0 :
		       (fprintf(stderr, "not every outcome was reached\n"), 1);
}
