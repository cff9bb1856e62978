/*
 * handshake.c - HMAC-SHA256 challenge-response (handshake.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "handshake.h"
#include "tcast/errors.h"

#define NONCE 32
#define MAC   32

int tc__secret_load(const char *path, struct tc__secret *out, char *err,
		    size_t errlen)
{
	struct stat st;
	ssize_t n;
	int fd, rc = 0;

	memset(out, 0, sizeof(*out));
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot open cluster secret '%s': %s",
			 path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "cluster secret '%s' is not a file",
			 path);
		rc = TC_EINVAL;
		goto out_close;
	}
	if (st.st_mode & 077) {
		snprintf(err, errlen,
			 "cluster secret '%s' has mode %03o: it must be 0600 "
			 "(chmod 600 '%s')",
			 path, (unsigned)(st.st_mode & 0777), path);
		rc = TC_EPERM;
		goto out_close;
	}
	n = pread(fd, out->key, sizeof(out->key), 0);
	if (n < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot read cluster secret '%s': %s",
			 path, strerror(errno));
		goto out_close;
	}
	while (n > 0 && (out->key[n - 1] == '\n' || out->key[n - 1] == '\r'))
		n--;
	if (n < TC_SECRET_MIN || st.st_size > TC_SECRET_MAX) {
		snprintf(err, errlen,
			 "cluster secret '%s' must hold %d..%d bytes", path,
			 TC_SECRET_MIN, TC_SECRET_MAX);
		rc = TC_EINVAL;
		goto out_close;
	}
	out->len = (size_t)n;
out_close:
	close(fd);
	if (rc < 0)
		OPENSSL_cleanse(out, sizeof(*out));
	return rc;
}

static int mac(const struct tc__secret *s, const char *label, const uint8_t *nc,
	       const uint8_t *ns, uint8_t out[MAC])
{
	uint8_t msg[16 + 2 * NONCE];
	size_t ll = strlen(label);
	unsigned int olen = 0;

	memcpy(msg, label, ll);
	memcpy(msg + ll, nc, NONCE);
	memcpy(msg + ll + NONCE, ns, NONCE);
	if (!HMAC(EVP_sha256(), s->key, (int)s->len, msg, ll + 2 * NONCE, out,
		  &olen) ||
	    olen != MAC)
		return -EIO;
	return 0;
}

static int xfer(int fd, void *p, size_t n, int send_, char *err, size_t errlen)
{
	uint8_t *b = p;

	while (n) {
		ssize_t r = send_ ? send(fd, b, n, MSG_NOSIGNAL) :
				    recv(fd, b, n, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int e = r < 0 ? errno : 0;

			snprintf(err, errlen, "handshake: %s",
				 r == 0	     ? "closed by peer" :
				 e == EAGAIN ? "timed out" :
					       strerror(e));
			return r == 0	   ? TC_ECLOSED :
			       e == EAGAIN ? -ETIMEDOUT :
					     -e;
		}
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

int tc__handshake_client(int fd, const struct tc__secret *s, char *err,
			 size_t errlen)
{
	uint8_t hello[4 + NONCE], srv[NONCE + MAC], want[MAC], proof[MAC];
	int rc;

	memcpy(hello, "TCA1", 4);
	if (RAND_bytes(hello + 4, NONCE) != 1)
		return -EIO;
	rc = xfer(fd, hello, sizeof(hello), 1, err, errlen);
	if (rc < 0)
		return rc;
	rc = xfer(fd, srv, sizeof(srv), 0, err, errlen);
	if (rc < 0)
		return rc;
	/* Our proof goes first, whatever the server's says: the server
	 * can then log a wrong secret as such.  It is bound to the
	 * server's fresh nonce, so it is worth nothing anywhere else. */
	if (mac(s, "tcast-c", hello + 4, srv, proof) < 0 ||
	    mac(s, "tcast-s", hello + 4, srv, want) < 0)
		return -EIO;
	rc = xfer(fd, proof, sizeof(proof), 1, err, errlen);
	if (rc < 0)
		return rc;
	if (CRYPTO_memcmp(want, srv + NONCE, MAC)) {
		snprintf(err, errlen,
			 "handshake: the server does not know the cluster "
			 "secret");
		return TC_EPERM;
	}
	return 0;
}

int tc__handshake_server(int fd, const struct tc__secret *s, char *err,
			 size_t errlen)
{
	uint8_t hello[4 + NONCE], reply[NONCE + MAC], want[MAC], proof[MAC];
	int rc;

	rc = xfer(fd, hello, sizeof(hello), 0, err, errlen);
	if (rc < 0)
		return rc;
	if (memcmp(hello, "TCA1", 4)) {
		snprintf(err, errlen, "handshake: not a tcast peer");
		return TC_EPROTO;
	}
	if (RAND_bytes(reply, NONCE) != 1)
		return -EIO;
	if (mac(s, "tcast-s", hello + 4, reply, reply + NONCE) < 0)
		return -EIO;
	rc = xfer(fd, reply, sizeof(reply), 1, err, errlen);
	if (rc < 0)
		return rc;
	rc = xfer(fd, proof, sizeof(proof), 0, err, errlen);
	if (rc < 0)
		return rc;
	if (mac(s, "tcast-c", hello + 4, reply, want) < 0)
		return -EIO;
	if (CRYPTO_memcmp(want, proof, MAC)) {
		snprintf(err, errlen,
			 "handshake: wrong cluster secret (bad proof)");
		return TC_EPERM;
	}
	return 0;
}
