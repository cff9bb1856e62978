/*
 * test_peer_wire.c - src/peer/wire.c's replication frames (policy ha):
 * REPLICATE_REQ and REPLICATED round trips, every truncation refused, an
 * id that is not an artifact id, a source that is not HOST:PORT or holds
 * bytes that would reach logs raw, and trailing bytes; GET with and
 * without its flags byte (super-seeding, docs/peer.md "Fan-out"), unknown
 * flags refused.  (The data frames are covered by test_peer.sh end to end
 * and by fuzz_peer_wire.c.)
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#include "common/buf.h"
#include "peer/wire.h"
#include "tcast/errors.h"

static const char ID[] =
	"tc2:abababababababababababababababababababababababababababababababab";

/* Decode the one frame in b: header, then body. */
static int decode(const struct tc__buf *b, size_t body_len,
		  struct tc__peer_msg *m, char *err, size_t errlen)
{
	struct tc__peer_hdr h;
	int rc;

	tc__peer_msg_init(m);
	rc = tc__peer_hdr_decode(b->data, &h, err, errlen);
	if (rc < 0)
		return rc;
	h.len = (uint32_t)body_len;
	return tc__peer_msg_decode(&h, b->data + TC_PEER_HDR_BYTES, m, err,
				   errlen);
}

/* A REPLICATE_REQ of (id, source) is refused as malformed, the message
 * naming `why`. */
static void refused(struct tc__buf *b, const char *id, const char *source,
		    const char *why)
{
	struct tc__peer_msg m;
	char err[256];

	b->len = 0;
	tc__peer_put_replicate_req(b, id, source);
	assert_int_equal(decode(b, b->len - TC_PEER_HDR_BYTES, &m, err,
				sizeof(err)),
			 TC_EPROTO);
	assert_non_null(strstr(err, why));
	tc__peer_msg_release(&m);
}

