/*
 * proto.c - frame header codec and the tensor-table codec.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/map.h"
#include "gsp.h"
#include "proto.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"

static const char *const msg_names[TC_MSG__MAX] = {
#define MSG(name, id, handler, flags) [id] = #name,
#include "msgs.def"
#undef MSG
};

const char *tc__proto_name(int type)
{
	if (type <= 0 || type >= TC_MSG__MAX || !msg_names[type])
		return "?";
	return msg_names[type];
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

void tc__frame_encode(const struct tc__frame_hdr *h, uint8_t out[TC_FRAME_HDR])
{
	put32(out, TC_PROTO_MAGIC);
	put16(out + 4, h->version);
	put16(out + 6, h->type);
	put32(out + 8, h->flags);
	put32(out + 12, h->req_id);
	put32(out + 16, h->body_len);
	put16(out + 20, h->nfds);
	put16(out + 22, 0);
}

int tc__frame_decode(const uint8_t in[TC_FRAME_HDR], struct tc__frame_hdr *h,
		     char *err, size_t errlen)
{
	uint32_t magic = get32(in);

	if (magic != TC_PROTO_MAGIC) {
		snprintf(err, errlen, "bad frame magic 0x%08x", magic);
		return TC_EPROTO;
	}
	h->version = get16(in + 4);
	h->type = get16(in + 6);
	h->flags = get32(in + 8);
	h->req_id = get32(in + 12);
	h->body_len = get32(in + 16);
	h->nfds = get16(in + 20);
	if (h->version != TC_PROTO_VERSION) {
		snprintf(err, errlen,
			 "protocol version %u not supported (this side speaks "
			 "%u)",
			 h->version, TC_PROTO_VERSION);
		return TC_EVERSION;
	}
	if (h->type == 0 || h->type >= TC_MSG__MAX || !msg_names[h->type]) {
		snprintf(err, errlen, "unknown message type %u", h->type);
		return TC_EPROTO;
	}
	if ((h->flags & ~TC_PF_KNOWN) || get16(in + 22) != 0) {
		snprintf(err, errlen, "reserved bits set in %s frame",
			 msg_names[h->type]);
		return TC_EPROTO;
	}
	if (h->body_len > TC_PROTO_MAX_BODY) {
		snprintf(err, errlen,
			 "%s body of %u bytes exceeds the limit %u",
			 msg_names[h->type], h->body_len, TC_PROTO_MAX_BODY);
		return TC_ELIMIT;
	}
	if (h->nfds > TC_PROTO_MAX_FDS) {
		snprintf(err, errlen, "%s frame carries %u fds (limit %u)",
			 msg_names[h->type], h->nfds, TC_PROTO_MAX_FDS);
		return TC_ELIMIT;
	}
	return 0;
}

size_t tc__frame_begin(struct tc__buf *b, int type, uint32_t flags,
		       uint32_t req_id, uint16_t nfds)
{
	struct tc__frame_hdr h = {
		TC_PROTO_VERSION, (uint16_t)type, flags, req_id, 0, nfds
	};
	uint8_t raw[TC_FRAME_HDR];
	size_t off = b->len;

	tc__frame_encode(&h, raw);
	tc__buf_put(b, raw, sizeof(raw));
	return off;
}

void tc__frame_finish(struct tc__buf *b, size_t hdr_off)
{
	size_t body = b->len - hdr_off - TC_FRAME_HDR;

	if (body > TC_PROTO_MAX_BODY) {
		b->oom = true; /* caller sees oom and reports TC_ELIMIT */
		return;
	}
	tc__buf_patch_u32(b, hdr_off + 16, (uint32_t)body);
}

/* The tensor entries of a table; the layout leaves out nbytes (implied by
 * dtype and shape). */
static void put_tensors(struct tc__buf *b, const struct tc__table *t,
			bool with_nbytes)
{
	tc__buf_put_u32(b, t->ntensors);
	for (uint32_t i = 0; i < t->ntensors; i++) {
		const struct tc__tensor *x = &t->tensors[i];

		tc__buf_put_str(b, x->name);
		tc__buf_put_u8(b, x->dtype);
		tc__buf_put_u8(b, x->ndim);
		for (uint32_t d = 0; d < x->ndim; d++)
			tc__buf_put_u64(b, x->shape[d]);
		tc__buf_put_u64(b, x->offset);
		if (with_nbytes)
			tc__buf_put_u64(b, x->nbytes);
	}
}

void tc__proto_put_table(struct tc__buf *b, const struct tc__table *t)
{
	put_tensors(b, t, true);
	tc__buf_put_u32(b, t->nmeta);
	for (uint32_t i = 0; i < t->nmeta; i++) {
		tc__buf_put_str(b, t->meta[i].key);
		tc__buf_put_str(b, t->meta[i].val);
	}
	tc__buf_put_u64(b, t->total_bytes);
}

