/*
 * test_proto.c - src/proto: the 24-byte frame header and the tensor-table
 * codec, against the wire cases of docs/hostile-inputs.md section 1.3.
 *
 * Every rejected input must give its specific code, a message naming what
 * was wrong, an empty output table and no leak; a count that the bytes
 * cannot hold must be refused before anything is allocated (checked by
 * making every allocation fail and expecting the protocol error, not
 * -ENOMEM).  Allocation failures are injected at every allocation of a
 * 50-tensor decode; run under ASan to check that each path frees.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/compiler.h"
#include "common/tensor.h"
#include "proto/gsp.h"
#include "proto/proto.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"

#define MSG 512

static int teardown_alloc(void **state)
{
	(void)state;
	tc__alloc_fail_after(-1);
	return 0;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* ----------------------------------------------------------------- frames */

static void good_hdr(uint8_t raw[TC_FRAME_HDR])
{
	struct tc__frame_hdr h = {
		TC_PROTO_VERSION, TC_MSG_ATTACH, 0, 7, 100, 1
	};

	tc__frame_encode(&h, raw);
}

static void expect_decode(const uint8_t raw[TC_FRAME_HDR], int code,
			  const char *needle)
{
	struct tc__frame_hdr h;
	char err[MSG] = "";

	assert_int_equal(tc__frame_decode(raw, &h, err, sizeof(err)), code);
	if (needle && !strstr(err, needle))
		fail_msg("message '%s' does not mention '%s'", err, needle);
}

static void test_proto__frame_roundtrip(void **state)
{
	static const uint32_t reqs[] = { 0, 1, 0x80000000u, UINT32_MAX };
	static const uint32_t lens[] = { 0, 1, TC_PROTO_MAX_BODY - 1,
					 TC_PROTO_MAX_BODY };

	for (int type = 1; type < TC_MSG__MAX; type++) {
		for (int f = 0; f < 2; f++) {
			for (size_t r = 0; r < TC_ARRAY_SIZE(reqs); r++) {
				for (size_t l = 0; l < TC_ARRAY_SIZE(lens);
				     l++) {
					struct tc__frame_hdr in = {
						TC_PROTO_VERSION,
						(uint16_t)type,
						f ? TC_PF_REPLY : 0,
						reqs[r],
						lens[l],
						(uint16_t)(l % (TC_PROTO_MAX_FDS +
								1)),
					},
							     out;
					uint8_t raw[TC_FRAME_HDR];
					char err[MSG];

					memset(&out, 0xa5, sizeof(out));
					tc__frame_encode(&in, raw);
					assert_int_equal(
						tc__frame_decode(raw, &out, err,
								 sizeof(err)),
						0);
					assert_int_equal(out.version,
							 in.version);
					assert_int_equal(out.type, in.type);
					assert_int_equal(out.flags, in.flags);
					assert_int_equal(out.req_id, in.req_id);
					assert_int_equal(out.body_len,
							 in.body_len);
					assert_int_equal(out.nfds, in.nfds);
				}
			}
		}
	}
	/* Byte layout: "TSC1", then little-endian fields, reserved zero. */
	{
		struct tc__frame_hdr h = { 1,	       TC_MSG_SEAL, TC_PF_REPLY,
					   0x04030201, 0x08070605,  3 };
		static const uint8_t want[TC_FRAME_HDR] = {
			'T', 'S', 'C', '1', 1, 0, TC_MSG_SEAL, 0, 1, 0, 0, 0,
			1,   2,	  3,   4,   5, 6, 7,	       8, 3, 0, 0, 0,
		};
		uint8_t raw[TC_FRAME_HDR];

		/* Reserved bytes are written as zero whatever was there. */
		memset(raw, 0xff, sizeof(raw));
		tc__frame_encode(&h, raw);
		assert_memory_equal(raw, want, sizeof(want));
	}
	/* Names. */
	assert_string_equal(tc__proto_name(TC_MSG_HELLO), "HELLO");
	assert_string_equal(tc__proto_name(TC_MSG_ATTACH), "ATTACH");
	assert_string_equal(tc__proto_name(TC_MSG_PROGRESS), "PROGRESS");
	assert_string_equal(tc__proto_name(0), "?");
	assert_string_equal(tc__proto_name(-1), "?");
	assert_string_equal(tc__proto_name(TC_MSG__MAX), "?");
	assert_string_equal(tc__proto_name(65535), "?");
	for (int t = 1; t < TC_MSG__MAX; t++)
		assert_string_not_equal(tc__proto_name(t), "?");
}

