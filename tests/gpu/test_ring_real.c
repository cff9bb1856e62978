/*
 * test_ring_real.c - slab rings (include/tcast/ring.h) between two
 * processes, on the real driver (GPU machine) and on the fake (ctest's
 * gpu/test_ring_real_on_fake), through the public ABI only.
 *
 * What it proves:
 *   - a payload written by the owner is read by a freshly exec'd reader
 *     that imported the slab once, over SCM_RIGHTS; the next payloads reuse
 *     the slab with no new export or map (counters say so);
 *   - a slab comes back only when the reader's last view died and it
 *     drained the report; a stale or repeated report changes nothing;
 *   - the cap: a full ring answers TC_ENOSPACE, a put-back slab is reused,
 *     a free slab too small is replaced;
 *   - the owner freeing its ring (a server or client dying) does not take
 *     the memory from under a reader's live view;
 *   - concurrent acquirers never get the same slab at once.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tcast/dlpack.h"
#include "tcast/errors.h"
#include "tcast/ring.h"
#include "gpu/vmm.h"
#include "gpu_test.h"

#define MiB ((uint64_t)1 << 20)

static int dev;
static uint64_t big;
static char err[512];

/* Parent -> child: what to do with a slot. */
struct ring_req {
	uint32_t op; /* 1: import (fd attached) + read, 2: read, 3: drop, 9: end
		      */
	uint32_t slot, gen;
	uint64_t size, nbytes, seed;
};

/* Child -> parent. */
struct ring_rep {
	int32_t ret;
	uint32_t ndead;
	uint64_t dead[4];
	uint64_t imported;
	char msg[256];
};

static void view_drop(void *m)
{
	struct tc_DLManagedTensor *t = m;

	t->deleter(t);
}

/* The reader: keeps the latest payload's view only, reads it back into host
 * memory and checks the pattern the parent wrote. */
static int child_reader(int sock)
{
	void *views[TC_RING_MAX_SLOTS] = { 0 };
	struct tc_ring_stats st;
	struct ring_req req;
	struct ring_rep rep;
	tc_ring *r;
	int fd, ret;

	ret = tc_ring_create(0, TC_RING_READER, 0, &r);
	if (ret < 0)
		return 3;
	for (;;) {
		memset(&rep, 0, sizeof(rep));
		if (t_recv(sock, &fd, &req, sizeof(req)) < 0)
			return 3;
		if (req.op == 9)
			break;
		if (req.op == 1) {
			ret = tc_ring_import(r, req.slot, fd, req.size);
			close(fd);
			if (ret < 0)
				goto out_reply;
		}
		if (req.op == 1 || req.op == 2) {
			uint8_t *host = malloc(req.nbytes), *want;
			struct tc_DLManagedTensor *t;

			want = malloc(req.nbytes);
			/* Only the latest payload stays alive here. */
			for (unsigned i = 0; i < TC_RING_MAX_SLOTS; i++) {
				if (views[i])
					view_drop(views[i]);
				views[i] = NULL;
			}
			ret = tc_ring_view(r, req.slot, req.gen, req.nbytes, 0,
					   &views[req.slot]);
			if (ret == 0) {
				t = views[req.slot];
				ret = tc__gpu_dtoh(
					0, host,
					(uint64_t)(uintptr_t)t->dl_tensor.data,
					req.nbytes, NULL, rep.msg,
					sizeof(rep.msg));
			}
			t_fill_pattern(want, req.nbytes, req.seed);
			if (ret == 0 && memcmp(host, want, req.nbytes) != 0) {
				ret = TC_EDIGEST;
				snprintf(rep.msg, sizeof(rep.msg),
					 "slot %u: data differs", req.slot);
			}
			free(host);
			free(want);
		}
		if (req.op == 3 && views[req.slot]) {
			view_drop(views[req.slot]);
			views[req.slot] = NULL;
		}
out_reply:
		rep.ret = ret;
		if (ret < 0 && !rep.msg[0])
			snprintf(rep.msg, sizeof(rep.msg), "%s",
				 tc_ring_errmsg(r));
		rep.ndead = (uint32_t)tc_ring_drain(r, rep.dead, 4);
		tc_ring_stats(r, &st);
		rep.imported = st.imported;
		if (t_send(sock, -1, &rep, sizeof(rep)) < 0)
			return 3;
	}
	for (unsigned i = 0; i < TC_RING_MAX_SLOTS; i++)
		if (views[i])
			view_drop(views[i]);
	tc_ring_free(r);
	return 0;
}

