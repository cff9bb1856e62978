/*
 * tls.c - optional TLS on cluster connections (tls.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/alloc.h"
#include "ev.h"
#include "tcast/errors.h"
#include "tcp.h"
#include "tls.h"

#define SEND_WINDOW (8u << 20) /* bytes of a file mapped at once */

struct tc__tls_ctx {
	SSL_CTX *ssl;
	char subject[256]; /* our certificate's subject */
	bool verify_name;  /* clients check the server's name (default) */
};

struct tc__tls {
	SSL *ssl;
	int fd;		     /* borrowed */
	bool verify_name;    /* from the context */
	char desc[384];	     /* tc__tls_describe */
	char bad_subj[256];  /* the peer certificate that failed to verify */
	char want[256];	     /* the host we dialled ("" on a server) */
	char bad_names[512]; /* what the certificate that did not name
				`want` holds: "DNS:a, IP:10.0.0.1" */
};

/* ------------------------------------------------------------- config */

const char *tc__tls_mode_name(int mode)
{
	switch (mode) {
	case TC_TLS_OFF:
		return "off";
	case TC_TLS_ON:
		return "on";
	}
	return "auto";
}

static int set_path(char *dst, size_t len, const char *val, char *why,
		    size_t whylen)
{
	if (strlen(val) >= len) {
		snprintf(why, whylen, "path longer than %zu bytes", len - 1);
		return TC_EINVAL;
	}
	strcpy(dst, val);
	return 1;
}

int tc__tls_config_set(struct tc__tls_config *c, const char *key,
		       const char *val, char *why, size_t whylen)
{
	if (!strcmp(key, "tls")) {
		if (!strcmp(val, "auto") || !*val)
			c->mode = TC_TLS_AUTO;
		else if (!strcmp(val, "on") || !strcmp(val, "required"))
			c->mode = TC_TLS_ON;
		else if (!strcmp(val, "off"))
			c->mode = TC_TLS_OFF;
		else {
			snprintf(why, whylen,
				 "'%s': expected on, off or auto (on when "
				 "tls_cert is set)",
				 val);
			return TC_EINVAL;
		}
		return 1;
	}
	if (!strcmp(key, "tls_verify_name")) {
		if (!strcmp(val, "on") || !strcmp(val, "true") ||
		    !strcmp(val, "yes") || !strcmp(val, "1") || !*val)
			c->no_verify_name = 0;
		else if (!strcmp(val, "off") || !strcmp(val, "false") ||
			 !strcmp(val, "no") || !strcmp(val, "0"))
			c->no_verify_name = 1;
		else {
			snprintf(why, whylen,
				 "'%s': expected on or off (whether a client "
				 "checks that the server's certificate names "
				 "the address it dialled)",
				 val);
			return TC_EINVAL;
		}
		return 1;
	}
	if (!strcmp(key, "tls_cert"))
		return set_path(c->cert, sizeof(c->cert), val, why, whylen);
	if (!strcmp(key, "tls_key"))
		return set_path(c->key, sizeof(c->key), val, why, whylen);
	if (!strcmp(key, "tls_ca"))
		return set_path(c->ca, sizeof(c->ca), val, why, whylen);
	return 0;
}

bool tc__tls_config_on(const struct tc__tls_config *c)
{
	if (c->mode == TC_TLS_OFF)
		return false;
	return c->mode == TC_TLS_ON || c->cert[0];
}

/* ------------------------------------------------------------ context */

/* The last OpenSSL error of this thread as text ("" when none). */
static void ssl_errstr(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();
	const char *r;

	buf[0] = '\0';
	if (!e)
		return;
	r = ERR_reason_error_string(e);
	if (r)
		snprintf(buf, len, "%s", r);
	else
		ERR_error_string_n(e, buf, len);
}

static void name_str(X509_NAME *n, char *buf, size_t len)
{
	BIO *b = BIO_new(BIO_s_mem());
	long got;
	char *p;

	buf[0] = '\0';
	if (!b)
		return;
	if (X509_NAME_print_ex(b, n, 0,
			       XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
		got = BIO_get_mem_data(b, &p);
		snprintf(buf, len, "%.*s", (int)(got > 0 ? got : 0), p);
	}
	BIO_free(b);
}

/* A file we must read: exists, regular, readable; `what` names it. */
static int check_file(const char *what, const char *path, bool secret,
		      char *err, size_t errlen)
{
	struct stat st;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		snprintf(err, errlen, "%s '%s': cannot open: %s", what, path,
			 strerror(errno));
		return errno == EACCES ? TC_EPERM : TC_EBADCONFIG;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s '%s' is not a regular file", what,
			 path);
		close(fd);
		return TC_EBADCONFIG;
	}
	close(fd);
	if (secret && (st.st_mode & 007)) {
		snprintf(err, errlen,
			 "%s '%s' has mode %04o: anyone may read the private "
			 "key; make it 0600 or 0640 (chmod 600 '%s')",
			 what, path, (unsigned)(st.st_mode & 07777), path);
		return TC_EPERM;
	}
	return 0;
}

