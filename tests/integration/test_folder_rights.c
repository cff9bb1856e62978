/*
 * test_folder_rights.c - a folder import reads only what the client can
 * read (issue 10 finding 6).  The client resolves the folder (index, shards,
 * snapshot symlinks) with its own rights and sends the shard fds; the
 * daemon never opens a path for it.  The client here is root with every
 * capability dropped, talking to a root daemon that keeps its own: a shard
 * it cannot read is refused, and no byte or size of that shard is echoed.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "net/net.h"
#include "proto/proto.h"
#include "tcast/client.h"
#include "tcast/errors.h"
#include "tlib.h"

static struct t_daemon D;

static int setup(void **state)
{
	t_daemon_start(&D, "64MiB", NULL);
	return 0;
}

static int teardown(void **state)
{
	assert_int_equal(t_daemon_stop(&D), 0);
	t_rmtree(D.dir);
	return 0;
}

/* A shard whose data (and whose header) carry a recognisable secret. */
static void write_shard(const char *path, const char *tensor, mode_t mode)
{
	char hdr[256];
	static const char data[] = "TOPSECRET-0123456789abcdef-TOPSECRET";
	size_t n = sizeof(data) - 1;
	uint64_t hl;
	int len, fd;

	len = snprintf(hdr, sizeof(hdr),
		       "{\"%s\":{\"dtype\":\"U8\",\"shape\":[%zu],"
		       "\"data_offsets\":[0,%zu]}}",
		       tensor, n, n);
	while (len % 8)
		hdr[len++] = ' ';
	hl = (uint64_t)len;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, &hl, 8), 8);
	assert_int_equal(write(fd, hdr, (size_t)len), len);
	assert_int_equal(write(fd, data, n), (ssize_t)n);
	close(fd);
	assert_int_equal(chmod(path, mode), 0);
}

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static void drop_all_capabilities(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];

	memset(d, 0, sizeof(d));
	if (syscall(SYS_capset, &h, d) < 0)
		_exit(90);
}

/* Import `dir` from a child that is root without capabilities; returns
 * its tc_import code and fills msg with the client's message. */
