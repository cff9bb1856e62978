/*
 * wire.c - encode and decode peer frames (wire.h).  Everything here is
 * hostile input: bounded cursor reads, a limit on every field, overflow-
 * checked arithmetic; nothing is allocated from a size the peer sent
 * before that size has been checked against a limit.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "format/canon.h"
#include "proto/proto.h"
#include "tcast/errors.h"
#include "wire.h"

static int fail(char *err, size_t errlen, int rc, const char *what)
{
	snprintf(err, errlen, "peer frame: %s", what);
	return rc;
}

int tc__peer_hdr_decode(const uint8_t raw[TC_PEER_HDR_BYTES],
			struct tc__peer_hdr *out, char *err, size_t errlen)
{
	struct tc__cur c;
	uint32_t magic, len, max;
	uint16_t flags;
	uint8_t ver, type;

	tc__cur_init(&c, raw, TC_PEER_HDR_BYTES);
	if (tc__cur_read_u32(&c, &magic) < 0 || tc__cur_read_u8(&c, &ver) < 0 ||
	    tc__cur_read_u8(&c, &type) < 0 ||
	    tc__cur_read_u16(&c, &flags) < 0 || tc__cur_read_u32(&c, &len) < 0)
		return fail(err, errlen, TC_EPROTO, "short header");
	if (magic != TC_PEER_MAGIC)
		return fail(err, errlen, TC_EPROTO, "bad magic");
	if (ver != TC_PEER_VERSION)
		return fail(err, errlen, TC_EVERSION, "unknown version");
	if (type == 0 || type >= TC_PEER__TYPES)
		return fail(err, errlen, TC_EPROTO, "unknown type");
	if (flags)
		return fail(err, errlen, TC_EPROTO, "reserved flag bits set");
	max = type == TC_PEER_MANIFEST ? TC_PEER_MAX_MANIFEST :
	      type == TC_PEER_HAVE     ? TC_PEER_MAX_HAVE :
					 TC_PEER_MAX_CTRL;
	if (len > max)
		return fail(err, errlen, TC_ELIMIT, "body length over limit");
	out->type = type;
	out->len = len;
	return 0;
}

void tc__peer_msg_init(struct tc__peer_msg *m)
{
	memset(m, 0, sizeof(*m));
	tc__table_init(&m->table);
}

void tc__peer_msg_release(struct tc__peer_msg *m)
{
	tc__table_release(&m->table);
	tc__free(m->chunks);
	tc__free(m->have);
	tc__free(m->fetching);
	m->chunks = NULL;
	m->have = NULL;
	m->fetching = NULL;
	m->nchunks = 0;
}

/* The table's offsets and size must be the ones tc__table_layout gives:
 * the receiver lays the artifact out itself, and the id covers offsets. */
static int layout_is_canonical(const struct tc__table *t)
{
	struct tc__table copy = *t;
	struct tc__tensor *ts;
	int ok;

	if (!t->ntensors)
		return t->total_bytes == 0;
	ts = tc__calloc(t->ntensors, sizeof(*ts));
	if (!ts)
		return -ENOMEM;
	memcpy(ts, t->tensors, t->ntensors * sizeof(*ts));
	copy.tensors = ts;
	ok = tc__table_layout(&copy) == 0 && copy.total_bytes == t->total_bytes;
	for (uint32_t i = 0; ok && i < t->ntensors; i++)
		ok = ts[i].offset == t->tensors[i].offset;
	tc__free(ts); /* names are borrowed from t */
	return ok;
}

