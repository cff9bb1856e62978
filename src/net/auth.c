/*
 * auth.c - the cluster handshake (auth.h): secret file, messages, the
 * state machine and its socket drivers.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth.h"
#include "common/buf.h"
#include "ev.h"
#include "tcast/errors.h"
#include "tls.h"

static const char LABEL_S[] = "tcast-s";
static const char LABEL_C[] = "tcast-c";
static const char LABEL_ID[] = "tcast-keyid";
/* A TLS 1.3 client learns that the server refused its certificate only
 * when the connection ends after the handshake. */
static const char TLS_REFUSED[] =
	"the peer ended the connection after the TLS handshake: the peer "
	"refused our certificate (not signed by its CA?) or our cluster "
	"secret; its log says which";

const char *tc__auth_role_name(int role)
{
	switch (role) {
	case TC_AUTH_ROLE_ANY:
		return "any";
	case TC_AUTH_ROLE_DAEMON:
		return "daemon";
	case TC_AUTH_ROLE_GLOBAL:
		return "global";
	case TC_AUTH_ROLE_PEER:
		return "peer";
	case TC_AUTH_ROLE_TOOL:
		return "tool";
	}
	return "?";
}

static int hmac(const uint8_t *key, size_t keylen, const char *label,
		const uint8_t *msg, size_t n, uint8_t out[TC_AUTH_MAC])
{
	uint8_t buf[sizeof(LABEL_ID) + TC_AUTH_BIND + TC_AUTH_TRANSCRIPT];
	unsigned int outlen = 0;
	size_t ll = strlen(label) + 1; /* the NUL separates label and T */

	if (ll + n > sizeof(buf))
		return TC_ELIMIT;
	memcpy(buf, label, ll);
	if (n)
		memcpy(buf + ll, msg, n);
	if (!HMAC(EVP_sha256(), key, (int)keylen, buf, ll + n, out, &outlen) ||
	    outlen != TC_AUTH_MAC)
		return -EIO;
	return 0;
}

/* The MAC of the transcript T under key k, after the TLS channel binding
 * when there is one: HMAC(K, label || [binding] || T). */
static int mac_tr(const struct tc__auth *a, int k, const char *label,
		  uint8_t out[TC_AUTH_MAC])
{
	uint8_t m[TC_AUTH_BIND + TC_AUTH_TRANSCRIPT];
	size_t n = 0;
	int ret;

	if (a->bound) {
		memcpy(m, a->bind, TC_AUTH_BIND);
		n = TC_AUTH_BIND;
	}
	memcpy(m + n, a->tr, a->tr_len);
	ret = hmac(a->sec->key[k], a->sec->len[k], label, m, n + a->tr_len,
		   out);
	OPENSSL_cleanse(m, sizeof(m));
	return ret;
}

/* ------------------------------------------------------------- secrets */

int tc__auth_secret_set(struct tc__auth_secret *s, int idx, const void *key,
			size_t len)
{
	uint8_t mac[TC_AUTH_MAC];

	if (idx < 0 || idx >= TC_AUTH_MAX_KEYS || len < TC_AUTH_MIN_SECRET ||
	    len > TC_AUTH_MAX_SECRET)
		return TC_EINVAL;
	memcpy(s->key[idx], key, len);
	s->len[idx] = len;
	if (hmac(s->key[idx], len, LABEL_ID, NULL, 0, mac) < 0)
		return TC_EINVAL;
	s->id[idx] = 0;
	for (int i = 0; i < 8; i++)
		s->id[idx] |= (uint64_t)mac[i] << (8 * i);
	if (idx + 1 > s->n)
		s->n = idx + 1;
	OPENSSL_cleanse(mac, sizeof(mac));
	return 0;
}

void tc__auth_secret_wipe(struct tc__auth_secret *s)
{
	OPENSSL_cleanse(s, sizeof(*s));
}