void tc__proto_put_layout(struct tc__buf *b, const struct tc__table *t)
{
	put_tensors(b, t, false);
	tc__buf_put_u64(b, t->total_bytes);
}

static int get_tensor(struct tc__cur *c, struct tc__tensor *x, uint32_t i,
		      char *err, size_t errlen)
{
	const char *name;
	size_t nlen;
	uint64_t want;
	int rc;

	rc = tc__cur_read_str(c, TC_MAX_NAME, &name, &nlen);
	if (rc < 0) {
		snprintf(err, errlen, "tensor #%u: bad or too long name", i);
		return rc;
	}
	if (nlen == 0) {
		snprintf(err, errlen, "tensor #%u: empty name", i);
		return TC_EINVAL;
	}
	if (tc__cur_read_u8(c, &x->dtype) < 0 ||
	    tc__cur_read_u8(c, &x->ndim) < 0)
		goto out_short;
	if (x->ndim > TC_MAX_RANK) {
		snprintf(err, errlen, "tensor #%u: rank %u exceeds %u", i,
			 x->ndim, TC_MAX_RANK);
		return TC_ELIMIT;
	}
	for (uint32_t d = 0; d < x->ndim; d++)
		if (tc__cur_read_u64(c, &x->shape[d]) < 0)
			goto out_short;
	if (tc__cur_read_u64(c, &x->offset) < 0 ||
	    tc__cur_read_u64(c, &x->nbytes) < 0)
		goto out_short;
	x->name = tc__strndup(name, nlen);
	if (!x->name)
		return -ENOMEM;
	rc = tc__tensor_nbytes(x->dtype, x->ndim, x->shape, &want);
	if (rc < 0) {
		snprintf(err, errlen, "tensor '%s': %s", x->name,
			 rc == TC_EBADDTYPE ?
				 "unknown dtype" :
				 "size overflows or is not whole bytes");
		return rc;
	}
	if (want != x->nbytes) {
		snprintf(err, errlen,
			 "tensor '%s': nbytes %llu does not match its shape "
			 "and dtype (%llu)",
			 x->name, (unsigned long long)x->nbytes,
			 (unsigned long long)want);
		return TC_EINVAL;
	}
	return 0;

out_short:
	snprintf(err, errlen, "tensor #%u: truncated entry", i);
	return TC_EPROTO;
}

int tc__proto_get_table(struct tc__cur *c, int check_layout,
			struct tc__table *out, char *err, size_t errlen)
{
	struct tc__map names;
	uint32_t n, nmeta;
	uint64_t end = 0;
	int rc;

	tc__table_init(out);
	tc__map_init(&names);
	if (tc__cur_read_u32(c, &n) < 0)
		goto out_short;
	if (n > TC_MAX_TENSORS) {
		snprintf(err, errlen, "%u tensors exceed the limit %u", n,
			 TC_MAX_TENSORS);
		return TC_ELIMIT;
	}
	/* Each entry takes at least 23 bytes on the wire, so a count that
	 * the remaining bytes cannot hold is refused before allocating. */
	if ((uint64_t)n * 23 > c->left)
		goto out_short;
	out->tensors = tc__calloc(n, sizeof(*out->tensors));
	if (!out->tensors)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		struct tc__tensor *x = &out->tensors[i];