static void test_proto__frame_bad_magic(void **state)
{
	uint8_t raw[TC_FRAME_HDR];

	for (int i = 0; i < 4; i++) {
		for (int bit = 0; bit < 8; bit++) {
			good_hdr(raw);
			raw[i] ^= (uint8_t)(1 << bit);
			expect_decode(raw, TC_EPROTO, "magic");
		}
	}
	/* Byte-swapped magic (a big-endian peer) and all zeroes. */
	good_hdr(raw);
	put_le(raw, 0x54534331u, 4);
	expect_decode(raw, TC_EPROTO, "magic");
	memset(raw, 0, sizeof(raw));
	expect_decode(raw, TC_EPROTO, "magic");
	/* Magic is checked before anything else. */
	good_hdr(raw);
	raw[0] = 'X';
	put_le(raw + 4, 2, 2);
	expect_decode(raw, TC_EPROTO, "magic");
}

static void test_proto__frame_bad_version(void **state)
{
	static const uint16_t v[] = { 0, 1, 3, 0x100, 0xffff };
	uint8_t raw[TC_FRAME_HDR];

	for (size_t i = 0; i < TC_ARRAY_SIZE(v); i++) {
		good_hdr(raw);
		put_le(raw + 4, v[i], 2);
		expect_decode(raw, TC_EVERSION, "version");
	}
	/* A version mismatch wins over the fields it may define
	 * differently (a newer peer's types and flags). */
	good_hdr(raw);
	put_le(raw + 4, 3, 2);
	put_le(raw + 6, 999, 2);
	put_le(raw + 8, 0xffffffffu, 4);
	expect_decode(raw, TC_EVERSION, "version");
}

static void test_proto__frame_bad_type(void **state)
{
	static const uint16_t t[] = { 0, TC_MSG__MAX, TC_MSG__MAX + 1, 255,
				      0xffff };
	uint8_t raw[TC_FRAME_HDR];

	for (size_t i = 0; i < TC_ARRAY_SIZE(t); i++) {
		good_hdr(raw);
		put_le(raw + 6, t[i], 2);
		expect_decode(raw, TC_EPROTO, "unknown message type");
	}
}

static void test_proto__frame_reserved(void **state)
{
	uint8_t raw[TC_FRAME_HDR];

	/* Every flag bit this version does not know. */
	for (int bit = 0; bit < 32; bit++) {
		uint32_t f = (uint32_t)1 << bit;

		good_hdr(raw);
		put_le(raw + 8, f, 4);
		if (f & TC_PF_KNOWN)
			expect_decode(raw, 0, NULL);
		else
			expect_decode(raw, TC_EPROTO, "reserved");
	}
	/* The reserved u16 at offset 22: any bit. */
	for (int bit = 0; bit < 16; bit++) {
		good_hdr(raw);
		put_le(raw + 22, (uint32_t)1 << bit, 2);
		expect_decode(raw, TC_EPROTO, "reserved");
	}
}

static void test_proto__frame_limits(void **state)
{
	static const struct {
		uint32_t len;
		int code;
	} lens[] = {
		{ 0, 0 },
		{ 1, 0 },
		{ TC_PROTO_MAX_BODY - 1, 0 },
		{ TC_PROTO_MAX_BODY, 0 },
		{ TC_PROTO_MAX_BODY + 1, TC_ELIMIT },
		{ 0x80000000u, TC_ELIMIT },
		{ UINT32_MAX, TC_ELIMIT },
	};
	uint8_t raw[TC_FRAME_HDR];

	for (size_t i = 0; i < TC_ARRAY_SIZE(lens); i++) {
		good_hdr(raw);
		put_le(raw + 16, lens[i].len, 4);
		expect_decode(raw, lens[i].code, lens[i].code ? "limit" : NULL);
	}
	for (uint32_t n = 0; n <= 0xffff; n = n < 8 ? n + 1 : n * 2 + 1) {
		good_hdr(raw);
		put_le(raw + 20, n, 2);
		expect_decode(raw, n <= TC_PROTO_MAX_FDS ? 0 : TC_ELIMIT,
			      n <= TC_PROTO_MAX_FDS ? NULL : "fds");
	}
}

