/*
 * test_gsp.c - src/proto/gsp: the global-store protocol's frames and
 * records against the wire cases of docs/hostile-inputs.md section 1.3:
 * round trips, every truncation refused, limits with their own code,
 * bitmaps of the wrong length, names that would reach logs raw, trailing
 * bytes.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#include "common/buf.h"
#include "proto/gsp.h"
#include "tcast/errors.h"

static const char ID[] =
	"tc2:abababababababababababababababababababababababababababababababab";

static void test_gsp__hdr(void **state)
{
	struct tc__gsp_hdr h = { TC_GSP_RESOLVE, 0, 42, 100 }, o;
	uint8_t raw[TC_GSP_HDR];
	char err[256];

	tc__gsp_hdr_encode(&h, raw);
	assert_int_equal(tc__gsp_hdr_decode(raw, &o, err, sizeof(err)), 0);
	assert_int_equal(o.type, TC_GSP_RESOLVE);
	assert_int_equal(o.req_id, 42);
	assert_int_equal(o.body_len, 100);
	raw[0] ^= 1;
	assert_int_equal(tc__gsp_hdr_decode(raw, &o, err, sizeof(err)),
			 TC_EPROTO);
	raw[0] ^= 1;
	raw[4] = 2; /* version */
	assert_int_equal(tc__gsp_hdr_decode(raw, &o, err, sizeof(err)),
			 TC_EVERSION);
	raw[4] = 1;
	h.type = TC_GSP__MAX;
	tc__gsp_hdr_encode(&h, raw);
	assert_int_equal(tc__gsp_hdr_decode(raw, &o, err, sizeof(err)),
			 TC_EPROTO);
	h.type = 0;
	tc__gsp_hdr_encode(&h, raw);
	assert_int_equal(tc__gsp_hdr_decode(raw, &o, err, sizeof(err)),
			 TC_EPROTO);
	h.type = TC_GSP_STATUS;
	h.flags = 2;
	tc__gsp_hdr_encode(&h, raw);
	assert_int_equal(tc__gsp_hdr_decode(raw, &o, err, sizeof(err)),
			 TC_EPROTO);
	h.flags = 0;
	h.body_len = TC_GSP_MAX_BODY + 1;
	tc__gsp_hdr_encode(&h, raw);
	assert_int_equal(tc__gsp_hdr_decode(raw, &o, err, sizeof(err)),
			 TC_ELIMIT);
	h.body_len = 0xffffffffu;
	tc__gsp_hdr_encode(&h, raw);
	assert_int_equal(tc__gsp_hdr_decode(raw, &o, err, sizeof(err)),
			 TC_ELIMIT);
}

static void test_gsp__node(void **state)
{
	struct tc__gsp_node
		n = { "node-a", 7, "10.0.0.1:7471", "z1", "r1", "h1" },
		o;
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur c;
	char err[256];

	tc__gsp_put_node(&b, &n);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_node(&c, &o, err, sizeof(err)), 0);
	assert_int_equal(tc__gsp_end(&c, err, sizeof(err)), 0);
	assert_string_equal(o.name, "node-a");
	assert_int_equal(o.epoch, 7);
	assert_string_equal(o.zone, "z1");
	for (size_t i = 0; i < b.len; i++) {
		tc__cur_init(&c, b.data, i);
		assert_true(tc__gsp_get_node(&c, &o, err, sizeof(err)) < 0);
	}
	/* a name over the limit, an empty one, one with a space or an
	 * escape (names reach logs and terminals) */
	b.len = 0;
	memset(n.name, 'x', TC_GSP_MAX_NAME);
	n.name[TC_GSP_MAX_NAME] = '\0';
	tc__gsp_put_node(&b, &n);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_node(&c, &o, err, sizeof(err)), 0);
	b.len = 0;
	tc__buf_put_u32(&b, TC_GSP_MAX_NAME + 1);
	for (int i = 0; i <= TC_GSP_MAX_NAME; i++)
		tc__buf_put_u8(&b, 'x');
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_node(&c, &o, err, sizeof(err)), TC_ELIMIT);
	assert_non_null(strstr(err, "node name"));
	const char *bad[] = { "", "a b", "a\x1b[2J", "caf\xc3\xa9" };
	for (size_t k = 0; k < 4; k++) {
		b.len = 0;
		snprintf(n.name, sizeof(n.name), "%s", bad[k]);
		tc__gsp_put_node(&b, &n);
		tc__cur_init(&c, b.data, b.len);
		assert_int_equal(tc__gsp_get_node(&c, &o, err, sizeof(err)),
				 TC_EPROTO);
	}
	tc__buf_release(&b);
}

