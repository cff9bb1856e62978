/*
 * fuzz_auth.c - the cluster handshake decoder and state machine on
 * arbitrary bytes.
 *
 * The input is fed to tc__auth_decode whole, then to a server and a
 * client machine in pieces whose sizes come from the first byte (so one
 * input exercises byte-at-a-time delivery too).  Nothing may read past
 * the input, and a machine may end only done (impossible without the
 * secret, so checked never to happen) or failed with a reason.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/auth.h"

static struct tc__auth_secret sec;

static void drive(struct tc__auth *a, const uint8_t *p, size_t n, size_t step)
{
	while (n && a->state != TC_AUTH_S_FAILED) {
		size_t k = n < step ? n : step;

		if (tc__auth_feed(a, p, k) < 0 && !a->err[0])
			abort(); /* a failure must say why */
		p += k;
		n -= k;
	}
	/* Garbage never authenticates a server: it would need the MAC. */
	if (a->server && a->state == TC_AUTH_S_DONE)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tc__auth_msg m;
	struct tc__auth a;
	char err[256];
	size_t step;

	if (!sec.n)
		tc__auth_secret_set(&sec, 0,
				    "fuzzing-secret-fuzzing-secret-0000", 34);
	tc__auth_decode(data, size, &m, err, sizeof(err));
	if (size < 1)
		return 0;
	step = (size_t)(data[0] % 16) + 1;
	tc__auth_init_server(&a, &sec, TC_AUTH_ROLE_GLOBAL, 0, "s", 0);
	drive(&a, data + 1, size - 1, step);
	tc__auth_init_client(&a, &sec, TC_AUTH_ROLE_DAEMON, "c", 0);
	drive(&a, data + 1, size - 1, step);
	return 0;
}
