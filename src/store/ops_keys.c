/*
 * ops_keys.c - KEY_SET (publish a key onto an artifact, with
 * compare-and-swap) and KEYS (a key's version history).  Loop thread
 * only; the key table itself lives in obj.c.
 */
#include <stdlib.h>

#include "obj.h"
#include "proto/proto.h"
#include "tcast/errors.h"

#include "durable.h"
#include "server_internal.h"

int on_key_set(struct conn *c, struct req *r)
{
	char key[TC_KEY_MAX + 1], id[TC_ID_LEN + 1];
	uint32_t flags;
	uint64_t expect, gen;
	size_t off;
	int rc;

	if ((rc = tc__srv_read_str(c, r, "key", key, sizeof(key))) < 0 ||
	    (rc = tc__srv_read_str(c, r, "artifact id", id, sizeof(id))) < 0)
		return rc;
	if (tc__cur_read_u32(&r->body, &flags) < 0 ||
	    tc__cur_read_u64(&r->body, &expect) < 0 ||
	    tc__srv_body_end(c, r) < 0)
		return TC_EPROTO;
	rc = tc__objs_key_set(&c->srv->objs, key, id, flags & TC_RF_EXPECT,
			      expect, &gen, c->err, sizeof(c->err));
	if (rc < 0)
		return rc;
	tc__durable_key_changed(c->srv->durable, &c->srv->objs, key);
	off = tc__srv_reply_begin(c, r);
	tc__buf_put_u64(&c->out, gen);
	tc__srv_reply_end(c, off);
	return 0;
}

int on_keys(struct conn *c, struct req *r)
{
	char key[TC_KEY_MAX + 1];
	char *json;
	int rc = tc__srv_read_str(c, r, "key", key, sizeof(key));

	if (rc < 0 || (rc = tc__srv_body_end(c, r)) < 0)
		return rc;
	json = tc__objs_keys_json(&c->srv->objs, key, &rc, c->err,
				  sizeof(c->err));
	if (rc < 0)
		return rc;
	tc__srv_reply_json(c, r, json);
	return 0;
}
