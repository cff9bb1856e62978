/*
 * test_fdown.c - a queued reply owns the fds it carries.
 *
 * Replies that carry an fd (ATTACH, CREATE) are queued and sent after every
 * frame of the same read is handled.  A client that pipelines a request
 * freeing the fd's object (RELEASE+RM, ABORT) and then one that makes a new
 * file (CREATE) must still receive exactly the fd its reply describes: never
 * a number the daemon closed and reused for someone else's file.  Each
 * received fd is checked by what it is (memfd size, access mode, seals,
 * inode, bytes), not by its number.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "tcast/client.h"
#include "tcast/errors.h"
#include "tlib.h"

static struct t_daemon D;

static int setup(void **state)
{
	t_daemon_start(&D, "256MiB", NULL);
	return 0;
}

static int teardown(void **state)
{
	assert_int_equal(t_daemon_stop(&D), 0);
	return 0;
}

/* Append one frame to `b` (several frames are written in one go). */
static void frame(struct tc__buf *b, int type, uint32_t req,
		  const struct tc__buf *body)
{
	size_t off = tc__frame_begin(b, type, 0, req, 0);

	if (body)
		tc__buf_put(b, body->data, body->len);
	tc__frame_finish(b, off);
}

/* A CREATE body: one F32 tensor of n elements, no key. */
static void create_body(struct tc__buf *b, uint64_t n)
{
	tc__buf_put_u32(b, 1);
	tc__buf_put_str(b, "w");
	tc__buf_put_u8(b, TC_DTYPE_F32);
	tc__buf_put_u8(b, 1);
	tc__buf_put_u64(b, n);
	tc__buf_put_u64(b, 0);
	tc__buf_put_u64(b, n * 4);
	tc__buf_put_u32(b, 0);
	tc__buf_put_u64(b, n * 4);
	tc__buf_put_str(b, "");
	tc__buf_put_str(b, "");
	tc__buf_put_u32(b, 0);
	tc__buf_put_u64(b, 0);
}

static void send_all(int fd, const struct tc__buf *b)
{
	size_t done = 0;

	while (done < b->len) {
		ssize_t n = write(fd, b->data + done, b->len - done);

		assert_true(n > 0);
		done += (size_t)n;
	}
}

/* Read the reply to `req`: status, body (malloc'd) and its fd (or -1). */
static int recv_reply(int fd, uint32_t req, uint8_t **body, int *rfd)
{
	struct tc__frame_hdr h;
	int fds[4], nfds = 0, status;

	*rfd = -1;
	if (t_raw_recv(fd, &h, body, fds, &nfds) < 0)
		fail_msg("connection ended before the reply to %u", req);
	assert_int_equal(h.req_id, req);
	memcpy(&status, *body, 4);
	if (nfds == 1)
		*rfd = fds[0];
	else
		assert_int_equal(nfds, 0);
	return status;
}

/* A CREATE reply: handle and segment size; the fd must be a writable
 * memfd of exactly that size, sealed against resizing only. */
static ino_t check_create_reply(uint8_t *body, int mfd, uint64_t *handle)
{
	uint64_t segsize;
	struct stat st;
	int seals;

	memcpy(handle, body + 4, 8);
	memcpy(&segsize, body + 12, 8);
	assert_true(mfd >= 0);
	assert_int_equal(fstat(mfd, &st), 0);
	if ((uint64_t)st.st_size != segsize)
		fail_msg("CREATE reply carried a %lld-byte file, its body says "
			 "%llu: someone else's fd",
			 (long long)st.st_size, (unsigned long long)segsize);
	assert_int_equal(fcntl(mfd, F_GETFL) & O_ACCMODE, O_RDWR);
	seals = fcntl(mfd, F_GET_SEALS);
	assert_true(seals & F_SEAL_SHRINK);
	assert_false(seals & F_SEAL_WRITE);
	return st.st_ino;
}

/* An ATTACH reply's fd must be read-only, write-sealed, and hold exactly
 * `expect` (the artifact's bytes). */
static void check_attach_fd(int afd, const uint8_t *expect, size_t n)
{
	uint8_t *got = malloc(n);

	assert_true(afd >= 0);
	if ((fcntl(afd, F_GETFL) & O_ACCMODE) != O_RDONLY)
		fail_msg("ATTACH reply carried a writable fd: someone else's");
	assert_true(fcntl(afd, F_GET_SEALS) & F_SEAL_WRITE);
	assert_int_equal(pread(afd, got, n, 0), (ssize_t)n);
	assert_memory_equal(got, expect, n);
	free(got);
}