static void test_gsp__replica(void **state)
{
	uint8_t have[2] = { 0xff, 0x01 };
	struct tc__gsp_replica r = { .tier = TC_GSP_TIER_GPU,
				     .device = 3,
				     .size = 9 << 20,
				     .nchunks = 9,
				     .have = have },
			       o;
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur c;
	char err[256];

	snprintf(r.id, sizeof(r.id), "%s", ID);
	tc__gsp_put_replica(&b, &r);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_replica(&c, &o, err, sizeof(err)), 0);
	assert_int_equal(o.device, 3);
	assert_non_null(o.have);
	assert_memory_equal(o.have, have, 2);
	tc__gsp_replica_release(&o);
	for (size_t i = 0; i < b.len; i++) {
		tc__cur_init(&c, b.data, i);
		assert_true(tc__gsp_get_replica(&c, &o, err, sizeof(err)) < 0);
		assert_null(o.have);
	}
	/* a bitmap that does not match the chunk count */
	b.data[b.len - 3] = 3; /* the bitmap's length field, low byte */
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_replica(&c, &o, err, sizeof(err)),
			 TC_EPROTO);
	assert_non_null(strstr(err, "bitmap"));
	/* too many chunks, a tier that does not exist */
	b.len = 0;
	r.nchunks = TC_GSP_MAX_CHUNKS + 1;
	r.have = NULL;
	tc__gsp_put_replica(&b, &r);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_replica(&c, &o, err, sizeof(err)),
			 TC_ELIMIT);
	b.len = 0;
	r.nchunks = 1;
	r.tier = TC_GSP_MAX_TIER + 1;
	tc__gsp_put_replica(&b, &r);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_replica(&c, &o, err, sizeof(err)),
			 TC_EPROTO);
	tc__buf_release(&b);
}

static void test_gsp__artifact(void **state)
{
	uint8_t table[16] = { 1, 2, 3 }, dig[64] = { 9 };
	struct tc__gsp_artifact a = { .size = 5 << 20,
				      .nchunks = 2,
				      .policy = "cache",
				      .table = table,
				      .table_len = 16,
				      .digests = dig,
				      .digests_len = 64 },
				o;
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur c;
	char err[256];

	snprintf(a.id, sizeof(a.id), "%s", ID);
	tc__gsp_put_artifact(&b, &a);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_artifact(&c, &o, err, sizeof(err)), 0);
	assert_int_equal(tc__gsp_end(&c, err, sizeof(err)), 0);
	assert_memory_equal(o.table, table, 16);
	assert_int_equal(o.digests_len, 64);
	tc__gsp_artifact_release(&o);
	for (size_t i = 0; i < b.len; i++) {
		tc__cur_init(&c, b.data, i);
		assert_true(tc__gsp_get_artifact(&c, &o, err, sizeof(err)) < 0);
		assert_null(o.table);
		assert_null(o.digests);
	}
	/* digests for the wrong number of chunks */
	b.len = 0;
	a.digests_len = 32;
	tc__gsp_put_artifact(&b, &a);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_artifact(&c, &o, err, sizeof(err)),
			 TC_EPROTO);
	/* a table length over the limit, with few bytes behind it */
	b.len = 0;
	tc__buf_put_str(&b, ID);
	tc__buf_put_u64(&b, 1);
	tc__buf_put_u32(&b, 1);
	tc__buf_put_str(&b, "cache");
	tc__buf_put_u32(&b, TC_GSP_MAX_TABLE + 1);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_artifact(&c, &o, err, sizeof(err)),
			 TC_ELIMIT);
	assert_non_null(strstr(err, "tensor table"));
	/* trailing bytes after a whole record */
	b.len = 0;
	a.digests_len = 64;
	tc__gsp_put_artifact(&b, &a);
	tc__buf_put_u8(&b, 0);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_artifact(&c, &o, err, sizeof(err)), 0);
	assert_int_equal(tc__gsp_end(&c, err, sizeof(err)), TC_EPROTO);
	tc__gsp_artifact_release(&o);
	tc__buf_release(&b);
}

