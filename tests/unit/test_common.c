/*
 * test_common.c - src/common: the growable buffer and the bounded cursor,
 * the string map, BLAKE3 digests and artifact ids, tensor sizes and layout,
 * the error table, the dtype table and the allocator's failure hook.
 *
 * Digests are pinned to xxHash's own sanity vectors (xsum_sanity_check.c),
 * not to values this code produced, and the root digest is recomputed here
 * from its definition in hash.h.  Every test frees what it allocates, so a
 * run under ASan/LSan stays meaningful.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/compiler.h"
#include "common/dynlib.h"
#include "common/io.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/map.h"
#include "common/tensor.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = 0; i < n; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* Reset the failure hook after each test so one failing test cannot leave
 * every later allocation failing. */
static int teardown_alloc(void **state)
{
	(void)state;
	tc__alloc_fail_after(-1);
	return 0;
}

/* ------------------------------------------------------------------- buf */

static void test_common__buf_growth(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	size_t prev_cap = 0;

	assert_int_equal(tc__buf_reserve(&b, 0), 0);
	assert_null(b.data);
	/* One byte at a time: cap starts at 256 and doubles, len <= cap. */
	for (int i = 0; i < 100000; i++) {
		tc__buf_put_u8(&b, (uint8_t)(i * 7));
		assert_true(b.len <= b.cap);
		if (b.cap != prev_cap) {
			assert_true(prev_cap == 0 ? b.cap == 256 :
						    b.cap == prev_cap * 2);
			prev_cap = b.cap;
		}
	}
	assert_false(b.oom);
	assert_int_equal(b.len, 100000);
	assert_int_equal(b.cap, 131072);
	for (int i = 0; i < 100000; i++)
		assert_int_equal(b.data[i], (uint8_t)(i * 7));
	/* A put of 0 bytes changes nothing. */
	tc__buf_put(&b, NULL, 0);
	assert_int_equal(b.len, 100000);
	tc__buf_release(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);
	assert_int_equal(b.cap, 0);
	assert_false(b.oom);

	/* A reservation larger than the doubling jumps straight past it. */
	tc__buf_init(&b);
	assert_int_equal(tc__buf_reserve(&b, 1000), 0);
	assert_int_equal(b.cap, 1024);
	tc__buf_release(&b);
}

static void test_common__buf_encodings(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	static const uint8_t want[] = {
		0xab,						/* u8 */
		0x34, 0x12,					/* u16 */
		0x78, 0x56, 0x34, 0x12,				/* u32 */
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* u64 */
		0xfe, 0xff, 0xff, 0xff,				/* i32 -2 */
		3,    0,    0,	  0,	'a',  'b',  'c',	/* str */
		0,    0,    0,	  0,				/* NULL str */
		2,    0,    0,	  0,	'x',  'y',		/* strn */
	};

	tc__buf_put_u8(&b, 0xab);
	tc__buf_put_u16(&b, 0x1234);
	tc__buf_put_u32(&b, 0x12345678);
	tc__buf_put_u64(&b, 0x0102030405060708ull);
	tc__buf_put_i32(&b, -2);
	tc__buf_put_str(&b, "abc");
	tc__buf_put_str(&b, NULL);
	tc__buf_put_strn(&b, "xyz", 2);
	assert_false(b.oom);
	assert_int_equal(b.len, sizeof(want));
	assert_memory_equal(b.data, want, sizeof(want));

	/* A string longer than a u32 length can say poisons the buffer
	 * without reading the (short) source. */
	tc__buf_put_strn(&b, "x", (size_t)UINT32_MAX + 1);
	assert_true(b.oom);
	assert_int_equal(b.len, sizeof(want));
	tc__buf_release(&b);
}

static void test_common__buf_oom(void **state)
{
	struct tc__buf b = TC_BUF_INIT;

	/* The first allocation fails: oom sticks, appends are dropped. */
	tc__alloc_fail_after(0);
	tc__buf_put_u32(&b, 1);
	assert_true(b.oom);
	assert_int_equal(b.len, 0);
	assert_null(b.data);
	assert_int_equal(tc__alloc_fail_after(-1), 1);
	/* Even with memory back, a poisoned buffer refuses appends, so an
	 * encoder that checks once at the end never sends a hole. */
	tc__buf_put_u32(&b, 2);
	tc__buf_printf(&b, "%d", 3);
	assert_int_equal(tc__buf_reserve(&b, 1), -ENOMEM);
	assert_int_equal(b.len, 0);
	tc__buf_release(&b);
	assert_false(b.oom);

	/* Growth failure keeps the old contents intact. */
	tc__buf_put(&b, "0123456789", 10);
	assert_int_equal(b.cap, 256);
	tc__alloc_fail_after(0);
	for (int i = 0; i < 300; i++)
		tc__buf_put_u8(&b, 'z');
	tc__alloc_fail_after(-1);
	assert_true(b.oom);
	assert_int_equal(b.len, 256);
	assert_int_equal(b.cap, 256);
	assert_memory_equal(b.data, "0123456789", 10);
	tc__buf_release(&b);

	/* Reservations that overflow size_t fail without allocating. */
	tc__buf_put_u8(&b, 1);
	tc__alloc_fail_after(1000);
	assert_int_equal(tc__buf_reserve(&b, SIZE_MAX), -ENOMEM);
	assert_true(b.oom);
	tc__buf_release(&b);
	tc__buf_put_u8(&b, 1);
	assert_int_equal(tc__buf_reserve(&b, SIZE_MAX / 2 + 2), -ENOMEM);
	assert_int_equal(tc__alloc_fail_after(-1), 0);
	tc__buf_release(&b);
}

static void test_common__buf_patch_u32(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	static const uint8_t zero[12];

	tc__buf_put(&b, zero, sizeof(zero));
	tc__buf_patch_u32(&b, 0, 0x11223344);
	tc__buf_patch_u32(&b, 8, 0xa1b2c3d4); /* the last 4 bytes */
	assert_int_equal(le(b.data, 4), 0x11223344);
	assert_int_equal(le(b.data + 4, 4), 0);
	assert_int_equal(le(b.data + 8, 4), 0xa1b2c3d4);
	/* Out of range (even by one byte) is ignored. */
	tc__buf_patch_u32(&b, 9, 0xffffffff);
	tc__buf_patch_u32(&b, 12, 0xffffffff);
	tc__buf_patch_u32(&b, 1000, 0xffffffff);
	/* An offset near SIZE_MAX must not wrap the bounds check around and
	 * write far outside the buffer. */
	tc__buf_patch_u32(&b, SIZE_MAX - 1, 0xffffffff);
	tc__buf_patch_u32(&b, SIZE_MAX, 0xffffffff);
	assert_int_equal(b.len, 12);
	assert_int_equal(le(b.data + 8, 4), 0xa1b2c3d4);
	/* A poisoned buffer is not patched. */
	b.oom = true;
	tc__buf_patch_u32(&b, 0, 0);
	assert_int_equal(le(b.data, 4), 0x11223344);
	tc__buf_release(&b);

	/* An empty buffer has nothing to patch. */
	tc__buf_patch_u32(&b, 0, 1);
	assert_null(b.data);
}