static void test_proto__frame_begin_finish(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__frame_hdr h;
	char err[MSG];
	size_t off1, off2;

	/* Two frames back to back in one buffer, lengths back-patched. */
	off1 = tc__frame_begin(&b, TC_MSG_LIST, 0, 11, 0);
	tc__buf_put_str(&b, "body one");
	tc__frame_finish(&b, off1);
	off2 = tc__frame_begin(&b, TC_MSG_CREATE, TC_PF_REPLY, 12, 2);
	tc__frame_finish(&b, off2);
	assert_false(b.oom);
	assert_int_equal(off1, 0);
	assert_int_equal(off2, TC_FRAME_HDR + 12);
	assert_int_equal(b.len, 2 * TC_FRAME_HDR + 12);
	assert_int_equal(tc__frame_decode(b.data, &h, err, sizeof(err)), 0);
	assert_int_equal(h.type, TC_MSG_LIST);
	assert_int_equal(h.req_id, 11);
	assert_int_equal(h.body_len, 12);
	assert_int_equal(tc__frame_decode(b.data + off2, &h, err, sizeof(err)),
			 0);
	assert_int_equal(h.type, TC_MSG_CREATE);
	assert_int_equal(h.flags, TC_PF_REPLY);
	assert_int_equal(h.nfds, 2);
	assert_int_equal(h.body_len, 0);

	/* A body over the limit poisons the buffer rather than sending a
	 * frame the peer must refuse.  (len is faked: finish only looks at
	 * it.) */
	{
		size_t real = b.len;

		b.len = off2 + TC_FRAME_HDR + TC_PROTO_MAX_BODY + 1;
		tc__frame_finish(&b, off2);
		assert_true(b.oom);
		b.len = real;
		assert_int_equal(tc__frame_decode(b.data + off2, &h, err,
						  sizeof(err)),
				 0);
		assert_int_equal(h.body_len, 0);
	}
	tc__buf_release(&b);
}

/* ----------------------------------------------------------------- tables */

/* One raw entry, fields exactly as given (for hostile tables). */
static void put_entry(struct tc__buf *b, const char *name, size_t nlen,
		      uint8_t dtype, uint8_t ndim, const uint64_t *shape,
		      uint64_t offset, uint64_t nbytes)
{
	tc__buf_put_strn(b, name, nlen);
	tc__buf_put_u8(b, dtype);
	tc__buf_put_u8(b, ndim);
	for (int d = 0; d < ndim; d++)
		tc__buf_put_u64(b, shape[d]);
	tc__buf_put_u64(b, offset);
	tc__buf_put_u64(b, nbytes);
}

/* A well-formed F32 [n] entry at `offset`. */
static void put_f32(struct tc__buf *b, const char *name, uint64_t n,
		    uint64_t offset)
{
	put_entry(b, name, strlen(name), TC_DTYPE_F32, 1, &n, offset, 4 * n);
}

static int decode(const struct tc__buf *b, int check_layout,
		  struct tc__table *t, char *err, size_t *left)
{
	struct tc__cur c;
	int rc;

	assert_false(b->oom);
	tc__cur_init(&c, b->data, b->len);
	err[0] = '\0';
	memset(t, 0x5a, sizeof(*t));
	rc = tc__proto_get_table(&c, check_layout, t, err, MSG);
	if (left)
		*left = c.left;
	return rc;
}

/* Decoding `b` fails with `code`, the table comes back empty and the
 * message mentions `needle`. */
static void expect_table(const struct tc__buf *b, int check_layout, int code,
			 const char *needle)
{
	struct tc__table t;
	char err[MSG];
	int rc = decode(b, check_layout, &t, err, NULL);

	if (rc != code)
		fail_msg("decode gave %s (%s), expected %s", tc_err_name(rc),
			 err, tc_err_name(code));
	if (code == 0) {
		tc__table_release(&t);
		return;
	}
	assert_int_equal(t.ntensors, 0);
	assert_null(t.tensors);
	assert_int_equal(t.nmeta, 0);
	assert_null(t.meta);
	if (needle && !strstr(err, needle))
		fail_msg("message '%s' does not mention '%s'", err, needle);
}

static void add_tensor(struct tc__table *t, const char *name, int dtype,
		       uint32_t ndim, const uint64_t *shape)
{
	struct tc__tensor *x;

	t->tensors = realloc(t->tensors, (t->ntensors + 1) * sizeof(*x));
	assert_non_null(t->tensors);
	x = &t->tensors[t->ntensors++];
	memset(x, 0, sizeof(*x));
	x->name = tc__strdup(name);
	assert_non_null(x->name);
	x->dtype = (uint8_t)dtype;
	x->ndim = (uint8_t)ndim;
	for (uint32_t d = 0; d < ndim; d++)
		x->shape[d] = shape[d];
	assert_int_equal(tc__tensor_nbytes(dtype, ndim, shape, &x->nbytes), 0);
}

static void add_meta(struct tc__table *t, const char *k, const char *v)
{
	t->meta = realloc(t->meta, (t->nmeta + 1) * sizeof(*t->meta));
	assert_non_null(t->meta);
	t->meta[t->nmeta].key = tc__strdup(k);
	t->meta[t->nmeta].val = tc__strdup(v);
	t->nmeta++;
}

/* Tables built here use realloc for the arrays; tc__table_release frees
 * with tc__free, which is free(). */