static void test_gsp__key(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur c;
	char err[256], key[TC_GSP_MAX_KEY + 1];

	tc__buf_put_str(&b, "model:llama:v12");
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_key(&c, key, err, sizeof(err)), 0);
	assert_string_equal(key, "model:llama:v12");
	b.len = 0;
	tc__buf_put_str(&b, "bad\x07key");
	tc__cur_init(&c, b.data, b.len);
	assert_true(tc__gsp_get_key(&c, key, err, sizeof(err)) < 0);
	b.len = 0;
	tc__buf_put_u32(&b, TC_GSP_MAX_KEY + 1);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_key(&c, key, err, sizeof(err)), TC_ELIMIT);
	tc__buf_release(&b);
}

/* A whole KEYS_GET request as the global store reads it: the count,
 * every key, nothing after.  Returns the first failing reader's code. */
static int keys_req_decode(const uint8_t *data, size_t len,
			   char (*keys)[TC_GSP_MAX_KEY + 1], uint32_t *n)
{
	struct tc__cur c;
	char err[256];
	int ret;

	tc__cur_init(&c, data, len);
	ret = tc__gsp_get_keys_count(&c, TC_GSP_MAX_KEYS_GET, n, err,
				     sizeof(err));
	for (uint32_t i = 0; ret == 0 && i < *n; i++)
		ret = tc__gsp_get_key(&c, keys[i], err, sizeof(err));
	if (ret == 0)
		ret = tc__gsp_end(&c, err, sizeof(err));
	if (ret < 0)
		assert_true(err[0] != '\0'); /* every refusal says why */
	return ret;
}

/* KEYS_GET: the request's keys and the reply's entries round-trip; every
 * truncation, a count of 0, a count over the limit, a bad key, a found
 * flag other than 0 or 1, a reply longer than the request and trailing
 * bytes are refused. */