static void test_common__buf_printf(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	char big[1000];

	tc__buf_printf(&b, "%s-%d", "ab", 42);
	tc__buf_printf(&b, "%s", "");
	tc__buf_printf(&b, "|%05u", 7u);
	assert_false(b.oom);
	assert_int_equal(b.len, 11);
	/* The appended text is always NUL-terminated past len. */
	assert_string_equal((char *)b.data, "ab-42|00007");

	/* Longer than the initial 256 bytes: grows, all bytes kept. */
	memset(big, 'q', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	tc__buf_printf(&b, "%s!", big);
	assert_int_equal(b.len, 11 + 999 + 1);
	assert_memory_equal(b.data, "ab-42|00007", 11);
	assert_memory_equal(b.data + 11, big, 999);
	assert_int_equal(b.data[b.len - 1], '!');
	assert_int_equal(b.data[b.len], '\0');
	tc__buf_release(&b);

	tc__alloc_fail_after(0);
	tc__buf_printf(&b, "%d", 1);
	tc__alloc_fail_after(-1);
	assert_true(b.oom);
	assert_int_equal(b.len, 0);
	tc__buf_release(&b);
}

/* ---------------------------------------------------------------- cursor */

typedef int read_fn(struct tc__cur *c, uint64_t *v);

static int rd8(struct tc__cur *c, uint64_t *v)
{
	uint8_t x = 0xee;
	int rc = tc__cur_read_u8(c, &x);

	*v = x;
	return rc;
}

static int rd16(struct tc__cur *c, uint64_t *v)
{
	uint16_t x = 0xeeee;
	int rc = tc__cur_read_u16(c, &x);

	*v = x;
	return rc;
}

static int rd32(struct tc__cur *c, uint64_t *v)
{
	uint32_t x = 0xeeeeeeee;
	int rc = tc__cur_read_u32(c, &x);

	*v = x;
	return rc;
}

static int rd64(struct tc__cur *c, uint64_t *v)
{
	uint64_t x = 0xeeeeeeeeeeeeeeeeull;
	int rc = tc__cur_read_u64(c, &x);

	*v = x;
	return rc;
}

static int rdi32(struct tc__cur *c, uint64_t *v)
{
	int32_t x = -0x11111112; /* 0xeeeeeeee */
	int rc = tc__cur_read_i32(c, &x);

	*v = (uint32_t)x;
	return rc;
}

static void test_common__cur_ints(void **state)
{
	static const struct {
		read_fn *fn;
		size_t width;
		uint64_t untouched;
	} reads[] = {
		{ rd8, 1, 0xee },	  { rd16, 2, 0xeeee },
		{ rd32, 4, 0xeeeeeeee },  { rd64, 8, 0xeeeeeeeeeeeeeeeeull },
		{ rdi32, 4, 0xeeeeeeee },
	};
	static const uint8_t src[9] = { 0x01, 0x02, 0x03, 0x04, 0x05,
					0x06, 0x07, 0x08, 0x09 };

	for (size_t r = 0; r < TC_ARRAY_SIZE(reads); r++) {
		size_t w = reads[r].width;

		/* 0 and every short length: TC_EPROTO, cursor and output
		 * untouched. */
		for (size_t n = 0; n < w; n++) {
			struct tc__cur c;
			uint64_t v;

			tc__cur_init(&c, src, n);
			assert_int_equal(reads[r].fn(&c, &v), TC_EPROTO);
			assert_ptr_equal(c.p, src);
			assert_int_equal(c.left, n);
			assert_int_equal(v, reads[r].untouched);
		}
		/* Exact and one more: little-endian value, cursor advanced. */
		for (size_t n = w; n <= w + 1; n++) {
			struct tc__cur c;
			uint64_t v;

			tc__cur_init(&c, src, n);
			assert_int_equal(reads[r].fn(&c, &v), 0);
			assert_int_equal(v, le(src, (int)w));
			assert_ptr_equal(c.p, src + w);
			assert_int_equal(c.left, n - w);
			/* Then the next read of the same width fails
			 * unless enough is left. */
			if (n - w < w) {
				assert_int_equal(reads[r].fn(&c, &v),
						 TC_EPROTO);
				assert_ptr_equal(c.p, src + w);
			}
		}
	}

	/* i32 sign. */
	{
		static const uint8_t m1[4] = { 0xff, 0xff, 0xff, 0xff };
		struct tc__cur c;
		int32_t v;

		tc__cur_init(&c, m1, 4);
		assert_int_equal(tc__cur_read_i32(&c, &v), 0);
		assert_int_equal(v, -1);
	}
}

static void test_common__cur_bytes(void **state)
{
	static const uint8_t src[5] = "abcd";
	const uint8_t *out = NULL;
	struct tc__cur c;

	tc__cur_init(&c, src, 0);
	assert_int_equal(tc__cur_read_bytes(&c, 0, &out), 0);
	assert_ptr_equal(out, src);
	assert_int_equal(tc__cur_read_bytes(&c, 1, &out), TC_EPROTO);

	tc__cur_init(&c, src, 4);
	out = NULL;
	assert_int_equal(tc__cur_read_bytes(&c, 5, &out), TC_EPROTO);
	assert_null(out);
	assert_int_equal(tc__cur_read_bytes(&c, SIZE_MAX, &out), TC_EPROTO);
	assert_ptr_equal(c.p, src);
	assert_int_equal(c.left, 4);
	assert_int_equal(tc__cur_read_bytes(&c, 3, &out), 0);
	assert_ptr_equal(out, src);
	assert_int_equal(c.left, 1);
	assert_int_equal(tc__cur_read_bytes(&c, 2, &out), TC_EPROTO);
	assert_int_equal(tc__cur_read_bytes(&c, 1, &out), 0);
	assert_ptr_equal(out, src + 3);
	assert_int_equal(c.left, 0);
}

/* u32 length + bytes into a stack buffer. */
static size_t mkstr(uint8_t *out, uint32_t declared, const char *s, size_t n)
{
	for (int i = 0; i < 4; i++)
		out[i] = (uint8_t)(declared >> (8 * i));
	memcpy(out + 4, s, n);
	return 4 + n;
}

static void expect_str_fail(const uint8_t *p, size_t n, size_t max, int code)
{
	const char *s = (const char *)0x1;
	size_t len = 12345;
	struct tc__cur c;

	tc__cur_init(&c, p, n);
	assert_int_equal(tc__cur_read_str(&c, max, &s, &len), code);
	assert_ptr_equal(c.p, p);
	assert_int_equal(c.left, n);
	assert_ptr_equal(s, (const char *)0x1);
	assert_int_equal(len, 12345);
}

static void test_common__cur_str(void **state)
{
	uint8_t buf[64];
	const char *s;
	size_t len, n;
	struct tc__cur c;

	/* Good: exact length, max exactly reached, empty string. */
	n = mkstr(buf, 5, "hello", 5);
	tc__cur_init(&c, buf, n);
	assert_int_equal(tc__cur_read_str(&c, 5, &s, &len), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(s, "hello", 5);
	assert_int_equal(c.left, 0);
	n = mkstr(buf, 0, "", 0);
	tc__cur_init(&c, buf, n);
	assert_int_equal(tc__cur_read_str(&c, 0, &s, &len), 0);
	assert_int_equal(len, 0);

	/* Length field itself truncated: 0..3 bytes. */
	n = mkstr(buf, 1, "a", 1);
	for (size_t k = 0; k < 4; k++)
		expect_str_fail(buf, k, 100, TC_EPROTO);
	/* Length past the end of the bytes (by one, and hugely). */
	n = mkstr(buf, 6, "hello", 5);
	expect_str_fail(buf, n, 100, TC_EPROTO);
	n = mkstr(buf, UINT32_MAX, "hello", 5);
	expect_str_fail(buf, n, SIZE_MAX, TC_EPROTO);
	/* Longer than max: TC_ELIMIT (even when the bytes are there). */
	n = mkstr(buf, 5, "hello", 5);
	expect_str_fail(buf, n, 4, TC_ELIMIT);
	n = mkstr(buf, UINT32_MAX, "hello", 5);
	expect_str_fail(buf, n, 100, TC_ELIMIT);
	/* Embedded NUL, at the start, middle and end. */
	n = mkstr(buf, 3, "\0bc", 3);
	expect_str_fail(buf, n, 100, TC_EPROTO);
	n = mkstr(buf, 3, "a\0c", 3);
	expect_str_fail(buf, n, 100, TC_EPROTO);
	n = mkstr(buf, 3, "ab\0", 3);
	expect_str_fail(buf, n, 100, TC_EPROTO);
	/* A NUL just after the string is not part of it. */
	n = mkstr(buf, 2, "ab\0", 3);
	tc__cur_init(&c, buf, n);
	assert_int_equal(tc__cur_read_str(&c, 100, &s, &len), 0);
	assert_int_equal(len, 2);
	assert_int_equal(c.left, 1);
}

static void test_common__cur_strcpy(void **state)
{
	uint8_t buf[64];
	char dst[6];
	struct tc__cur c;
	size_t n;

	n = mkstr(buf, 5, "hello", 5);
	tc__cur_init(&c, buf, n);
	memset(dst, 'x', sizeof(dst));
	assert_int_equal(tc__cur_read_strcpy(&c, dst, sizeof(dst)), 0);
	assert_string_equal(dst, "hello");
	assert_int_equal(c.left, 0);

	/* Does not fit (needs the NUL): TC_ELIMIT, cursor unchanged. */
	tc__cur_init(&c, buf, n);
	memset(dst, 'x', sizeof(dst));
	assert_int_equal(tc__cur_read_strcpy(&c, dst, 5), TC_ELIMIT);
	assert_ptr_equal(c.p, buf);
	assert_int_equal(dst[0], 'x');
	assert_int_equal(tc__cur_read_strcpy(&c, dst, 0), TC_ELIMIT);
	assert_int_equal(c.left, n);

	/* Embedded NUL and truncation pass through. */
	n = mkstr(buf, 3, "a\0c", 3);
	tc__cur_init(&c, buf, n);
	assert_int_equal(tc__cur_read_strcpy(&c, dst, sizeof(dst)), TC_EPROTO);
	tc__cur_init(&c, buf, n - 1);
	assert_int_equal(tc__cur_read_strcpy(&c, dst, sizeof(dst)), TC_EPROTO);
	assert_int_equal(c.left, n - 1);
}

/* ------------------------------------------------------------------- map */

#define NKEYS 100000

static void test_common__map_basic(void **state)
{
	struct tc__map m;
	int a = 1, b = 2, c = 3;
	char k1[] = "alpha", k1b[] = "alpha";

	tc__map_init(&m);
	/* Empty map: get and del find nothing, iteration ends at once. */
	assert_null(tc__map_get(&m, "x"));
	assert_null(tc__map_del(&m, "x"));
	{
		size_t bk = 0;

		assert_null(tc__map_next(&m, NULL, &bk));
	}

	assert_int_equal(tc__map_put(&m, k1, &a), 0);
	assert_int_equal(tc__map_put(&m, "beta", &b), 0);
	assert_int_equal(m.count, 2);
	assert_ptr_equal(tc__map_get(&m, "alpha"), &a);
	assert_ptr_equal(tc__map_get(&m, "beta"), &b);
	assert_null(tc__map_get(&m, "gamma"));
	assert_null(tc__map_get(&m, ""));

	/* Replace: same count, new value, and the new key pointer is the
	 * one kept (keys are borrowed; the old owner may go away). */
	assert_int_equal(tc__map_put(&m, k1b, &c), 0);
	assert_int_equal(m.count, 2);
	assert_ptr_equal(tc__map_get(&m, "alpha"), &c);
	{
		size_t bk = 0;
		struct tc__map_entry *e;
		int seen = 0;

		for (e = tc__map_next(&m, NULL, &bk); e;
		     e = tc__map_next(&m, e, &bk)) {
			if (!strcmp(e->key, "alpha"))
				assert_ptr_equal(e->key, k1b);
			seen++;
		}
		assert_int_equal(seen, 2);
	}

	/* The empty string is a key like any other. */
	assert_int_equal(tc__map_put(&m, "", &a), 0);
	assert_ptr_equal(tc__map_get(&m, ""), &a);

	/* Delete returns the value once. */
	assert_ptr_equal(tc__map_del(&m, "alpha"), &c);
	assert_null(tc__map_del(&m, "alpha"));
	assert_null(tc__map_get(&m, "alpha"));
	assert_ptr_equal(tc__map_get(&m, "beta"), &b);
	assert_int_equal(m.count, 2);
	tc__map_release(&m);
	assert_int_equal(m.count, 0);
	assert_null(m.buckets);
	/* Released maps are reusable. */
	assert_int_equal(tc__map_put(&m, "z", &a), 0);
	tc__map_release(&m);
}

static void test_common__map_many(void **state)
{
	struct tc__map m;
	char(*keys)[16] = malloc(NKEYS * sizeof(*keys));
	unsigned char *seen = calloc(NKEYS, 1);
	struct tc__map_entry *e;
	size_t bk = 0, n = 0;

	assert_non_null(keys);
	assert_non_null(seen);
	tc__map_init(&m);
	for (size_t i = 0; i < NKEYS; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%zu", i);
		assert_int_equal(tc__map_put(&m, keys[i], (void *)(i + 1)), 0);
	}
	assert_int_equal(m.count, NKEYS);
	/* Power-of-two buckets, load factor kept at or below 3/4. */
	assert_int_equal(m.nbuckets & (m.nbuckets - 1), 0);
	assert_true(m.count <= m.nbuckets / 4 * 3);
	for (size_t i = 0; i < NKEYS; i++)
		assert_int_equal((uintptr_t)tc__map_get(&m, keys[i]), i + 1);

	/* Iteration visits every entry exactly once. */
	for (e = tc__map_next(&m, NULL, &bk); e; e = tc__map_next(&m, e, &bk)) {
		size_t i = (uintptr_t)e->val - 1;

		assert_true(i < NKEYS);
		assert_false(seen[i]);
		assert_ptr_equal(e->key, keys[i]);
		seen[i] = 1;
		n++;
	}
	assert_int_equal(n, NKEYS);

	/* Delete the even keys, replace the odd ones. */
	for (size_t i = 0; i < NKEYS; i += 2)
		assert_int_equal((uintptr_t)tc__map_del(&m, keys[i]), i + 1);
	for (size_t i = 1; i < NKEYS; i += 2)
		assert_int_equal(tc__map_put(&m, keys[i], (void *)(i + 2)), 0);
	assert_int_equal(m.count, NKEYS / 2);
	for (size_t i = 0; i < NKEYS; i++) {
		uintptr_t v = (uintptr_t)tc__map_get(&m, keys[i]);

		assert_int_equal(v, i % 2 ? i + 2 : 0);
	}
	n = 0;
	for (e = tc__map_next(&m, NULL, &bk); e; e = tc__map_next(&m, e, &bk))
		n++;
	assert_int_equal(n, NKEYS / 2);
	tc__map_release(&m);
	free(keys);
	free(seen);
}

static void test_common__map_oom(void **state)
{
	struct tc__map m;
	char keys[64][8];
	int v;

	tc__map_init(&m);
	/* The first put allocates the buckets, then the entry. */
	for (long k = 0; k < 2; k++) {
		tc__alloc_fail_after(k);
		assert_int_equal(tc__map_put(&m, "a", &v), -ENOMEM);
		assert_int_equal(tc__alloc_fail_after(-1), 1);
		assert_int_equal(m.count, 0);
		assert_null(tc__map_get(&m, "a"));
	}
	/* A failed grow keeps every entry reachable. */
	for (int i = 0; i < 12; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%d", i);
		assert_int_equal(tc__map_put(&m, keys[i], &v), 0);
	}
	assert_int_equal(m.nbuckets, 16);
	tc__alloc_fail_after(0);
	snprintf(keys[12], sizeof(keys[12]), "k12");
	assert_int_equal(tc__map_put(&m, keys[12], &v), -ENOMEM);
	tc__alloc_fail_after(-1);
	assert_int_equal(m.count, 12);
	assert_int_equal(m.nbuckets, 16);
	for (int i = 0; i < 12; i++)
		assert_ptr_equal(tc__map_get(&m, keys[i]), &v);
	assert_null(tc__map_get(&m, keys[12]));
	tc__map_release(&m);
}

/* ------------------------------------------------------------------ hash */

/* Hex of a digest, for comparisons that print well when they fail. */
static void hexof(const struct tc__digest *d, char out[TC_DIGEST_HEX + 1])
{
	tc__digest_hex(d, out);
}

static void test_common__hash_vectors(void **state)
{
	/* BLAKE3's official test vectors (test_vectors.json): the input is
	 * bytes i % 251, the hash the first 32 bytes of the output. */
	static const struct {
		size_t len;
		const char *hex;
	} v[] = {
		{ 0,
		  "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262" },
		{ 1,
		  "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213" },
		{ 1023,
		  "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11" },
		{ 1024,
		  "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7" },
		{ 1025,
		  "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444" },
	};
	uint8_t buf[1025];
	struct tc__hasher *h = tc__hasher_new();
	char hex[TC_DIGEST_HEX + 1], id[TC_ID_LEN + 1];

	assert_non_null(h);
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i % 251);
	for (size_t i = 0; i < TC_ARRAY_SIZE(v); i++) {
		struct tc__digest d;

		tc__hash256(buf, v[i].len, &d);
		hexof(&d, hex);
		assert_string_equal(hex, v[i].hex);
		/* Streaming, in one piece and byte by byte. */
		tc__hasher_reset(h);
		tc__hasher_update(h, buf, v[i].len);
		tc__hasher_final(h, &d);
		hexof(&d, hex);
		assert_string_equal(hex, v[i].hex);
		tc__hasher_reset(h);
		for (size_t k = 0; k < v[i].len; k++)
			tc__hasher_update(h, buf + k, 1);
		tc__hasher_final(h, &d);
		hexof(&d, hex);
		assert_string_equal(hex, v[i].hex);
	}
	tc__hasher_free(h);

	/* Hex is the digest's bytes in order, lowercase. */
	{
		struct tc__digest d;

		tc__hash256("", 0, &d);
		tc__digest_id(&d, id);
		assert_string_equal(id, "tc2:af1349b9f5f9a1a6a0404dea36dcc949"
					"9bcb25c9adc112b7cc9a93cae41f3262");
		assert_int_equal(strlen(id), TC_ID_LEN);
		assert_true(tc__is_id(id));
		memset(&d, 0, sizeof(d));
		d.b[31] = 1;
		tc__digest_hex(&d, hex);
		assert_string_equal(hex,
				    "0000000000000000000000000000000000000000"
				    "000000000000000000000001");
	}
}

static void test_common__chunk_count(void **state)
{
	assert_int_equal(TC_CHUNK_BYTES, 4 << 20);
	assert_int_equal(tc__chunk_count(0), 0);
	assert_int_equal(tc__chunk_count(1), 1);
	assert_int_equal(tc__chunk_count(TC_CHUNK_BYTES - 1), 1);
	assert_int_equal(tc__chunk_count(TC_CHUNK_BYTES), 1);
	assert_int_equal(tc__chunk_count(TC_CHUNK_BYTES + 1), 2);
	assert_int_equal(tc__chunk_count(UINT64_MAX),
			 UINT64_MAX / TC_CHUNK_BYTES + 1);
}

/* The root from its definition: BLAKE3 over the table bytes then each
 * chunk digest's 32 bytes. */
static void root_ref(const char *t, const struct tc__digest *c, uint64_t n,
		     struct tc__digest *out)
{
	size_t tl = strlen(t);
	uint8_t *b = malloc(tl + 32 * n + 1);

	assert_non_null(b);
	memcpy(b, t, tl);
	for (uint64_t i = 0; i < n; i++)
		memcpy(b + tl + 32 * i, c[i].b, 32);
	tc__hash256(b, tl + 32 * n, out);
	free(b);
}

static bool deq(const struct tc__digest *a, const struct tc__digest *b)
{
	return tc__digest_eq(a, b) && !memcmp(a, b, sizeof(*a));
}

static void test_common__digest_root(void **state)
{
	struct tc__digest c[3], sw[3], r1, r2, ref;

	tc__hash256("c0", 2, &c[0]);
	tc__hash256("c1", 2, &c[1]);
	tc__hash256("c2", 2, &c[2]);

	for (uint64_t n = 0; n <= 3; n++) {
		tc__digest_root("table", 5, c, n, &r1);
		root_ref("table", c, n, &ref);
		assert_true(deq(&r1, &ref));
	}
	/* Deterministic. */
	tc__digest_root("table", 5, c, 3, &r1);
	tc__digest_root("table", 5, c, 3, &r2);
	assert_true(deq(&r1, &r2));
	/* Order of chunks matters. */
	sw[0] = c[1];
	sw[1] = c[0];
	sw[2] = c[2];
	tc__digest_root("table", 5, sw, 3, &r2);
	assert_false(deq(&r1, &r2));
	/* One bit of one chunk digest changes it. */
	sw[0] = c[0];
	sw[0].b[17] ^= 0x10;
	sw[1] = c[1];
	sw[2] = c[2];
	tc__digest_root("table", 5, sw, 3, &r2);
	assert_false(deq(&r1, &r2));
	assert_false(tc__digest_eq(&sw[0], &c[0]));
	/* The table matters. */
	tc__digest_root("tablf", 5, c, 3, &r2);
	assert_false(deq(&r1, &r2));
	/* Dropping the last chunk changes it. */
	tc__digest_root("table", 5, c, 2, &r2);
	assert_false(deq(&r1, &r2));
}

static void test_common__is_id(void **state)
{
	static const char *const good[] = {
		"tc2:0000000000000000000000000000000000000000000000000000000000000000",
		"tc2:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"tc2:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
	};
	static const char *const bad[] = {
		"", "tc2:", "tc2",
		"tc2:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde", /* 63 */
		"tc2:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0", /* 65 */
		"tc2:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", /* upper */
		"tc2:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg", /* 'g' */
		"tc2:0123456789abcdef 123456789abcdef0123456789abcdef0123456789abcdef", /* space */
		"tc2:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n", /* trailer */
		"TC2:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		/* the old XXH3-128 form is not an id any more */
		"tc1:0123456789abcdef0123456789abcdef",
		"tc1:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"tc2-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		" tc2:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"tc2:0x23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"tc2:/123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", /* '0' - 1 */
		"tc2::123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", /* '9' + 1 */
		"tc2:`123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", /* 'a' - 1 */
	};

	for (size_t i = 0; i < TC_ARRAY_SIZE(good); i++)
		assert_true(tc__is_id(good[i]));
	for (size_t i = 0; i < TC_ARRAY_SIZE(bad); i++) {
		if (tc__is_id(bad[i]))
			fail_msg("'%s' accepted as an id", bad[i]);
	}
	/* A NUL inside the 32 digits ends the string: not an id. */
	{
		char s[TC_ID_LEN + 2] = "tc2:0123456789abcdef0123456789abcdef"
					"0123456789abcdef0123456789abcdef";

		s[20] = '\0';
		assert_false(tc__is_id(s));
	}
}

/* ---------------------------------------------------------------- tensor */

static void expect_nbytes(int dtype, uint32_t ndim, const uint64_t *shape,
			  int rc, uint64_t want)
{
	uint64_t got = 0xdeadbeef;

	assert_int_equal(tc__tensor_nbytes(dtype, ndim, shape, &got), rc);
	if (rc == 0)
		assert_int_equal(got, want);
	else
		assert_int_equal(got, 0xdeadbeef);
}

static void test_common__tensor_nbytes(void **state)
{
	uint64_t s[TC_MAX_RANK + 1];

	/* Plain sizes; rank 0 is one element; a zero dimension is empty. */
	s[0] = 2;
	s[1] = 3;
	expect_nbytes(TC_DTYPE_F32, 2, s, 0, 24);
	expect_nbytes(TC_DTYPE_F32, 0, NULL, 0, 4);
	expect_nbytes(TC_DTYPE_BOOL, 0, NULL, 0, 1);
	s[0] = 0;
	s[1] = UINT64_MAX;
	expect_nbytes(TC_DTYPE_F64, 2, s, 0, 0);
	s[0] = UINT64_MAX;
	s[1] = 0;
	/* The product is computed left to right; a later 0 must still win
	 * over an earlier huge dimension (no overflow in between). */
	expect_nbytes(TC_DTYPE_U8, 2, s, 0, 0);

	/* hostile-inputs 1.1 #18: wraps to exactly 16 bytes. */
	s[0] = 4194305;
	s[1] = 4194305;
	s[2] = 211106198978564ull;
	expect_nbytes(TC_DTYPE_F32, 3, s, TC_ELIMIT, 0);
	/* The element count overflows u64. */
	s[0] = (uint64_t)1 << 32;
	s[1] = (uint64_t)1 << 32;
	expect_nbytes(TC_DTYPE_U8, 2, s, TC_ELIMIT, 0);
	/* ... and wraps to exactly 0. */
	s[0] = (uint64_t)1 << 32;
	s[1] = (uint64_t)1 << 32;
	s[2] = 0;
	expect_nbytes(TC_DTYPE_U8, 2, s, TC_ELIMIT, 0);
	/* #19: the count fits but count * bits does not. */
	s[0] = (uint64_t)1 << 59;
	expect_nbytes(TC_DTYPE_F32, 1, s, TC_ELIMIT, 0);
	s[0] = UINT64_MAX / 64;
	expect_nbytes(TC_DTYPE_F64, 1, s, 0, UINT64_MAX / 64 * 8);

	/* Sub-byte dtypes: whole bytes only. */
	s[0] = 2;
	expect_nbytes(TC_DTYPE_F4, 1, s, 0, 1);
	s[0] = 3;
	expect_nbytes(TC_DTYPE_F4, 1, s, TC_ELIMIT, 0);
	s[0] = 1;
	expect_nbytes(TC_DTYPE_F4, 1, s, TC_ELIMIT, 0);
	expect_nbytes(TC_DTYPE_F4, 0, NULL, TC_ELIMIT, 0);
	s[0] = 0;
	expect_nbytes(TC_DTYPE_F4, 1, s, 0, 0);
	s[0] = 4;
	expect_nbytes(TC_DTYPE_F6_E2M3, 1, s, 0, 3);
	expect_nbytes(TC_DTYPE_F6_E3M2, 1, s, 0, 3);
	s[0] = 2;
	s[1] = 3; /* 36 bits */
	expect_nbytes(TC_DTYPE_F6_E2M3, 2, s, TC_ELIMIT, 0);
	s[1] = 4; /* 48 bits */
	expect_nbytes(TC_DTYPE_F6_E3M2, 2, s, 0, 6);

	/* Unknown dtypes and rank. */
	s[0] = 1;
	expect_nbytes(TC_DTYPE__COUNT, 1, s, TC_EBADDTYPE, 0);
	expect_nbytes(255, 1, s, TC_EBADDTYPE, 0);
	expect_nbytes(-1, 1, s, TC_EBADDTYPE, 0);
	for (int i = 0; i <= TC_MAX_RANK; i++)
		s[i] = 1;
	expect_nbytes(TC_DTYPE_U8, TC_MAX_RANK, s, 0, 1);
	expect_nbytes(TC_DTYPE_U8, TC_MAX_RANK + 1, s, TC_ELIMIT, 0);
	expect_nbytes(TC_DTYPE_U8, UINT32_MAX, s, TC_ELIMIT, 0);
}

static void test_common__table_layout(void **state)
{
	struct tc__tensor x[6];
	struct tc__table t;
	static const uint64_t sz[] = { 1, 256, 0, 257, 3, 0 };
	static const uint64_t off[] = { 0, 256, 512, 512, 1024, 1280 };

	memset(x, 0, sizeof(x));
	tc__table_init(&t);
	t.tensors = x;
	/* No tensors: nothing to lay out. */
	t.ntensors = 0;
	assert_int_equal(tc__table_layout(&t), 0);
	assert_int_equal(t.total_bytes, 0);

	for (int i = 0; i < 6; i++)
		x[i].nbytes = sz[i];
	t.ntensors = 6;
	assert_int_equal(tc__table_layout(&t), 0);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(x[i].offset, off[i]);
		assert_int_equal(x[i].offset % TC_ALIGN, 0);
	}
	/* The size ends at the last tensor: a trailing empty tensor still
	 * rounds up to its aligned start. */
	assert_int_equal(t.total_bytes, 1280);
	t.ntensors = 5;
	assert_int_equal(tc__table_layout(&t), 0);
	assert_int_equal(t.total_bytes, 1027);

	/* One tensor of UINT64_MAX bytes fits exactly. */
	x[0].nbytes = UINT64_MAX;
	t.ntensors = 1;
	assert_int_equal(tc__table_layout(&t), 0);
	assert_int_equal(t.total_bytes, UINT64_MAX);
	/* Anything after it cannot be aligned. */
	x[1].nbytes = 0;
	t.ntensors = 2;
	assert_int_equal(tc__table_layout(&t), TC_ELIMIT);
	/* Alignment padding itself would overflow. */
	x[0].nbytes = UINT64_MAX - 100;
	assert_int_equal(tc__table_layout(&t), TC_ELIMIT);
	/* The aligned start fits but the end does not. */
	x[0].nbytes = (uint64_t)1 << 63;
	x[1].nbytes = (uint64_t)1 << 63;
	assert_int_equal(tc__table_layout(&t), TC_ELIMIT);
	x[1].nbytes = ((uint64_t)1 << 63) - 1;
	assert_int_equal(tc__table_layout(&t), 0);
	assert_int_equal(x[1].offset, (uint64_t)1 << 63);
	assert_int_equal(t.total_bytes, UINT64_MAX);
	/* Not released: the array is on the stack. */
}