static void test_peer_wire__replicate_req(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__peer_msg m;
	char err[256];
	size_t body;

	tc__peer_put_replicate_req(&b, ID, "10.0.0.1:7471");
	body = b.len - TC_PEER_HDR_BYTES;
	assert_int_equal(decode(&b, body, &m, err, sizeof(err)), 0);
	assert_int_equal(m.type, TC_PEER_REPLICATE_REQ);
	assert_string_equal(m.id, ID);
	assert_string_equal(m.source, "10.0.0.1:7471");
	tc__peer_msg_release(&m);
	for (size_t i = 0; i < body; i++) {
		assert_int_equal(decode(&b, i, &m, err, sizeof(err)),
				 TC_EPROTO);
		tc__peer_msg_release(&m);
	}
	/* A byte after the last field. */
	tc__buf_put_u8(&b, 0);
	assert_int_equal(decode(&b, body + 1, &m, err, sizeof(err)), TC_EPROTO);
	assert_non_null(strstr(err, "trailing"));
	tc__peer_msg_release(&m);

	refused(&b, "model:v1", "10.0.0.1:7471", "not an artifact id");
	refused(&b, ID, "10.0.0.1", "HOST:PORT");
	refused(&b, ID, "10.0.0.1:7471\n:x", "printable");
	{
		char big[200];

		memset(big, 'a', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		big[10] = ':';
		refused(&b, ID, big, "127 bytes");
	}
	tc__buf_release(&b);
}

static void test_peer_wire__replicated(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__peer_msg m;
	char err[256];
	size_t body;

	tc__peer_put_replicated(&b, 123456789, 42);
	body = b.len - TC_PEER_HDR_BYTES;
	assert_int_equal(decode(&b, body, &m, err, sizeof(err)), 0);
	assert_int_equal(m.type, TC_PEER_REPLICATED);
	assert_int_equal(m.bytes, 123456789);
	assert_int_equal(m.ns, 42);
	tc__peer_msg_release(&m);
	for (size_t i = 0; i < body; i++) {
		assert_int_equal(decode(&b, i, &m, err, sizeof(err)),
				 TC_EPROTO);
		tc__peer_msg_release(&m);
	}
	tc__buf_put_u8(&b, 0);
	assert_int_equal(decode(&b, body + 1, &m, err, sizeof(err)), TC_EPROTO);
	tc__peer_msg_release(&m);
	tc__buf_release(&b);
}

static void test_peer_wire__get_flags(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__peer_msg m;
	char err[256];
	size_t body;

	/* No flags: the GET is as it always was (no flags byte). */
	tc__peer_put_get(&b, ID, 7, 1, 0);
	body = b.len - TC_PEER_HDR_BYTES;
	assert_int_equal(decode(&b, body, &m, err, sizeof(err)), 0);
	assert_int_equal(m.type, TC_PEER_GET);
	assert_int_equal(m.first, 7);
	assert_int_equal(m.count, 1);
	assert_int_equal(m.flags, 0);
	tc__peer_msg_release(&m);

	b.len = 0;
	tc__peer_put_get(&b, ID, 7, 1, TC_PEER_GET_SHARES);
	assert_int_equal(b.len - TC_PEER_HDR_BYTES, body + 1);
	assert_int_equal(decode(&b, body + 1, &m, err, sizeof(err)), 0);
	assert_int_equal(m.flags, TC_PEER_GET_SHARES);
	tc__peer_msg_release(&m);
	for (size_t i = 0; i < body; i++) {
		assert_int_not_equal(decode(&b, i, &m, err, sizeof(err)), 0);
		tc__peer_msg_release(&m);
	}
	/* A flags byte of 0, an unknown bit, a byte after the flags. */
	b.data[b.len - 1] = 0;
	assert_int_equal(decode(&b, body + 1, &m, err, sizeof(err)), TC_EPROTO);
	assert_non_null(strstr(err, "flags"));
	tc__peer_msg_release(&m);
	b.data[b.len - 1] = 0x80 | TC_PEER_GET_SHARES;
	assert_int_equal(decode(&b, body + 1, &m, err, sizeof(err)), TC_EPROTO);
	tc__peer_msg_release(&m);
	b.data[b.len - 1] = TC_PEER_GET_SHARES;
	tc__buf_put_u8(&b, 0);
	assert_int_equal(decode(&b, body + 2, &m, err, sizeof(err)), TC_EPROTO);
	assert_non_null(strstr(err, "trailing"));
	tc__peer_msg_release(&m);
	tc__buf_release(&b);
}

static void test_peer_wire__error_hint(void **state)
{
	struct tc__buf b = TC_BUF_INIT;
	struct tc__peer_msg m;
	char err[256];
	size_t body;

	tc__peer_put_error(&b, TC_EBUSY, "ask your peers");
	body = b.len - TC_PEER_HDR_BYTES;
	assert_int_equal(decode(&b, body, &m, err, sizeof(err)), 0);
	assert_int_equal(m.code, TC_EBUSY);
	assert_int_equal(m.hint, 0);
	tc__peer_msg_release(&m);
	b.len = 0;
	tc__peer_put_error_hint(&b, TC_EBUSY, "ask your peers", 18);
	assert_int_equal(b.len - TC_PEER_HDR_BYTES, body + 8);
	assert_int_equal(decode(&b, body + 8, &m, err, sizeof(err)), 0);
	assert_int_equal(m.hint, 18);
	assert_string_equal(m.msg, "ask your peers");
	tc__peer_msg_release(&m);
	/* A hint cut short, a hint of 0 (none is sent as nothing), a hint
	 * past the chunk limit. */
	assert_int_equal(decode(&b, body + 4, &m, err, sizeof(err)), TC_EPROTO);
	tc__peer_msg_release(&m);
	memset(b.data + b.len - 8, 0, 8);
	assert_int_equal(decode(&b, body + 8, &m, err, sizeof(err)), TC_EPROTO);
	assert_non_null(strstr(err, "hint"));
	tc__peer_msg_release(&m);
	memset(b.data + b.len - 8, 0xff, 8);
	assert_int_equal(decode(&b, body + 8, &m, err, sizeof(err)), TC_EPROTO);
	tc__peer_msg_release(&m);
	tc__buf_release(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_peer_wire__error_hint),
		cmocka_unit_test(test_peer_wire__get_flags),
		cmocka_unit_test(test_peer_wire__replicate_req),
		cmocka_unit_test(test_peer_wire__replicated),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