static void test_gsp__keys_get(void **state)
{
	static const char *const keys[] = { "model:a", "model:b:v2", "x" };
	char(*got)[TC_GSP_MAX_KEY + 1] =
		calloc(TC_GSP_MAX_KEYS_GET + 1, sizeof(*got));
	const char **many = calloc(TC_GSP_MAX_KEYS_GET + 1, sizeof(*many));
	char err[256], id[TC_GSP_MAX_ID + 1];
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur c;
	uint64_t gen;
	uint32_t n;
	bool found;

	assert_non_null(got);
	assert_non_null(many);
	tc__gsp_put_keys_get_req(&b, keys, 3);
	assert_int_equal(keys_req_decode(b.data, b.len, got, &n), 0);
	assert_int_equal(n, 3);
	for (int i = 0; i < 3; i++)
		assert_string_equal(got[i], keys[i]);
	for (size_t i = 0; i < b.len; i++)
		assert_true(keys_req_decode(b.data, i, got, &n) < 0);
	tc__buf_put_u8(&b, 0); /* trailing */
	assert_int_equal(keys_req_decode(b.data, b.len, got, &n), TC_EPROTO);

	/* counts: 0 refused, the limit taken, one more TC_ELIMIT */
	b.len = 0;
	tc__buf_put_u32(&b, 0);
	assert_int_equal(keys_req_decode(b.data, b.len, got, &n), TC_EPROTO);
	for (int i = 0; i <= TC_GSP_MAX_KEYS_GET; i++)
		many[i] = "k";
	b.len = 0;
	tc__gsp_put_keys_get_req(&b, many, TC_GSP_MAX_KEYS_GET);
	assert_int_equal(keys_req_decode(b.data, b.len, got, &n), 0);
	assert_int_equal(n, TC_GSP_MAX_KEYS_GET);
	b.len = 0;
	tc__gsp_put_keys_get_req(&b, many, TC_GSP_MAX_KEYS_GET + 1);
	assert_int_equal(keys_req_decode(b.data, b.len, got, &n), TC_ELIMIT);
	b.len = 0;
	tc__buf_put_u32(&b, 0xffffffffu);
	assert_int_equal(keys_req_decode(b.data, b.len, got, &n), TC_ELIMIT);
	/* a key that would reach logs raw, and one over the key limit */
	b.len = 0;
	tc__buf_put_u32(&b, 2);
	tc__buf_put_str(&b, "ok");
	tc__buf_put_str(&b, "bad\nkey");
	assert_true(keys_req_decode(b.data, b.len, got, &n) < 0);
	b.len = 0;
	tc__buf_put_u32(&b, 1);
	tc__buf_put_u32(&b, TC_GSP_MAX_KEY + 1);
	assert_int_equal(keys_req_decode(b.data, b.len, got, &n), TC_ELIMIT);

	/* the reply: found, not found, found */
	b.len = 0;
	tc__buf_put_u32(&b, 3);
	tc__gsp_put_key_entry(&b, ID, 7);
	tc__gsp_put_key_entry(&b, NULL, 0);
	tc__gsp_put_key_entry(&b, ID, 1);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_keys_count(&c, 3, &n, err, sizeof(err)),
			 0);
	assert_int_equal(n, 3);
	assert_int_equal(tc__gsp_get_key_entry(&c, &found, id, &gen, err,
					       sizeof(err)),
			 0);
	assert_true(found);
	assert_string_equal(id, ID);
	assert_int_equal(gen, 7);
	assert_int_equal(tc__gsp_get_key_entry(&c, &found, id, &gen, err,
					       sizeof(err)),
			 0);
	assert_false(found);
	assert_string_equal(id, "");
	assert_int_equal(gen, 0);
	assert_int_equal(tc__gsp_get_key_entry(&c, &found, id, &gen, err,
					       sizeof(err)),
			 0);
	assert_true(found);
	assert_int_equal(tc__gsp_end(&c, err, sizeof(err)), 0);
	/* a reply with more entries than were asked for */
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_keys_count(&c, 2, &n, err, sizeof(err)),
			 TC_ELIMIT);
	/* every truncation of an entry */
	for (size_t i = 4; i < b.len; i++) {
		int ret = 0;

		tc__cur_init(&c, b.data, i);
		assert_int_equal(
			tc__gsp_get_keys_count(&c, 3, &n, err, sizeof(err)), 0);
		for (uint32_t k = 0; ret == 0 && k < n; k++)
			ret = tc__gsp_get_key_entry(&c, &found, id, &gen, err,
						    sizeof(err));
		assert_true(ret < 0);
	}
	/* found must be 0 or 1; a found entry's id is checked like
	 * KEY_GET's */
	b.len = 0;
	tc__buf_put_u8(&b, 2);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_key_entry(&c, &found, id, &gen, err,
					       sizeof(err)),
			 TC_EPROTO);
	b.len = 0;
	tc__buf_put_u8(&b, 1);
	tc__buf_put_str(&b, "");
	tc__buf_put_u64(&b, 1);
	tc__cur_init(&c, b.data, b.len);
	assert_true(tc__gsp_get_key_entry(&c, &found, id, &gen, err,
					  sizeof(err)) < 0);
	b.len = 0;
	tc__buf_put_u8(&b, 1);
	tc__buf_put_u32(&b, TC_GSP_MAX_ID + 1);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_key_entry(&c, &found, id, &gen, err,
					       sizeof(err)),
			 TC_ELIMIT);
	tc__buf_release(&b);
	free(many);
	free(got);
}

