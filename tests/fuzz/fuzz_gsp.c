/*
 * fuzz_gsp.c - the global-store protocol's decoders on arbitrary bytes.
 *
 * The input is read as a stream of frames, as the global store and its
 * clients read it: each header is decoded and validated, and each body
 * that fits is fed to every record decoder (node, replica, artifact,
 * source, key and name fields, KEY_GET's value and KEY_HISTORY's entries,
 * a KEYS_GET request (count, keys) and reply (count, entries),
 * a PEERS request and a source list, a REGISTER
 * body with its replica list, every GROUP_* request body and the group record
 * of their replies). Nothing may read past the body, allocate from an unchecked
 * count or leak what it built.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/buf.h"
#include "proto/gsp.h"

static void decode_body(const uint8_t *p, size_t n)
{
	struct tc__gsp_node node;
	struct tc__gsp_replica r;
	struct tc__gsp_artifact a;
	struct tc__gsp_source s;
	struct tc__gsp_group g;
	struct tc__cur c;
	char err[256], key[TC_GSP_MAX_KEY + 1];
	uint32_t cnt;

	tc__cur_init(&c, p, n);
	if (tc__gsp_get_node(&c, &node, err, sizeof(err)) == 0 &&
	    tc__cur_read_u32(&c, &cnt) == 0)
		for (uint32_t i = 0; i < cnt && i < 64; i++) {
			if (tc__gsp_get_replica(&c, &r, err, sizeof(err)) < 0)
				break;
			tc__gsp_replica_release(&r);
		}
	tc__cur_init(&c, p, n);
	if (tc__gsp_get_replica(&c, &r, err, sizeof(err)) == 0) {
		uint8_t has;

		tc__gsp_replica_release(&r);
		if (tc__cur_read_u8(&c, &has) == 0 && has &&
		    tc__gsp_get_artifact(&c, &a, err, sizeof(err)) == 0)
			tc__gsp_artifact_release(&a);
		tc__gsp_end(&c, err, sizeof(err));
	}
	tc__cur_init(&c, p, n);
	if (tc__gsp_get_artifact(&c, &a, err, sizeof(err)) == 0)
		tc__gsp_artifact_release(&a);
	tc__cur_init(&c, p, n);
	while (tc__gsp_get_source(&c, &s, err, sizeof(err)) == 0)
		;
	tc__cur_init(&c, p, n);
	while (tc__gsp_get_key(&c, key, err, sizeof(err)) == 0)
		;
	{
		char id[TC_GSP_MAX_ID + 1];
		uint64_t gen, ms;

		/* KEY_GET's value; KEY_HISTORY's count and entries. */
		tc__cur_init(&c, p, n);
		tc__gsp_get_key_value(&c, id, &gen, err, sizeof(err));
		tc__cur_init(&c, p, n);
		if (tc__cur_read_u32(&c, &cnt) == 0)
			for (uint32_t i = 0; i < cnt && i < TC_GSP_MAX_HISTORY;
			     i++)
				if (tc__gsp_get_key_version(&c, &gen, id, &ms,
							    err,
							    sizeof(err)) < 0)
					break;
	}
	{
		char id[TC_GSP_MAX_ID + 1];
		uint64_t gen;
		bool found;
		int ret;

		/* KEYS_GET: the request as the store reads it, the reply as
		 * the daemon does. */
		tc__cur_init(&c, p, n);
		ret = tc__gsp_get_keys_count(&c, TC_GSP_MAX_KEYS_GET, &cnt, err,
					     sizeof(err));
		if (ret == 0 && (cnt == 0 || cnt > TC_GSP_MAX_KEYS_GET))
			abort();
		for (uint32_t i = 0; ret == 0 && i < cnt; i++)
			ret = tc__gsp_get_key(&c, key, err, sizeof(err));
		if (ret == 0)
			tc__gsp_end(&c, err, sizeof(err));
		tc__cur_init(&c, p, n);
		ret = tc__gsp_get_keys_count(&c, TC_GSP_MAX_KEYS_GET, &cnt, err,
					     sizeof(err));
		for (uint32_t i = 0; ret == 0 && i < cnt; i++) {
			ret = tc__gsp_get_key_entry(&c, &found, id, &gen, err,
						    sizeof(err));
			if (ret == 0 && !found && (id[0] || gen))
				abort();
		}
		if (ret == 0)
			tc__gsp_end(&c, err, sizeof(err));
	}
	tc__cur_init(&c, p, n);
	if (tc__gsp_get_peers_req(&c, node.name, &cnt, err, sizeof(err)) == 0 &&
	    cnt > TC_GSP_MAX_SOURCES)
		abort();
	{
		struct tc__gsp_source src[TC_GSP_MAX_SOURCES];

		tc__cur_init(&c, p, n);
		if (tc__gsp_get_sources(&c, src, TC_GSP_MAX_SOURCES, &cnt, err,
					sizeof(err)) == 0 &&
		    cnt > TC_GSP_MAX_SOURCES)
			abort();
	}
	for (int t = TC_GSP_GROUP_CREATE; t <= TC_GSP_GROUP_GET; t++) {
		struct tc__gsp_group_req q;

		tc__cur_init(&c, p, n);
		tc__gsp_get_group_req(&c, t, &q, err, sizeof(err));
	}
	tc__cur_init(&c, p, n);
	if (tc__gsp_get_group(&c, &g, err, sizeof(err)) == 0) {
		/* what a decoded record says must hold */
		if (g.nmembers > g.ranks || g.nprepared > g.ranks ||
		    (g.nmembers && !g.members))
			abort();
		for (uint32_t i = 0; i < g.nmembers; i++)
			if (g.members[i].rank >= g.ranks)
				abort();
		tc__gsp_group_release(&g);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];

	while (size >= TC_GSP_HDR) {
		struct tc__gsp_hdr h;

		if (tc__gsp_hdr_decode(data, &h, err, sizeof(err)) < 0)
			return 0;
		data += TC_GSP_HDR;
		size -= TC_GSP_HDR;
		if (h.body_len > size) {
			decode_body(data, size);
			return 0;
		}
		decode_body(data, h.body_len);
		data += h.body_len;
		size -= h.body_len;
	}
	return 0;
}
