/*
 * test_canon.c - the canonical table form and the artifact id built on it
 * (docs/formats.md, "Artifact ids"): pinned test vectors, so that a change
 * to the local protocol's codec, or to this encoder, that would change an
 * id fails here.  tests/python/test_ids.py re-derives the same id from the
 * document alone (its own BLAKE3), against a real daemon.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/hash.h"
#include "common/tensor.h"
#include "format/canon.h"
#include "proto/proto.h"
#include "tcast/dtype.h"
#include "tlib.h"

static void hex(const uint8_t *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", p[i]);
}

/* The exact canonical bytes (version 1), field by field. */
static const char CANON_HEX[] = "7463617374 2d7461626c650a" /* "tcast-table\n"
							     */
				"01000000"		    /* version 1 */
				"0301000000000000"	    /* total 259 */
				"02000000"		    /* 2 tensors */
				"0100000061"
				"03463332"
				"01"
				"0200000000000000" /* a F32 [2] */
				"0000000000000000"
				"0800000000000000" /* @0, 8 B */
				"0100000062"
				"025538"
				"01"
				"0300000000000000" /* b U8 [3] */
				"0001000000000000"
				"0300000000000000" /* @256, 3 B */
				"02000000"	   /* 2 meta */
				"06000000666f726d6174"
				"020000007074" /* format=pt */
				"010000007a"
				"0100000031"; /* z=1 */

static void strip_spaces(const char *in, char *out)
{
	for (; *in; in++)
		if (*in != ' ')
			*out++ = *in;
	*out = '\0';
}

static void test_canon__tiny_vector(void **state)
{
	struct tc__table t;
	struct tc__buf b = TC_BUF_INIT;
	struct tc__digest chunk, root, r2;
	uint8_t bytes[259];
	char want[sizeof(CANON_HEX)], *got, id[TC_ID_LEN + 1];

	t_tiny_artifact(&t, bytes);
	tc__canon_table(&b, &t);
	assert_false(b.oom);
	got = malloc(2 * b.len + 1);
	assert_non_null(got);
	hex(b.data, b.len, got);
	strip_spaces(CANON_HEX, want);
	assert_string_equal(got, want);
	free(got);

	/* One chunk (259 bytes < 4 MiB), then the root. */
	tc__hash256(bytes, sizeof(bytes), &chunk);
	assert_int_equal(tc__canon_root(&t, &chunk, 1, &root), 0);
	tc__digest_root(b.data, b.len, &chunk, 1, &r2);
	assert_true(tc__digest_eq(&root, &r2));
	tc__digest_id(&root, id);
	assert_string_equal(id, "tc2:37815ee52fe011d82c50a380302d5ad0"
				"c6ecf458b739c74dc8c8c83ed7b70eeb");
	tc__buf_release(&b);
	tc__table_release(&t);
}

/* Metadata order in the table does not change the id; anything that
 * names or places bytes does. */
static void test_canon__what_changes_the_id(void **state)
{
	struct tc__table t;
	struct tc__digest chunk, base, d;
	struct tc__meta m;
	uint8_t bytes[259];

	t_tiny_artifact(&t, bytes);
	tc__hash256(bytes, sizeof(bytes), &chunk);
	assert_int_equal(tc__canon_root(&t, &chunk, 1, &base), 0);

	m = t.meta[0];
	t.meta[0] = t.meta[1];
	t.meta[1] = m;
	assert_int_equal(tc__canon_root(&t, &chunk, 1, &d), 0);
	assert_true(tc__digest_eq(&d, &base));

#define CHANGED()                                                       \
	do {                                                            \
		assert_int_equal(tc__canon_root(&t, &chunk, 1, &d), 0); \
		assert_false(tc__digest_eq(&d, &base));                 \
	} while (0)
	t.tensors[1].name[0] = 'c';
	CHANGED();
	t.tensors[1].name[0] = 'b';
	t.tensors[1].dtype = TC_DTYPE_I8;
	CHANGED();
	t.tensors[1].dtype = TC_DTYPE_U8;
	t.tensors[0].ndim = 2;
	t.tensors[0].shape[0] = 1;
	t.tensors[0].shape[1] = 2;
	CHANGED();
	t.tensors[0].ndim = 1;
	t.tensors[0].shape[0] = 2;
	t.tensors[1].offset = 8;
	CHANGED();
	t.tensors[1].offset = 256;
	t.meta[0].val[0] = '2';
	CHANGED();
	t.meta[0].val[0] = '1';
	/* Metadata "ab"="c" is not "a"="bc": lengths keep fields apart. */
	tc__free(t.meta[0].key);
	tc__free(t.meta[0].val);
	t.meta[0].key = tc__strdup("formatp");
	t.meta[0].val = tc__strdup("t");
	t.meta[1].val[0] = 'q';
	CHANGED();
	assert_int_equal(tc__canon_root(&t, &chunk, 1, &base), 0);
	/* And so do the bytes: one bit anywhere. */
	bytes[258] ^= 1;
	tc__hash256(bytes, sizeof(bytes), &chunk);
	CHANGED();
#undef CHANGED
	tc__table_release(&t);
}

/* The id does not depend on the protocol's table codec: encoding the
 * table for the wire and hashing that gives a different digest, and the
 * canonical form starts with its own magic and version. */
static void test_canon__independent_of_the_wire(void **state)
{
	struct tc__table t;
	struct tc__buf c = TC_BUF_INIT, w = TC_BUF_INIT;
	uint8_t bytes[259];

	t_tiny_artifact(&t, bytes);
	tc__canon_table(&c, &t);
	tc__proto_put_table(&w, &t);
	assert_true(c.len != w.len || memcmp(c.data, w.data, c.len));
	assert_memory_equal(c.data, TC_CANON_MAGIC, 12);
	assert_int_equal(c.data[12], TC_CANON_VERSION);
	tc__buf_release(&c);
	tc__buf_release(&w);
	tc__table_release(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_canon__tiny_vector),
		cmocka_unit_test(test_canon__what_changes_the_id),
		cmocka_unit_test(test_canon__independent_of_the_wire),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