/* The subjectAltNames of `x` a name check looks at, "DNS:a, IP:10.0.0.1",
 * or "no subjectAltName". */
static void alt_names(X509 *x, char *buf, size_t len)
{
	GENERAL_NAMES *gens =
		X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	size_t used = 0;

	buf[0] = '\0';
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		char one[INET6_ADDRSTRLEN + 8] = "";
		int type;
		ASN1_STRING *v = GENERAL_NAME_get0_value(g, &type);
		const unsigned char *d = v ? ASN1_STRING_get0_data(v) : NULL;
		int n = v ? ASN1_STRING_length(v) : 0;

		if (type == GEN_DNS && d)
			snprintf(one, sizeof(one), "DNS:%.*s", n > 64 ? 64 : n,
				 (const char *)d);
		else if (type == GEN_IPADD && d && (n == 4 || n == 16)) {
			char ip[INET6_ADDRSTRLEN];

			if (inet_ntop(n == 4 ? AF_INET : AF_INET6, d, ip,
				      sizeof(ip)))
				snprintf(one, sizeof(one), "IP:%s", ip);
		}
		if (!one[0] || used + strlen(one) + 3 >= len)
			continue;
		used += (size_t)snprintf(buf + used, len - used, "%s%s",
					 used ? ", " : "", one);
	}
	GENERAL_NAMES_free(gens);
	if (!buf[0])
		snprintf(buf, len, "no subjectAltName");
}

/* OpenSSL's verdict stands; we only note whose certificate failed (the
 * peer's own, depth 0), and on a name mismatch what names it holds, for
 * the error. */
static int verify_cb(int ok, X509_STORE_CTX *x)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(
		x, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct tc__tls *t = ssl ? SSL_get_app_data(ssl) : NULL;
	STACK_OF(X509) *chain = X509_STORE_CTX_get0_untrusted(x);
	X509 *leaf = X509_STORE_CTX_get0_cert(x);
	int e = X509_STORE_CTX_get_error(x);

	if (!ok && t && !t->bad_names[0] &&
	    (e == X509_V_ERR_HOSTNAME_MISMATCH ||
	     e == X509_V_ERR_IP_ADDRESS_MISMATCH) &&
	    X509_STORE_CTX_get_current_cert(x))
		alt_names(X509_STORE_CTX_get_current_cert(x), t->bad_names,
			  sizeof(t->bad_names));
	if (!ok && t && !t->bad_subj[0]) {
		if (!leaf && chain && sk_X509_num(chain) > 0)
			leaf = sk_X509_value(chain, 0);
		if (leaf)
			name_str(X509_get_subject_name(leaf), t->bad_subj,
				 sizeof(t->bad_subj));
	}
	return ok;
}

/* Our certificate is valid now and chains to the CA we also demand of
 * peers: a node with a wrong file finds out at start, not from every
 * peer refusing it. */
static int check_own_cert(SSL_CTX *s, const struct tc__tls_config *c,
			  char *subject, size_t sublen, char *err,
			  size_t errlen)
{
	X509 *x = SSL_CTX_get0_certificate(s);
	STACK_OF(X509) *chain = NULL;
	X509_STORE_CTX *vc;
	int ok, verr;

	if (!x) {
		snprintf(err, errlen, "tls_cert '%s': no certificate in it",
			 c->cert);
		return TC_EBADCONFIG;
	}
	name_str(X509_get_subject_name(x), subject, sublen);
	if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
		snprintf(err, errlen,
			 "tls_cert '%s': the certificate has expired", c->cert);
		return TC_EBADCONFIG;
	}
	if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
		snprintf(err, errlen,
			 "tls_cert '%s': the certificate is not valid yet",
			 c->cert);
		return TC_EBADCONFIG;
	}
	vc = X509_STORE_CTX_new();
	if (!vc)
		return -ENOMEM;
	SSL_CTX_get0_chain_certs(s, &chain);
	if (!X509_STORE_CTX_init(vc, SSL_CTX_get_cert_store(s), x, chain)) {
		X509_STORE_CTX_free(vc);
		return -ENOMEM;
	}
	ok = X509_verify_cert(vc);
	verr = X509_STORE_CTX_get_error(vc);
	X509_STORE_CTX_free(vc);
	if (ok != 1) {
		snprintf(err, errlen,
			 "tls_cert '%s' does not verify against tls_ca '%s': "
			 "%s",
			 c->cert, c->ca, X509_verify_cert_error_string(verr));
		return TC_EBADCONFIG;
	}
	return 0;
}