		out->ntensors = i + 1;
		rc = get_tensor(c, x, i, err, errlen);
		if (rc < 0)
			goto out_release;
		if (tc__map_get(&names, x->name)) {
			snprintf(err, errlen, "tensor '%s' appears twice",
				 x->name);
			rc = TC_EINVAL;
			goto out_release;
		}
		if (tc__map_put(&names, x->name, x) < 0) {
			rc = -ENOMEM;
			goto out_release;
		}
		if (check_layout) {
			if (x->offset < end || x->offset % TC_ALIGN) {
				snprintf(err, errlen,
					 "tensor '%s': offset %llu overlaps or "
					 "is not %d-byte aligned",
					 x->name, (unsigned long long)x->offset,
					 TC_ALIGN);
				rc = TC_EINVAL;
				goto out_release;
			}
			if (__builtin_add_overflow(x->offset, x->nbytes,
						   &end)) {
				snprintf(err, errlen,
					 "tensor '%s': offset overflows",
					 x->name);
				rc = TC_EINVAL;
				goto out_release;
			}
		}
	}
	if (tc__cur_read_u32(c, &nmeta) < 0)
		goto out_short_release;
	if (nmeta > TC_MAX_META) {
		snprintf(err, errlen, "%u metadata entries exceed the limit %u",
			 nmeta, TC_MAX_META);
		rc = TC_ELIMIT;
		goto out_release;
	}
	/* Each entry takes at least 8 bytes: a count the remaining bytes
	 * cannot hold is a truncated table, as for tensors above. */
	if ((uint64_t)nmeta * 8 > c->left)
		goto out_short_release;
	out->meta = tc__calloc(nmeta, sizeof(*out->meta));
	if (!out->meta) {
		rc = -ENOMEM;
		goto out_release;
	}
	for (uint32_t i = 0; i < nmeta; i++) {
		const char *k, *v;
		size_t kl, vl;

		rc = tc__cur_read_str(c, TC_MAX_META_BYTES, &k, &kl);
		if (rc == 0)
			rc = tc__cur_read_str(c, TC_MAX_META_BYTES, &v, &vl);
		if (rc < 0) {
			/* TC_ELIMIT for a string over the limit, TC_EPROTO
			 * for an embedded NUL or a truncation. */
			snprintf(err, errlen,
				 "metadata entry #%u: bad or too long key or "
				 "value",
				 i);
			goto out_release;
		}
		out->nmeta = i + 1;
		out->meta[i].key = tc__strndup(k, kl);
		out->meta[i].val = tc__strndup(v, vl);
		if (!out->meta[i].key || !out->meta[i].val) {
			rc = -ENOMEM;
			goto out_release;
		}
	}
	if (tc__cur_read_u64(c, &out->total_bytes) < 0)
		goto out_short_release;
	if (check_layout && end > out->total_bytes) {
		snprintf(
			err, errlen,
			"tensors end at byte %llu, past the artifact size %llu",
			(unsigned long long)end,
			(unsigned long long)out->total_bytes);
		rc = TC_EINVAL;
		goto out_release;
	}
	tc__map_release(&names);
	return 0;

out_short_release:
	snprintf(err, errlen, "truncated tensor table");
	rc = TC_EPROTO;
out_release:
	tc__map_release(&names);
	tc__table_release(out);
	return rc;
out_short:
	snprintf(err, errlen, "truncated tensor table");
	return TC_EPROTO;
}

/* The tail of PUT_SERVE and SEAL_GPU: u64 nchunks (min..2^24), nchunks x
 * 32-byte digests, and nothing after them.  `what` names the message. */
static int get_digest_list(struct tc__cur *c, const char *what, uint64_t min,
			   uint64_t *nchunks, const uint8_t **digests,
			   char *err, size_t errlen)
{
	if (tc__cur_read_u64(c, nchunks) < 0) {
		snprintf(err, errlen, "%s: truncated chunk count", what);
		return TC_EPROTO;
	}
	if (*nchunks < min || *nchunks > TC_PROTO_MAX_CHUNKS) {
		snprintf(err, errlen, "%s: %llu chunk digests (%llu to %llu)",
			 what, (unsigned long long)*nchunks,
			 (unsigned long long)min,
			 (unsigned long long)TC_PROTO_MAX_CHUNKS);
		return TC_ELIMIT;
	}
	if (tc__cur_read_bytes(c, *nchunks * 32, digests) < 0 || c->left) {
		snprintf(err, errlen,
			 "%s: digests truncated or bytes after them", what);
		return TC_EPROTO;
	}
	return 0;
}

int tc__proto_get_put_serve(struct tc__cur *c, uint64_t *handle, char *id,
			    size_t idlen, uint64_t *nchunks,
			    const uint8_t **digests, char *err, size_t errlen)
{
	if (tc__cur_read_u64(c, handle) < 0 ||
	    tc__cur_read_strcpy(c, id, idlen) < 0) {
		snprintf(err, errlen, "PUT_SERVE: truncated or id too long");
		return TC_EPROTO;
	}
	return get_digest_list(c, "PUT_SERVE", 0, nchunks, digests, err,
			       errlen);
}

int tc__proto_get_seal_gpu(struct tc__cur *c, uint64_t *handle,
			   uint64_t *nchunks, const uint8_t **digests,
			   char *err, size_t errlen)
{
	*nchunks = 0;
	*digests = NULL;
	if (tc__cur_read_u64(c, handle) < 0) {
		snprintf(err, errlen, "SEAL_GPU: truncated handle");
		return TC_EPROTO;
	}
	if (!c->left) /* the handle alone: a client before digests */
		return 0;
	return get_digest_list(c, "SEAL_GPU", 1, nchunks, digests, err, errlen);
}

int tc__proto_get_bind_flags(struct tc__cur *c, bool optional, uint32_t *flags,
			     bool *present, char *err, size_t errlen)
{
	*flags = 0;
	*present = c->left > 0 || !optional;
	if (!*present)
		return 0;
	if (tc__cur_read_u32(c, flags) < 0) {
		snprintf(err, errlen, "truncated binding flags");
		return TC_EPROTO;
	}
	if (*flags & ~TC_BIND_F_PUBLISH) {
		snprintf(err, errlen, "unknown binding flags 0x%x", *flags);
		return TC_EINVAL;
	}
	return 0;
}