static void test_gsp__source(void **state)
{
	struct tc__gsp_source
		s = { 5, "node-b", "10.0.0.2:7471", 1, 0, 1, 2, 3 },
		o;
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur c;
	char err[256];

	tc__gsp_put_source(&b, &s);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_source(&c, &o, err, sizeof(err)), 0);
	assert_int_equal(o.node_id, 5);
	assert_string_equal(o.peer_addr, "10.0.0.2:7471");
	assert_int_equal(o.distance, 2);
	for (size_t i = 0; i < b.len; i++) {
		tc__cur_init(&c, b.data, i);
		assert_true(tc__gsp_get_source(&c, &o, err, sizeof(err)) < 0);
	}
	tc__buf_release(&b);
}

/* PEERS (policy ha): the request's requester and max, and the source
 * list of its reply. */
static void test_gsp__peers(void **state)
{
	struct tc__gsp_source
		s = { 5, "node-b", "10.0.0.2:7471", 0, 0, 1, 2, 3 },
		src[4];
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur c;
	char err[256], req[TC_GSP_MAX_NAME + 1];
	uint32_t max, n;

	tc__gsp_put_peers_req(&b, "node-a", 8);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_peers_req(&c, req, &max, err, sizeof(err)),
			 0);
	assert_string_equal(req, "node-a");
	assert_int_equal(max, 8);
	for (size_t i = 0; i < b.len; i++) {
		tc__cur_init(&c, b.data, i);
		assert_int_equal(tc__gsp_get_peers_req(&c, req, &max, err,
						       sizeof(err)),
				 TC_EPROTO);
	}
	tc__buf_put_u8(&b, 0); /* a byte after the last field */
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_peers_req(&c, req, &max, err, sizeof(err)),
			 TC_EPROTO);
	b.len = 0;
	tc__gsp_put_peers_req(&b, "node-a", TC_GSP_MAX_SOURCES + 1);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_peers_req(&c, req, &max, err, sizeof(err)),
			 TC_EINVAL);
	assert_non_null(strstr(err, "max nodes"));
	b.len = 0;
	tc__gsp_put_peers_req(&b, "node a", 1); /* a name reaches logs */
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_peers_req(&c, req, &max, err, sizeof(err)),
			 TC_EPROTO);
	assert_non_null(strstr(err, "requester"));

	/* The reply's list: at most what was asked for, nothing after. */
	b.len = 0;
	tc__buf_put_u32(&b, 2);
	tc__gsp_put_source(&b, &s);
	tc__gsp_put_source(&b, &s);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_sources(&c, src, 4, &n, err, sizeof(err)),
			 0);
	assert_int_equal(n, 2);
	assert_string_equal(src[1].name, "node-b");
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_sources(&c, src, 1, &n, err, sizeof(err)),
			 TC_ELIMIT);
	assert_int_equal(n, 0);
	for (size_t i = 0; i < b.len; i++) {
		tc__cur_init(&c, b.data, i);
		assert_true(tc__gsp_get_sources(&c, src, 4, &n, err,
						sizeof(err)) < 0);
	}
	tc__buf_put_u8(&b, 0);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_sources(&c, src, 4, &n, err, sizeof(err)),
			 TC_EPROTO);
	tc__buf_release(&b);
}