static int import_as_capless_root(const char *dir, char *msg, size_t len)
{
	int p[2], status;
	pid_t pid;
	ssize_t n;

	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char err[512] = "";
		tc_client *c;
		int rc;

		close(p[0]);
		drop_all_capabilities();
		rc = tc_client_connect(D.sock, &c, err, sizeof(err));
		if (rc == 0) {
			rc = tc_import(c, dir, NULL, NULL);
			snprintf(err, sizeof(err), "%s", tc_client_errmsg(c));
			tc_client_close(c);
		}
		if (write(p[1], err, strlen(err)) < 0)
			_exit(91);
		_exit(rc == 0 ? 0 : (-rc) & 0xff);
	}
	close(p[1]);
	n = read(p[0], msg, len - 1);
	msg[n > 0 ? n : 0] = '\0';
	close(p[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void no_leak(const char *msg)
{
	if (strstr(msg, "TOPSECRET") || strstr(msg, "0123456789abcdef") ||
	    strstr(msg, " 36 ") || strstr(msg, "130"))
		fail_msg("the refusal echoes the unreadable shard: '%s'", msg);
}

static void test_rights__unreadable_shard_in_an_indexed_folder(void **state)
{
	char dir[400], path[500], msg[1024];
	int rc;

	if (geteuid() != 0) {
		print_message("not root: skipped\n");
		return;
	}
	snprintf(dir, sizeof(dir), "%s/model", D.dir);
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_int_equal(chmod(D.dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/a.safetensors", dir);
	write_shard(path, "a", 0644);
	snprintf(path, sizeof(path), "%s/b.safetensors", dir);
	write_shard(path, "b", 0000); /* nobody without capabilities reads */
	snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
	write_file(path, "{\"weight_map\":{\"a\":\"a.safetensors\","
			 "\"b\":\"b.safetensors\"}}");
	rc = import_as_capless_root(dir, msg, sizeof(msg));
	print_message("capless import of a folder with an unreadable shard: "
		      "%d: %s\n",
		      rc, msg);
	assert_int_equal(rc, EACCES);
	assert_non_null(strstr(msg, "b.safetensors"));
	no_leak(msg);
	/* The same folder with the shard readable imports fine. */
	assert_int_equal(chmod(path, 0644), 0);
	snprintf(path, sizeof(path), "%s/b.safetensors", dir);
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(import_as_capless_root(dir, msg, sizeof(msg)), 0);
	assert_int_equal(chmod(D.dir, 0700), 0);
}

/* A snapshot-style shard that is a symlink into a folder the client
 * cannot enter: the daemon must not follow it for the client. */
static void test_rights__symlink_into_a_closed_folder(void **state)
{
	char dir[400], blobs[400], path[500], target[500], msg[1024];
	int rc;

	if (geteuid() != 0) {
		print_message("not root: skipped\n");
		return;
	}
	snprintf(dir, sizeof(dir), "%s/snap", D.dir);
	snprintf(blobs, sizeof(blobs), "%s/blobs", D.dir);
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_int_equal(mkdir(blobs, 0700), 0);
	assert_int_equal(chown(blobs, 65534, 65534), 0);
	assert_int_equal(chmod(D.dir, 0755), 0);
	snprintf(target, sizeof(target), "%s/secret", blobs);
	write_shard(target, "w", 0644); /* readable, but behind blobs/ */
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	assert_int_equal(symlink(target, path), 0);
	rc = import_as_capless_root(dir, msg, sizeof(msg));
	print_message("capless import through a symlink into a closed "
		      "folder: %d: %s\n",
		      rc, msg);
	assert_int_equal(rc, EACCES);
	no_leak(msg);
	assert_int_equal(chmod(D.dir, 0700), 0);
}

/* The daemon no longer takes a folder fd (it would open its shards with
 * its own rights): a raw IMPORT carrying one is refused. */
static void test_rights__daemon_refuses_a_folder_fd(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__frame_hdr h;
	uint8_t *body = NULL;
	int fd = t_raw_connect(D.sock), dfd, fds[8], nfds = 0;
	struct tc__cur cur;
	int32_t st;
	const char *m;
	size_t ml;

	assert_int_equal(t_raw_hello(fd), 0);
	dfd = open(D.dir, O_RDONLY | O_DIRECTORY);
	assert_true(dfd >= 0);
	tc__buf_put_str(&b, D.dir);
	tc__buf_put_str(&b, "");
	tc__buf_put_str(&b, "");
	tc__buf_put_u32(&b, 0);
	tc__buf_put_u64(&b, 0);
	assert_int_equal(
		t_raw_send(fd, TC_MSG_IMPORT, 7, b.data, b.len, &dfd, 1), 0);
	assert_int_equal(t_raw_recv(fd, &h, &body, fds, &nfds), 0);
	tc__cur_init(&cur, body, h.body_len);
	assert_int_equal(tc__cur_read_i32(&cur, &st), 0);
	assert_int_equal(st, TC_EINVAL);
	assert_int_equal(tc__cur_read_str(&cur, 4096, &m, &ml), 0);
	assert_non_null(strstr(m, "is a folder"));
	free(body);
	tc__buf_release(&b);
	close(dfd);
	close(fd);
}

/* IMPORT of a folder with n shards named: the socket its fds come on
 * (the test's end of it in *sock).  Returns the raw connection. */
static int shard_import(uint32_t n, int *sock)
{
	struct tc__buf b = TC_BUF_INIT;
	int fd = t_raw_connect(D.sock), sp[2];
	char name[32];

	assert_int_equal(t_raw_hello(fd), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp), 0);
	tc__buf_put_str(&b, D.dir);
	tc__buf_put_str(&b, "");
	tc__buf_put_str(&b, "");
	tc__buf_put_u32(&b, TC_RF_SHARDS);
	tc__buf_put_u64(&b, 0);
	tc__buf_put_u32(&b, n);
	for (uint32_t i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "s%u.safetensors", i);
		tc__buf_put_str(&b, name);
	}
	assert_int_equal(
		t_raw_send(fd, TC_MSG_IMPORT, 9, b.data, b.len, &sp[1], 1), 0);
	close(sp[1]);
	tc__buf_release(&b);
	*sock = sp[0];
	return fd;
}

/* The import's reply: its status, and its message in msg. */
static int32_t import_reply(int fd, char *msg, size_t len)
{
	struct tc__frame_hdr h;
	uint8_t *body = NULL;
	int fds[8], nfds = 0;
	struct tc__cur cur;
	const char *m = "";
	size_t ml = 0;
	int32_t st = 0;

	assert_int_equal(t_raw_recv(fd, &h, &body, fds, &nfds), 0);
	tc__cur_init(&cur, body, h.body_len);
	assert_int_equal(tc__cur_read_i32(&cur, &st), 0);
	if (st < 0)
		assert_int_equal(tc__cur_read_str(&cur, 4096, &m, &ml), 0);
	snprintf(msg, len, "%.*s", (int)ml, m);
	free(body);
	return st;
}

/* The shard fds come on a socket of the client's, read by an I/O worker
 * of the daemon's: a client that sends bytes without fds, or trickles
 * its fds (each message within 10 s, the whole over 10 s), gets an error
 * within the exchange's 10 s and the worker goes back to everyone. */
static void test_rights__shard_socket_bounded(void **state)
{
	struct iovec iov = { (void *)"s", 1 };
	int sock, fd, dn[TC_IMPORT_FDS_PER_MSG], sent = 0;
	struct timespec t0, t1;
	char msg[4096];
	double s;

	/* bytes, no fds */
	fd = shard_import(2, &sock);
	assert_int_equal(send(sock, "x", 1, 0), 1);
	assert_int_equal(import_reply(fd, msg, sizeof(msg)), TC_EPROTO);
	print_message("bytes without fds: %s\n", msg);
	assert_non_null(strstr(msg, "a message without shard fds"));
	close(sock);
	close(fd);

	/* 8 fds every 4 s of 32 named: refused at 10 s, not served at 12 */
	for (int i = 0; i < TC_IMPORT_FDS_PER_MSG; i++)
		assert_true((dn[i] = open("/dev/null", O_RDONLY)) >= 0);
	fd = shard_import(32, &sock);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int k = 0; k < 4; k++) {
		struct pollfd p = { fd, POLLIN, 0 };

		if (tc__fdpass_send(sock, &iov, 1, dn, TC_IMPORT_FDS_PER_MSG) ==
		    1)
			sent += TC_IMPORT_FDS_PER_MSG;
		if (poll(&p, 1, 4000) == 1)
			break;
	}
	assert_int_equal(import_reply(fd, msg, sizeof(msg)), TC_EPROTO);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	print_message("trickled (%d fds sent): %s after %.1f s\n", sent, msg,
		      s);
	assert_non_null(strstr(msg, "of 32 shards in 10000 ms"));
	assert_true(s > 9.0);
	assert_true(sent < 32);
	for (int i = 0; i < TC_IMPORT_FDS_PER_MSG; i++)
		close(dn[i]);
	close(sock);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_rights__unreadable_shard_in_an_indexed_folder),
		cmocka_unit_test(test_rights__symlink_into_a_closed_folder),
		cmocka_unit_test(test_rights__daemon_refuses_a_folder_fd),
		cmocka_unit_test(test_rights__shard_socket_bounded),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