static void test_common__table_find_release(void **state)
{
	struct tc__table t;

	tc__table_init(&t);
	assert_int_equal(tc__table_find(&t, "a"), -1);
	t.tensors = tc__calloc(3, sizeof(*t.tensors));
	assert_non_null(t.tensors);
	t.ntensors = 3;
	t.tensors[0].name = tc__strdup("a");
	t.tensors[1].name = tc__strdup("b/c.d");
	t.tensors[2].name = tc__strdup("");
	t.meta = tc__calloc(1, sizeof(*t.meta));
	assert_non_null(t.meta);
	t.nmeta = 1;
	t.meta[0].key = tc__strdup("format");
	t.meta[0].val = tc__strdup("pt");
	assert_int_equal(tc__table_find(&t, "a"), 0);
	assert_int_equal(tc__table_find(&t, "b/c.d"), 1);
	assert_int_equal(tc__table_find(&t, ""), 2);
	assert_int_equal(tc__table_find(&t, "b"), -1);
	tc__table_release(&t);
	assert_null(t.tensors);
	assert_int_equal(t.ntensors, 0);
	assert_null(t.meta);
	assert_int_equal(t.nmeta, 0);
	/* Releasing twice is harmless. */
	tc__table_release(&t);
}

/* ---------------------------------------------------------------- errors */

