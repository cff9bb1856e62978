/*
 * test_namecheck.c - tc__name_check, the door every name passes (names.h):
 * UTF-8 edge cases, control characters, limits, and the message naming the
 * field and the byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/names.h"
#include "tcast/errors.h"

static int check(const char *s, size_t n, unsigned flags, char *err)
{
	return tc__name_check("f", s, n, 16, flags, err, 256);
}

static void test_names__utf8(void **state)
{
	static const struct {
		const char *s;
		size_t n;
		size_t at; /* byte of the complaint, or (size_t)-1 if fine */
	} v[] = {
		{ "plain", 5, (size_t)-1 },
		{ "\xc3\xa9", 2, (size_t)-1 },	       /* U+00E9 */
		{ "\xe2\x82\xac", 3, (size_t)-1 },     /* U+20AC */
		{ "\xf0\x9f\x98\x80", 4, (size_t)-1 }, /* U+1F600 */
		{ "\xf4\x8f\xbf\xbf", 4, (size_t)-1 }, /* U+10FFFF */
		{ "a\xff", 2, 1 },		       /* never valid */
		{ "a\xc0\xaf", 3, 1 },		       /* overlong '/' */
		{ "\xe0\x80\xaf", 3, 0 },	       /* overlong */
		{ "\xf0\x80\x80\xaf", 4, 0 },	       /* overlong */
		{ "x\xed\xa0\x80", 4, 1 },	       /* surrogate */
		{ "\xf4\x90\x80\x80", 4, 0 },	       /* > U+10FFFF */
		{ "ab\xe2\x82", 4, 2 },		       /* cut at the end */
		{ "\x80", 1, 0 },		       /* lone continuation */
		{ "a\0b", 3, 1 },		       /* NUL inside */
	};
	char err[256], want[64];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		int rc = check(v[i].s, v[i].n, 0, err);

		if (v[i].at == (size_t)-1) {
			if (rc != 0)
				fail_msg("#%zu refused: %s", i, err);
			continue;
		}
		assert_int_equal(rc, TC_EINVAL);
		snprintf(want, sizeof(want), "at byte %zu", v[i].at);
		if (!strstr(err, want) || strncmp(err, "f: ", 3))
			fail_msg("#%zu: '%s' lacks '%s'", i, err, want);
	}
}

static void test_names__controls_and_limits(void **state)
{
	char err[256];

	assert_int_equal(check("a\x1b", 2, 0, err), TC_EINVAL);
	assert_string_equal(
		err, "f: control character U+001B at byte 1 in 'a\\x1b'");
	assert_int_equal(check("\x7f", 1, 0, err), TC_EINVAL);
	assert_int_equal(check("\xc2\x80", 2, 0, err), TC_EINVAL); /* C1 */
	assert_int_equal(check("\xc2\x9f", 2, 0, err), TC_EINVAL);
	assert_int_equal(check("\xc2\xa0", 2, 0, err), 0); /* NBSP: fine */
	assert_int_equal(check("a\nb\tc\r", 6, 0, err), TC_EINVAL);
	assert_int_equal(check("a\nb\tc\r", 6, TC_NAME_TEXT, err), 0);
	assert_int_equal(check("a\x01", 2, TC_NAME_TEXT, err), TC_EINVAL);
	assert_int_equal(check("", 0, 0, err), TC_EINVAL);
	assert_string_equal(err, "f: empty");
	assert_int_equal(check("", 0, TC_NAME_EMPTY_OK, err), 0);
	assert_int_equal(check("0123456789abcdef", 16, 0, err), 0);
	assert_int_equal(check("0123456789abcdefg", 17, 0, err), TC_ELIMIT);
	assert_string_equal(err, "f: 17 bytes, the limit is 16");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names__utf8),
		cmocka_unit_test(test_names__controls_and_limits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