int tc__tls_ctx_new(const struct tc__tls_config *c, struct tc__tls_ctx **out,
		    char *err, size_t errlen)
{
	struct tc__tls_ctx *t;
	char why[256];
	int ret;

	*out = NULL;
	if (!tc__tls_config_on(c))
		return 0;
	if (!c->cert[0] || !c->key[0] || !c->ca[0]) {
		snprintf(err, errlen,
			 "TLS needs all three of tls_cert, tls_key and tls_ca "
			 "(%s%s%s missing)",
			 c->cert[0] ? "" : "tls_cert ",
			 c->key[0] ? "" : "tls_key ", c->ca[0] ? "" : "tls_ca");
		return TC_EBADCONFIG;
	}
	if ((ret = check_file("tls_cert", c->cert, false, err, errlen)) < 0 ||
	    (ret = check_file("tls_key", c->key, true, err, errlen)) < 0 ||
	    (ret = check_file("tls_ca", c->ca, false, err, errlen)) < 0)
		return ret;
	t = tc__calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	ERR_clear_error();
	t->ssl = SSL_CTX_new(TLS_method());
	if (!t->ssl) {
		ret = -ENOMEM;
		goto out_free;
	}
	ret = TC_EBADCONFIG;
	SSL_CTX_set_min_proto_version(t->ssl, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(t->ssl, c->cert) != 1) {
		ssl_errstr(why, sizeof(why));
		snprintf(err, errlen,
			 "tls_cert '%s': not a PEM certificate (%s)", c->cert,
			 why);
		goto out_free;
	}
	ERR_clear_error();
	if (SSL_CTX_use_PrivateKey_file(t->ssl, c->key, SSL_FILETYPE_PEM) !=
	    1) {
		unsigned long e = ERR_peek_last_error();

		if (ERR_GET_LIB(e) == ERR_LIB_X509 &&
		    ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
			snprintf(err, errlen,
				 "tls_key '%s' is not the key of tls_cert "
				 "'%s'",
				 c->key, c->cert);
			goto out_free;
		}
		ssl_errstr(why, sizeof(why));
		snprintf(err, errlen,
			 "tls_key '%s': not a PEM private key, or one with "
			 "a passphrase (%s)",
			 c->key, why);
		goto out_free;
	}
	ERR_clear_error();
	if (SSL_CTX_check_private_key(t->ssl) != 1) {
		snprintf(err, errlen,
			 "tls_key '%s' is not the key of tls_cert '%s'", c->key,
			 c->cert);
		goto out_free;
	}
	ERR_clear_error();
	if (SSL_CTX_load_verify_locations(t->ssl, c->ca, NULL) != 1) {
		ssl_errstr(why, sizeof(why));
		snprintf(err, errlen,
			 "tls_ca '%s': not a PEM CA certificate (%s)", c->ca,
			 why);
		goto out_free;
	}
	ret = check_own_cert(t->ssl, c, t->subject, sizeof(t->subject), err,
			     errlen);
	if (ret < 0)
		goto out_free;
	/* Mutual: a peer without a certificate the CA signed is refused
	 * on either side. */
	SSL_CTX_set_verify(t->ssl,
			   SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
			   verify_cb);
	t->verify_name = !c->no_verify_name;
	/* Peers send client CA names (the CA's subject) in requests. */
	{
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(c->ca);

		if (names)
			SSL_CTX_set_client_CA_list(t->ssl, names);
	}
	/* Partial writes and moving buffers: the event loop's output
	 * buffer may grow (realloc) between two tries of one write. */
	SSL_CTX_set_mode(t->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
					 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
					 SSL_MODE_AUTO_RETRY);
	/* No tickets (nothing after the handshake but our own bytes, and
	 * every connection is fully verified); an EOF without close_notify
	 * is an ordinary end (the protocols frame their own). */
	SSL_CTX_set_num_tickets(t->ssl, 0);
	SSL_CTX_set_session_cache_mode(t->ssl, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(t->ssl, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION |
					    SSL_OP_IGNORE_UNEXPECTED_EOF |
					    SSL_OP_ENABLE_KTLS);
	signal(SIGPIPE, SIG_IGN);
	*out = t;
	return 0;

out_free:
	SSL_CTX_free(t->ssl);
	tc__free(t);
	return ret;
}

void tc__tls_ctx_free(struct tc__tls_ctx *ctx)
{
	if (!ctx)
		return;
	SSL_CTX_free(ctx->ssl);
	tc__free(ctx);
}

bool tc__tls_ctx_verify_name(const struct tc__tls_ctx *ctx)
{
	return ctx && ctx->verify_name;
}

const char *tc__tls_ctx_subject(const struct tc__tls_ctx *ctx)
{
	return ctx ? ctx->subject : "";
}

/* -------------------------------------------------------- connections */

int tc__tls_new(struct tc__tls_ctx *ctx, int fd, bool server,
		struct tc__tls **out)
{
	struct tc__tls *t;

	*out = NULL;
	t = tc__calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->ssl = SSL_new(ctx->ssl);
	if (!t->ssl || SSL_set_fd(t->ssl, fd) != 1) {
		SSL_free(t->ssl);
		tc__free(t);
		return -ENOMEM;
	}
	t->fd = fd;
	t->verify_name = ctx->verify_name;
	SSL_set_app_data(t->ssl, t);
	if (server)
		SSL_set_accept_state(t->ssl);
	else
		SSL_set_connect_state(t->ssl);
	*out = t;
	return 0;
}

int tc__tls_expect_peer(struct tc__tls *t, const char *hostport, char *err,
			size_t errlen)
{
	unsigned char ip[sizeof(struct in6_addr)];
	char host[256];
	uint16_t port;
	int rc;

	if (!t->verify_name)
		return 0;
	rc = tc__tcp_split(hostport, host, sizeof(host), &port, 0, err, errlen);
	if (rc < 0)
		return rc;
	snprintf(t->want, sizeof(t->want), "%s", host);
	ERR_clear_error();
	if (inet_pton(AF_INET, host, ip) == 1 ||
	    inet_pton(AF_INET6, host, ip) == 1) {
		/* An address: only a subjectAltName IP may match it. */
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl),
						  host) != 1)
			goto oom;
		return 0;
	}
	/* A name: "*.example" matches one whole label, never part of one. */
	SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (SSL_set1_host(t->ssl, host) != 1)
		goto oom;
	/* SNI, so a server behind one address can tell whom we want. */
	(void)SSL_set_tlsext_host_name(t->ssl, host);
	return 0;