static void test_common__errors(void **state)
{
	static const struct {
		int code;
		const char *name;
		const char *msg;
	} map[] = {
#define X(name, val, msg) { val, #name, msg },
		TC_ERROR_MAP(X)
#undef X
	};

	assert_true(TC_ARRAY_SIZE(map) > 20);
	for (size_t i = 0; i < TC_ARRAY_SIZE(map); i++) {
		/* In the reserved range, unique, named and described. */
		assert_true(map[i].code <= -4000 && map[i].code >= -4099);
		for (size_t j = 0; j < i; j++)
			assert_int_not_equal(map[i].code, map[j].code);
		assert_string_equal(tc_err_name(map[i].code), map[i].name);
		assert_string_equal(tc_strerror(map[i].code), map[i].msg);
		assert_true(strncmp(map[i].name, "TC_E", 4) == 0);
		assert_true(strlen(map[i].msg) > 0);
		assert_string_not_equal(map[i].msg, "unknown error");
	}
	/* Spot checks that the enum and the table agree. */
	assert_int_equal(TC_ENOTFOUND, -4000);
	assert_string_equal(tc_err_name(TC_ELIMIT), "TC_ELIMIT");

	assert_string_equal(tc_err_name(0), "OK");
	assert_string_equal(tc_strerror(0), "success");

	/* -errno: the errno's name and strerror text. */
	assert_string_equal(tc_err_name(-ENOENT), "ENOENT");
	assert_string_equal(tc_err_name(-ENOMEM), "ENOMEM");
	assert_string_equal(tc_err_name(-EBUSY), "EBUSY");
	assert_string_equal(tc_err_name(-EPERM), "EPERM");
	assert_string_equal(tc_strerror(-ENOENT), strerror(ENOENT));
	for (int e = 1; e < 134; e++) {
		const char *n = tc_err_name(-e);

		assert_non_null(n);
		assert_non_null(tc_strerror(-e));
		/* glibc leaves a few numbers unassigned (41, 58). */
		if (strcmp(n, "UNKNOWN"))
			assert_int_equal(n[0], 'E');
	}

	/* Anything else: never NULL. */
	static const int other[] = { 1,	    4000,    -4024,   -4099,
				     -4100, INT_MIN, INT_MAX, -3999 - 1000000 };
	for (size_t i = 0; i < TC_ARRAY_SIZE(other); i++) {
		assert_string_equal(tc_err_name(other[i]), "UNKNOWN");
		assert_string_equal(tc_strerror(other[i]), "unknown error");
	}
	/* An errno glibc does not know still gets a message. */
	assert_non_null(tc_strerror(-3999));
	assert_non_null(tc_err_name(-3999));
}