int tc__auth_load_secret(const char *path, struct tc__auth_secret *out,
			 char *err, size_t errlen)
{
	/* Room for two secrets of the maximum length, their newlines and
	 * one byte more, to tell "too long" from "just fits". */
	char data[2 * (TC_AUTH_MAX_SECRET + 2) + 1];
	struct stat st;
	ssize_t n;
	size_t len = 0;
	int fd, ret, nkeys = 0;
	char *p, *end;

	memset(out, 0, sizeof(*out));
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen,
			 "cannot open cluster secret file '%s': %s%s", path,
			 strerror(errno),
			 errno == ELOOP ? " (a symlink is refused)" : "");
		return ret;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		snprintf(err, errlen,
			 "cannot stat cluster secret file '%s': %s", path,
			 strerror(errno));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen,
			 "cluster secret file '%s' is not a regular file",
			 path);
		ret = TC_EBADCONFIG;
		goto out_close;
	}
	if (st.st_mode & 077) {
		snprintf(err, errlen,
			 "cluster secret file '%s' has mode %04o: others may "
			 "read it; it must be 0600 (chmod 600 '%s')",
			 path, (unsigned)(st.st_mode & 07777), path);
		ret = TC_EPERM;
		goto out_close;
	}
	if (st.st_uid != geteuid()) {
		snprintf(err, errlen,
			 "cluster secret file '%s' belongs to uid %u, not to "
			 "this process's uid %u",
			 path, (unsigned)st.st_uid, (unsigned)geteuid());
		ret = TC_EPERM;
		goto out_close;
	}
	while (len < sizeof(data)) {
		n = read(fd, data + len, sizeof(data) - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			snprintf(err, errlen,
				 "cannot read cluster secret file '%s': %s",
				 path, strerror(errno));
			goto out_close;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len == sizeof(data)) {
		snprintf(err, errlen,
			 "cluster secret file '%s' is too long: at most 2 "
			 "lines of %d bytes",
			 path, TC_AUTH_MAX_SECRET);
		ret = TC_EBADCONFIG;
		goto out_wipe;
	}
	p = data;
	end = data + len;
	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);

		if (l && p[l - 1] == '\r')
			l--;
		if (l == 0 && nl) { /* blank line */
			p = nl + 1;
			continue;
		}
		if (nkeys == TC_AUTH_MAX_KEYS) {
			snprintf(err, errlen,
				 "cluster secret file '%s' has more than %d "
				 "secrets (the active one, then the previous)",
				 path, TC_AUTH_MAX_KEYS);
			ret = TC_EBADCONFIG;
			goto out_wipe;
		}
		if (l < TC_AUTH_MIN_SECRET || l > TC_AUTH_MAX_SECRET) {
			snprintf(err, errlen,
				 "cluster secret file '%s': secret %d is %zu "
				 "bytes; it must be %d..%d (openssl rand -hex "
				 "32 makes one)",
				 path, nkeys + 1, l, TC_AUTH_MIN_SECRET,
				 TC_AUTH_MAX_SECRET);
			ret = TC_EBADCONFIG;
			goto out_wipe;
		}
		tc__auth_secret_set(out, nkeys++, p, l);
		if (!nl)
			break;
		p = nl + 1;
	}
	if (nkeys == 0) {
		snprintf(err, errlen, "cluster secret file '%s' is empty",
			 path);
		ret = TC_EBADCONFIG;
		goto out_wipe;
	}
	ret = 0;
out_wipe:
	OPENSSL_cleanse(data, sizeof(data));
	if (ret < 0)
		tc__auth_secret_wipe(out);
out_close:
	close(fd);
	return ret;
}

/* ------------------------------------------------------------ messages */

