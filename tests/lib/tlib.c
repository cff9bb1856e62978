/*
 * tlib.c - test helpers.
 */
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stddef.h>
#include <cmocka.h>

#include "common/alloc.h"
#include "common/tensor.h"
#include "net/net.h"
#include "tlib.h"

char *t_tmpdir(void)
{
	/* $TMPDIR first: scripts/run-tests.sh runs the suite in a folder of
	 * its own and fails it when anything is left there. */
	const char *base = getenv("TMPDIR");
	char tmpl[512];
	char *d;

	snprintf(tmpl, sizeof(tmpl), "%s/tcast-test-XXXXXX",
		 base && *base ? base : "/tmp");
	d = mkdtemp(tmpl);
	if (!d) {
		perror("mkdtemp");
		abort();
	}
	return strdup(d);
}

static int rm_one(const char *p, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	return remove(p);
}

void t_rmtree(const char *path)
{
	nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* t_daemon_start_as: the uid the next daemon runs as (-1: ours). */
static uid_t daemon_uid = (uid_t)-1;

static void daemon_vstart(struct t_daemon *d, bool reuse,
			  const char *host_memory, va_list ap)
{
	char *argv[32], bin[512];
	uid_t uid = daemon_uid;
	int argc = 0;

	daemon_uid = (uid_t)-1;
	if (!reuse && uid != (uid_t)-1) {
		/* Under /tmp, not $TMPDIR: another uid must reach it, and
		 * the runner's folder is private to us. */
		char tmpl[] = "/tmp/tcast-test-uid-XXXXXX";

		if (!mkdtemp(tmpl) || chown(tmpl, uid, uid) < 0) {
			perror("daemon folder for another uid");
			abort();
		}
		snprintf(d->dir, sizeof(d->dir), "%s", tmpl);
	} else if (!reuse) {
		char *dir = t_tmpdir();

		snprintf(d->dir, sizeof(d->dir), "%s", dir);
		free(dir);
	}
	/* The daemon insists on a private directory for its socket. */
	snprintf(d->sock, sizeof(d->sock), "%s/run/d.sock", d->dir);
	/* $TCAST_BIN runs the tests against another build (the bundle on
	 * the GPU machine); else the tcast built beside this test. */
	if (getenv("TCAST_BIN"))
		snprintf(bin, sizeof(bin), "%s", getenv("TCAST_BIN"));
	else
		snprintf(bin, sizeof(bin), "%s/tcast", TC_TEST_BIN);
	argv[argc++] = bin;
	argv[argc++] = "--socket";
	argv[argc++] = d->sock;
	argv[argc++] = "daemon";
	argv[argc++] = "run";
	argv[argc++] = "--host-memory";
	argv[argc++] = (char *)host_memory;
	argv[argc++] = "--log-level";
	argv[argc++] = "debug";
	for (char *a; (a = va_arg(ap, char *)) && argc < 30;)
		argv[argc++] = a;
	argv[argc] = NULL;
	d->pid = fork();
	if (d->pid == 0) {
		char log[600];

		/* A test that dies must not leave its daemon behind. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		int fd;

		snprintf(log, sizeof(log), "%s/daemon.log", d->dir);
		fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		dup2(fd, 1);
		dup2(fd, 2);
		if (uid != (uid_t)-1 && (setgroups(0, NULL) < 0 ||
					 setgid(uid) < 0 || setuid(uid) < 0))
			_exit(126);
		execv(bin, argv);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) {
		int fd;

		if (tc__sock_connect(d->sock, &fd) == 0) {
			close(fd);
			return;
		}
		if (waitpid(d->pid, NULL, WNOHANG) == d->pid)
			break;
		usleep(10000);
	}
	fprintf(stderr, "daemon did not start; see %s/daemon.log\n", d->dir);
	abort();
}

void t_daemon_start(struct t_daemon *d, const char *host_memory, ...)
{
	va_list ap;

	va_start(ap, host_memory);
	daemon_vstart(d, false, host_memory, ap);
	va_end(ap);
}

void t_daemon_start_as(struct t_daemon *d, uid_t uid, const char *host_memory,
		       ...)
{
	va_list ap;

	daemon_uid = uid;
	va_start(ap, host_memory);
	daemon_vstart(d, false, host_memory, ap);
	va_end(ap);
}

void t_daemon_restart(struct t_daemon *d, const char *host_memory, ...)
{
	va_list ap;

	va_start(ap, host_memory);
	daemon_vstart(d, true, host_memory, ap);
	va_end(ap);
}

int t_daemon_stop(struct t_daemon *d)
{
	int status = 0;

	if (d->pid <= 0)
		return 0;
	kill(d->pid, SIGTERM);
	waitpid(d->pid, &status, 0);
	d->pid = 0;
	if (getenv("TC_KEEP_LOGS") == NULL)
		t_rmtree(d->dir);
	return status;
}

int t_raw_connect(const char *sock)
{
	int fd;

	if (tc__sock_connect(sock, &fd) < 0)
		return -1;
	return fd;
}

int t_raw_send(int fd, int type, uint32_t req_id, const void *body, size_t len,
	       const int *fds, int nfds)
{
	struct tc__frame_hdr h = { TC_PROTO_VERSION, (uint16_t)type, 0, req_id,
				   (uint32_t)len,    (uint16_t)nfds };
	uint8_t hdr[TC_FRAME_HDR];
	struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)body, len } };

	tc__frame_encode(&h, hdr);
	return tc__fdpass_send(fd, iov, len ? 2 : 1, fds, nfds) < 0 ? -1 : 0;
}

static int read_all(int fd, uint8_t *p, size_t n, int *fds, int *nfds)
{
	while (n) {
		int got;
		ssize_t r = tc__fdpass_recv(fd, p, n, fds ? fds + *nfds : NULL,
					    &got, fds ? 4 - *nfds : 0);

		if (r <= 0)
			return -1;
		if (fds)
			*nfds += got;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int t_raw_recv(int fd, struct tc__frame_hdr *h, uint8_t **body, int *fds,
	       int *nfds)
{
	uint8_t hdr[TC_FRAME_HDR];
	char err[128];
	int dummy = 0;

	if (!nfds)
		nfds = &dummy;
	*nfds = 0;
	*body = NULL;
	if (read_all(fd, hdr, sizeof(hdr), fds, nfds) < 0)
		return -1;
	if (tc__frame_decode(hdr, h, err, sizeof(err)) < 0)
		return -1;
	*body = malloc(h->body_len + 1);
	if (read_all(fd, *body, h->body_len, fds, nfds) < 0)
		return -1;
	return 0;
}

int t_raw_hello(int fd)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__frame_hdr h;
	uint8_t *body;
	int rc;

	tc__buf_put_u32(&b, TC_PROTO_VERSION);
	tc__buf_put_u32(&b, (uint32_t)getpid());
	tc__buf_put_str(&b, "raw-test");
	rc = t_raw_send(fd, TC_MSG_HELLO, 1, b.data, b.len, NULL, 0);
	tc__buf_release(&b);
	if (rc < 0 || t_raw_recv(fd, &h, &body, NULL, NULL) < 0)
		return -1;
	rc = (int)(body[0] | body[1] << 8 | body[2] << 16 |
		   (uint32_t)body[3] << 24);
	free(body);
	return rc;
}

tc_client *t_connect(const char *sock)
{
	char err[512];
	tc_client *c = NULL;

	if (tc_client_connect(sock, &c, err, sizeof(err)) < 0)
		fail_msg("connect: %s", err);
	return c;
}

int t_count_fds_of(pid_t pid)
{
	char path[64];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

int t_daemon_fds(pid_t pid)
{
	int n = t_count_fds_of(pid), still = 0;

	for (int i = 0; i < 200 && still < 5; i++) {
		int m;

		usleep(10000);
		m = t_count_fds_of(pid);
		still = m == n ? still + 1 : 0;
		n = m;
	}
	return n;
}

void t_read_line(int fd, char *buf, size_t len)
{
	size_t k = 0;

	while (k + 1 < len && read(fd, buf + k, 1) == 1 && buf[k] != '\n')
		k++;
	buf[k] = '\0';
}

int t_wait_status(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

pid_t t_spawn_self(const char *const args[], const char *const env[],
		   int stdout_fd, int keep_fd)
{
	const char *argv[16];
	char exe[4096];
	ssize_t n;
	pid_t pid;
	int k = 0;

	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n < 0)
		return -errno;
	exe[n] = '\0';
	argv[k++] = exe;
	argv[k++] = "--child";
	for (int i = 0; args[i]; i++) {
		if (k + 1 >= (int)(sizeof(argv) / sizeof(argv[0])))
			return -E2BIG;
		argv[k++] = args[i];
	}
	argv[k] = NULL;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (stdout_fd >= 0)
		dup2(stdout_fd, STDOUT_FILENO);
	if (keep_fd >= 0)
		fcntl(keep_fd, F_SETFD, 0);
	for (int i = 0; env && env[i]; i++) {
		if (env[i][0] == '-')
			unsetenv(env[i] + 1);
		else
			putenv((char *)env[i]);
	}
	execv(exe, (char *const *)argv);
	_exit(127);
}

double t_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void t_sha256_hex(const void *p, size_t n, char out[65])
{
	unsigned char md[32];
	unsigned int len = 0;

	EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", md[i]);
}

int t_count_fds(void)
{
	int n = t_count_fds_of(getpid());

	return n < 0 ? n : n - 1; /* the DIR's own fd */
}

const char *t_data(const char *rel)
{
	static char buf[4][1024];
	static int k;

	k = (k + 1) % 4;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", TC_TEST_DATA, rel);
	return buf[k];
}

char *t_slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		fclose(f);
		return NULL;
	}
	buf[n] = '\0';
	fclose(f);
	if (len)
		*len = (size_t)n;
	return buf;
}