/* ----------------------------------------------------------------- dtype */

/* DLPack 1.x DLDataTypeCode values, from dlpack.h (not from tcast). */
enum {
	kDLInt = 0,
	kDLUInt = 1,
	kDLFloat = 2,
	kDLBfloat = 4,
	kDLComplex = 5,
	kDLBool = 6,
	kDLFloat8_e4m3fn = 10,
	kDLFloat8_e4m3fnuz = 11,
	kDLFloat8_e5m2 = 12,
	kDLFloat8_e5m2fnuz = 13,
	kDLFloat8_e8m0fnu = 14,
	kDLFloat6_e2m3fn = 15,
	kDLFloat6_e3m2fn = 16,
	kDLFloat4_e2m1fn = 17,
};

static void test_common__dtypes(void **state)
{
	/* What dtype.h's table says, restated from the safetensors and
	 * DLPack specifications. */
	static const struct {
		int id;
		const char *name;
		uint32_t bits;
		uint8_t code;
	} want[] = {
		{ TC_DTYPE_BOOL, "BOOL", 8, kDLBool },
		{ TC_DTYPE_U8, "U8", 8, kDLUInt },
		{ TC_DTYPE_I8, "I8", 8, kDLInt },
		{ TC_DTYPE_F8_E5M2, "F8_E5M2", 8, kDLFloat8_e5m2 },
		{ TC_DTYPE_F8_E4M3, "F8_E4M3", 8, kDLFloat8_e4m3fn },
		{ TC_DTYPE_F8_E8M0, "F8_E8M0", 8, kDLFloat8_e8m0fnu },
		{ TC_DTYPE_F8_E4M3FNUZ, "F8_E4M3FNUZ", 8, kDLFloat8_e4m3fnuz },
		{ TC_DTYPE_F8_E5M2FNUZ, "F8_E5M2FNUZ", 8, kDLFloat8_e5m2fnuz },
		{ TC_DTYPE_I16, "I16", 16, kDLInt },
		{ TC_DTYPE_U16, "U16", 16, kDLUInt },
		{ TC_DTYPE_F16, "F16", 16, kDLFloat },
		{ TC_DTYPE_BF16, "BF16", 16, kDLBfloat },
		{ TC_DTYPE_I32, "I32", 32, kDLInt },
		{ TC_DTYPE_U32, "U32", 32, kDLUInt },
		{ TC_DTYPE_F32, "F32", 32, kDLFloat },
		{ TC_DTYPE_C64, "C64", 64, kDLComplex },
		{ TC_DTYPE_F64, "F64", 64, kDLFloat },
		{ TC_DTYPE_I64, "I64", 64, kDLInt },
		{ TC_DTYPE_U64, "U64", 64, kDLUInt },
		{ TC_DTYPE_F4, "F4", 4, kDLFloat4_e2m1fn },
		{ TC_DTYPE_F6_E2M3, "F6_E2M3", 6, kDLFloat6_e2m3fn },
		{ TC_DTYPE_F6_E3M2, "F6_E3M2", 6, kDLFloat6_e3m2fn },
	};

	assert_int_equal(TC_ARRAY_SIZE(want), TC_DTYPE__COUNT);
	for (size_t i = 0; i < TC_ARRAY_SIZE(want); i++) {
		uint8_t code = 0xff, bits = 0;

		/* Ids are dense and in table order (they are wire values). */
		assert_int_equal(want[i].id, (int)i);
		assert_string_equal(tc_dtype_name(want[i].id), want[i].name);
		assert_int_equal(tc_dtype_from_name(want[i].name), want[i].id);
		assert_int_equal(tc_dtype_bits(want[i].id), want[i].bits);
		assert_int_equal(tc_dtype_dlpack(want[i].id, &code, &bits), 0);
		assert_int_equal(code, want[i].code);
		assert_int_equal(bits, want[i].bits);
	}
	/* Names are exact and case-sensitive. */
	static const char *const bad[] = { "f32",     "F32 ", " F32",
					   "",	      "F8",   "FP32",
					   "float32", "F4\n", "BOOL8" };
	for (size_t i = 0; i < TC_ARRAY_SIZE(bad); i++)
		assert_int_equal(tc_dtype_from_name(bad[i]), TC_EBADDTYPE);
	/* Unknown ids. */
	static const int ids[] = { -1, TC_DTYPE__COUNT, 255, INT_MAX, INT_MIN };
	for (size_t i = 0; i < TC_ARRAY_SIZE(ids); i++) {
		uint8_t code = 0xab, bits = 0xcd;

		assert_null(tc_dtype_name(ids[i]));
		assert_int_equal(tc_dtype_bits(ids[i]), 0);
		assert_int_equal(tc_dtype_dlpack(ids[i], &code, &bits),
				 TC_EBADDTYPE);
		assert_int_equal(code, 0xab);
		assert_int_equal(bits, 0xcd);
	}
}