static void sample_table(struct tc__table *t)
{
	uint64_t s16[TC_MAX_RANK];
	static const uint64_t s2[] = { 3, 5 }, e[] = { 0, 4 }, one[] = { 7 },
			      f4[] = { 6 };

	for (int i = 0; i < TC_MAX_RANK; i++)
		s16[i] = i % 3 ? 1 : 2;
	tc__table_init(t);
	add_tensor(t, "model.layers.0/attn.q_proj.weight", TC_DTYPE_BF16, 2,
		   s2);
	add_tensor(t, "scalar", TC_DTYPE_F64, 0, NULL);
	add_tensor(t, "rank16", TC_DTYPE_I8, TC_MAX_RANK, s16);
	add_tensor(t, "empty", TC_DTYPE_F32, 2, e);
	add_tensor(t, "\xc3\xb1/\xc3\x9f.\xe6\x9d\x83\xe9\x87\x8d", TC_DTYPE_U8,
		   1, one); /* "ñ/ß.权重" */
	add_tensor(t, "..", TC_DTYPE_F4, 1, f4);
	add_tensor(t, "a/b/c/d.e.f", TC_DTYPE_F8_E4M3, 1, one);
	add_meta(t, "format", "pt");
	add_meta(t, "empty value", "");
	add_meta(t, "\xe2\x9c\x93", "\xe2\x9c\x93 ok");
	assert_int_equal(tc__table_layout(t), 0);
}

static void assert_tables_equal(const struct tc__table *a,
				const struct tc__table *b)
{
	assert_int_equal(a->ntensors, b->ntensors);
	assert_int_equal(a->nmeta, b->nmeta);
	assert_int_equal(a->total_bytes, b->total_bytes);
	for (uint32_t i = 0; i < a->ntensors; i++) {
		const struct tc__tensor *x = &a->tensors[i],
					*y = &b->tensors[i];

		assert_string_equal(x->name, y->name);
		assert_int_equal(x->dtype, y->dtype);
		assert_int_equal(x->ndim, y->ndim);
		for (uint32_t d = 0; d < x->ndim; d++)
			assert_int_equal(x->shape[d], y->shape[d]);
		assert_int_equal(x->offset, y->offset);
		assert_int_equal(x->nbytes, y->nbytes);
	}
	for (uint32_t i = 0; i < a->nmeta; i++) {
		assert_string_equal(a->meta[i].key, b->meta[i].key);
		assert_string_equal(a->meta[i].val, b->meta[i].val);
	}
}

static void test_proto__table_roundtrip(void **state)
{
	struct tc__table in, out;
	struct tc__buf b = TC_BUF_INIT, b2 = TC_BUF_INIT;
	char err[MSG];
	size_t left;

	sample_table(&in);
	tc__proto_put_table(&b, &in);
	for (int check = 0; check < 2; check++) {
		int rc = decode(&b, check, &out, err, &left);

		if (rc)
			fail_msg("decode: %s", err);
		assert_int_equal(left, 0);
		assert_tables_equal(&in, &out);
		/* The encoding is canonical: decode then encode gives the
		 * same bytes (they feed the artifact id). */
		tc__proto_put_table(&b2, &out);
		assert_int_equal(b2.len, b.len);
		assert_memory_equal(b2.data, b.data, b.len);
		tc__buf_release(&b2);
		tc__table_release(&out);
	}
	/* Trailing bytes are left to the caller. */
	tc__buf_put_u32(&b, 0xdeadbeef);
	assert_int_equal(decode(&b, 1, &out, err, &left), 0);
	assert_int_equal(left, 4);
	tc__table_release(&out);
	tc__buf_release(&b);
	tc__table_release(&in);

	/* The empty table. */
	tc__table_init(&in);
	tc__proto_put_table(&b, &in);
	assert_int_equal(b.len, 4 + 4 + 8);
	assert_int_equal(decode(&b, 1, &out, err, &left), 0);
	assert_int_equal(out.ntensors, 0);
	assert_int_equal(out.nmeta, 0);
	assert_int_equal(left, 0);
	tc__table_release(&out);
	tc__buf_release(&b);
}

/* Every prefix of a valid encoding is a truncated table: TC_EPROTO, an
 * empty result, nothing leaked. */
static void test_proto__table_truncated(void **state)
{
	struct tc__table in;
	struct tc__buf b = TC_BUF_INIT;

	sample_table(&in);
	tc__proto_put_table(&b, &in);
	for (size_t n = 0; n < b.len; n++) {
		struct tc__buf p = { b.data, n, b.cap, false };

		expect_table(&p, 1, TC_EPROTO, NULL);
		expect_table(&p, 0, TC_EPROTO, NULL);
	}
	expect_table(&b, 1, 0, NULL);
	tc__buf_release(&b);
	tc__table_release(&in);
}