static void ask(int sock, int fd, const struct ring_req *q, struct ring_rep *a)
{
	assert_int_equal(t_send(sock, fd, q, sizeof(*q)), 0);
	assert_int_equal(t_recv(sock, NULL, a, sizeof(*a)), 0);
	if (a->ret != 0)
		fail_msg("reader: %s: %s", tc_err_name(a->ret), a->msg);
}

/* Write `seed`'s pattern into the slab at dptr. */
static void fill(uint64_t dptr, uint64_t n, uint64_t seed)
{
	uint8_t *p = malloc(n);

	t_fill_pattern(p, n, seed);
	assert_int_equal(tc__gpu_htod(dev, dptr, p, n, NULL, err, sizeof(err)),
			 0);
	free(p);
}

static void test_ring__two_processes(void **state)
{
	struct tc_ring_stats st;
	struct ring_req q = { 0 };
	struct ring_rep a;
	uint32_t slot, gen, slot2, gen2;
	uint64_t dptr, size, n = 3 * MiB + 5;
	int is_new, fd, sock = -1, status;
	tc_ring *r;
	pid_t pid;

	(void)state;
	assert_int_equal(tc_ring_create(dev, TC_RING_OWNER, 8 * MiB, &r), 0);
	pid = t_spawn_child("reader", NULL, &sock);
	assert_true(pid > 0);

	/* First payload: a new slab, shipped once. */
	assert_int_equal(tc_ring_acquire(r, n, &slot, &gen, &dptr, &is_new), 0);
	assert_int_equal(is_new, 1);
	fill(dptr, n, 11);
	assert_int_equal(tc_ring_fd(r, slot, &fd, &size), 0);
	assert_true(size >= n);
	q = (struct ring_req){ 1, slot, gen, size, n, 11 };
	ask(sock, fd, &q, &a);
	assert_int_equal(a.ndead, 0); /* its view is alive */
	/* Busy: the next payload gets another slab; the cap then refuses. */
	assert_int_equal(tc_ring_acquire(r, n, &slot2, &gen2, &dptr, &is_new),
			 0);
	assert_int_not_equal(slot2, slot);
	assert_int_equal(tc_ring_acquire(r, 1, &slot2, &gen2, &dptr, &is_new),
			 TC_ENOSPACE);
	assert_int_equal(tc_ring_put_back(r, slot2, gen2 - 0), 0);

	/* The reader drops its view: the drained report frees the slab. */
	q = (struct ring_req){ 3, slot, gen, 0, 0, 0 };
	ask(sock, -1, &q, &a);
	assert_int_equal(a.ndead, 1);
	assert_int_equal(a.dead[0], (uint64_t)slot << 32 | gen);
	assert_int_equal(tc_ring_put_back(r, slot, gen), 0);
	assert_int_equal(tc_ring_put_back(r, slot, gen), TC_EINVAL);

	/* Reuse: the two slabs alternate (the previous payload's slab is
	 * busy until its report), each shipped and mapped once. */
	for (uint64_t i = 0; i < 20; i++) {
		uint64_t m = n - i * 1000;
		uint32_t s, g;

		assert_int_equal(tc_ring_acquire(r, m, &s, &g, &dptr, &is_new),
				 0);
		fill(dptr, m, 100 + i);
		fd = -1;
		if (is_new)
			assert_int_equal(tc_ring_fd(r, s, &fd, &size), 0);
		q = (struct ring_req){ is_new ? 1 : 2, s, g, size, m, 100 + i };
		ask(sock, fd, &q, &a);
		/* The previous payload's view was replaced: its report. */
		if (i > 0) {
			assert_int_equal(a.ndead, 1);
			assert_int_equal(
				tc_ring_put_back(r, (uint32_t)(a.dead[0] >> 32),
						 (uint32_t)a.dead[0]),
				0);
		}
		slot = s;
		gen = g;
	}
	assert_int_equal(a.imported, 2);
	tc_ring_stats(r, &st);
	assert_int_equal(st.created, 2);
	assert_int_equal(st.acquired, 22);

	/* The owner goes away: the reader's live view still reads. */
	tc_ring_free(r);
	q = (struct ring_req){ 2, slot, gen, 0, n - 19 * 1000, 119 };
	ask(sock, -1, &q, &a);

	q.op = 9;
	assert_int_equal(t_send(sock, -1, &q, sizeof(q)), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(sock);
}

static void test_ring__replace_small_and_views_outlive_free(void **state)
{
	struct tc_ring_stats st;
	struct tc_DLManagedTensor *t;
	uint32_t slot, gen, s2, g2;
	uint64_t dptr;
	int is_new;
	tc_ring *r;
	void *v;

	(void)state;
	assert_int_equal(tc_ring_create(dev, TC_RING_OWNER, 4 * MiB, &r), 0);
	assert_int_equal(tc_ring_acquire(r, MiB, &slot, &gen, &dptr, &is_new),
			 0);
	assert_int_equal(tc_ring_put_back(r, slot, gen), 0);
	/* 2 MiB free, too small for 3 MiB; 2 + 4 > cap: it is replaced. */
	assert_int_equal(tc_ring_acquire(r, 3 * MiB, &s2, &g2, &dptr, &is_new),
			 0);
	assert_int_equal(is_new, 1);
	tc_ring_stats(r, &st);
	assert_int_equal(st.slabs, 1);
	assert_int_equal(st.bytes, 4 * MiB);
	/* A view holds the slab after the ring is freed. */
	assert_int_equal(tc_ring_view(r, s2, g2, 3 * MiB, 0, &v), 0);
	view_drop(v);
	assert_int_equal(tc_ring_view(r, s2, g2, 5 * MiB, 0, &v), TC_EINVAL);
	assert_null(v);
	assert_int_equal(tc_ring_view(r, s2, g2, 3 * MiB, 0, &v), 0);
	fill(dptr, 3 * MiB, 7);
	tc_ring_free(r);
	t = v;
	{
		uint8_t *a = malloc(3 * MiB), *b = malloc(3 * MiB);

		assert_int_equal(
			tc__gpu_dtoh(dev, a,
				     (uint64_t)(uintptr_t)t->dl_tensor.data,
				     3 * MiB, NULL, err, sizeof(err)),
			0);
		t_fill_pattern(b, 3 * MiB, 7);
		assert_memory_equal(a, b, 3 * MiB);
		free(a);
		free(b);
	}
	t->deleter(t); /* the last reference: ring and slab go now */
	/* Roles are enforced. */
	assert_int_equal(tc_ring_create(dev, 3, 0, &r), TC_EINVAL);
	assert_int_equal(tc_ring_create(dev, TC_RING_READER, 0, &r), 0);
	assert_int_equal(tc_ring_acquire(r, 1, &slot, &gen, &dptr, &is_new),
			 TC_EINVAL);
	assert_int_equal(tc_ring_import(r, 64, 0, 1), TC_EINVAL);
	tc_ring_free(r);
}

struct racer {
	tc_ring *r;
	_Atomic int *owner; /* per slot: who holds it */
	int id, bad, got;
};

static void *race(void *arg)
{
	struct racer *x = arg;

	for (int i = 0; i < 300; i++) {
		uint32_t s, g;
		uint64_t d;
		int is_new, prev = 0;

		if (tc_ring_acquire(x->r, (uint64_t)(1 + i % 3) * MiB, &s, &g,
				    &d, &is_new) < 0)
			continue;
		x->got++;
		if (!atomic_compare_exchange_strong(&x->owner[s], &prev, x->id))
			x->bad++;
		atomic_store(&x->owner[s], 0);
		if (tc_ring_put_back(x->r, s, g) != 0)
			x->bad++;
	}
	return NULL;
}

static void test_ring__concurrent_acquirers(void **state)
{
	static _Atomic int owner[TC_RING_MAX_SLOTS];
	struct racer x[8];
	pthread_t th[8];
	struct tc_ring_stats st;
	tc_ring *r;

	(void)state;
	assert_int_equal(tc_ring_create(dev, TC_RING_OWNER, 16 * MiB, &r), 0);
	for (int i = 0; i < 8; i++) {
		x[i] = (struct racer){ r, owner, i + 1, 0, 0 };
		assert_int_equal(pthread_create(&th[i], NULL, race, &x[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(x[i].bad, 0);
		assert_true(x[i].got > 0);
	}
	tc_ring_stats(r, &st);
	assert_int_equal(st.busy, 0);
	assert_true(st.bytes <= 16 * MiB);
	tc_ring_free(r);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ring__two_processes),
		cmocka_unit_test(
			test_ring__replace_small_and_views_outlive_free),
		cmocka_unit_test(test_ring__concurrent_acquirers),
	};
	struct tc__gpu_info gi;
	int ret;

	if (argc == 4 && !strcmp(argv[1], "--child") &&
	    !strcmp(argv[2], "reader"))
		return child_reader(atoi(argv[3]));
	ret = t_gpu_start(&big, &dev);
	if (ret >= 0)
		return ret;
	if (tc__gpu_device_info(dev, &gi, err, sizeof(err)) < 0 || !gi.vmm ||
	    !gi.posix_fd) {
		printf("SKIP: GPU %d lacks VMM with POSIX fds\n", dev);
		return 77;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