/* ----------------------------------------------------------------- alloc */

static void test_common__alloc_fail_after(void **state)
{
	void *p[4], *q;
	char *s;

	/* Disabled: everything succeeds and nothing is counted. */
	assert_int_equal(tc__alloc_fail_after(-1), 0);
	q = tc__malloc(0); /* size 0 is a real, freeable pointer */
	assert_non_null(q);
	tc__free(q);
	q = tc__calloc(0, 8);
	assert_non_null(q);
	tc__free(q);

	/* Two more succeed, then every kind of allocation fails. */
	tc__alloc_fail_after(2);
	p[0] = tc__malloc(8);
	p[1] = tc__calloc(2, 8);
	assert_non_null(p[0]);
	assert_non_null(p[1]);
	errno = 0;
	assert_null(tc__malloc(8));
	assert_int_equal(errno, ENOMEM);
	errno = 0;
	assert_null(tc__calloc(1, 1));
	assert_int_equal(errno, ENOMEM);
	/* A failed realloc leaves the old block alone. */
	memset(p[0], 0x5a, 8);
	assert_null(tc__realloc(p[0], 64));
	assert_int_equal(((uint8_t *)p[0])[7], 0x5a);
	assert_null(tc__strdup("x"));
	assert_null(tc__strndup("xyz", 2));
	assert_null(tc__reallocarray(NULL, 2, 2));
	/* Six failures since the last call; the count resets. */
	assert_int_equal(tc__alloc_fail_after(-1), 6);
	assert_int_equal(tc__alloc_fail_after(-1), 0);
	tc__free(p[0]);
	tc__free(p[1]);

	/* fail_after(0) fails the very next allocation. */
	tc__alloc_fail_after(0);
	assert_null(tc__malloc(1));
	assert_int_equal(tc__alloc_fail_after(-1), 1);

	/* reallocarray refuses an overflowing size without allocating. */
	tc__alloc_fail_after(1);
	errno = 0;
	assert_null(tc__reallocarray(NULL, SIZE_MAX / 2, 3));
	assert_int_equal(errno, ENOMEM);
	q = tc__reallocarray(NULL, 4, 4); /* the one allowed */
	assert_non_null(q);
	assert_int_equal(tc__alloc_fail_after(-1), 0);
	tc__free(q);

	/* strndup stops at n or at the NUL. */
	s = tc__strndup("abcdef", 3);
	assert_string_equal(s, "abc");
	tc__free(s);
	s = tc__strndup("ab", 100);
	assert_string_equal(s, "ab");
	tc__free(s);

	/* tc__free keeps errno and accepts NULL. */
	errno = EAGAIN;
	tc__free(NULL);
	q = tc__malloc(4);
	errno = EAGAIN;
	tc__free(q);
	assert_int_equal(errno, EAGAIN);
	(void)p[2];
	(void)p[3];
}

