/*
 * handshake.h - the cluster-secret challenge-response that opens every peer
 * connection (a stand-in of the same shape as src/net/auth.h, which the
 * global store's side lands; replaced by it then).
 *
 *   C -> S  "TCA1" Nc[32]
 *   S -> C  Ns[32] HMAC-SHA256(K, "tcast-s" || Nc || Ns)
 *   C -> S  HMAC-SHA256(K, "tcast-c" || Nc || Ns)
 *
 * Fresh 32-byte nonces on both sides defeat replay; the per-direction
 * labels stop a server's proof being reflected as a client's.  Admission
 * control only: no confidentiality (docs/peer.md).
 */
#ifndef TC_PEER_HANDSHAKE_H
#define TC_PEER_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

#define TC_SECRET_MIN 32  /* bytes a cluster secret must have */
#define TC_SECRET_MAX 512 /* bytes read from the secret file */

struct tc__secret {
	uint8_t key[TC_SECRET_MAX];
	size_t len;
};

/* Read a secret file: a regular file of mode 0600 (no group or other
 * bits) holding >= TC_SECRET_MIN bytes (a trailing newline is dropped).
 * Returns 0, TC_EPERM (mode), TC_EINVAL (size) or -errno; `err` names the
 * file. */
int tc__secret_load(const char *path, struct tc__secret *out, char *err,
		    size_t errlen);
/* Run the handshake on a connected blocking socket whose timeouts the
 * caller has set.  Returns 0, TC_EPERM (the other side does not know the
 * secret), TC_EPROTO (not our protocol), TC_ECLOSED or -errno. */
int tc__handshake_client(int fd, const struct tc__secret *s, char *err,
			 size_t errlen);
int tc__handshake_server(int fd, const struct tc__secret *s, char *err,
			 size_t errlen);

#endif /* TC_PEER_HANDSHAKE_H */