static void test_proto__table_counts(void **state)
{
	struct tc__buf b = TC_BUF_INIT;

	/* More tensors than the limit. */
	tc__buf_put_u32(&b, TC_MAX_TENSORS + 1);
	expect_table(&b, 1, TC_ELIMIT, "limit");
	tc__buf_release(&b);
	tc__buf_put_u32(&b, UINT32_MAX);
	expect_table(&b, 1, TC_ELIMIT, "limit");
	tc__buf_release(&b);

	/* A count the bytes cannot hold is refused before the tensor array
	 * is allocated: with every allocation failing, the answer is still
	 * the protocol error, and no allocation was even tried. */
	{
		static const uint32_t counts[] = { 1, 2, 1000, TC_MAX_TENSORS };

		for (size_t i = 0; i < TC_ARRAY_SIZE(counts); i++) {
			tc__buf_put_u32(&b, counts[i]);
			/* 22 bytes: one byte short of the smallest entry. */
			for (int k = 0; k < 22; k++)
				tc__buf_put_u8(&b, 0);
			tc__alloc_fail_after(0);
			expect_table(&b, 1, TC_EPROTO, "truncated");
			assert_int_equal(tc__alloc_fail_after(-1), 0);
			tc__buf_release(&b);
		}
	}
	/* The same for metadata. */
	tc__buf_put_u32(&b, 0);
	tc__buf_put_u32(&b, 3);
	for (int k = 0; k < 23; k++)
		tc__buf_put_u8(&b, 0);
	expect_table(&b, 1, TC_EPROTO, "truncated");
	tc__buf_release(&b);
	tc__buf_put_u32(&b, 0);
	tc__buf_put_u32(&b, TC_MAX_META + 1);
	for (int k = 0; k < 8 * (TC_MAX_META + 1) + 8; k++)
		tc__buf_put_u8(&b, 0);
	expect_table(&b, 1, TC_ELIMIT, "limit");
	tc__buf_release(&b);
	tc__buf_put_u32(&b, 0);
	tc__buf_put_u32(&b, UINT32_MAX);
	expect_table(&b, 1, TC_ELIMIT, "limit");
	tc__buf_release(&b);

	/* Exactly TC_MAX_META entries of empty strings is fine. */
	tc__buf_put_u32(&b, 0);
	tc__buf_put_u32(&b, TC_MAX_META);
	for (int k = 0; k < 8 * TC_MAX_META + 8; k++)
		tc__buf_put_u8(&b, 0);
	expect_table(&b, 1, 0, NULL);
	tc__buf_release(&b);
}

/* A table of the given raw entries, then no metadata and total_bytes. */
#define TABLE(b, n, total, ...)                      \
	do {                                         \
		tc__buf_release(b);                  \
		tc__buf_put_u32(b, n);               \
		__VA_ARGS__;                         \
		tc__buf_put_u32(b, 0);               \
		tc__buf_put_u64(b, (uint64_t)total); \
	} while (0)