#define ATHREADS 4
#define AROUNDS	 100000
#define APER	 50
#define ABUDGET	 3

static _Atomic long alloc_ok;
static pthread_barrier_t alloc_bar;

static void *alloc_thread(void *arg)
{
	(void)arg;
	for (int r = 0; r < AROUNDS; r++) {
		/* Start each round together, so threads race for the last
		 * units of the budget. */
		pthread_barrier_wait(&alloc_bar);
		for (int i = 0; i < APER; i++) {
			void *p = tc__malloc(16);

			if (p) {
				alloc_ok++;
				tc__free(p);
			}
		}
		pthread_barrier_wait(&alloc_bar);
	}
	return NULL;
}

/* The budget is shared by threads (the loader's workers allocate too):
 * exactly `n` allocations succeed however they interleave.  Before the
 * budget was taken with a compare-and-swap, about one round in 20000 let
 * every allocation through. */
static void test_common__alloc_fail_after_threads(void **state)
{
	pthread_t t[ATHREADS];
	int bad = 0;

	assert_int_equal(pthread_barrier_init(&alloc_bar, NULL, ATHREADS + 1),
			 0);
	for (int i = 0; i < ATHREADS; i++)
		assert_int_equal(
			pthread_create(&t[i], NULL, alloc_thread, NULL), 0);
	for (int r = 0; r < AROUNDS; r++) {
		alloc_ok = 0;
		tc__alloc_fail_after(ABUDGET);
		pthread_barrier_wait(&alloc_bar);
		pthread_barrier_wait(&alloc_bar);
		if (tc__alloc_fail_after(-1) != ATHREADS * APER - ABUDGET ||
		    alloc_ok != ABUDGET)
			bad++;
	}
	for (int i = 0; i < ATHREADS; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&alloc_bar);
	assert_int_equal(bad, 0);
}

/* A receive buffer: unread bytes move to the front, it grows only as
 * needed and never past its limit, and what was unread survives. */
