/*
 * test_peer_streams.c - the default number of TCP streams per source of a
 * pull (tc__peer_auto_streams, src/peer/pull.c; docs/peer.md "Data
 * path"): TC_PEER_STREAMS_PER_CPU per usable CPU shared among the live
 * sources, at least 1 and at most TC_PEER_AUTO_STREAMS each.
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
	assert_int_equal(TC_PEER_STREAMS_PER_CPU, 8);
	assert_true(TC_PEER_AUTO_STREAMS <= TC_PEER_MAX_STREAMS);
}

/* One source: 4 on any machine (one stream cannot copy and hash at line
 * rate), also on one CPU. */
static void test_peer_streams__one_source(void **state)
{
	for (int cpu = 1; cpu <= 256; cpu *= 2)
		assert_int_equal(tc__peer_auto_streams(cpu, 1), 4);
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

/* Enough cores: the old default of 4 per source for every source a pull
 * may have. */
static void test_peer_streams__many_cpus(void **state)
{
	for (int n = 1; n <= TC_PEER_MAX_SOURCES; n++) {
		assert_int_equal(tc__peer_auto_streams(8, n), 4);
		assert_int_equal(tc__peer_auto_streams(64, n), 4);
	}
	/* 4 CPUs: 32 shared; 4 each up to 8 sources, then fewer */
	assert_int_equal(tc__peer_auto_streams(4, 8), 4);
	assert_int_equal(tc__peer_auto_streams(4, 9), 3);
	assert_int_equal(tc__peer_auto_streams(4, 16), 2);
}

/* The total stays near the budget: never more than 4 per source, never
 * more than the budget unless every source is at its minimum of 1. */
static void test_peer_streams__total(void **state)
{
	for (int cpu = 1; cpu <= 32; cpu++)
		for (int n = 1; n <= TC_PEER_MAX_SOURCES; n++) {
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
	assert_int_equal(tc__peer_auto_streams(1 << 30, 1), 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_peer_streams__constants),
		cmocka_unit_test(test_peer_streams__one_source),
		cmocka_unit_test(test_peer_streams__two_cpus),
		cmocka_unit_test(test_peer_streams__many_cpus),
		cmocka_unit_test(test_peer_streams__total),
		cmocka_unit_test(test_peer_streams__bad_input),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