json_t *t_status(tc_client *c)
{
	char *s;
	json_t *j;

	if (tc_status_json(c, &s) < 0)
		fail_msg("status: %s", tc_client_errmsg(c));
	j = json_loads(s, 0, NULL);
	tc_free(s);
	assert_non_null(j);
	return j;
}

long long t_status_int(tc_client *c, const char *field)
{
	json_t *j = t_status(c);
	long long v = json_integer_value(json_object_get(j, field));

	json_decref(j);
	return v;
}

int t_put_fill(tc_client *c, const struct tc_opts *o, uint8_t fill,
	       uint64_t bytes, char *id)
{
	uint64_t shape[1] = { bytes };
	struct tc_tensor_desc d = { "x", TC_DTYPE_U8, 1, shape };
	struct tc_result r;
	tc_put *p;
	int rc;

	rc = tc_put_begin(c, &d, 1, NULL, o, &p);
	if (rc < 0)
		return rc;
	memset(tc_put_data(p, 0), fill, bytes);
	rc = tc_put_commit(p, &r);
	if (rc == 0 && id)
		strcpy(id, r.id);
	return rc;
}

int t_check_fill(tc_client *c, const char *ref, uint8_t fill, uint64_t bytes)
{
	tc_artifact *a;
	const uint8_t *p;
	int rc = tc_attach(c, ref, &a);

	if (rc < 0)
		return rc;
	p = tc_artifact_data(a);
	assert_true(tc_artifact_size(a) >= bytes);
	for (uint64_t i = 0; i < bytes; i++)
		if (p[i] != fill)
			fail_msg("%s: byte %llu is %u, not %u", ref,
				 (unsigned long long)i, p[i], fill);
	tc_artifact_close(a);
	return 0;
}

