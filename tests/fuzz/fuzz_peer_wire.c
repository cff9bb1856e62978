/*
 * fuzz_peer_wire.c - the peer protocol's decoder (src/peer/wire.c) on
 * arbitrary bytes, as a receiver or a sender reads them from a hostile
 * peer.
 *
 * Two readings of each input: (1) a stream of frames, each header checked
 * and each body that fits decoded; (2) the first byte picks a frame type
 * and the rest is its body, so the body decoders (manifest tables, GET
 * ranges, DATA sizes, ERROR codes, HAVE bitmaps, REPLICATE_REQ ids and
 * addresses) are reached without the fuzzer having to find the magic
 * first.  A decoder must never read past its body, allocate from an
 * unchecked count or leak what it built.
 */
#include <stddef.h>
#include <stdint.h>

#include "peer/wire.h"

static void body(uint8_t type, const uint8_t *p, size_t n)
{
	struct tc__peer_hdr h = { type, (uint32_t)n };
	struct tc__peer_msg m;
	char err[256];

	if (n > TC_PEER_MAX_MANIFEST)
		return;
	tc__peer_msg_init(&m);
	tc__peer_msg_decode(&h, p, &m, err, sizeof(err));
	tc__peer_msg_release(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data;
	size_t left = size;
	char err[256];

	if (size >= 1)
		body((uint8_t)(data[0] % (TC_PEER__TYPES - 1) + 1), data + 1,
		     size - 1);
	while (left >= TC_PEER_HDR_BYTES) {
		struct tc__peer_hdr h;

		if (tc__peer_hdr_decode(p, &h, err, sizeof(err)) < 0)
			return 0;
		p += TC_PEER_HDR_BYTES;
		left -= TC_PEER_HDR_BYTES;
		if (h.len > left)
			return 0;
		body(h.type, p, h.len);
		p += h.len;
		left -= h.len;
	}
	return 0;
}