oom:
	snprintf(err, errlen, "TLS: cannot set the expected name '%s'", host);
	return -ENOMEM;
}

void tc__tls_free(struct tc__tls *t)
{
	if (!t)
		return;
	SSL_free(t->ssl);
	tc__free(t);
}

static const char *peer_subject(struct tc__tls *t, char *buf, size_t len)
{
	X509 *x = SSL_get0_peer_certificate(t->ssl);

	buf[0] = '\0';
	if (x)
		name_str(X509_get_subject_name(x), buf, len);
	return buf;
}

/* Why the handshake failed, from OpenSSL's error queue and the
 * verification result. */
static int handshake_fail(struct tc__tls *t, int r, char *err, size_t errlen)
{
	int e = SSL_get_error(t->ssl, r);
	unsigned long q = ERR_peek_last_error();
	int reason = q ? ERR_GET_REASON(q) : 0;
	long vr = SSL_get_verify_result(t->ssl);
	char why[256], subj[256];

	if (e == SSL_ERROR_SYSCALL && !q) {
		if (r == 0 || errno == 0 || errno == ECONNRESET ||
		    errno == EPIPE) {
			snprintf(err, errlen,
				 "the peer closed the connection during the "
				 "TLS handshake (it refused our certificate, "
				 "or does not speak TLS: is TLS on at both "
				 "ends?)");
			return TC_ECLOSED;
		}
		snprintf(err, errlen, "TLS handshake: %s", strerror(errno));
		return -errno;
	}
	if (e == SSL_ERROR_ZERO_RETURN) {
		snprintf(err, errlen,
			 "the peer closed the connection during the TLS "
			 "handshake");
		return TC_ECLOSED;
	}
	ssl_errstr(why, sizeof(why));
	if (vr != X509_V_OK && reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
		peer_subject(t, subj, sizeof(subj));
		if (!subj[0])
			snprintf(subj, sizeof(subj), "%s", t->bad_subj);
		if (vr == X509_V_ERR_HOSTNAME_MISMATCH ||
		    vr == X509_V_ERR_IP_ADDRESS_MISMATCH) {
			snprintf(err, errlen,
				 "TLS: the peer's certificate%s%s%s does not "
				 "name %s '%s' that we connected to: it "
				 "holds %s (give the node a certificate with "
				 "subjectAltName %s:%s, connect by a name it "
				 "holds, or set tls_verify_name: off)",
				 subj[0] ? " (" : "", subj, subj[0] ? ")" : "",
				 vr == X509_V_ERR_IP_ADDRESS_MISMATCH ?
					 "the address" :
					 "the host",
				 t->want,
				 t->bad_names[0] ? t->bad_names :
						   "no name we could read",
				 vr == X509_V_ERR_IP_ADDRESS_MISMATCH ? "IP" :
									"DNS",
				 t->want);
			return TC_EPERM;
		}
		snprintf(err, errlen,
			 "TLS: the peer's certificate%s%s%s is refused: %s "
			 "(not signed by our tls_ca?)",
			 subj[0] ? " (" : "", subj, subj[0] ? ")" : "",
			 X509_verify_cert_error_string(vr));
		return TC_EPERM;
	}
	switch (reason) {
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
	case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
		snprintf(err, errlen,
			 "TLS: %s (%s): every cluster connection needs a "
			 "certificate from the cluster CA",
			 reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE ?
				 "the peer sent no certificate" :
				 "the peer wants a certificate we lack",
			 why);
		return TC_EPERM;
	case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
	case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
	case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
		snprintf(err, errlen,
			 "TLS: the peer refused our certificate (%s): is it "
			 "signed by the cluster's CA (and, where the peer "
			 "dialled us, does it name that address)? its log "
			 "says which",
			 why);
		return TC_EPERM;
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_HTTP_REQUEST:
	case SSL_R_HTTPS_PROXY_REQUEST:
	case SSL_R_PACKET_LENGTH_TOO_LONG:
	case SSL_R_UNKNOWN_PROTOCOL:
		snprintf(err, errlen,
			 "TLS handshake: %s: the peer does not speak TLS "
			 "(plaintext, or TLS off at its end)",
			 why[0] ? why : "not a TLS record");
		return TC_EPROTO;
	}
	snprintf(err, errlen, "TLS handshake: %s",
		 why[0] ? why : "failed (no reason given)");
	return TC_EPROTO;
}