static void test_gsp__group_req(void **state)
{
	static const int types[] = { TC_GSP_GROUP_CREATE, TC_GSP_GROUP_JOIN,
				     TC_GSP_GROUP_PREPARE, TC_GSP_GROUP_ABORT,
				     TC_GSP_GROUP_GET };
	struct tc__gsp_group_req q = { .group = "serve/v12",
				       .rank = 3,
				       .ranks = 4,
				       .timeout_ms = 30000,
				       .lease_ms = 1500,
				       .wait_ms = 250,
				       .node = "node-a",
				       .id = "tc2:ab",
				       .reason =
					       "rank 3 could not stage: out of "
					       "memory" },
				 o;
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur c;
	char err[256];

	for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		b.len = 0;
		tc__gsp_put_group_req(&b, types[t], &q);
		tc__cur_init(&c, b.data, b.len);
		assert_int_equal(tc__gsp_get_group_req(&c, types[t], &o, err,
						       sizeof(err)),
				 0);
		assert_string_equal(o.group, "serve/v12");
		/* every truncation is refused, and so are trailing bytes */
		for (size_t i = 0; i < b.len; i++) {
			tc__cur_init(&c, b.data, i);
			assert_true(tc__gsp_get_group_req(&c, types[t], &o, err,
							  sizeof(err)) < 0);
		}
		tc__buf_put_u8(&b, 0);
		tc__cur_init(&c, b.data, b.len);
		assert_int_equal(tc__gsp_get_group_req(&c, types[t], &o, err,
						       sizeof(err)),
				 TC_EPROTO);
	}
	b.len = 0;
	tc__gsp_put_group_req(&b, TC_GSP_GROUP_JOIN, &q);
	tc__cur_init(&c, b.data, b.len);
	tc__gsp_get_group_req(&c, TC_GSP_GROUP_JOIN, &o, err, sizeof(err));
	assert_int_equal(o.rank, 3);
	assert_string_equal(o.node, "node-a");
	assert_int_equal(o.lease_ms, 1500);
	b.len = 0;
	tc__gsp_put_group_req(&b, TC_GSP_GROUP_ABORT, &q);
	tc__cur_init(&c, b.data, b.len);
	tc__gsp_get_group_req(&c, TC_GSP_GROUP_ABORT, &o, err, sizeof(err));
	assert_string_equal(o.reason, q.reason);
	/* values out of range: their own code, naming the field */
	{
		struct tc__gsp_group_req bad = q;

		bad.ranks = 0;
		b.len = 0;
		tc__gsp_put_group_req(&b, TC_GSP_GROUP_CREATE, &bad);
		tc__cur_init(&c, b.data, b.len);
		assert_int_equal(tc__gsp_get_group_req(&c, TC_GSP_GROUP_CREATE,
						       &o, err, sizeof(err)),
				 TC_EINVAL);
		assert_non_null(strstr(err, "ranks"));
		bad = q;
		bad.lease_ms = 99;
		b.len = 0;
		tc__gsp_put_group_req(&b, TC_GSP_GROUP_JOIN, &bad);
		tc__cur_init(&c, b.data, b.len);
		assert_int_equal(tc__gsp_get_group_req(&c, TC_GSP_GROUP_JOIN,
						       &o, err, sizeof(err)),
				 TC_EINVAL);
		bad = q;
		bad.rank = TC_GSP_MAX_RANKS;
		b.len = 0;
		tc__gsp_put_group_req(&b, TC_GSP_GROUP_ABORT, &bad);
		tc__cur_init(&c, b.data, b.len);
		assert_int_equal(tc__gsp_get_group_req(&c, TC_GSP_GROUP_ABORT,
						       &o, err, sizeof(err)),
				 TC_EINVAL);
		bad.rank = TC_GSP_NO_RANK; /* an operator's abort */
		b.len = 0;
		tc__gsp_put_group_req(&b, TC_GSP_GROUP_ABORT, &bad);
		tc__cur_init(&c, b.data, b.len);
		assert_int_equal(tc__gsp_get_group_req(&c, TC_GSP_GROUP_ABORT,
						       &o, err, sizeof(err)),
				 0);
		bad = q;
		snprintf(bad.reason, sizeof(bad.reason), "two\nlines");
		b.len = 0;
		tc__gsp_put_group_req(&b, TC_GSP_GROUP_ABORT, &bad);
		tc__cur_init(&c, b.data, b.len);
		assert_int_equal(tc__gsp_get_group_req(&c, TC_GSP_GROUP_ABORT,
						       &o, err, sizeof(err)),
				 TC_EPROTO);
		bad = q;
		snprintf(bad.group, sizeof(bad.group), "a group");
		b.len = 0;
		tc__gsp_put_group_req(&b, TC_GSP_GROUP_GET, &bad);
		tc__cur_init(&c, b.data, b.len);
		assert_int_equal(tc__gsp_get_group_req(&c, TC_GSP_GROUP_GET, &o,
						       err, sizeof(err)),
				 TC_EPROTO);
	}
	/* not a group message */
	b.len = 0;
	tc__gsp_put_group_req(&b, TC_GSP_GROUP_GET, &q);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_group_req(&c, TC_GSP_KEY_SET, &o, err,
					       sizeof(err)),
			 TC_EPROTO);
	tc__buf_release(&b);
}