static void test_proto__table_bad_entries(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	uint64_t s[TC_MAX_RANK + 8];
	char *name;

	for (size_t i = 0; i < TC_ARRAY_SIZE(s); i++)
		s[i] = 1;

	/* Duplicate names (also far apart). */
	TABLE(&b, 2, 1024, put_f32(&b, "w", 1, 0); put_f32(&b, "w", 1, 256));
	expect_table(&b, 1, TC_EINVAL, "'w' appears twice");
	TABLE(&b, 3, 1024, put_f32(&b, "a", 1, 0); put_f32(&b, "b", 1, 256);
	      put_f32(&b, "a", 1, 512));
	expect_table(&b, 0, TC_EINVAL, "'a' appears twice");
	/* Names that differ only after a prefix are distinct. */
	TABLE(&b, 2, 1024, put_f32(&b, "a", 1, 0); put_f32(&b, "a.", 1, 256));
	expect_table(&b, 1, 0, NULL);

	/* Empty name; embedded NUL; too long; exactly the limit. */
	TABLE(&b, 1, 256, put_f32(&b, "", 1, 0));
	expect_table(&b, 1, TC_EINVAL, "empty name");
	TABLE(&b, 1, 256, put_entry(&b, "a\0b", 3, TC_DTYPE_F32, 1, s, 0, 4));
	expect_table(&b, 1, TC_EPROTO, "#0");
	name = malloc(TC_MAX_NAME + 2);
	assert_non_null(name);
	memset(name, 'n', TC_MAX_NAME + 1);
	name[TC_MAX_NAME + 1] = '\0';
	TABLE(&b, 1, 256,
	      put_entry(&b, name, TC_MAX_NAME + 1, TC_DTYPE_F32, 1, s, 0, 4));
	expect_table(&b, 1, TC_ELIMIT, "#0");
	TABLE(&b, 1, 256,
	      put_entry(&b, name, TC_MAX_NAME, TC_DTYPE_F32, 1, s, 0, 4));
	expect_table(&b, 1, 0, NULL);
	free(name);

	/* Unknown dtypes. */
	TABLE(&b, 1, 256, put_entry(&b, "d", 1, TC_DTYPE__COUNT, 1, s, 0, 4));
	expect_table(&b, 1, TC_EBADDTYPE, "'d'");
	TABLE(&b, 1, 256, put_entry(&b, "d", 1, 255, 1, s, 0, 4));
	expect_table(&b, 1, TC_EBADDTYPE, "dtype");

	/* nbytes that does not match shape and dtype, both ways. */
	TABLE(&b, 1, 256, put_entry(&b, "x", 1, TC_DTYPE_F32, 1, s, 0, 3));
	expect_table(&b, 1, TC_EINVAL, "'x'");
	TABLE(&b, 1, 256, put_entry(&b, "x", 1, TC_DTYPE_F32, 1, s, 0, 5));
	expect_table(&b, 0, TC_EINVAL, "does not match");
	TABLE(&b, 1, 256, put_entry(&b, "x", 1, TC_DTYPE_F32, 0, s, 0, 0));
	expect_table(&b, 1, TC_EINVAL, "'x'");
	/* The shape that wraps to 16 bytes, with nbytes = 16. */
	{
		static const uint64_t w[] = { 4194305, 4194305,
					      211106198978564ull };

		TABLE(&b, 1, 256,
		      put_entry(&b, "wrap", 4, TC_DTYPE_F32, 3, w, 0, 16));
		expect_table(&b, 1, TC_ELIMIT, "'wrap'");
	}
	/* Sub-byte sizes that are not whole bytes. */
	s[0] = 3;
	TABLE(&b, 1, 256, put_entry(&b, "f4", 2, TC_DTYPE_F4, 1, s, 0, 1));
	expect_table(&b, 1, TC_ELIMIT, "not whole bytes");
	s[0] = 1;

	/* Rank above 16, up to 255. */
	TABLE(&b, 1, 256,
	      put_entry(&b, "r", 1, TC_DTYPE_U8, TC_MAX_RANK + 1, s, 0, 1));
	expect_table(&b, 1, TC_ELIMIT, "rank 17");
	TABLE(&b, 1, 256,
	      put_entry(&b, "r", 1, TC_DTYPE_U8, TC_MAX_RANK, s, 0, 1));
	expect_table(&b, 1, 0, NULL);
	tc__buf_release(&b);
	tc__buf_put_u32(&b, 1);
	tc__buf_put_str(&b, "r");
	tc__buf_put_u8(&b, TC_DTYPE_U8);
	tc__buf_put_u8(&b, 255);
	for (int i = 0; i < 300; i++)
		tc__buf_put_u64(&b, 1);
	expect_table(&b, 1, TC_ELIMIT, "rank 255");
	tc__buf_release(&b);
}

static void test_proto__table_layout(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	uint64_t one = 1, big = (uint64_t)1 << 60;

	/* Good: aligned, ascending, gaps allowed, end == total. */
	TABLE(&b, 3, 1028, put_f32(&b, "a", 1, 0); put_f32(&b, "b", 64, 256);
	      put_f32(&b, "c", 1, 1024));
	expect_table(&b, 1, 0, NULL);
	/* An empty tensor at the very end, and at the end of another. */
	TABLE(&b, 2, 4, put_f32(&b, "a", 1, 0); put_f32(&b, "e", 0, 256));
	expect_table(&b, 1, TC_EINVAL, "past the artifact size");
	TABLE(&b, 2, 256, put_f32(&b, "a", 1, 0); put_f32(&b, "e", 0, 256));
	expect_table(&b, 1, 0, NULL);

	/* Overlap: partial, full containment, identical ranges. */
	TABLE(&b, 2, 4096, put_f32(&b, "a", 128, 0); put_f32(&b, "b", 1, 256));
	expect_table(&b, 1, TC_EINVAL, "'b'");
	TABLE(&b, 2, 4096, put_f32(&b, "a", 1024, 0); put_f32(&b, "b", 1, 512));
	expect_table(&b, 1, TC_EINVAL, "overlaps");
	TABLE(&b, 2, 4096, put_f32(&b, "a", 1, 0); put_f32(&b, "b", 1, 0));
	expect_table(&b, 1, TC_EINVAL, "'b'");
	/* Descending offsets. */
	TABLE(&b, 2, 4096, put_f32(&b, "a", 1, 512); put_f32(&b, "b", 1, 256));
	expect_table(&b, 1, TC_EINVAL, "'b'");
	/* Misaligned, first or later. */
	TABLE(&b, 1, 4096, put_f32(&b, "a", 1, 1));
	expect_table(&b, 1, TC_EINVAL, "aligned");
	TABLE(&b, 2, 4096, put_f32(&b, "a", 1, 0); put_f32(&b, "b", 1, 300));
	expect_table(&b, 1, TC_EINVAL, "'b'");
	TABLE(&b, 1, 4096, put_f32(&b, "a", 1, 128));
	expect_table(&b, 1, TC_EINVAL, "aligned");
	/* Out of range: end past total_bytes, by one and by a lot. */
	TABLE(&b, 1, 3, put_f32(&b, "a", 1, 0));
	expect_table(&b, 1, TC_EINVAL, "past the artifact size");
	TABLE(&b, 1, 0, put_f32(&b, "a", 1, 0x100000000ull));
	expect_table(&b, 1, TC_EINVAL, "past the artifact size");
	/* offset + nbytes overflows u64. */
	TABLE(&b, 1, UINT64_MAX,
	      put_entry(&b, "o", 1, TC_DTYPE_U8, 1, &big, UINT64_MAX & ~255ull,
			big));
	expect_table(&b, 1, TC_EINVAL, "overflows");
	TABLE(&b, 1, UINT64_MAX,
	      put_entry(&b, "o", 1, TC_DTYPE_U8, 1, &one, UINT64_MAX & ~255ull,
			1));
	expect_table(&b, 1, 0, NULL);

	/* Without check_layout the offsets are the caller's business. */
	TABLE(&b, 2, 0, put_f32(&b, "a", 1, 7); put_f32(&b, "b", 1, 0));
	expect_table(&b, 0, 0, NULL);
	expect_table(&b, 1, TC_EINVAL, "'a'");
	tc__buf_release(&b);
}