/* CREATE, ABORT of that put, CREATE of another size: one write, then the
 * replies.  The first reply's fd was the aborted segment's; the third
 * CREATE's memfd takes the lowest free number, which used to be it. */
static void test_fdown__create_abort_create(void **state)
{
	for (int round = 0; round < 20; round++) {
		struct tc__buf b = TC_BUF_INIT, x = TC_BUF_INIT;
		int fd = t_raw_connect(D.sock), f1, f3, st;
		uint64_t h1, h3;
		ino_t i1, i3;
		uint8_t *body;

		assert_int_equal(t_raw_hello(fd), 0);
		create_body(&x, 1024);
		frame(&b, TC_MSG_CREATE, 1, &x);
		tc__buf_release(&x);
		tc__buf_put_u64(&x, 1); /* handles count from 1 */
		frame(&b, TC_MSG_ABORT, 2, &x);
		tc__buf_release(&x);
		create_body(&x, 1u << 16);
		frame(&b, TC_MSG_CREATE, 3, &x);
		tc__buf_release(&x);
		send_all(fd, &b);
		tc__buf_release(&b);

		assert_int_equal(recv_reply(fd, 1, &body, &f1), 0);
		i1 = check_create_reply(body, f1, &h1);
		assert_int_equal(h1, 1);
		free(body);
		st = recv_reply(fd, 2, &body, &f3);
		assert_int_equal(st, 0);
		assert_int_equal(f3, -1);
		free(body);
		assert_int_equal(recv_reply(fd, 3, &body, &f3), 0);
		i3 = check_create_reply(body, f3, &h3);
		free(body);
		assert_true(i1 != i3);
		/* The aborted segment is ours alone now: writing it changes
		 * nothing anyone can see. */
		assert_int_equal(pwrite(f1, "x", 1, 0), 1);
		close(f1);
		close(f3);
		close(fd);
	}
}

/* ATTACH, RELEASE, RM (the artifact goes: its fds are closed), CREATE (a
 * new writable memfd): the ATTACH reply must still carry the read-only
 * sealed fd of the attached bytes, never the new put's writable one. */
static void test_fdown__attach_release_rm_create(void **state)
{
	tc_client *c = t_connect(D.sock);
	size_t n;
	uint8_t *want = (uint8_t *)t_slurp(t_data("dtypes.safetensors"), &n);
	tc_artifact *a;
	struct tc_result r;
	uint8_t *bytes;
	size_t nbytes;

	free(want);
	assert_int_equal(tc_import(c, t_data("dtypes.safetensors"), NULL, &r),
			 0);
	assert_int_equal(tc_attach(c, r.id, &a), 0);
	nbytes = r.bytes;
	bytes = malloc(nbytes);
	memcpy(bytes, tc_artifact_data(a), nbytes);
	tc_artifact_close(a);

	for (int round = 0; round < 20; round++) {
		struct tc__buf b = TC_BUF_INIT, x = TC_BUF_INIT;
		int fd = t_raw_connect(D.sock), afd, cfd, nofd;
		uint64_t h;
		uint8_t *body;

		assert_int_equal(tc_import(c, t_data("dtypes.safetensors"),
					   NULL, &r),
				 0);
		assert_int_equal(t_raw_hello(fd), 0);
		tc__buf_put_str(&x, r.id);
		tc__buf_put_u32(&x, 0);
		frame(&b, TC_MSG_ATTACH, 1, &x);
		tc__buf_release(&x);
		tc__buf_put_str(&x, r.id);
		frame(&b, TC_MSG_RELEASE, 2, &x);
		frame(&b, TC_MSG_RM, 3, &x);
		tc__buf_release(&x);
		create_body(&x, 1024);
		frame(&b, TC_MSG_CREATE, 4, &x);
		frame(&b, TC_MSG_CREATE, 5, &x);
		tc__buf_release(&x);
		send_all(fd, &b);
		tc__buf_release(&b);

		assert_int_equal(recv_reply(fd, 1, &body, &afd), 0);
		free(body);
		check_attach_fd(afd, bytes, nbytes);
		assert_int_equal(recv_reply(fd, 3, &body, &nofd), 0);
		assert_int_equal(nofd, -1);
		free(body);
		assert_int_equal(recv_reply(fd, 4, &body, &cfd), 0);
		check_create_reply(body, cfd, &h);
		free(body);
		close(cfd);
		assert_int_equal(recv_reply(fd, 5, &body, &cfd), 0);
		check_create_reply(body, cfd, &h);
		free(body);
		close(cfd);
		close(afd);
		close(fd);
	}
	free(bytes);
	tc_client_close(c);
}