static int decode_manifest(struct tc__cur *c, struct tc__peer_msg *m, char *err,
			   size_t errlen)
{
	char terr[256];
	struct tc__digest root;
	char id[TC_ID_LEN + 1];
	const uint8_t *raw;
	uint64_t n;
	int rc;

	if (tc__cur_read_strcpy(c, m->id, sizeof(m->id)) < 0 ||
	    !tc__is_id(m->id))
		return fail(err, errlen, TC_EPROTO, "manifest id malformed");
	rc = tc__proto_get_table(c, 1, &m->table, terr, sizeof(terr));
	if (rc < 0) {
		snprintf(err, errlen, "peer frame: manifest table: %s", terr);
		return rc;
	}
	rc = layout_is_canonical(&m->table);
	if (rc <= 0)
		return rc < 0 ? rc :
				fail(err, errlen, TC_EPROTO,
				     "manifest table is not laid out "
				     "canonically");
	if (tc__cur_read_u64(c, &n) < 0)
		return fail(err, errlen, TC_EPROTO, "manifest chunk count");
	if (n != tc__chunk_count(m->table.total_bytes) ||
	    n > TC_PEER_MAX_CHUNKS)
		return fail(err, errlen, TC_EPROTO,
			    "manifest chunk count does not match its size");
	if (tc__cur_read_bytes(c, n * TC_DIGEST_BYTES, &raw) < 0)
		return fail(err, errlen, TC_EPROTO,
			    "manifest digests past the frame end");
	if (c->left)
		return fail(err, errlen, TC_EPROTO, "trailing bytes");
	if (n) {
		m->chunks = tc__malloc(n * sizeof(*m->chunks));
		if (!m->chunks)
			return -ENOMEM;
		memcpy(m->chunks, raw, n * TC_DIGEST_BYTES);
	}
	m->nchunks = n;
	rc = tc__canon_root(&m->table, m->chunks, n, &root);
	if (rc < 0)
		return rc;
	tc__digest_id(&root, id);
	if (strcmp(id, m->id))
		return fail(err, errlen, TC_EDIGEST,
			    "manifest does not hash to its id");
	return 0;
}

int tc__peer_msg_decode(const struct tc__peer_hdr *h, const uint8_t *body,
			struct tc__peer_msg *m, char *err, size_t errlen)
{
	struct tc__cur c;
	uint32_t u32;

