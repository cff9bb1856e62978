/*
 * test_peer_streams.c - the default number of TCP streams per source of a
 * pull (tc__peer_auto_streams, src/peer/pull.c; docs/peer.md "Data
 * path"): a lone source gets one stream per 2 usable CPUs, 4 to 8;
 * several share TC_PEER_STREAMS_PER_CPU per usable CPU, at least 1 and at
 * most TC_PEER_AUTO_STREAMS each.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#include "peer/peer.h"

/* The rule's constants, as documented: a change to them is a change to
 * the documented rule and must show up here. */
static void test_peer_streams__constants(void **state)
{
	assert_int_equal(TC_PEER_AUTO_STREAMS, 4);
	assert_int_equal(TC_PEER_LONE_MAX_STREAMS, 8);
	assert_int_equal(TC_PEER_CPUS_PER_LONE_STREAM, 2);
	assert_int_equal(TC_PEER_STREAMS_PER_CPU, 8);
	assert_true(TC_PEER_AUTO_STREAMS <= TC_PEER_LONE_MAX_STREAMS);
	assert_true(TC_PEER_LONE_MAX_STREAMS <= TC_PEER_MAX_STREAMS);
}

/* One source: one stream per 2 CPUs, never fewer than 4 (one stream
 * cannot receive and hash at line rate; the old default, kept on small
 * nodes) nor more than 8 (iperf3's count for line rate, bench/RESULTS.md
 * "Pull"). */
static void test_peer_streams__one_source(void **state)
{
	static const int want[][2] = { { 1, 4 },  { 2, 4 },  { 4, 4 },
				       { 8, 4 },  { 9, 4 },  { 10, 5 },
				       { 12, 6 }, { 15, 7 }, { 16, 8 },
				       { 17, 8 }, { 64, 8 }, { 256, 8 } };

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		assert_int_equal(tc__peer_auto_streams(want[i][0], 1),
				 want[i][1]);
	for (int cpu = 1; cpu <= 1024; cpu++) {
		int n = tc__peer_auto_streams(cpu, 1);

		assert_in_range(n, TC_PEER_AUTO_STREAMS,
				TC_PEER_LONE_MAX_STREAMS);
		/* more CPUs never give fewer streams */
		assert_true(n >= tc__peer_auto_streams(cpu - 1, 1));
	}
}

/* A second source joining a lone one's pull: both get the shared rule's
 * share (at most 4), so a lone source's extra streams retire. */
static void test_peer_streams__lone_then_two(void **state)
{
	assert_int_equal(tc__peer_auto_streams(16, 1), 8);
	assert_int_equal(tc__peer_auto_streams(16, 2), 4);
	assert_int_equal(tc__peer_auto_streams(2, 1), 4);
	assert_int_equal(tc__peer_auto_streams(2, 2), 4);
}

/* The 2-vCPU dev VM: 16 streams shared; a fan-out receiver pulling from
 * the seed and 7 peers gets 2 per source (what bench/fanout.sh measured
 * best there), never below 1. */
static void test_peer_streams__two_cpus(void **state)
{
	static const int want[17] = { 0, 4, 4, 4, 4, 3, 2, 2, 2,
				      1, 1, 1, 1, 1, 1, 1, 1 };

	for (int n = 1; n <= TC_PEER_MAX_SOURCES; n++)
		assert_int_equal(tc__peer_auto_streams(2, n), want[n]);
}

/* Enough cores: 4 per source for every source a pull may have (from 2
 * sources up; one gets the lone rule's). */
static void test_peer_streams__many_cpus(void **state)
{
	for (int n = 2; n <= TC_PEER_MAX_SOURCES; n++) {
		assert_int_equal(tc__peer_auto_streams(8, n), 4);
		assert_int_equal(tc__peer_auto_streams(64, n), 4);
	}
	/* 4 CPUs: 32 shared; 4 each up to 8 sources, then fewer */
	assert_int_equal(tc__peer_auto_streams(4, 8), 4);
	assert_int_equal(tc__peer_auto_streams(4, 9), 3);
	assert_int_equal(tc__peer_auto_streams(4, 16), 2);
}

/* With several sources the total stays near the budget: never more than
 * 4 per source, never more than the budget unless every source is at its
 * minimum of 1.  A lone source stays within the budget too. */
static void test_peer_streams__total(void **state)
{
	for (int cpu = 1; cpu <= 32; cpu++)
		assert_true(tc__peer_auto_streams(cpu, 1) <= 8 * cpu);
	for (int cpu = 1; cpu <= 32; cpu++)
		for (int n = 2; n <= TC_PEER_MAX_SOURCES; n++) {
			int per = tc__peer_auto_streams(cpu, n);

			assert_in_range(per, 1, TC_PEER_AUTO_STREAMS);
			assert_true(per * n <= 8 * cpu || per == 1);
			/* and the budget is used where the cap allows */
			assert_true(per == TC_PEER_AUTO_STREAMS ||
				    (per + 1) * n > 8 * cpu);
		}
}

/* Nonsense in (sysconf failing gives -1): treated as 1, no division by
 * zero, no zero streams. */
static void test_peer_streams__bad_input(void **state)
{
	assert_int_equal(tc__peer_auto_streams(-1, 1), 4);
	assert_int_equal(tc__peer_auto_streams(0, 16), 1);
	assert_int_equal(tc__peer_auto_streams(2, 0), 4);
	assert_int_equal(tc__peer_auto_streams(2, -3), 4);
	assert_int_equal(tc__peer_auto_streams(1 << 30, 1), 8);
	assert_int_equal(tc__peer_auto_streams(1 << 30, 2), 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_peer_streams__constants),
		cmocka_unit_test(test_peer_streams__one_source),
		cmocka_unit_test(test_peer_streams__lone_then_two),
		cmocka_unit_test(test_peer_streams__two_cpus),
		cmocka_unit_test(test_peer_streams__many_cpus),
		cmocka_unit_test(test_peer_streams__total),
		cmocka_unit_test(test_peer_streams__bad_input),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