static bool name_ok(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

/* Magic, type, reserved byte and body length of a header; *blen gets the
 * body length. */
static int hdr_check(const uint8_t *p, size_t *blen, char *err, size_t errlen)
{
	uint32_t magic = (uint32_t)p[0] | (uint32_t)p[1] << 8 |
			 (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;

	*blen = (size_t)p[6] | (size_t)p[7] << 8;
	if (magic != TC_AUTH_MAGIC) {
		/* A TLS record (handshake 0x16 or alert 0x15, version 3.x)
		 * where the plain handshake was expected: TLS is on at one
		 * end only. */
		bool tls = (p[0] == 0x16 || p[0] == 0x15) && p[1] == 3;

		snprintf(err, errlen,
			 "not a tcast cluster handshake (first bytes %02x %02x "
			 "%02x %02x)%s",
			 p[0], p[1], p[2], p[3],
			 tls ? ": the peer speaks TLS and we do not (set "
			       "tls_cert, tls_key and tls_ca here too)" :
			       "");
		return TC_EPROTO;
	}
	if (p[4] < TC_AUTH_HELLO || p[4] > TC_AUTH_OK || p[5]) {
		snprintf(err, errlen, "bad handshake message type %u/%u", p[4],
			 p[5]);
		return TC_EPROTO;
	}
	if (*blen > TC_AUTH_MAX_BODY) {
		snprintf(err, errlen,
			 "handshake body of %zu bytes (at most %d)", *blen,
			 TC_AUTH_MAX_BODY);
		return TC_ELIMIT;
	}
	return 0;
}

int tc__auth_decode(const uint8_t *p, size_t n, struct tc__auth_msg *m,
		    char *err, size_t errlen)
{
	struct tc__cur c;
	uint16_t blen;
	uint8_t zero;
	const uint8_t *b;
	const char *s;
	size_t sl, hl;
	int ret;

	memset(m, 0, sizeof(*m));
	if (n < TC_AUTH_HDR) {
		snprintf(err, errlen, "handshake header truncated (%zu bytes)",
			 n);
		return TC_EPROTO;
	}
	ret = hdr_check(p, &hl, err, errlen);
	if (ret < 0)
		return ret;
	m->type = p[4];
	blen = (uint16_t)hl;
	tc__cur_init(&c, p + TC_AUTH_HDR, n - TC_AUTH_HDR);
	if (c.left != blen) {
		snprintf(err, errlen,
			 "handshake body is %zu bytes, header says %u", c.left,
			 blen);
		return TC_EPROTO;
	}
	switch (m->type) {
	case TC_AUTH_HELLO:
	case TC_AUTH_CHALLENGE:
		if (tc__cur_read_u16(&c, &m->version) < 0)
			goto trunc;
		if (m->version != TC_AUTH_VERSION) {
			snprintf(err, errlen,
				 "handshake version %u (this side speaks %d)",
				 m->version, TC_AUTH_VERSION);
			return TC_EVERSION;
		}
		if (tc__cur_read_u8(&c, &m->role) < 0 ||
		    tc__cur_read_u8(&c, &zero) < 0)
			goto trunc;
		if (m->role == TC_AUTH_ROLE_ANY ||
		    m->role >= TC_AUTH_ROLE__MAX || zero) {
			snprintf(err, errlen, "bad handshake role %u/%u",
				 m->role, zero);
			return TC_EPROTO;
		}
		if (m->type == TC_AUTH_HELLO &&
		    tc__cur_read_u64(&c, &m->key_id) < 0)
			goto trunc;
		if (tc__cur_read_bytes(&c, TC_AUTH_NONCE, &b) < 0)
			goto trunc;
		memcpy(m->nonce, b, TC_AUTH_NONCE);
		if (tc__cur_read_str(&c, TC_AUTH_MAX_NAME, &s, &sl) < 0) {
			snprintf(err, errlen,
				 "handshake name missing or over %d bytes",
				 TC_AUTH_MAX_NAME);
			return TC_EPROTO;
		}
		if (!name_ok(s, sl)) {
			snprintf(err, errlen,
				 "handshake name holds a byte outside "
				 "printable ASCII");
			return TC_EPROTO;
		}
		memcpy(m->name, s, sl);
		m->name[sl] = '\0';
		if (m->type == TC_AUTH_HELLO)
			break;
		m->mac_off = blen - c.left;
		/* CHALLENGE ends with the server's MAC */
		__attribute__((fallthrough));
	case TC_AUTH_PROOF:
		if (tc__cur_read_bytes(&c, TC_AUTH_MAC, &b) < 0)
			goto trunc;
		memcpy(m->mac, b, TC_AUTH_MAC);
		break;
	case TC_AUTH_OK:
		break;
	}
	if (c.left) {
		snprintf(err, errlen,
			 "%zu unexpected bytes after handshake message %u",
			 c.left, m->type);
		return TC_EPROTO;
	}
	return 0;
trunc:
	snprintf(err, errlen, "handshake message %u truncated", m->type);
	return TC_EPROTO;
}

/* Start a message in a->out; returns the offset of its header. */
static size_t msg_begin(struct tc__buf *b, int type)
{
	size_t off = b->len;

	tc__buf_put_u32(b, TC_AUTH_MAGIC);
	tc__buf_put_u8(b, (uint8_t)type);
	tc__buf_put_u8(b, 0);
	tc__buf_put_u16(b, 0);
	return off;
}

static void msg_finish(struct tc__auth *a, struct tc__buf *b, size_t off)
{
	size_t blen = b->len - off - TC_AUTH_HDR;

	b->data[off + 6] = (uint8_t)blen;
	b->data[off + 7] = (uint8_t)(blen >> 8);
	/* Bounded by construction: names are cut to TC_AUTH_MAX_NAME. */
	memcpy(a->out + a->out_len, b->data + off, b->len - off);
	a->out_len += b->len - off;
}

static int fail(struct tc__auth *a, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct tc__auth *a, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(a->err, sizeof(a->err), fmt, ap);
	va_end(ap);
	a->state = TC_AUTH_S_FAILED;
	a->error = code;
	a->out_len = a->out_off = 0; /* a failed server tells nothing */
	return code;
}

static void tr_add(struct tc__auth *a, const uint8_t *p, size_t n)
{
	/* Two bodies of at most TC_AUTH_MAX_BODY each fit by definition. */
	memcpy(a->tr + a->tr_len, p, n);
	a->tr_len += n;
}

static int init_common(struct tc__auth *a, const struct tc__auth_secret *sec,
		       int role, const char *name, int timeout_ms)
{
	size_t nl = name ? strlen(name) : 0;
	ssize_t got = 0;

	memset(a, 0, sizeof(*a));
	a->sec = sec;
	a->role = (uint8_t)role;
	if (nl > TC_AUTH_MAX_NAME)
		nl = TC_AUTH_MAX_NAME;
	for (size_t i = 0; i < nl; i++) /* names reach logs: keep printable */
		a->name[i] = name_ok(name + i, 1) ? name[i] : '_';
	a->deadline_ms =
		tc__now_ms() +
		(uint64_t)(timeout_ms > 0 ? timeout_ms : TC_AUTH_TIMEOUT_MS);
	while (got < TC_AUTH_NONCE) {
		ssize_t r = getrandom(a->nonce + got,
				      (size_t)(TC_AUTH_NONCE - got), 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return fail(a, -errno, "getrandom: %s",
				    strerror(errno));
		got += r;
	}
	if (!sec || sec->n < 1)
		return fail(a, TC_EINVAL, "no cluster secret loaded");
	return 0;
}

int tc__auth_init_client(struct tc__auth *a, const struct tc__auth_secret *sec,
			 int role, const char *name, int timeout_ms)
{
	struct tc__buf b = TC_BUF_INIT;
	size_t off, body;
	int ret;

	ret = init_common(a, sec, role, name, timeout_ms);
	if (ret < 0)
		return ret;
	a->key = 0;
	off = msg_begin(&b, TC_AUTH_HELLO);
	tc__buf_put_u16(&b, TC_AUTH_VERSION);
	tc__buf_put_u8(&b, a->role);
	tc__buf_put_u8(&b, 0);
	tc__buf_put_u64(&b, sec->id[0]);
	tc__buf_put(&b, a->nonce, TC_AUTH_NONCE);
	tc__buf_put_str(&b, a->name);
	if (b.oom) {
		tc__buf_release(&b);
		return fail(a, -ENOMEM, "out of memory");
	}
	body = off + TC_AUTH_HDR;
	tr_add(a, b.data + body, b.len - body);
	msg_finish(a, &b, off);
	tc__buf_release(&b);
	a->state = TC_AUTH_S_WAIT_CHALLENGE;
	return 0;
}

int tc__auth_init_server(struct tc__auth *a, const struct tc__auth_secret *sec,
			 int role, int want_role, const char *name,
			 int timeout_ms)
{
	int ret = init_common(a, sec, role, name, timeout_ms);

	if (ret < 0)
		return ret;
	a->server = true;
	a->want_role = (uint8_t)want_role;
	a->state = TC_AUTH_S_WAIT_HELLO;
	return 0;
}

size_t tc__auth_need(const struct tc__auth *a)
{
	size_t blen;

	if (a->state == TC_AUTH_S_DONE || a->state == TC_AUTH_S_FAILED)
		return 0;
	if (a->out_off < a->out_len && !a->server &&
	    a->state == TC_AUTH_S_WAIT_OK)
		return 0; /* the proof goes out before the OK can come */
	if (a->in_len < TC_AUTH_HDR)
		return TC_AUTH_HDR - a->in_len;
	blen = (size_t)a->in[6] | (size_t)a->in[7] << 8;
	if (blen > TC_AUTH_MAX_BODY)
		return 0; /* tc__auth_feed has failed already */
	return TC_AUTH_HDR + blen - a->in_len;
}

/* The server got HELLO: choose the key, answer with CHALLENGE. */
static int on_hello(struct tc__auth *a, const struct tc__auth_msg *m,
		    const uint8_t *body, size_t blen)
{
	struct tc__buf b = TC_BUF_INIT;
	uint8_t mac[TC_AUTH_MAC];
	size_t off, bstart;
	int k;

	snprintf(a->peer_name, sizeof(a->peer_name), "%s", m->name);
	a->peer_role = m->role;
	if (a->want_role != TC_AUTH_ROLE_ANY && m->role != a->want_role)
		return fail(a, TC_EPERM,
			    "peer '%s' says it is a %s; only a %s may connect "
			    "here",
			    m->name, tc__auth_role_name(m->role),
			    tc__auth_role_name(a->want_role));
	for (k = 0; k < a->sec->n; k++)
		if (a->sec->id[k] == m->key_id)
			break;
	if (k == a->sec->n)
		return fail(a, TC_EPERM,
			    "peer '%s' uses another cluster secret (key id "
			    "%016llx is not ours)",
			    m->name, (unsigned long long)m->key_id);
	a->key = k;
	tr_add(a, body, blen);
	off = msg_begin(&b, TC_AUTH_CHALLENGE);
	bstart = b.len;
	tc__buf_put_u16(&b, TC_AUTH_VERSION);
	tc__buf_put_u8(&b, a->role);
	tc__buf_put_u8(&b, 0);
	tc__buf_put(&b, a->nonce, TC_AUTH_NONCE);
	tc__buf_put_str(&b, a->name);
	if (b.oom) {
		tc__buf_release(&b);
		return fail(a, -ENOMEM, "out of memory");
	}
	tr_add(a, b.data + bstart, b.len - bstart);
	if (mac_tr(a, k, LABEL_S, mac) < 0) {
		tc__buf_release(&b);
		return fail(a, -EIO, "HMAC failed");
	}
	tc__buf_put(&b, mac, TC_AUTH_MAC);
	if (b.oom) {
		tc__buf_release(&b);
		return fail(a, -ENOMEM, "out of memory");
	}
	msg_finish(a, &b, off);
	tc__buf_release(&b);
	a->state = TC_AUTH_S_WAIT_PROOF;
	return 0;
}

/* The client got CHALLENGE: check the server's proof, send ours. */
static int on_challenge(struct tc__auth *a, const struct tc__auth_msg *m,
			const uint8_t *body)
{
	struct tc__buf b = TC_BUF_INIT;
	uint8_t mac[TC_AUTH_MAC];
	size_t off;
	int k = a->key;

	snprintf(a->peer_name, sizeof(a->peer_name), "%s", m->name);
	a->peer_role = m->role;
	if (memcmp(m->nonce, a->nonce, TC_AUTH_NONCE) == 0)
		return fail(a, TC_EPERM,
			    "server '%s' echoed our nonce (a reflection)",
			    m->name);
	tr_add(a, body, m->mac_off);
	if (mac_tr(a, k, LABEL_S, mac) < 0)
		return fail(a, -EIO, "HMAC failed");
	if (CRYPTO_memcmp(mac, m->mac, TC_AUTH_MAC) != 0)
		return fail(a, TC_EPERM,
			    "server '%s' could not prove it knows the cluster "
			    "secret (wrong secret on one side?)",
			    m->name);
	if (mac_tr(a, k, LABEL_C, mac) < 0)
		return fail(a, -EIO, "HMAC failed");
	off = msg_begin(&b, TC_AUTH_PROOF);
	tc__buf_put(&b, mac, TC_AUTH_MAC);
	if (b.oom) {
		tc__buf_release(&b);
		return fail(a, -ENOMEM, "out of memory");
	}
	msg_finish(a, &b, off);
	tc__buf_release(&b);
	OPENSSL_cleanse(mac, sizeof(mac));
	a->state = TC_AUTH_S_WAIT_OK;
	return 0;
}

/* The server got PROOF: check it, send OK. */
static int on_proof(struct tc__auth *a, const struct tc__auth_msg *m)
{
	struct tc__buf b = TC_BUF_INIT;
	uint8_t mac[TC_AUTH_MAC];
	size_t off;
	int k = a->key;

	if (mac_tr(a, k, LABEL_C, mac) < 0)
		return fail(a, -EIO, "HMAC failed");
	if (CRYPTO_memcmp(mac, m->mac, TC_AUTH_MAC) != 0)
		return fail(a, TC_EPERM,
			    "peer '%s' failed the challenge: wrong cluster "
			    "secret",
			    a->peer_name);
	off = msg_begin(&b, TC_AUTH_OK);
	if (b.oom) {
		tc__buf_release(&b);
		return fail(a, -ENOMEM, "out of memory");
	}
	msg_finish(a, &b, off);
	tc__buf_release(&b);
	a->state = TC_AUTH_S_DONE;
	return 0;
}

static const int expect_type[] = {
	[TC_AUTH_S_WAIT_HELLO] = TC_AUTH_HELLO,
	[TC_AUTH_S_WAIT_CHALLENGE] = TC_AUTH_CHALLENGE,
	[TC_AUTH_S_WAIT_PROOF] = TC_AUTH_PROOF,
	[TC_AUTH_S_WAIT_OK] = TC_AUTH_OK,
};

int tc__auth_feed(struct tc__auth *a, const uint8_t *p, size_t n)
{
	struct tc__auth_msg m;
	char why[160];
	size_t need, blen;
	int ret;

	while (n) {
		need = tc__auth_need(a);
		if (need == 0)
			return a->state == TC_AUTH_S_FAILED ?
				       a->error :
				       fail(a, TC_EPROTO,
					    "peer sent bytes out of turn");
		if (need > n)
			need = n;
		memcpy(a->in + a->in_len, p, need);
		a->in_len += need;
		p += need;
		n -= need;
		if (a->in_len == TC_AUTH_HDR) {
			/* Judge the header before waiting for a body. */
			ret = hdr_check(a->in, &blen, why, sizeof(why));
			if (ret < 0)
				return fail(a, ret, "%s", why);
			if (blen > 0)
				continue;
		}
		if (tc__auth_need(a) > 0)
			continue;
		blen = a->in_len - TC_AUTH_HDR;
		ret = tc__auth_decode(a->in, a->in_len, &m, why, sizeof(why));
		a->in_len = 0;
		if (ret < 0)
			return fail(a, ret, "%s", why);
		if (m.type != expect_type[a->state])
			return fail(a, TC_EPROTO,
				    "handshake message %u out of order "
				    "(expected %d)",
				    m.type, expect_type[a->state]);
		switch (m.type) {
		case TC_AUTH_HELLO:
			ret = on_hello(a, &m, a->in + TC_AUTH_HDR, blen);
			break;
		case TC_AUTH_CHALLENGE:
			ret = on_challenge(a, &m, a->in + TC_AUTH_HDR);
			break;
		case TC_AUTH_PROOF:
			ret = on_proof(a, &m);
			break;
		default:
			a->state = TC_AUTH_S_DONE;
			ret = 0;
		}
		if (ret < 0)
			return ret;
	}
	return 0;
}

size_t tc__auth_output(const struct tc__auth *a, const uint8_t **p)
{
	*p = a->out + a->out_off;
	return a->out_len - a->out_off;
}

void tc__auth_sent(struct tc__auth *a, size_t n)
{
	a->out_off += n;
	if (a->out_off >= a->out_len)
		a->out_off = a->out_len = 0;
}

bool tc__auth_done(const struct tc__auth *a)
{
	return a->state == TC_AUTH_S_DONE && a->out_len == a->out_off;
}

bool tc__auth_expired(struct tc__auth *a, uint64_t now_ms)
{
	if (a->state == TC_AUTH_S_FAILED)
		return true;
	if (tc__auth_done(a) || now_ms < a->deadline_ms)
		return false;
	fail(a, -ETIMEDOUT,
	     "handshake with '%s' not finished within its deadline (a "
	     "stalled or silent peer)",
	     a->peer_name[0] ? a->peer_name : "?");
	return true;
}

void tc__auth_wipe(struct tc__auth *a)
{
	OPENSSL_cleanse(a->nonce, sizeof(a->nonce));
	OPENSSL_cleanse(a->tr, sizeof(a->tr));
	OPENSSL_cleanse(a->bind, sizeof(a->bind));
	OPENSSL_cleanse(a->in, sizeof(a->in));
	a->tr_len = a->in_len = 0;
}

/* ------------------------------------------------------------- drivers */

static int auth_poll(struct tc__auth *a, int fd, struct tc__tls *tls);

/* send(2)/recv(2) without blocking, or the TLS equivalents (whose fd is
 * non-blocking while the handshake runs): -1 with errno like the calls. */
static ssize_t xsend(int fd, struct tc__tls *tls, const void *p, size_t n,
		     int *ev)
{
	ssize_t r;

	if (!tls)
		return send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
	r = tc__tls_send(tls, p, n, ev);
	if (r < 0) {
		errno = r == TC_EPROTO ? EPROTO : (int)-r;
		return -1;
	}
	return r;
}

static ssize_t xrecv(int fd, struct tc__tls *tls, void *p, size_t n, int *ev)
{
	ssize_t r;

	if (!tls)
		return recv(fd, p, n, MSG_DONTWAIT);
	r = tc__tls_recv(tls, p, n, ev);
	if (r < 0) {
		errno = r == TC_EPROTO ? EPROTO : (int)-r;
		return -1;
	}
	return r;
}

int tc__auth_io(struct tc__auth *a, int fd, int *events)
{
	return tc__auth_io_tls(a, fd, NULL, events);
}

int tc__auth_io_tls(struct tc__auth *a, int fd, struct tc__tls *tls,
		    int *events)
{
	const uint8_t *p;
	uint8_t buf[TC_AUTH_HDR + TC_AUTH_MAX_BODY];
	size_t n;
	ssize_t r;
	int ret, tev = 0;

	*events = 0;
	/* Inside TLS, bind the proofs to this TLS session: a relay that
	 * holds a certificate of the CA but not the secret cannot pass
	 * them on between two sessions of its own. */
	if (tls && !a->bound) {
		if (tc__tls_binding(tls, a->bind) < 0)
			return fail(a, TC_EPROTO,
				    "cannot export TLS keying material");
		a->bound = true;
	}
	for (;;) {
		if (a->state == TC_AUTH_S_FAILED)
			return a->error;
		n = tc__auth_output(a, &p);
		if (n) {
			r = xsend(fd, tls, p, n, &tev);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0 &&
			    (errno == EAGAIN || errno == EWOULDBLOCK)) {
				*events = tls && tev ? tev : TC_EV_WRITE;
				goto out_wait;
			}
			if (r < 0 && !a->server && tls &&
			    (errno == ECONNRESET || errno == EPIPE ||
			     errno == EPROTO))
				return fail(a, TC_ECLOSED, "%s", TLS_REFUSED);
			if (r < 0)
				return fail(a, -errno, "send: %s",
					    strerror(errno));
			tc__auth_sent(a, (size_t)r);
			continue;
		}
		if (tc__auth_done(a))
			return 0;
		n = tc__auth_need(a);
		r = xrecv(fd, tls, buf, n, &tev);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			*events = tls && tev ? tev : TC_EV_READ;
			goto out_wait;
		}
		if (r < 0 && !a->server && tls &&
		    (errno == ECONNRESET || errno == EPIPE || errno == EPROTO))
			return fail(a, TC_ECLOSED, "%s", TLS_REFUSED);
		if (r < 0 && errno == ECONNRESET && !a->server && !tls)
			return fail(a, TC_ECLOSED,
				    "the server reset the connection: it "
				    "refused us (TLS on at its end only? "
				    "another cluster secret? its log says)");
		if (r < 0)
			return fail(a, -errno, "recv: %s", strerror(errno));
		if (r == 0 && tls && !a->server)
			return fail(a, TC_ECLOSED, "%s", TLS_REFUSED);
		if (r == 0) {
			if (a->server)
				return fail(a, TC_ECLOSED,
					    "peer closed the connection during "
					    "the handshake");
			return fail(a, TC_ECLOSED,
				    a->state == TC_AUTH_S_WAIT_OK ?
					    "the server closed the connection "
					    "after our proof: it refused us "
					    "(wrong cluster secret or role? "
					    "its log says)" :
					    "the server closed the connection "
					    "before its challenge: it refused "
					    "us (another cluster secret, or a "
					    "role it does not admit? its log "
					    "says)");
		}
		ret = tc__auth_feed(a, buf, (size_t)r);
		if (ret < 0)
			return ret;
	}
out_wait:
	if (tc__auth_expired(a, tc__now_ms()))
		return a->error;
	return -EAGAIN;
}

int tc__auth_run(struct tc__auth *a, int fd)
{
	return tc__auth_run_tls(a, fd, NULL);
}

int tc__auth_run_tls(struct tc__auth *a, int fd, struct tc__tls *tls)
{
	int fl = tls ? fcntl(fd, F_GETFL) : 0, ret;

	/* TLS has no MSG_DONTWAIT: the fd itself is non-blocking while the
	 * handshake runs, then as it was. */
	if (fl >= 0 && tls && !(fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	ret = auth_poll(a, fd, tls);
	if (fl >= 0 && tls && !(fl & O_NONBLOCK))
		fcntl(fd, F_SETFL, fl);
	return ret;
}

static int auth_poll(struct tc__auth *a, int fd, struct tc__tls *tls)
{
	struct pollfd pfd = { .fd = fd };
	int ev, ret;

	for (;;) {
		uint64_t now;

		ret = tc__auth_io_tls(a, fd, tls, &ev);
		if (ret != -EAGAIN)
			return ret;
		now = tc__now_ms();
		pfd.events = (short)((ev & TC_EV_READ ? POLLIN : 0) |
				     (ev & TC_EV_WRITE ? POLLOUT : 0));
		ret = poll(&pfd, 1,
			   a->deadline_ms > now ? (int)(a->deadline_ms - now) :
						  0);
		if (ret < 0 && errno != EINTR)
			return fail(a, -errno, "poll: %s", strerror(errno));
		if (ret == 0 && tc__auth_expired(a, tc__now_ms()))
			return a->error;
	}
}