static void test_common__rxbuf_room(void **state)
{
	uint8_t *buf = NULL;
	size_t cap = 0, off = 0, len = 0;

	assert_int_equal(tc__rxbuf_room(&buf, &cap, &off, &len, 100, 1000), 0);
	assert_int_equal(cap, 200);
	memcpy(buf, "0123456789", 10);
	len = 150;
	off = 100;
	memcpy(buf + 100, "unread", 6);
	/* 50 free, 100 wanted: compacting alone makes room. */
	assert_int_equal(tc__rxbuf_room(&buf, &cap, &off, &len, 100, 1000), 0);
	assert_int_equal(cap, 200);
	assert_int_equal(off, 0);
	assert_int_equal(len, 50);
	assert_memory_equal(buf, "unread", 6);
	/* Growth doubles. */
	len = 190;
	assert_int_equal(tc__rxbuf_room(&buf, &cap, &off, &len, 100, 1000), 0);
	assert_int_equal(cap, 400);
	assert_memory_equal(buf, "unread", 6);
	/* Never past the limit. */
	len = 390;
	assert_int_equal(tc__rxbuf_room(&buf, &cap, &off, &len, 500, 800),
			 -EMSGSIZE);
	assert_int_equal(cap, 400);
	tc__free(buf);
}

/* A library loaded by name: every address or none, and an error that
 * names the library, what is missing and the Debian package. */
static void test_common__dl_load(void **state)
{
	static const char *const one[] = { "strlen" };
	static const char *const two[] = { "strlen", "tc_no_such_symbol" };
	void *addr[2] = { NULL, NULL };
	size_t (*len)(const char *);
	char err[300];

	(void)state;
	assert_int_equal(tc__dl_load("libtcast-none.so.9", "tcast-none", one, 1,
				     addr, err, sizeof(err)),
			 TC_ENOTSUP);
	assert_non_null(strstr(err, "libtcast-none.so.9"));
	assert_non_null(strstr(err, "Debian package tcast-none"));
	assert_null(addr[0]);

	assert_int_equal(tc__dl_load("libc.so.6", "libc6", two, 2, addr, err,
				     sizeof(err)),
			 TC_ENOTSUP);
	assert_non_null(strstr(err, "tc_no_such_symbol"));
	assert_non_null(strstr(err, "libc6"));
	assert_null(addr[0]); /* all or nothing */
	assert_null(addr[1]);

	assert_int_equal(tc__dl_load("libc.so.6", "libc6", one, 1, addr, err,
				     sizeof(err)),
			 0);
	assert_non_null(addr[0]);
	len = (size_t(*)(const char *))addr[0];
	assert_int_equal(len("tcast"), 5);
}

/* tc__populate faults a range in slice by slice: every page of an
 * unaligned range ends up resident (write: allocated in the memfd too), and
 * a mapping past the end of a shrunk file is -EFAULT, not a crash. */
static void test_common__populate(void **state)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE), n = (9u << 20) + 3 * pg;
	unsigned char vec[(9u << 20) / 4096 + 8];
	struct stat st;
	char *p;
	int fd, rc;

	(void)state;
	fd = memfd_create("populate", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)n), 0);
	p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(p != MAP_FAILED);
	rc = tc__populate(p + 123, n - 123, 1);
	if (rc == -EINVAL || rc == -ENOSYS) { /* before Linux 5.14 */
		munmap(p, n);
		close(fd);
		skip();
	}
	assert_int_equal(rc, 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_true((uint64_t)st.st_blocks * 512 >= n); /* every page made */
	assert_true(n / pg <= sizeof(vec));
	assert_int_equal(mincore(p, n, vec), 0);
	for (size_t i = 0; i < n / pg; i++)
		assert_true(vec[i] & 1);
	assert_int_equal(tc__populate(p, 0, 0), 0);
	/* The file shrinks under the mapping: reading it in fails cleanly. */
	assert_int_equal(ftruncate(fd, (off_t)pg), 0);
	assert_int_equal(tc__populate(p, n, 0), -EFAULT);
	munmap(p, n);
	close(fd);
}

/* Lines written to f since it was rewound, and whether `text` is in
 * them. */
static int log_lines(FILE *f, const char *text, bool *found)
{
	char line[512];
	int n = 0;

	fflush(f);
	rewind(f);
	*found = false;
	while (fgets(line, sizeof(line), f)) {
		n++;
		*found = *found || strstr(line, text);
	}
	rewind(f);
	assert_int_equal(ftruncate(fileno(f), 0), 0);
	return n;
}

/* tc__log_rl lets one line a second through, tc__log_rl_burst `burst`;
 * the first line of the next second counts what was dropped. */
static void test_common__log_rate_limit(void **state)
{
	struct tc__ratelimit one = { 0 }, three = { 0 };
	FILE *f = tmpfile();
	bool found;

	assert_non_null(f);
	tc__log_set_file(f);
	for (int i = 0; i < 10; i++)
		tc__log_rl(&one, TC_LOG_WARN, "refused %d", i);
	assert_int_equal(log_lines(f, "refused 0", &found), 1);
	assert_true(found);
	for (int i = 0; i < 10; i++)
		tc__log_rl_burst(&three, 3, TC_LOG_WARN, "peer %d refused", i);
	assert_int_equal(log_lines(f, "peer 2 refused", &found), 3);
	assert_true(found);
	one.next_ms = three.next_ms = 0; /* the second is over */
	tc__log_rl(&one, TC_LOG_WARN, "refused again");
	assert_int_equal(log_lines(f, "(9 similar lines suppressed)", &found),
			 1);
	assert_true(found);
	tc__log_rl_burst(&three, 3, TC_LOG_WARN, "peer again");
	assert_int_equal(log_lines(f, "(7 similar lines suppressed)", &found),
			 1);
	assert_true(found);
	tc__log_set_file(NULL);
	fclose(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_common__rxbuf_room),
		cmocka_unit_test_teardown(test_common__buf_growth,
					  teardown_alloc),
		cmocka_unit_test_teardown(test_common__buf_encodings,
					  teardown_alloc),
		cmocka_unit_test_teardown(test_common__buf_oom, teardown_alloc),
		cmocka_unit_test_teardown(test_common__buf_patch_u32,
					  teardown_alloc),
		cmocka_unit_test_teardown(test_common__buf_printf,
					  teardown_alloc),
		cmocka_unit_test(test_common__cur_ints),
		cmocka_unit_test(test_common__cur_bytes),
		cmocka_unit_test(test_common__cur_str),
		cmocka_unit_test(test_common__cur_strcpy),
		cmocka_unit_test_teardown(test_common__map_basic,
					  teardown_alloc),
		cmocka_unit_test_teardown(test_common__map_many,
					  teardown_alloc),
		cmocka_unit_test_teardown(test_common__map_oom, teardown_alloc),
		cmocka_unit_test(test_common__hash_vectors),
		cmocka_unit_test(test_common__chunk_count),
		cmocka_unit_test(test_common__digest_root),
		cmocka_unit_test(test_common__is_id),
		cmocka_unit_test(test_common__tensor_nbytes),
		cmocka_unit_test(test_common__table_layout),
		cmocka_unit_test_teardown(test_common__table_find_release,
					  teardown_alloc),
		cmocka_unit_test(test_common__errors),
		cmocka_unit_test(test_common__dtypes),
		cmocka_unit_test(test_common__populate),
		cmocka_unit_test(test_common__log_rate_limit),
		cmocka_unit_test(test_common__dl_load),
		cmocka_unit_test_teardown(test_common__alloc_fail_after,
					  teardown_alloc),
		cmocka_unit_test_teardown(test_common__alloc_fail_after_threads,
					  teardown_alloc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