int tc__proto_get_put_have(struct tc__cur *c, uint64_t *handle, uint32_t *flags,
			   uint32_t *n, const uint8_t **chunks, char *err,
			   size_t errlen)
{
	if (tc__cur_read_u64(c, handle) < 0 || tc__cur_read_u32(c, flags) < 0 ||
	    *flags > 1 || tc__cur_read_u32(c, n) < 0 ||
	    *n > TC_PROTO_MAX_HAVE ||
	    tc__cur_read_bytes(c, (size_t)*n * 8, chunks) < 0 || c->left) {
		snprintf(err, errlen,
			 "PUT_HAVE: truncated, unknown flags, more than %d "
			 "chunks or bytes after them",
			 TC_PROTO_MAX_HAVE);
		return TC_EPROTO;
	}
	return 0;
}

/* ------------------------------------------------------------- GROUP */

void tc__proto_put_group(struct tc__buf *b, uint32_t op,
			 const struct tc__gsp_group_req *q)
{
	tc__buf_put_u32(b, op);
	if (op != TC_PROTO_GROUP_HOLD) {
		tc__gsp_put_group_req(b, (int)op, q);
		return;
	}
	tc__buf_put_str(b, q->group);
	tc__buf_put_u32(b, q->ranks);
	tc__buf_put_u32(b, q->timeout_ms);
	tc__buf_put_u32(b, q->rank);
	tc__buf_put_u32(b, q->lease_ms);
}

int tc__proto_get_group(struct tc__cur *c, uint32_t *op,
			struct tc__gsp_group_req *q, char *err, size_t errlen)
{
	int ret;

	memset(q, 0, sizeof(*q));
	if (tc__cur_read_u32(c, op) < 0) {
		snprintf(err, errlen, "GROUP: truncated before its op");
		return TC_EPROTO;
	}
	if (*op >= TC_GSP_GROUP_CREATE && *op <= TC_GSP_GROUP_GET)
		return tc__gsp_get_group_req(c, (int)*op, q, err, errlen);
	if (*op != TC_PROTO_GROUP_HOLD) {
		snprintf(err, errlen, "GROUP: unknown op %u", *op);
		return TC_EPROTO;
	}
	ret = tc__gsp_get_name(c, "group", q->group, TC_GSP_MAX_GROUP, false,
			       err, errlen);
	if (ret < 0)
		return ret;
	if (tc__cur_read_u32(c, &q->ranks) < 0 ||
	    tc__cur_read_u32(c, &q->timeout_ms) < 0 ||
	    tc__cur_read_u32(c, &q->rank) < 0 ||
	    tc__cur_read_u32(c, &q->lease_ms) < 0) {
		snprintf(err, errlen, "GROUP hold: truncated");
		return TC_EPROTO;
	}
	if (q->ranks > TC_GSP_MAX_RANKS ||
	    (q->ranks &&
	     (q->timeout_ms < 1 || q->timeout_ms > TC_GSP_MAX_GROUP_MS ||
	      q->rank >= q->ranks)) ||
	    q->rank >= TC_GSP_MAX_RANKS || q->lease_ms < TC_GSP_MIN_LEASE_MS ||
	    q->lease_ms > TC_GSP_MAX_LEASE_MS) {
		snprintf(err, errlen,
			 "GROUP hold: rank %u of %u ranks, timeout %u ms, "
			 "lease %u ms (ranks <= %u, rank < ranks, timeout "
			 "1..%u ms, lease %u..%u ms)",
			 q->rank, q->ranks, q->timeout_ms, q->lease_ms,
			 TC_GSP_MAX_RANKS, TC_GSP_MAX_GROUP_MS,
			 TC_GSP_MIN_LEASE_MS, TC_GSP_MAX_LEASE_MS);
		return TC_EINVAL;
	}
	return tc__gsp_end(c, err, errlen);
}

int tc__proto_get_view_spec(struct tc__cur *c, char **out, char *err,
			    size_t errlen)
{
	const char *s;
	size_t n;

	*out = NULL;
	if (tc__cur_read_str(c, TC_PROTO_MAX_VIEW, &s, &n) < 0) {
		snprintf(err, errlen,
			 "IMPORT: malformed view spec (a string of at most "
			 "%zu bytes)",
			 TC_PROTO_MAX_VIEW);
		return TC_EPROTO;
	}
	if (memchr(s, '\0', n)) {
		snprintf(err, errlen, "IMPORT: a NUL inside the view spec");
		return TC_EPROTO;
	}
	*out = tc__malloc(n + 1);
	if (!*out) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	memcpy(*out, s, n);
	(*out)[n] = '\0';
	return 0;
}