void t_drain_count(int fd, int idle_ms, double end_ms, long *bytes, long *fds)
{
	for (;;) {
		struct pollfd q = { fd, POLLIN, 0 };
		char buf[4096];
		char cbuf[CMSG_SPACE(sizeof(int) * 8)];
		struct iovec iov = { buf, sizeof(buf) };
		struct msghdr m = { 0 };
		int wait = idle_ms;
		ssize_t n;

		if (end_ms > 0) {
			double left = end_ms - t_now_ms();

			if (left <= 0)
				return;
			if (wait < 0 || left < wait)
				wait = (int)left + 1;
		}
		if (poll(&q, 1, wait) != 1)
			return;
		m.msg_iov = &iov;
		m.msg_iovlen = 1;
		m.msg_control = cbuf;
		m.msg_controllen = sizeof(cbuf);
		n = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
		if (n <= 0)
			return;
		*bytes += n;
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h;
		     h = CMSG_NXTHDR(&m, h)) {
			size_t k = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			if (h->cmsg_level != SOL_SOCKET ||
			    h->cmsg_type != SCM_RIGHTS)
				continue;
			for (size_t i = 0; i < k; i++) {
				int got;

				memcpy(&got, CMSG_DATA(h) + i * sizeof(int),
				       sizeof(int));
				close(got);
			}
			*fds += (long)k;
		}
	}
}

uint64_t t_rng_seed(const char *env)
{
	const char *e = getenv(env);

	if (e && *e)
		return strtoull(e, NULL, 0);
	return (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
}

void t_rng_init(struct t_rng *r, uint64_t seed)
{
	r->s = seed ? seed : 1;
}

uint64_t t_rng_next(struct t_rng *r)
{
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 2685821657736338717ull;
}

uint64_t t_rng_below(struct t_rng *r, uint64_t n)
{
	return n ? t_rng_next(r) % n : 0;
}

/* The tiny artifact of docs/formats.md: "a" F32 [2] = {1.0, 2.0} at 0,
 * "b" U8 [3] = {1, 2, 3} at 256, metadata {"z": "1", "format": "pt"}. */
void t_tiny_artifact(struct tc__table *t, uint8_t bytes[259])
{
	static const uint8_t a[8] = { 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40 };

	tc__table_init(t);
	t->tensors = tc__calloc(2, sizeof(*t->tensors));
	t->meta = tc__calloc(2, sizeof(*t->meta));
	assert_non_null(t->tensors);
	assert_non_null(t->meta);
	t->ntensors = 2;
	t->tensors[0].name = tc__strdup("a");
	t->tensors[0].dtype = TC_DTYPE_F32;
	t->tensors[0].ndim = 1;
	t->tensors[0].shape[0] = 2;
	t->tensors[0].nbytes = 8;
	t->tensors[1].name = tc__strdup("b");
	t->tensors[1].dtype = TC_DTYPE_U8;
	t->tensors[1].ndim = 1;
	t->tensors[1].shape[0] = 3;
	t->tensors[1].nbytes = 3;
	t->nmeta = 2;
	t->meta[0].key = tc__strdup("z");
	t->meta[0].val = tc__strdup("1");
	t->meta[1].key = tc__strdup("format");
	t->meta[1].val = tc__strdup("pt");
	assert_int_equal(tc__table_layout(t), 0);
	assert_int_equal(t->total_bytes, 259);
	memset(bytes, 0, 259);
	memcpy(bytes, a, 8);
	bytes[256] = 1;
	bytes[257] = 2;
	bytes[258] = 3;
}
