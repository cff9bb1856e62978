/*
 * fuzz_proto.c - the wire decoders on arbitrary bytes.
 *
 * The input is read as a stream of frames, as the daemon and the client
 * read it: each header is decoded and validated, and each body that fits is
 * fed to every body decoder (tensor tables with and without layout checks,
 * strings, the attach reply shape, PUT_SERVE, PUT_HAVE, GROUP and the
 * group record it answers with, BIND's and SWAP's flags).  A decoder must
 * never read past the body, allocate from an unchecked count, or leak what it
 * built.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "proto/gsp.h"
#include "proto/proto.h"

static void decode_body(const uint8_t *p, size_t n)
{
	struct tc__table t;
	struct tc__cur c;
	char err[256], id[64];
	const char *s;
	size_t sl;
	uint64_t u;

	for (int layout = 0; layout < 2; layout++) {
		tc__cur_init(&c, p, n);
		if (tc__proto_get_table(&c, layout, &t, err, sizeof(err)) == 0)
			tc__table_release(&t);
	}
	/* ATTACH reply: id, size, table. */
	tc__cur_init(&c, p, n);
	if (tc__cur_read_strcpy(&c, id, sizeof(id)) == 0 &&
	    tc__cur_read_u64(&c, &u) == 0 &&
	    tc__proto_get_table(&c, 1, &t, err, sizeof(err)) == 0)
		tc__table_release(&t);
	/* PUT_SERVE and PUT_HAVE bodies. */
	{
		const uint8_t *raw;
		uint64_t h, nc;
		uint32_t fl, nh;

		tc__cur_init(&c, p, n);
		tc__proto_get_put_serve(&c, &h, id, sizeof(id), &nc, &raw, err,
					sizeof(err));
		tc__cur_init(&c, p, n);
		tc__proto_get_seal_gpu(&c, &h, &nc, &raw, err, sizeof(err));
		tc__cur_init(&c, p, n);
		if (tc__proto_get_put_have(&c, &h, &fl, &nh, &raw, err,
					   sizeof(err)) == 0) {
			struct tc__cur cc;

			tc__cur_init(&cc, raw, (size_t)nh * 8);
			while (tc__cur_read_u64(&cc, &u) == 0)
				;
		}
	}
	/* GROUP: every op's request; its reply, a group record. */
	{
		struct tc__gsp_group_req q;
		struct tc__gsp_group g;
		uint32_t op;

		tc__cur_init(&c, p, n);
		tc__proto_get_group(&c, &op, &q, err, sizeof(err));
		tc__cur_init(&c, p, n);
		if (tc__gsp_get_group(&c, &g, err, sizeof(err)) == 0)
			tc__gsp_group_release(&g);
	}
	/* BIND (reference, flags, uuid) and SWAP (handle, reference,
	 * optional flags). */
	{
		uint32_t fl;
		bool present;

		tc__cur_init(&c, p, n);
		if (tc__cur_read_str(&c, 4096, &s, &sl) == 0 &&
		    tc__proto_get_bind_flags(&c, false, &fl, &present, err,
					     sizeof(err)) == 0)
			tc__cur_read_str(&c, 4096, &s, &sl);
		tc__cur_init(&c, p, n);
		if (tc__cur_read_u64(&c, &u) == 0 &&
		    tc__cur_read_str(&c, 4096, &s, &sl) == 0)
			tc__proto_get_bind_flags(&c, true, &fl, &present, err,
						 sizeof(err));
	}
	/* IMPORT's view spec (TC_RF_VIEW). */
	{
		char *v;

		tc__cur_init(&c, p, n);
		if (tc__proto_get_view_spec(&c, &v, err, sizeof(err)) == 0)
			tc__free(v);
	}
	/* Request bodies are sequences of strings and integers. */
	tc__cur_init(&c, p, n);
	while (tc__cur_read_str(&c, 4096, &s, &sl) == 0)
		;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];

	while (size >= TC_FRAME_HDR) {
		struct tc__frame_hdr h;

		if (tc__frame_decode(data, &h, err, sizeof(err)) < 0)
			return 0;
		data += TC_FRAME_HDR;
		size -= TC_FRAME_HDR;
		if (h.body_len > size) {
			decode_body(data, size); /* a truncated body */
			return 0;
		}
		decode_body(data, h.body_len);
		data += h.body_len;
		size -= h.body_len;
	}
	return 0;
}