	tc__cur_init(&c, body, h->len);
	m->type = h->type;
	switch (h->type) {
	case TC_PEER_MANIFEST_REQ:
		if (tc__cur_read_strcpy(&c, m->ref, sizeof(m->ref)) < 0 ||
		    !m->ref[0])
			return fail(err, errlen, TC_EPROTO, "bad ref");
		break;
	case TC_PEER_MANIFEST:
		return decode_manifest(&c, m, err, errlen);
	case TC_PEER_HAVE_REQ:
		if (tc__cur_read_strcpy(&c, m->id, sizeof(m->id)) < 0 ||
		    !tc__is_id(m->id))
			return fail(err, errlen, TC_EPROTO, "bad id");
		break;
	case TC_PEER_HAVE: {
		const uint8_t *raw;

		if (tc__cur_read_u8(&c, &m->complete) < 0 ||
		    tc__cur_read_u64(&c, &m->nchunks) < 0 ||
		    tc__cur_read_u32(&c, &u32) < 0)
			return fail(err, errlen, TC_EPROTO, "short HAVE");
		if (m->complete > 1 || m->nchunks > TC_PEER_MAX_CHUNKS)
			return fail(err, errlen, TC_ELIMIT,
				    "HAVE flag or chunk count over limit");
		if (u32 != (m->complete ? 0 : (m->nchunks + 7) / 8))
			return fail(err, errlen, TC_EPROTO,
				    "HAVE bitmap length does not match its "
				    "chunk count");
		if (tc__cur_read_bytes(&c, u32, &raw) < 0)
			return fail(err, errlen, TC_EPROTO,
				    "HAVE bitmap past the frame end");
		if (!m->complete) {
			m->have = tc__calloc(u32 ? u32 : 1, 1);
			if (!m->have)
				return -ENOMEM;
			memcpy(m->have, raw, u32);
		}
		{
			uint32_t want = u32;

			if (tc__cur_read_u32(&c, &u32) < 0 || u32 != want ||
			    tc__cur_read_bytes(&c, u32, &raw) < 0)
				return fail(err, errlen, TC_EPROTO,
					    "HAVE fetching bitmap malformed");
		}
		if (!m->complete) {
			m->fetching = tc__calloc(u32 ? u32 : 1, 1);
			if (!m->fetching)
				return -ENOMEM;
			memcpy(m->fetching, raw, u32);
		}
		break;
	}
	case TC_PEER_REPLICATE_REQ: {
		const char *src;
		size_t n;

		if (tc__cur_read_strcpy(&c, m->id, sizeof(m->id)) < 0 ||
		    !tc__is_id(m->id))
			return fail(err, errlen, TC_EPROTO,
				    "REPLICATE_REQ id is not an artifact id");
		if (tc__cur_read_str(&c, sizeof(m->source) - 1, &src, &n) < 0)
			return fail(err, errlen, TC_EPROTO,
				    "REPLICATE_REQ source truncated or over "
				    "127 bytes");
		if (!n || !memchr(src, ':', n))
			return fail(err, errlen, TC_EPROTO,
				    "REPLICATE_REQ source is not HOST:PORT");
		for (size_t i = 0; i < n; i++)
			if (src[i] <= ' ' || src[i] > '~')
				return fail(err, errlen, TC_EPROTO,
					    "REPLICATE_REQ source holds a "
					    "byte outside printable ASCII");
		memcpy(m->source, src, n);
		m->source[n] = '\0';
		break;
	}
	case TC_PEER_REPLICATED:
		if (tc__cur_read_u64(&c, &m->bytes) < 0 ||
		    tc__cur_read_u64(&c, &m->ns) < 0)
			return fail(err, errlen, TC_EPROTO, "short REPLICATED");
		break;
	case TC_PEER_GET:
		if (tc__cur_read_strcpy(&c, m->id, sizeof(m->id)) < 0 ||
		    !tc__is_id(m->id))
			return fail(err, errlen, TC_EPROTO, "bad id");
		if (tc__cur_read_u64(&c, &m->first) < 0 ||
		    tc__cur_read_u32(&c, &m->count) < 0)
			return fail(err, errlen, TC_EPROTO, "short GET");
		if (m->count == 0 || m->count > TC_PEER_MAX_GET ||
		    m->first > TC_PEER_MAX_CHUNKS)
			return fail(err, errlen, TC_ELIMIT,
				    "GET range over limit");
		if (c.left && (tc__cur_read_u8(&c, &m->flags) < 0 ||
			       !m->flags || (m->flags & ~TC_PEER_GET_SHARES)))
			return fail(err, errlen, TC_EPROTO,
				    "GET flags zero or unknown");
		break;
	case TC_PEER_DATA:
		if (tc__cur_read_u64(&c, &m->first) < 0 ||
		    tc__cur_read_u32(&c, &m->count) < 0)
			return fail(err, errlen, TC_EPROTO, "short DATA");
		if (m->first > TC_PEER_MAX_CHUNKS ||
		    m->count > TC_CHUNK_BYTES || m->count == 0)
			return fail(err, errlen, TC_ELIMIT,
				    "DATA chunk or size over limit");
		break;
	case TC_PEER_ERROR:
		if (tc__cur_read_u32(&c, &u32) < 0 ||
		    tc__cur_read_strcpy(&c, m->msg, sizeof(m->msg)) < 0)
			return fail(err, errlen, TC_EPROTO, "bad ERROR");
		m->code = (int32_t)u32;
		/* Only codes of our error space: never a success or an
		 * errno a receiver would mistake for its own. */
		if (m->code >= 0 || m->code < -100000)
			return fail(err, errlen, TC_EPROTO,
				    "ERROR code out of range");
		if (c.left && (tc__cur_read_u64(&c, &m->hint) < 0 || !m->hint ||
			       m->hint > TC_PEER_MAX_CHUNKS + 1))
			return fail(err, errlen, TC_EPROTO,
				    "ERROR hint zero or over limit");
		break;
	default:
		return fail(err, errlen, TC_EPROTO, "unknown type");
	}
	if (c.left)
		return fail(err, errlen, TC_EPROTO, "trailing bytes");
	return 0;
}