int tc__tls_handshake_io(struct tc__tls *t, int *events, char *err,
			 size_t errlen)
{
	int r, e;

	*events = 0;
	ERR_clear_error();
	errno = 0;
	r = SSL_do_handshake(t->ssl);
	if (r == 1)
		return 0;
	e = SSL_get_error(t->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		*events = TC_EV_READ;
		return -EAGAIN;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		*events = TC_EV_WRITE;
		return -EAGAIN;
	}
	return handshake_fail(t, r, err, errlen);
}

int tc__tls_handshake_run(struct tc__tls *t, uint64_t deadline_ms, char *err,
			  size_t errlen)
{
	struct pollfd pfd = { .fd = t->fd };
	int fl = fcntl(t->fd, F_GETFL), ev, ret;

	if (fl < 0) {
		snprintf(err, errlen, "fcntl: %s", strerror(errno));
		return -errno;
	}
	/* Non-blocking for the handshake, so poll bounds each wait. */
	if (!(fl & O_NONBLOCK))
		fcntl(t->fd, F_SETFL, fl | O_NONBLOCK);
	for (;;) {
		uint64_t now;

		ret = tc__tls_handshake_io(t, &ev, err, errlen);
		if (ret != -EAGAIN)
			break;
		now = tc__now_ms();
		if (now >= deadline_ms) {
			snprintf(err, errlen,
				 "TLS handshake not finished within its "
				 "deadline (a stalled or silent peer)");
			ret = -ETIMEDOUT;
			break;
		}
		pfd.events = (short)((ev & TC_EV_READ ? POLLIN : 0) |
				     (ev & TC_EV_WRITE ? POLLOUT : 0));
		if (poll(&pfd, 1, (int)(deadline_ms - now)) < 0 &&
		    errno != EINTR) {
			ret = -errno;
			snprintf(err, errlen, "poll: %s", strerror(errno));
			break;
		}
	}
	if (!(fl & O_NONBLOCK))
		fcntl(t->fd, F_SETFL, fl);
	return ret;
}

