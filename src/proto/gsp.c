/*
 * gsp.c - the global-store protocol's frames and records (gsp.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/names.h"
#include "gsp.h"
#include "tcast/errors.h"

const char *tc__gsp_name(int type)
{
	switch (type) {
#define GSP(name, id)       \
	case TC_GSP_##name: \
		return #name;
#include "gsp_msgs.def"
#undef GSP
	}
	return "?";
}

const char *tc__gsp_tier_name(int tier)
{
	static const char *const n[] = { "host", "gpu", "disk", "shared" };

	return tier >= 0 && tier <= TC_GSP_MAX_TIER ? n[tier] : "?";
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void tc__gsp_hdr_encode(const struct tc__gsp_hdr *h, uint8_t out[TC_GSP_HDR])
{
	put_le(out, TC_GSP_MAGIC, 4);
	put_le(out + 4, TC_GSP_VERSION, 2);
	put_le(out + 6, h->type, 2);
	put_le(out + 8, h->flags, 4);
	put_le(out + 12, h->req_id, 4);
	put_le(out + 16, h->body_len, 4);
}

int tc__gsp_hdr_decode(const uint8_t in[TC_GSP_HDR], struct tc__gsp_hdr *h,
		       char *err, size_t errlen)
{
	struct tc__cur c;
	uint32_t magic;
	uint16_t ver;

	tc__cur_init(&c, in, TC_GSP_HDR);
	tc__cur_read_u32(&c, &magic);
	tc__cur_read_u16(&c, &ver);
	tc__cur_read_u16(&c, &h->type);
	tc__cur_read_u32(&c, &h->flags);
	tc__cur_read_u32(&c, &h->req_id);
	tc__cur_read_u32(&c, &h->body_len);
	if (magic != TC_GSP_MAGIC) {
		snprintf(err, errlen, "not a global-store frame (magic 0x%08x)",
			 magic);
		return TC_EPROTO;
	}
	if (ver != TC_GSP_VERSION) {
		snprintf(err, errlen,
			 "global-store protocol version %u (this "
			 "side speaks %d)",
			 ver, TC_GSP_VERSION);
		return TC_EVERSION;
	}
	if (h->type == 0 || h->type >= TC_GSP__MAX) {
		snprintf(err, errlen, "unknown message type %u", h->type);
		return TC_EPROTO;
	}
	if (h->flags & ~TC_GSP_REPLY) {
		snprintf(err, errlen, "unknown flags 0x%x", h->flags);
		return TC_EPROTO;
	}
	if (h->body_len > TC_GSP_MAX_BODY) {
		snprintf(err, errlen, "body of %u bytes (at most %u)",
			 h->body_len, TC_GSP_MAX_BODY);
		return TC_ELIMIT;
	}
	return 0;
}

size_t tc__gsp_begin(struct tc__buf *b, int type, uint32_t flags,
		     uint32_t req_id)
{
	struct tc__gsp_hdr h = { (uint16_t)type, flags, req_id, 0 };
	uint8_t raw[TC_GSP_HDR];
	size_t off = b->len;

	tc__gsp_hdr_encode(&h, raw);
	tc__buf_put(b, raw, sizeof(raw));
	return off;
}

void tc__gsp_finish(struct tc__buf *b, size_t off)
{
	if (!b->oom)
		tc__buf_patch_u32(b, off + 16,
				  (uint32_t)(b->len - off - TC_GSP_HDR));
}

size_t tc__gsp_reply_begin(struct tc__buf *b, int type, uint32_t req_id,
			   int status, const char *msg)
{
	size_t off = tc__gsp_begin(b, type, TC_GSP_REPLY, req_id);

	tc__buf_put_i32(b, status);
	if (status < 0) {
		size_t n = msg ? strlen(msg) : 0;

		tc__buf_put_strn(b, msg ? msg : "",
				 n > TC_GSP_MAX_MSG ? TC_GSP_MAX_MSG : n);
	}
	return off;
}

int tc__gsp_end(const struct tc__cur *c, char *err, size_t errlen)
{
	if (c->left) {
		snprintf(err, errlen, "%zu bytes after the last field",
			 c->left);
		return TC_EPROTO;
	}
	return 0;
}

static bool printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

/* A string of at most max bytes, no NUL: *s and *n point into the body.
 * The length is checked before the read, so an oversized one is told as
 * TC_ELIMIT rather than as truncated. */