static size_t begin(struct tc__buf *b, uint8_t type)
{
	size_t off = b->len;

	tc__buf_put_u32(b, TC_PEER_MAGIC);
	tc__buf_put_u8(b, TC_PEER_VERSION);
	tc__buf_put_u8(b, type);
	tc__buf_put_u16(b, 0);
	tc__buf_put_u32(b, 0);
	return off;
}

static void finish(struct tc__buf *b, size_t off)
{
	if (!b->oom)
		tc__buf_patch_u32(b, off + 8,
				  (uint32_t)(b->len - off - TC_PEER_HDR_BYTES));
}

void tc__peer_put_manifest_req(struct tc__buf *b, const char *ref)
{
	size_t off = begin(b, TC_PEER_MANIFEST_REQ);

	tc__buf_put_str(b, ref);
	finish(b, off);
}

void tc__peer_put_manifest(struct tc__buf *b, const char *id,
			   const struct tc__table *t,
			   const struct tc__digest *chunks, uint64_t nchunks)
{
	size_t off = begin(b, TC_PEER_MANIFEST);

	tc__buf_put_str(b, id);
	tc__proto_put_table(b, t);
	tc__buf_put_u64(b, nchunks);
	if (nchunks)
		tc__buf_put(b, chunks, nchunks * sizeof(*chunks));
	finish(b, off);
}

void tc__peer_put_get(struct tc__buf *b, const char *id, uint64_t first,
		      uint32_t count, uint8_t flags)
{
	size_t off = begin(b, TC_PEER_GET);

	tc__buf_put_str(b, id);
	tc__buf_put_u64(b, first);
	tc__buf_put_u32(b, count);
	if (flags) /* a GET without flags reads as before */
		tc__buf_put_u8(b, flags);
	finish(b, off);
}

void tc__peer_put_data(struct tc__buf *b, uint64_t chunk, uint32_t nbytes)
{
	size_t off = begin(b, TC_PEER_DATA);

	tc__buf_put_u64(b, chunk);
	tc__buf_put_u32(b, nbytes);
	finish(b, off);
}

void tc__peer_put_error(struct tc__buf *b, int code, const char *msg)
{
	tc__peer_put_error_hint(b, code, msg, 0);
}

void tc__peer_put_error_hint(struct tc__buf *b, int code, const char *msg,
			     uint64_t hint)
{
	size_t off = begin(b, TC_PEER_ERROR);

	tc__buf_put_u32(b, (uint32_t)code);
	tc__buf_put_strn(b, msg, strnlen(msg, TC_PEER_MAX_ERRMSG));
	if (hint) /* an ERROR without a hint reads as before */
		tc__buf_put_u64(b, hint);
	finish(b, off);
}

void tc__peer_put_have_req(struct tc__buf *b, const char *id)
{
	size_t off = begin(b, TC_PEER_HAVE_REQ);

	tc__buf_put_str(b, id);
	finish(b, off);
}

void tc__peer_put_have(struct tc__buf *b, uint64_t nchunks, const uint8_t *have,
		       const uint8_t *fetching)
{
	size_t off = begin(b, TC_PEER_HAVE);
	uint32_t len = have ? (uint32_t)((nchunks + 7) / 8) : 0;

	tc__buf_put_u8(b, have ? 0 : 1);
	tc__buf_put_u64(b, nchunks);
	tc__buf_put_u32(b, len);
	if (len)
		tc__buf_put(b, have, len);
	tc__buf_put_u32(b, len);
	if (len)
		tc__buf_put(b, fetching, len);
	finish(b, off);
}

void tc__peer_put_replicate_req(struct tc__buf *b, const char *id,
				const char *source)
{
	size_t off = begin(b, TC_PEER_REPLICATE_REQ);

	tc__buf_put_str(b, id);
	tc__buf_put_str(b, source);
	finish(b, off);
}

void tc__peer_put_replicated(struct tc__buf *b, uint64_t bytes, uint64_t ns)
{
	size_t off = begin(b, TC_PEER_REPLICATED);

	tc__buf_put_u64(b, bytes);
	tc__buf_put_u64(b, ns);
	finish(b, off);
}
