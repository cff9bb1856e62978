/*
 * test_gpu_parts.c - src/store/gpu_parts.c alone: a view's parts, a
 * lead's first ranges, and the pipe a lead's fill publishes its progress
 * through (its waits driven from threads, no GPU).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "format/view.h"
#include "net/ev.h"
#include "store/gpu_parts.h"

#define KiB ((uint64_t)1 << 10)

/* A view "tcast.view_parts" over a byte space of `total` bytes. */
static void view_table(struct tc__table *t, struct tc__meta *m, uint64_t total,
		       const char *parts)
{
	memset(t, 0, sizeof(*t));
	m->key = "tcast.view_parts";
	m->val = (char *)parts;
	t->meta = m;
	t->nmeta = 1;
	t->total_bytes = total;
}

static void test_gpu_parts__parse(void **state)
{
	struct tc__table t;
	struct tc__meta m;
	struct tc__xfer_part *p;
	uint32_t n;

	view_table(&t, &m, 1024 * KiB, "0:4096:65536 131072:0:262144");
	assert_true(tc__view_parts_parse(&t, &p, &n));
	assert_int_equal(n, 2);
	assert_int_equal(p[1].dst_off, 131072);
	assert_int_equal(p[1].src_off, 0);
	assert_int_equal(p[1].len, 262144);
	tc__free(p);
	/* Overlapping, past the end, not numbers: nothing. */
	view_table(&t, &m, 1024 * KiB, "0:0:131072 65536:0:65536");
	assert_false(tc__view_parts_parse(&t, &p, &n));
	view_table(&t, &m, 64 * KiB, "0:0:131072");
	assert_false(tc__view_parts_parse(&t, &p, &n));
	view_table(&t, &m, 64 * KiB, "x");
	assert_false(tc__view_parts_parse(&t, &p, &n));
	assert_null(p);
}

/* A lead's first ranges are the whole tensors of the source its parts
 * hold: rank 0's part runs from a replicated tensor into its shard of
 * the next (contiguous in both spaces), only the former goes first. */
static void test_gpu_parts__lead_ranges(void **state)
{
	struct tc__tensor ts[3] = {
		{ .name = "norm", .nbytes = 128 * KiB, .offset = 0 },
		{ .name = "w", .nbytes = 512 * KiB, .offset = 128 * KiB },
		{ .name = "tiny", .nbytes = 4 * KiB, .offset = 640 * KiB },
	};
	struct tc__table src = { .tensors = ts, .ntensors = 3 };
	struct tc__xfer_part parts[2] = {
		{ .dst_off = 0, .src_off = 0, .len = 256 * KiB },
		{ .dst_off = 256 * KiB, .src_off = 640 * KiB, .len = 4 * KiB },
	};
	struct tc__xfer_part *l;
	uint32_t n;

	tc__view_parts_lead(parts, 2, &src, &l, &n);
	assert_int_equal(n, 1); /* "tiny" is below TC_VIEW_PART_MIN */
	assert_int_equal(l[0].dst_off, 0);
	assert_int_equal(l[0].src_off, 0);
	assert_int_equal(l[0].len, 128 * KiB);
	tc__free(l);
	/* Without the source's table: every part. */
	tc__view_parts_lead(parts, 2, NULL, &l, &n);
	assert_int_equal(n, 2);
	tc__free(l);
}

/* Pieces from a ready source win over a lead's where both cover the
 * same bytes; what a piece adds past another is kept. */
static void test_gpu_parts__overlap_and_trim(void **state)
{
	struct tc__xfer_part mine[1] = { { 0, 0, 512 * KiB, NULL, NULL } };
	struct tc__xfer_part lead[1] = { { 64 * KiB, 0, 256 * KiB, NULL,
					   NULL } };
	struct tc__xfer_part ready[1] = { { 0, 0, 128 * KiB, NULL, NULL } };
	struct tc__gpu_mem a = { .dptr = 1 }, b = { .dptr = 2 };
	struct tc__xfer_part *pc = NULL;
	uint32_t npc = 0, cap = 0;
	int gate;

	assert_int_equal(tc__view_parts_overlap(mine, 1, lead, 1, &a, &gate,
						&pc, &npc, &cap),
			 1);
	assert_int_equal(tc__view_parts_overlap(mine, 1, ready, 1, &b, NULL,
						&pc, &npc, &cap),
			 1);
	/* The lead holds source [0, 256K) at its byte 64K. */
	assert_int_equal(pc[0].src_off, 64 * KiB);
	npc = tc__view_parts_trim(pc, npc);
	assert_int_equal(npc, 2);
	assert_ptr_equal(pc[0].src, &b);
	assert_null(pc[0].gate);
	assert_int_equal(pc[0].len, 128 * KiB);
	assert_ptr_equal(pc[1].gate, &gate);
	assert_int_equal(pc[1].dst_off, 128 * KiB);
	assert_int_equal(pc[1].src_off, 64 * KiB + 128 * KiB);
	assert_int_equal(pc[1].len, 128 * KiB);
	tc__free(pc);
}

static struct tc__gpu_pipe *pipe_of(uint32_t n)
{
	struct tc__xfer_part *l = tc__calloc(n, sizeof(*l));
	struct tc__gpu_pipe *p;

	for (uint32_t i = 0; i < n; i++)
		l[i] = (struct tc__xfer_part){ .dst_off = i * 256 * KiB,
					       .len = 128 * KiB };
	assert_int_equal(tc__gpu_pipe_new(l, n, &p), 0);
	return p;
}