static void test_proto__table_meta(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	size_t big = TC_MAX_META_BYTES + 1;
	char *s = malloc(big);

	assert_non_null(s);
	memset(s, 'm', big);

	/* Key and value of exactly the limit. */
	tc__buf_put_u32(&b, 0);
	tc__buf_put_u32(&b, 1);
	tc__buf_put_strn(&b, s, TC_MAX_META_BYTES);
	tc__buf_put_strn(&b, s, TC_MAX_META_BYTES);
	tc__buf_put_u64(&b, 0);
	expect_table(&b, 1, 0, NULL);
	tc__buf_release(&b);
	/* One byte over, as a key and as a value: a limit, not a
	 * truncation. */
	for (int which = 0; which < 2; which++) {
		tc__buf_put_u32(&b, 0);
		tc__buf_put_u32(&b, 1);
		tc__buf_put_strn(&b, s, which ? 1 : big);
		tc__buf_put_strn(&b, s, which ? big : 1);
		tc__buf_put_u64(&b, 0);
		expect_table(&b, 1, TC_ELIMIT, "metadata");
		tc__buf_release(&b);
	}
	/* Embedded NUL in a key or a value. */
	for (int which = 0; which < 2; which++) {
		tc__buf_put_u32(&b, 0);
		tc__buf_put_u32(&b, 1);
		tc__buf_put_strn(&b, which ? "k" : "k\0k", which ? 1 : 3);
		tc__buf_put_strn(&b, which ? "v\0v" : "v", which ? 3 : 1);
		tc__buf_put_u64(&b, 0);
		expect_table(&b, 1, TC_EPROTO, "metadata");
		tc__buf_release(&b);
	}
	/* A failure in the second entry frees the first. */
	tc__buf_put_u32(&b, 0);
	tc__buf_put_u32(&b, 2);
	tc__buf_put_str(&b, "k1");
	tc__buf_put_str(&b, "v1");
	tc__buf_put_str(&b, "k2");
	tc__buf_put_strn(&b, s, big);
	tc__buf_put_u64(&b, 0);
	expect_table(&b, 1, TC_ELIMIT, NULL);
	tc__buf_release(&b);
	free(s);
}

/* A valid 50-tensor table with metadata. */
static void big_table(struct tc__buf *b)
{
	struct tc__table t;

	tc__table_init(&t);
	for (int i = 0; i < 50; i++) {
		char name[32];
		uint64_t shape[2] = { (uint64_t)i, 3 };

		snprintf(name, sizeof(name), "layers.%d.weight", i);
		add_tensor(&t, name, i % 2 ? TC_DTYPE_F16 : TC_DTYPE_I32, 2,
			   shape);
	}
	add_meta(&t, "format", "pt");
	add_meta(&t, "k", "v");
	assert_int_equal(tc__table_layout(&t), 0);
	tc__proto_put_table(b, &t);
	tc__table_release(&t);
}

static void test_proto__table_oom(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__table t;
	char err[MSG];
	long k;
	int rc = -ENOMEM;

	big_table(&b);
	for (k = 0; k < 100000; k++) {
		tc__alloc_fail_after(k);
		rc = decode(&b, 1, &t, err, NULL);
		tc__alloc_fail_after(-1);
		if (rc == 0)
			break;
		if (rc != -ENOMEM)
			fail_msg("allocation %ld failed: %s (%s), expected "
				 "-ENOMEM",
				 k, tc_err_name(rc), err);
		assert_int_equal(t.ntensors, 0);
		assert_null(t.tensors);
		assert_int_equal(t.nmeta, 0);
		assert_null(t.meta);
	}
	assert_int_equal(rc, 0);
	/* 50 names, 50 map entries, the arrays, the buckets, metadata. */
	assert_true(k > 100);
	assert_int_equal(t.ntensors, 50);
	assert_int_equal(t.nmeta, 2);
	assert_string_equal(t.tensors[49].name, "layers.49.weight");
	tc__table_release(&t);
	tc__buf_release(&b);
}