static void test_gsp__group(void **state)
{
	struct tc__gsp_member m[2] = {
		{ 0, "node-a", 1500, 1200, 1, "tc2:ab" },
		{ 2, "", 3000, 0, 0, "" },
	};
	struct tc__gsp_group g = { .name = "serve/v12",
				   .ranks = 4,
				   .timeout_ms = 60000,
				   .state = TC_GSP_GSTATE_ABORT,
				   .created_ms = 1796000000000ull,
				   .decided_ms = 1796000001000ull,
				   .nprepared = 1,
				   .by_rank = 2,
				   .reason = "rank 2: lease not renewed for "
					     "3000 ms",
				   .nmembers = 2,
				   .members = m },
			     o;
	struct tc__buf b = TC_BUF_INIT;
	struct tc__cur c;
	char err[256];

	tc__gsp_put_group(&b, &g);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_group(&c, &o, err, sizeof(err)), 0);
	assert_int_equal(tc__gsp_end(&c, err, sizeof(err)), 0);
	assert_string_equal(o.name, "serve/v12");
	assert_int_equal(o.state, TC_GSP_GSTATE_ABORT);
	assert_int_equal(o.by_rank, 2);
	assert_string_equal(o.reason, g.reason);
	assert_int_equal(o.nmembers, 2);
	assert_string_equal(o.members[0].node, "node-a");
	assert_int_equal(o.members[1].rank, 2);
	tc__gsp_group_release(&o);
	for (size_t i = 0; i < b.len; i++) {
		tc__cur_init(&c, b.data, i);
		assert_true(tc__gsp_get_group(&c, &o, err, sizeof(err)) < 0);
		assert_null(o.members); /* nothing left to free */
	}
	/* more members than ranks, a member's rank past the ranks, a state
	 * that does not exist */
	g.ranks = 1;
	g.nprepared = 0;
	b.len = 0;
	tc__gsp_put_group(&b, &g);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_group(&c, &o, err, sizeof(err)),
			 TC_EPROTO);
	g.ranks = 2;
	b.len = 0;
	tc__gsp_put_group(&b, &g);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_group(&c, &o, err, sizeof(err)),
			 TC_EPROTO);
	assert_null(o.members);
	g.ranks = 4;
	g.state = 3;
	b.len = 0;
	tc__gsp_put_group(&b, &g);
	tc__cur_init(&c, b.data, b.len);
	assert_int_equal(tc__gsp_get_group(&c, &o, err, sizeof(err)),
			 TC_EPROTO);
	tc__buf_release(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gsp__hdr),
		cmocka_unit_test(test_gsp__node),
		cmocka_unit_test(test_gsp__replica),
		cmocka_unit_test(test_gsp__artifact),
		cmocka_unit_test(test_gsp__key),
		cmocka_unit_test(test_gsp__keys_get),
		cmocka_unit_test(test_gsp__source),
		cmocka_unit_test(test_gsp__peers),
		cmocka_unit_test(test_gsp__group_req),
		cmocka_unit_test(test_gsp__group),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