/* After a failed SSL_read/SSL_write. */
static ssize_t io_fail(struct tc__tls *t, int r, int *events)
{
	int e = SSL_get_error(t->ssl, r);

	switch (e) {
	case SSL_ERROR_WANT_READ:
		*events = TC_EV_READ;
		return -EAGAIN;
	case SSL_ERROR_WANT_WRITE:
		*events = TC_EV_WRITE;
		return -EAGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		if (!ERR_peek_last_error())
			return errno ? -errno : 0;
		return TC_EPROTO;
	}
	return TC_EPROTO;
}

ssize_t tc__tls_send(struct tc__tls *t, const void *p, size_t n, int *events)
{
	size_t w = 0;
	int r;

	*events = 0;
	ERR_clear_error();
	errno = 0;
	r = SSL_write_ex(t->ssl, p, n, &w);
	if (r == 1)
		return (ssize_t)w;
	r = (int)io_fail(t, r, events);
	return r == 0 ? -EPIPE : r;
}

ssize_t tc__tls_recv(struct tc__tls *t, void *p, size_t n, int *events)
{
	size_t got = 0;
	int r;

	*events = 0;
	ERR_clear_error();
	errno = 0;
	r = SSL_read_ex(t->ssl, p, n, &got);
	if (r == 1)
		return (ssize_t)got;
	return io_fail(t, r, events);
}

size_t tc__tls_pending(const struct tc__tls *t)
{
	return t ? (size_t)SSL_pending(t->ssl) : 0;
}

bool tc__tls_ktls_send(const struct tc__tls *t)
{
	return BIO_get_ktls_send(SSL_get_wbio(t->ssl)) > 0;
}

static int send_all(struct tc__tls *t, const uint8_t *p, size_t n)
{
	int ev;

	while (n) {
		ssize_t r = tc__tls_send(t, p, n, &ev);

		if (r == -EAGAIN)
			return -ETIMEDOUT; /* SO_SNDTIMEO ran out */
		if (r == -EPIPE || r == -ECONNRESET)
			return TC_ECLOSED;
		if (r < 0)
			return (int)r;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int tc__tls_send_file(struct tc__tls *t, int fd, uint64_t off, uint64_t n)
{
	long pg = sysconf(_SC_PAGESIZE);

	if (tc__tls_ktls_send(t)) {
		while (n) {
			size_t want = n > SEND_WINDOW ? SEND_WINDOW : n;
			ossl_ssize_t r;

			ERR_clear_error();
			errno = 0;
			r = SSL_sendfile(t->ssl, fd, (off_t)off, want, 0);
			if (r <= 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					return -ETIMEDOUT;
				return errno == EPIPE || errno == ECONNRESET ?
					       TC_ECLOSED :
				       errno ? -errno :
					       TC_EPROTO;
			}
			off += (uint64_t)r;
			n -= (uint64_t)r;
		}
		return 0;
	}
	while (n) {
		uint64_t base = off & ~(uint64_t)(pg - 1);
		size_t lead = (size_t)(off - base);
		size_t want = n > SEND_WINDOW ? SEND_WINDOW : (size_t)n;
		void *m = mmap(NULL, lead + want, PROT_READ, MAP_SHARED, fd,
			       (off_t)base);
		int ret;

		if (m == MAP_FAILED)
			return -errno;
		ret = send_all(t, (const uint8_t *)m + lead, want);
		munmap(m, lead + want);
		if (ret < 0)
			return ret;
		off += want;
		n -= want;
	}
	return 0;
}

int tc__tls_binding(struct tc__tls *t, uint8_t out[32])
{
	static const char label[] = "EXPORTER-tcast-auth";

	if (SSL_export_keying_material(t->ssl, out, 32, label,
				       sizeof(label) - 1, NULL, 0, 0) != 1)
		return TC_EPROTO;
	return 0;
}

const char *tc__tls_describe(struct tc__tls *t)
{
	char subj[256];

	peer_subject(t, subj, sizeof(subj));
	snprintf(t->desc, sizeof(t->desc), "%s %s%s, peer %s",
		 SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl),
		 tc__tls_ktls_send(t) ? " (kernel TLS)" : "",
		 subj[0] ? subj : "?");
	return t->desc;
}