/* GROUP (26): every op round-trips; a hold out of range, an unknown op,
 * a truncated body and a byte after the last field are refused. */
static int group_decode(const struct tc__buf *b, uint32_t *op,
			struct tc__gsp_group_req *q)
{
	struct tc__cur c;
	char err[256];

	tc__cur_init(&c, b->data, b->len);
	return tc__proto_get_group(&c, op, q, err, sizeof(err));
}

static void test_proto__group(void **state)
{
	struct tc__gsp_group_req q = { .rank = 1,
				       .ranks = 4,
				       .timeout_ms = 60000,
				       .lease_ms = 3000,
				       .wait_ms = 5 },
				 out;
	struct tc__buf b = TC_BUF_INIT;
	uint32_t op;
	static const uint32_t ops[] = {
		TC_GSP_GROUP_CREATE, TC_GSP_GROUP_JOIN, TC_GSP_GROUP_PREPARE,
		TC_GSP_GROUP_ABORT,  TC_GSP_GROUP_GET,	TC_PROTO_GROUP_HOLD
	};

	snprintf(q.group, sizeof(q.group), "serve/v3");
	snprintf(q.id, sizeof(q.id), "tc2:ab");
	snprintf(q.reason, sizeof(q.reason), "told to");
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		tc__buf_init(&b);
		tc__proto_put_group(&b, ops[i], &q);
		assert_int_equal(group_decode(&b, &op, &out), 0);
		assert_int_equal(op, ops[i]);
		assert_string_equal(out.group, "serve/v3");
		/* every prefix is truncated */
		for (size_t n = 0; n < b.len; n++) {
			struct tc__buf t = b;

			t.len = n;
			assert_int_equal(group_decode(&t, &op, &out),
					 TC_EPROTO);
		}
		tc__buf_put_u8(&b, 0); /* a byte after the last field */
		assert_int_equal(group_decode(&b, &op, &out), TC_EPROTO);
		tc__buf_release(&b);
	}
	tc__proto_put_group(&b, TC_PROTO_GROUP_HOLD, &q);
	group_decode(&b, &op, &out);
	assert_int_equal(out.ranks, 4);
	assert_int_equal(out.rank, 1);
	assert_int_equal(out.timeout_ms, 60000);
	assert_int_equal(out.lease_ms, 3000);
	tc__buf_release(&b);
	/* a hold's rank past its ranks, a lease too short */
	q.rank = 4;
	tc__proto_put_group(&b, TC_PROTO_GROUP_HOLD, &q);
	assert_int_equal(group_decode(&b, &op, &out), TC_EINVAL);
	tc__buf_release(&b);
	q.rank = 1;
	q.lease_ms = 10;
	tc__proto_put_group(&b, TC_PROTO_GROUP_HOLD, &q);
	assert_int_equal(group_decode(&b, &op, &out), TC_EINVAL);
	tc__buf_release(&b);
	/* join only (ranks 0): the timeout is not looked at */
	q.lease_ms = 3000;
	q.ranks = 0;
	q.timeout_ms = 0;
	tc__proto_put_group(&b, TC_PROTO_GROUP_HOLD, &q);
	assert_int_equal(group_decode(&b, &op, &out), 0);
	tc__buf_release(&b);
	/* not a group op */
	tc__proto_put_group(&b, TC_GSP_REGISTER, &q);
	assert_int_equal(group_decode(&b, &op, &out), TC_EPROTO);
	tc__buf_release(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_proto__frame_roundtrip),
		cmocka_unit_test(test_proto__frame_bad_magic),
		cmocka_unit_test(test_proto__frame_bad_version),
		cmocka_unit_test(test_proto__frame_bad_type),
		cmocka_unit_test(test_proto__frame_reserved),
		cmocka_unit_test(test_proto__frame_limits),
		cmocka_unit_test(test_proto__frame_begin_finish),
		cmocka_unit_test(test_proto__table_roundtrip),
		cmocka_unit_test(test_proto__table_truncated),
		cmocka_unit_test_teardown(test_proto__table_counts,
					  teardown_alloc),
		cmocka_unit_test(test_proto__table_bad_entries),
		cmocka_unit_test(test_proto__table_layout),
		cmocka_unit_test(test_proto__table_meta),
		cmocka_unit_test_teardown(test_proto__table_oom,
					  teardown_alloc),
		cmocka_unit_test(test_proto__group),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