struct waiter {
	struct tc__gpu_pipe *p;
	uint64_t off, len, stall_ms;
	int rc;
	struct tc__gpu_mem mem;
	uint64_t waited_ms;
};

static void *wait_run(void *arg)
{
	struct waiter *w = arg;
	uint64_t t0 = tc__now_ms();

	w->rc = tc__gpu_pipe_wait(w->p, w->off, w->len, w->stall_ms, &w->mem);
	w->waited_ms = tc__now_ms() - t0;
	return NULL;
}

/* A follower waits for the range it wants, not for the whole fill; the
 * lead's allocation comes with the answer. */
static void test_gpu_parts__pipe_waits_for_its_range(void **state)
{
	struct tc__gpu_pipe *p = pipe_of(2);
	struct tc__gpu_mem mem = { .dptr = 0x1000, .size = 1 << 20 };
	struct waiter w = { p, 256 * KiB, 128 * KiB, 10000, 1, { 0 }, 0 };
	pthread_t th;

	assert_int_equal(p->nlead, 2);
	assert_int_equal(p->first[1].off, 256 * KiB);
	assert_int_equal(pthread_create(&th, NULL, wait_run, &w), 0);
	usleep(50000);
	tc__gpu_pipe_publish(p, &mem, 128 * KiB); /* range 0: not enough */
	usleep(50000);
	assert_int_equal(pthread_tryjoin_np(th, NULL), EBUSY); /* waits */
	tc__gpu_pipe_publish(p, &mem, 384 * KiB);
	pthread_join(th, NULL);
	assert_int_equal(w.rc, 0);
	assert_int_equal(w.mem.dptr, 0x1000);
	assert_int_equal(p->copying, 1);
	tc__gpu_pipe_copied(p);
	/* Done: anything of it, at once. */
	tc__gpu_pipe_end(p, 0, &mem);
	assert_false(tc__gpu_pipe_live(p));
	assert_int_equal(tc__gpu_pipe_wait(p, 0, 1, 10, &w.mem), 0);
	tc__gpu_pipe_copied(p);
	tc__gpu_pipe_put(p);
}

/* A lead that fails ends every wait (nothing copied), and a failed lead
 * returns from its end only once the copies reading its allocation are
 * over. */
struct ender {
	struct tc__gpu_pipe *p;
	uint64_t ended_ms;
};

static void *end_run(void *arg)
{
	struct ender *e = arg;

	tc__gpu_pipe_end(e->p, -EIO, NULL);
	e->ended_ms = tc__now_ms();
	return NULL;
}

static void test_gpu_parts__pipe_failure(void **state)
{
	struct tc__gpu_pipe *p = pipe_of(2);
	struct tc__gpu_mem mem = { .dptr = 0x1000, .size = 1 << 20 }, got;
	struct waiter w = { p, 256 * KiB, 128 * KiB, 10000, 1, { 0 }, 0 };
	struct ender e = { p, 0 };
	pthread_t th, te;
	uint64_t copied_ms;

	tc__gpu_pipe_get(p);
	tc__gpu_pipe_publish(p, &mem, 128 * KiB);
	assert_int_equal(tc__gpu_pipe_wait(p, 0, 128 * KiB, 10, &got), 0);
	assert_int_equal(pthread_create(&th, NULL, wait_run, &w), 0);
	assert_int_equal(pthread_create(&te, NULL, end_run, &e), 0);
	pthread_join(th, NULL);
	assert_int_equal(w.rc, -ECANCELED);
	usleep(100000);
	/* A copy still reads it. */
	assert_int_equal(pthread_tryjoin_np(te, NULL), EBUSY);
	copied_ms = tc__now_ms();
	tc__gpu_pipe_copied(p);
	pthread_join(te, NULL);
	assert_true(e.ended_ms >= copied_ms);
	/* Published again after the failure: nothing moves. */
	tc__gpu_pipe_publish(p, &mem, 384 * KiB);
	assert_int_equal(p->done_to, 128 * KiB);
	tc__gpu_pipe_put(p);
	tc__gpu_pipe_put(p);
}

/* A lead that completes nothing: the wait ends after the stall bound,
 * and progress restarts the bound. */
static void test_gpu_parts__pipe_stall(void **state)
{
	struct tc__gpu_pipe *p = pipe_of(3);
	struct tc__gpu_mem mem = { .dptr = 0x1000, .size = 1 << 20 };
	struct waiter w = { p, 512 * KiB, 128 * KiB, 300, 1, { 0 }, 0 };
	pthread_t th;

	assert_int_equal(pthread_create(&th, NULL, wait_run, &w), 0);
	usleep(200000);
	tc__gpu_pipe_publish(p, &mem, 128 * KiB);
	pthread_join(th, NULL);
	assert_int_equal(w.rc, -ETIMEDOUT);
	assert_true(w.waited_ms >= 450); /* 200 ms, then 300 more */
	assert_true(w.waited_ms < 5000);
	tc__gpu_pipe_put(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gpu_parts__parse),
		cmocka_unit_test(test_gpu_parts__lead_ranges),
		cmocka_unit_test(test_gpu_parts__overlap_and_trim),
		cmocka_unit_test(test_gpu_parts__pipe_waits_for_its_range),
		cmocka_unit_test(test_gpu_parts__pipe_failure),
		cmocka_unit_test(test_gpu_parts__pipe_stall),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