/* A randomized mix on two connections: every fd-carrying reply is checked
 * by what it is; the daemon's fd count comes back to where it started. */
static void test_fdown__random_pipelines(void **state)
{
	tc_client *c = t_connect(D.sock);
	struct tc_result r;
	tc_artifact *a;
	uint8_t *bytes;
	size_t nbytes;
	int base;
	unsigned seed = 12345;

	assert_int_equal(tc_import(c, t_data("dtypes.safetensors"), NULL, &r),
			 0);
	assert_int_equal(tc_attach(c, r.id, &a), 0);
	nbytes = r.bytes;
	bytes = malloc(nbytes);
	memcpy(bytes, tc_artifact_data(a), nbytes);
	tc_artifact_close(a);
	base = t_count_fds_of(D.pid);

	for (int round = 0; round < 100; round++) {
		struct tc__buf b = TC_BUF_INIT, x = TC_BUF_INIT;
		int fd = t_raw_connect(D.sock), kinds[16], nreq = 0;
		uint64_t next_handle = 1;

		assert_int_equal(tc_import(c, t_data("dtypes.safetensors"),
					   NULL, &r),
				 0);
		assert_int_equal(t_raw_hello(fd), 0);
		for (int i = 0; i < 12; i++) {
			int k = (int)(rand_r(&seed) % 5);

			tc__buf_init(&x);
			switch (k) {
			case 0: /* ATTACH: fd reply */
				tc__buf_put_str(&x, r.id);
				tc__buf_put_u32(&x, 0);
				frame(&b, TC_MSG_ATTACH, (uint32_t)i, &x);
				break;
			case 1: /* CREATE: fd reply */
				create_body(&x, 256u << (rand_r(&seed) % 6));
				frame(&b, TC_MSG_CREATE, (uint32_t)i, &x);
				next_handle++;
				break;
			case 2: /* RELEASE: no reply */
				tc__buf_put_str(&x, r.id);
				frame(&b, TC_MSG_RELEASE, (uint32_t)i, &x);
				break;
			case 3: /* RM */
				tc__buf_put_str(&x, r.id);
				frame(&b, TC_MSG_RM, (uint32_t)i, &x);
				break;
			default: /* ABORT of a put made earlier */
				tc__buf_put_u64(&x, next_handle > 1 ?
							    next_handle - 1 :
							    1);
				frame(&b, TC_MSG_ABORT, (uint32_t)i, &x);
				break;
			}
			tc__buf_release(&x);
			kinds[i] = k;
			nreq = i + 1;
		}
		send_all(fd, &b);
		tc__buf_release(&b);
		for (int i = 0; i < nreq; i++) {
			uint8_t *body;
			int rfd, st;
			uint64_t h;

			if (kinds[i] == 2)
				continue;
			st = recv_reply(fd, (uint32_t)i, &body, &rfd);
			if (kinds[i] == 0 && st == 0)
				check_attach_fd(rfd, bytes, nbytes);
			else if (kinds[i] == 1 && st == 0)
				check_create_reply(body, rfd, &h);
			else
				assert_int_equal(rfd, -1);
			free(body);
			if (rfd >= 0)
				close(rfd);
		}
		close(fd);
	}
	/* Every dup the queues made went back (the artifact is held again
	 * as at the start; a spare segment may have come or gone: +-2). */
	assert_int_equal(tc_import(c, t_data("dtypes.safetensors"), NULL, &r),
			 0);
	for (int i = 0; i < 100 && t_count_fds_of(D.pid) > base + 2; i++)
		usleep(10000);
	assert_true(t_count_fds_of(D.pid) <= base + 2);
	free(bytes);
	tc_client_close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fdown__create_abort_create),
		cmocka_unit_test(test_fdown__attach_release_rm_create),
		cmocka_unit_test(test_fdown__random_pipelines),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