static int read_bounded(struct tc__cur *c, const char *field, size_t max,
			const char **s, size_t *n, char *err, size_t errlen)
{
	struct tc__cur peek = *c;
	uint32_t len;

	if (tc__cur_read_u32(&peek, &len) < 0) {
		snprintf(err, errlen, "%s: truncated", field);
		return TC_EPROTO;
	}
	if (len > max) {
		snprintf(err, errlen, "%s: %u bytes (at most %zu)", field, len,
			 max);
		return TC_ELIMIT;
	}
	if (tc__cur_read_str(c, max, s, n) < 0) {
		snprintf(err, errlen, "%s: truncated or holds a NUL", field);
		return TC_EPROTO;
	}
	return 0;
}

int tc__gsp_get_name(struct tc__cur *c, const char *field, char *dst,
		     size_t max, bool empty_ok, char *err, size_t errlen)
{
	const char *s;
	size_t n;
	int ret = read_bounded(c, field, max, &s, &n, err, errlen);

	if (ret < 0)
		return ret;
	if ((!n && !empty_ok) || !printable(s, n)) {
		snprintf(err, errlen, "%s: %s", field,
			 n ? "a byte outside printable ASCII (or a space)" :
			     "empty");
		return TC_EPROTO;
	}
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

int tc__gsp_get_key(struct tc__cur *c, char *dst, char *err, size_t errlen)
{
	const char *s;
	size_t n;
	int ret = read_bounded(c, "key", TC_GSP_MAX_KEY, &s, &n, err, errlen);

	if (ret < 0)
		return ret;
	ret = tc__name_check("key", s, n, TC_GSP_MAX_KEY, 0, err, errlen);
	if (ret < 0)
		return ret;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

void tc__gsp_put_node(struct tc__buf *b, const struct tc__gsp_node *n)
{
	tc__buf_put_str(b, n->name);
	tc__buf_put_u64(b, n->epoch);
	tc__buf_put_str(b, n->peer_addr);
	tc__buf_put_str(b, n->zone);
	tc__buf_put_str(b, n->rack);
	tc__buf_put_str(b, n->host);
}

int tc__gsp_get_node(struct tc__cur *c, struct tc__gsp_node *n, char *err,
		     size_t errlen)
{
	int ret;

	memset(n, 0, sizeof(*n));
	if ((ret = tc__gsp_get_name(c, "node name", n->name, TC_GSP_MAX_NAME,
				    false, err, errlen)) < 0)
		return ret;
	if (tc__cur_read_u64(c, &n->epoch) < 0) {
		snprintf(err, errlen, "epoch: truncated");
		return TC_EPROTO;
	}
	if ((ret = tc__gsp_get_name(c, "peer address", n->peer_addr,
				    TC_GSP_MAX_ADDR, true, err, errlen)) < 0 ||
	    (ret = tc__gsp_get_name(c, "zone", n->zone, TC_GSP_MAX_NAME, true,
				    err, errlen)) < 0 ||
	    (ret = tc__gsp_get_name(c, "rack", n->rack, TC_GSP_MAX_NAME, true,
				    err, errlen)) < 0 ||
	    (ret = tc__gsp_get_name(c, "host", n->host, TC_GSP_MAX_NAME, true,
				    err, errlen)) < 0)
		return ret;
	return 0;
}

void tc__gsp_put_replica(struct tc__buf *b, const struct tc__gsp_replica *r)
{
	tc__buf_put_str(b, r->id);
	tc__buf_put_u8(b, r->tier);
	tc__buf_put_u32(b, r->device);
	tc__buf_put_u64(b, r->size);
	tc__buf_put_u32(b, r->nchunks);
	tc__buf_put_u8(b, r->have ? 0 : 1);
	if (r->have) {
		tc__buf_put_u32(b, tc__gsp_bitmap_len(r->nchunks));
		tc__buf_put(b, r->have, tc__gsp_bitmap_len(r->nchunks));
	}
}

void tc__gsp_replica_release(struct tc__gsp_replica *r)
{
	tc__free(r->have);
	r->have = NULL;
}

int tc__gsp_get_replica(struct tc__cur *c, struct tc__gsp_replica *r, char *err,
			size_t errlen)
{
	const uint8_t *bm;
	uint32_t blen;
	uint8_t complete;
	int ret;

	memset(r, 0, sizeof(*r));
	if ((ret = tc__gsp_get_name(c, "artifact id", r->id, TC_GSP_MAX_ID,
				    false, err, errlen)) < 0)
		return ret;
	if (tc__cur_read_u8(c, &r->tier) < 0 ||
	    tc__cur_read_u32(c, &r->device) < 0 ||
	    tc__cur_read_u64(c, &r->size) < 0 ||
	    tc__cur_read_u32(c, &r->nchunks) < 0 ||
	    tc__cur_read_u8(c, &complete) < 0) {
		snprintf(err, errlen, "replica '%s': truncated", r->id);
		return TC_EPROTO;
	}
	if (r->tier > TC_GSP_MAX_TIER || complete > 1) {
		snprintf(err, errlen, "replica '%s': tier %u, complete %u",
			 r->id, r->tier, complete);
		return TC_EPROTO;
	}
	if (r->nchunks > TC_GSP_MAX_CHUNKS) {
		snprintf(err, errlen, "replica '%s': %u chunks (at most %u)",
			 r->id, r->nchunks, TC_GSP_MAX_CHUNKS);
		return TC_ELIMIT;
	}
	if (complete)
		return 0;
	if (tc__cur_read_u32(c, &blen) < 0 ||
	    blen != tc__gsp_bitmap_len(r->nchunks)) {
		snprintf(err, errlen,
			 "replica '%s': chunk bitmap must be %u bytes", r->id,
			 tc__gsp_bitmap_len(r->nchunks));
		return TC_EPROTO;
	}
	if (tc__cur_read_bytes(c, blen, &bm) < 0) {
		snprintf(err, errlen, "replica '%s': bitmap truncated", r->id);
		return TC_EPROTO;
	}
	r->have = tc__malloc(blen ? blen : 1);
	if (!r->have)
		return -ENOMEM;
	memcpy(r->have, bm, blen);
	return 0;
}

void tc__gsp_put_artifact(struct tc__buf *b, const struct tc__gsp_artifact *a)
{
	tc__buf_put_str(b, a->id);
	tc__buf_put_u64(b, a->size);
	tc__buf_put_u32(b, a->nchunks);
	tc__buf_put_str(b, a->policy);
	tc__buf_put_u32(b, a->table_len);
	tc__buf_put(b, a->table, a->table_len);
	tc__buf_put_u32(b, a->digests_len);
	tc__buf_put(b, a->digests, a->digests_len);
}

void tc__gsp_artifact_release(struct tc__gsp_artifact *a)
{
	tc__free(a->table);
	tc__free(a->digests);
	a->table = a->digests = NULL;
	a->table_len = a->digests_len = 0;
}

static int get_blob(struct tc__cur *c, const char *field, uint32_t max,
		    uint8_t **out, uint32_t *outlen, char *err, size_t errlen)
{
	const uint8_t *p;
	uint32_t n;

	if (tc__cur_read_u32(c, &n) < 0) {
		snprintf(err, errlen, "%s: truncated", field);
		return TC_EPROTO;
	}
	if (n > max) {
		snprintf(err, errlen, "%s: %u bytes (at most %u)", field, n,
			 max);
		return TC_ELIMIT;
	}
	if (tc__cur_read_bytes(c, n, &p) < 0) {
		snprintf(err, errlen, "%s: truncated", field);
		return TC_EPROTO;
	}
	*outlen = n;
	*out = NULL;
	if (!n)
		return 0;
	*out = tc__malloc(n);
	if (!*out)
		return -ENOMEM;
	memcpy(*out, p, n);
	return 0;
}

int tc__gsp_get_artifact(struct tc__cur *c, struct tc__gsp_artifact *a,
			 char *err, size_t errlen)
{
	int ret;

	memset(a, 0, sizeof(*a));
	if ((ret = tc__gsp_get_name(c, "artifact id", a->id, TC_GSP_MAX_ID,
				    false, err, errlen)) < 0)
		return ret;
	if (tc__cur_read_u64(c, &a->size) < 0 ||
	    tc__cur_read_u32(c, &a->nchunks) < 0) {
		snprintf(err, errlen, "artifact '%s': truncated", a->id);
		return TC_EPROTO;
	}
	if (a->nchunks > TC_GSP_MAX_CHUNKS) {
		snprintf(err, errlen, "artifact '%s': %u chunks (at most %u)",
			 a->id, a->nchunks, TC_GSP_MAX_CHUNKS);
		return TC_ELIMIT;
	}
	if ((ret = tc__gsp_get_name(c, "policy", a->policy, TC_GSP_MAX_POLICY,
				    true, err, errlen)) < 0)
		return ret;
	ret = get_blob(c, "tensor table", TC_GSP_MAX_TABLE, &a->table,
		       &a->table_len, err, errlen);
	if (ret < 0)
		return ret;
	ret = get_blob(c, "chunk digests", a->nchunks * 32u, &a->digests,
		       &a->digests_len, err, errlen);
	if (ret == 0 && a->digests_len && a->digests_len != a->nchunks * 32u) {
		snprintf(err, errlen,
			 "artifact '%s': %u digest bytes for %u chunks", a->id,
			 a->digests_len, a->nchunks);
		ret = TC_EPROTO;
	}
	if (ret < 0)
		tc__gsp_artifact_release(a);
	return ret;
}

void tc__gsp_put_source(struct tc__buf *b, const struct tc__gsp_source *s)
{
	tc__buf_put_u64(b, s->node_id);
	tc__buf_put_str(b, s->name);
	tc__buf_put_str(b, s->peer_addr);
	tc__buf_put_u8(b, s->tier);
	tc__buf_put_u32(b, s->device);
	tc__buf_put_u8(b, s->complete);
	tc__buf_put_u32(b, s->distance);
	tc__buf_put_u32(b, s->uploads);
}

int tc__gsp_get_source(struct tc__cur *c, struct tc__gsp_source *s, char *err,
		       size_t errlen)
{
	int ret;

	memset(s, 0, sizeof(*s));
	if (tc__cur_read_u64(c, &s->node_id) < 0) {
		snprintf(err, errlen, "source: truncated");
		return TC_EPROTO;
	}
	if ((ret = tc__gsp_get_name(c, "source name", s->name, TC_GSP_MAX_NAME,
				    false, err, errlen)) < 0 ||
	    (ret = tc__gsp_get_name(c, "source address", s->peer_addr,
				    TC_GSP_MAX_ADDR, true, err, errlen)) < 0)
		return ret;
	if (tc__cur_read_u8(c, &s->tier) < 0 ||
	    tc__cur_read_u32(c, &s->device) < 0 ||
	    tc__cur_read_u8(c, &s->complete) < 0 ||
	    tc__cur_read_u32(c, &s->distance) < 0 ||
	    tc__cur_read_u32(c, &s->uploads) < 0) {
		snprintf(err, errlen, "source '%s': truncated", s->name);
		return TC_EPROTO;
	}
	if (s->tier > TC_GSP_MAX_TIER || s->complete > 1) {
		snprintf(err, errlen, "source '%s': tier %u complete %u",
			 s->name, s->tier, s->complete);
		return TC_EPROTO;
	}
	return 0;
}

/* ------------------------------------------------------------ groups */

void tc__gsp_put_peers_req(struct tc__buf *b, const char *requester,
			   uint32_t max)
{
	tc__buf_put_str(b, requester ? requester : "");
	tc__buf_put_u32(b, max);
}

int tc__gsp_get_peers_req(struct tc__cur *c, char *requester, uint32_t *max,
			  char *err, size_t errlen)
{
	int ret = tc__gsp_get_name(c, "requester", requester, TC_GSP_MAX_NAME,
				   true, err, errlen);

	if (ret < 0)
		return ret;
	if (tc__cur_read_u32(c, max) < 0) {
		snprintf(err, errlen, "max nodes: truncated");
		return TC_EPROTO;
	}
	if (*max > TC_GSP_MAX_SOURCES) {
		snprintf(err, errlen, "max nodes: %u (at most %d)", *max,
			 TC_GSP_MAX_SOURCES);
		return TC_EINVAL;
	}
	return tc__gsp_end(c, err, errlen);
}

int tc__gsp_get_sources(struct tc__cur *c, struct tc__gsp_source *src,
			uint32_t max, uint32_t *n, char *err, size_t errlen)
{
	uint32_t k;
	int ret;

	*n = 0;
	if (tc__cur_read_u32(c, &k) < 0) {
		snprintf(err, errlen, "source count: truncated");
		return TC_EPROTO;
	}
	if (k > max || k > TC_GSP_MAX_SOURCES) {
		snprintf(err, errlen, "%u sources (at most %u asked for)", k,
			 max);
		return TC_ELIMIT;
	}
	for (uint32_t i = 0; i < k; i++)
		if ((ret = tc__gsp_get_source(c, &src[i], err, errlen)) < 0)
			return ret;
	if ((ret = tc__gsp_end(c, err, errlen)) < 0)
		return ret;
	*n = k;
	return 0;
}

const char *tc__gsp_group_state_name(int state)
{
	static const char *const n[] = { "open", "commit", "abort" };

	return state >= 0 && state <= TC_GSP_GSTATE_ABORT ? n[state] : "?";
}

int tc__gsp_get_text(struct tc__cur *c, const char *field, char *dst,
		     size_t max, char *err, size_t errlen)
{
	const char *s;
	size_t n;
	int ret = read_bounded(c, field, max, &s, &n, err, errlen);

	if (ret < 0)
		return ret;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) {
			snprintf(err, errlen,
				 "%s: a byte outside printable ASCII at %zu",
				 field, i);
			return TC_EPROTO;
		}
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

void tc__gsp_put_group_req(struct tc__buf *b, int type,
			   const struct tc__gsp_group_req *r)
{
	tc__buf_put_str(b, r->group);
	switch (type) {
	case TC_GSP_GROUP_CREATE:
		tc__buf_put_u32(b, r->ranks);
		tc__buf_put_u32(b, r->timeout_ms);
		break;
	case TC_GSP_GROUP_JOIN:
		tc__buf_put_u32(b, r->rank);
		tc__buf_put_str(b, r->node);
		tc__buf_put_u32(b, r->lease_ms);
		break;
	case TC_GSP_GROUP_PREPARE:
		tc__buf_put_u32(b, r->rank);
		tc__buf_put_str(b, r->id);
		break;
	case TC_GSP_GROUP_ABORT:
		tc__buf_put_u32(b, r->rank);
		tc__buf_put_str(b, r->reason);
		break;
	case TC_GSP_GROUP_GET:
		tc__buf_put_u32(b, r->wait_ms);
		break;
	}
}

/* A u32 in [lo, hi]: TC_EPROTO when truncated, TC_EINVAL outside. */
static int get_u32_in(struct tc__cur *c, const char *field, uint32_t lo,
		      uint32_t hi, uint32_t *v, char *err, size_t errlen)
{
	if (tc__cur_read_u32(c, v) < 0) {
		snprintf(err, errlen, "%s: truncated", field);
		return TC_EPROTO;
	}
	if (*v < lo || *v > hi) {
		snprintf(err, errlen, "%s: %u (must be %u to %u)", field, *v,
			 lo, hi);
		return TC_EINVAL;
	}
	return 0;
}

int tc__gsp_get_group_req(struct tc__cur *c, int type,
			  struct tc__gsp_group_req *r, char *err, size_t errlen)
{
	int ret;

	memset(r, 0, sizeof(*r));
	ret = tc__gsp_get_name(c, "group", r->group, TC_GSP_MAX_GROUP, false,
			       err, errlen);
	if (ret < 0)
		return ret;
	switch (type) {
	case TC_GSP_GROUP_CREATE:
		if ((ret = get_u32_in(c, "ranks", 1, TC_GSP_MAX_RANKS,
				      &r->ranks, err, errlen)) < 0 ||
		    (ret = get_u32_in(c, "timeout_ms", 1, TC_GSP_MAX_GROUP_MS,
				      &r->timeout_ms, err, errlen)) < 0)
			return ret;
		break;
	case TC_GSP_GROUP_JOIN:
		if ((ret = get_u32_in(c, "rank", 0, TC_GSP_MAX_RANKS - 1,
				      &r->rank, err, errlen)) < 0 ||
		    (ret = tc__gsp_get_name(c, "node", r->node, TC_GSP_MAX_NAME,
					    true, err, errlen)) < 0 ||
		    (ret = get_u32_in(c, "lease_ms", TC_GSP_MIN_LEASE_MS,
				      TC_GSP_MAX_LEASE_MS, &r->lease_ms, err,
				      errlen)) < 0)
			return ret;
		break;
	case TC_GSP_GROUP_PREPARE:
		if ((ret = get_u32_in(c, "rank", 0, TC_GSP_MAX_RANKS - 1,
				      &r->rank, err, errlen)) < 0 ||
		    (ret = tc__gsp_get_name(c, "staged id", r->id,
					    TC_GSP_MAX_ID, false, err,
					    errlen)) < 0)
			return ret;
		break;
	case TC_GSP_GROUP_ABORT:
		if (tc__cur_read_u32(c, &r->rank) < 0) {
			snprintf(err, errlen, "rank: truncated");
			return TC_EPROTO;
		}
		if (r->rank >= TC_GSP_MAX_RANKS && r->rank != TC_GSP_NO_RANK) {
			snprintf(err, errlen, "rank: %u (at most %u)", r->rank,
				 TC_GSP_MAX_RANKS - 1);
			return TC_EINVAL;
		}
		if ((ret = tc__gsp_get_text(c, "reason", r->reason,
					    TC_GSP_MAX_REASON, err, errlen)) <
		    0)
			return ret;
		break;
	case TC_GSP_GROUP_GET:
		if ((ret = get_u32_in(c, "wait_ms", 0, TC_GSP_MAX_WAIT_MS,
				      &r->wait_ms, err, errlen)) < 0)
			return ret;
		break;
	default:
		snprintf(err, errlen, "%s is not a group message",
			 tc__gsp_name(type));
		return TC_EPROTO;
	}
	return tc__gsp_end(c, err, errlen);
}

void tc__gsp_put_group(struct tc__buf *b, const struct tc__gsp_group *g)
{
	tc__buf_put_str(b, g->name);
	tc__buf_put_u32(b, g->ranks);
	tc__buf_put_u32(b, g->timeout_ms);
	tc__buf_put_u8(b, g->state);
	tc__buf_put_u64(b, g->created_ms);
	tc__buf_put_u64(b, g->decided_ms);
	tc__buf_put_u32(b, g->deadline_left_ms);
	tc__buf_put_u32(b, g->nprepared);
	tc__buf_put_i32(b, g->by_rank);
	tc__buf_put_str(b, g->by_node);
	tc__buf_put_str(b, g->reason);
	tc__buf_put_u32(b, g->nmembers);
	for (uint32_t i = 0; i < g->nmembers; i++) {
		const struct tc__gsp_member *m = &g->members[i];

		tc__buf_put_u32(b, m->rank);
		tc__buf_put_str(b, m->node);
		tc__buf_put_u32(b, m->lease_ms);
		tc__buf_put_u32(b, m->lease_left_ms);
		tc__buf_put_u8(b, m->prepared);
		tc__buf_put_str(b, m->id);
	}
}

void tc__gsp_group_release(struct tc__gsp_group *g)
{
	tc__free(g->members);
	g->members = NULL;
	g->nmembers = 0;
}

/* Smallest encoded member: rank, two empty strings, lease, left, flag. */
#define MEMBER_MIN 21

int tc__gsp_get_group(struct tc__cur *c, struct tc__gsp_group *g, char *err,
		      size_t errlen)
{
	int ret;

	memset(g, 0, sizeof(*g));
	if ((ret = tc__gsp_get_name(c, "group", g->name, TC_GSP_MAX_GROUP,
				    false, err, errlen)) < 0)
		return ret;
	if (tc__cur_read_u32(c, &g->ranks) < 0 ||
	    tc__cur_read_u32(c, &g->timeout_ms) < 0 ||
	    tc__cur_read_u8(c, &g->state) < 0 ||
	    tc__cur_read_u64(c, &g->created_ms) < 0 ||
	    tc__cur_read_u64(c, &g->decided_ms) < 0 ||
	    tc__cur_read_u32(c, &g->deadline_left_ms) < 0 ||
	    tc__cur_read_u32(c, &g->nprepared) < 0 ||
	    tc__cur_read_i32(c, &g->by_rank) < 0) {
		snprintf(err, errlen, "group '%s': truncated", g->name);
		return TC_EPROTO;
	}
	if (g->state > TC_GSP_GSTATE_ABORT || g->ranks > TC_GSP_MAX_RANKS ||
	    g->nprepared > g->ranks || g->by_rank < -1 ||
	    g->by_rank >= TC_GSP_MAX_RANKS) {
		snprintf(err, errlen,
			 "group '%s': state %u, %u ranks, %u prepared, "
			 "rank %d",
			 g->name, g->state, g->ranks, g->nprepared, g->by_rank);
		return TC_EPROTO;
	}
	if ((ret = tc__gsp_get_name(c, "node", g->by_node, TC_GSP_MAX_NAME,
				    true, err, errlen)) < 0 ||
	    (ret = tc__gsp_get_text(c, "reason", g->reason, TC_GSP_MAX_REASON,
				    err, errlen)) < 0)
		return ret;
	if (tc__cur_read_u32(c, &g->nmembers) < 0) {
		snprintf(err, errlen, "group '%s': member count truncated",
			 g->name);
		return TC_EPROTO;
	}
	if (g->nmembers > g->ranks || g->nmembers > c->left / MEMBER_MIN) {
		snprintf(err, errlen, "group '%s': %u members for %u ranks",
			 g->name, g->nmembers, g->ranks);
		g->nmembers = 0;
		return TC_EPROTO;
	}
	if (!g->nmembers)
		return 0;
	g->members = tc__calloc(g->nmembers, sizeof(*g->members));
	if (!g->members) {
		g->nmembers = 0;
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < g->nmembers; i++) {
		struct tc__gsp_member *m = &g->members[i];

		if (tc__cur_read_u32(c, &m->rank) < 0 || m->rank >= g->ranks) {
			snprintf(err, errlen,
				 "group '%s': member %u: rank truncated or "
				 "not below %u",
				 g->name, i, g->ranks);
			ret = TC_EPROTO;
			goto out_release;
		}
		if ((ret = tc__gsp_get_name(c, "member node", m->node,
					    TC_GSP_MAX_NAME, true, err,
					    errlen)) < 0)
			goto out_release;
		if (tc__cur_read_u32(c, &m->lease_ms) < 0 ||
		    tc__cur_read_u32(c, &m->lease_left_ms) < 0 ||
		    tc__cur_read_u8(c, &m->prepared) < 0 || m->prepared > 1) {
			snprintf(err, errlen,
				 "group '%s': member %u: truncated", g->name,
				 m->rank);
			ret = TC_EPROTO;
			goto out_release;
		}
		if ((ret = tc__gsp_get_name(c, "member id", m->id,
					    TC_GSP_MAX_ID, true, err, errlen)) <
		    0)
			goto out_release;
	}
	return 0;

out_release:
	tc__gsp_group_release(g);
	return ret;
}

int tc__gsp_get_key_value(struct tc__cur *c, char *id, uint64_t *gen, char *err,
			  size_t errlen)
{
	int ret = tc__gsp_get_name(c, "artifact id", id, TC_GSP_MAX_ID, false,
				   err, errlen);

	if (ret < 0)
		return ret;
	if (tc__cur_read_u64(c, gen) < 0) {
		snprintf(err, errlen, "key generation: truncated");
		return TC_EPROTO;
	}
	return 0;
}

void tc__gsp_put_keys_get_req(struct tc__buf *b, const char *const *keys,
			      uint32_t n)
{
	tc__buf_put_u32(b, n);
	for (uint32_t i = 0; i < n; i++)
		tc__buf_put_str(b, keys[i]);
}

int tc__gsp_get_keys_count(struct tc__cur *c, uint32_t max, uint32_t *n,
			   char *err, size_t errlen)
{
	if (max > TC_GSP_MAX_KEYS_GET)
		max = TC_GSP_MAX_KEYS_GET;
	if (tc__cur_read_u32(c, n) < 0) {
		snprintf(err, errlen, "key count: truncated");
		return TC_EPROTO;
	}
	if (*n == 0) {
		snprintf(err, errlen, "key count: 0 (at least 1)");
		return TC_EPROTO;
	}
	if (*n > max) {
		snprintf(err, errlen, "key count: %u (at most %u)", *n, max);
		return TC_ELIMIT;
	}
	return 0;
}

void tc__gsp_put_key_entry(struct tc__buf *b, const char *id, uint64_t gen)
{
	tc__buf_put_u8(b, id ? 1 : 0);
	if (!id)
		return;
	tc__buf_put_str(b, id);
	tc__buf_put_u64(b, gen);
}

int tc__gsp_get_key_entry(struct tc__cur *c, bool *found, char *id,
			  uint64_t *gen, char *err, size_t errlen)
{
	uint8_t f = 0;

	*found = false;
	id[0] = '\0';
	*gen = 0;
	if (tc__cur_read_u8(c, &f) < 0) {
		snprintf(err, errlen, "key entry: truncated");
		return TC_EPROTO;
	}
	if (f > 1) {
		snprintf(err, errlen, "key entry: found is %u (0 or 1)", f);
		return TC_EPROTO;
	}
	if (!f)
		return 0;
	*found = true;
	return tc__gsp_get_key_value(c, id, gen, err, errlen);
}

int tc__gsp_get_key_version(struct tc__cur *c, uint64_t *gen, char *id,
			    uint64_t *unix_ms, char *err, size_t errlen)
{
	int ret;

	if (tc__cur_read_u64(c, gen) < 0) {
		snprintf(err, errlen, "key version: truncated");
		return TC_EPROTO;
	}
	ret = tc__gsp_get_name(c, "artifact id", id, TC_GSP_MAX_ID, true, err,
			       errlen);
	if (ret < 0)
		return ret;
	if (tc__cur_read_u64(c, unix_ms) < 0) {
		snprintf(err, errlen, "key version time: truncated");
		return TC_EPROTO;
	}
	return 0;
}
