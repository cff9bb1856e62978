/*
 * test_tls.c - src/net/tls: the TLS settings, loading them, and real
 * handshakes over a socket pair.
 *
 * A throwaway CA, certificates signed by it and a rogue CA with one of
 * its own are made with the openssl CLI in a private folder.  Both ends
 * run in one thread over a non-blocking socket pair, each stepped until
 * it stops asking to wait: a good pair completes TLS and then the cluster
 * handshake inside it and moves bytes; a rogue certificate, a peer
 * without TLS and plaintext bytes are refused, each with its reason; bad
 * files are refused at load time naming the file; a client refuses a
 * server whose certificate does not name the host or address it dialled.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#include "net/auth.h"
#include "net/ev.h"
#include "net/tls.h"
#include "tcast/errors.h"
#include "tlib.h"

static char *dir;

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	assert_int_equal(system(cmd), 0);
}

static int setup(void **state)
{
	dir = t_tmpdir();
	sh("cd %s && for c in ca rogue; do openssl req -x509 -newkey ec "
	   "-pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $c.key -out "
	   "$c.crt -days 2 -subj /CN=$c 2>/dev/null || exit 1; done && "
	   "for n in a:ca b:ca r:rogue; do l=${n%%:*}; c=${n#*:}; "
	   "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	   "-nodes -keyout $l.key -out $l.csr -subj /CN=node-$l 2>/dev/null "
	   "&& openssl x509 -req -in $l.csr -CA $c.crt -CAkey $c.key "
	   "-CAcreateserial -days 1 -out $l.crt 2>/dev/null || exit 1; done "
	   "&& cat ca.crt rogue.crt >both.crt && chmod 600 *.key",
	   dir);
	/* n: a certificate with subjectAltNames, as a node would have */
	sh("cd %s && openssl req -new -newkey ec -pkeyopt "
	   "ec_paramgen_curve:P-256 -nodes -keyout n.key -out n.csr -subj "
	   "/CN=node-n 2>/dev/null && printf 'subjectAltName=DNS:node-n,"
	   "DNS:*.ok.test,IP:127.0.0.1,IP:::1\\n' >n.ext && openssl x509 "
	   "-req -in n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 "
	   "-extfile n.ext -out n.crt 2>/dev/null && chmod 600 n.key",
	   dir);
	return 0;
}

static int teardown(void **state)
{
	t_rmtree(dir);
	free(dir);
	return 0;
}

static void cfg(struct tc__tls_config *c, const char *cert, const char *ca)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->cert, sizeof(c->cert), "%s/%s.crt", dir, cert);
	snprintf(c->key, sizeof(c->key), "%s/%s.key", dir, cert);
	snprintf(c->ca, sizeof(c->ca), "%s/%s.crt", dir, ca);
}

static struct tc__tls_ctx *ctx_of(const char *cert, const char *ca)
{
	struct tc__tls_config c;
	struct tc__tls_ctx *x = NULL;
	char err[512];

	cfg(&c, cert, ca);
	assert_int_equal(tc__tls_ctx_new(&c, &x, err, sizeof(err)), 0);
	assert_non_null(x);
	return x;
}

static void test_tls__config(void **state)
{
	struct tc__tls_config c = { 0 };
	char why[256], big[PATH_MAX + 8];

	assert_false(tc__tls_config_on(&c));
	assert_int_equal(
		tc__tls_config_set(&c, "listen", "x:1", why, sizeof(why)), 0);
	assert_int_equal(
		tc__tls_config_set(&c, "tls_cert", "/c", why, sizeof(why)), 1);
	assert_true(tc__tls_config_on(&c)); /* auto: on with a cert */
	assert_int_equal(tc__tls_config_set(&c, "tls", "off", why, sizeof(why)),
			 1);
	assert_false(tc__tls_config_on(&c));
	assert_string_equal(tc__tls_mode_name(c.mode), "off");
	assert_int_equal(
		tc__tls_config_set(&c, "tls", "required", why, sizeof(why)), 1);
	assert_int_equal(c.mode, TC_TLS_ON);
	assert_int_equal(
		tc__tls_config_set(&c, "tls", "auto", why, sizeof(why)), 1);
	assert_int_equal(c.mode, TC_TLS_AUTO);
	assert_int_equal(tc__tls_config_set(&c, "tls", "yes", why, sizeof(why)),
			 TC_EINVAL);
	assert_non_null(strstr(why, "expected on, off or auto"));
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(tc__tls_config_set(&c, "tls_ca", big, why,
					    sizeof(why)),
			 TC_EINVAL);
	assert_non_null(strstr(why, "path longer than"));
	/* an empty value clears a path: auto is off again */
	assert_int_equal(
		tc__tls_config_set(&c, "tls_cert", "", why, sizeof(why)), 1);
	assert_false(tc__tls_config_on(&c));
	/* on without files */
	c.mode = TC_TLS_ON;
	assert_true(tc__tls_config_on(&c));
	/* the name check: on unless turned off */
	assert_int_equal(c.no_verify_name, 0);
	assert_int_equal(tc__tls_config_set(&c, "tls_verify_name", "off", why,
					    sizeof(why)),
			 1);
	assert_int_equal(c.no_verify_name, 1);
	assert_int_equal(tc__tls_config_set(&c, "tls_verify_name", "true", why,
					    sizeof(why)),
			 1);
	assert_int_equal(c.no_verify_name, 0);
	assert_int_equal(tc__tls_config_set(&c, "tls_verify_name", "false", why,
					    sizeof(why)),
			 1);
	assert_int_equal(c.no_verify_name, 1);
	assert_int_equal(tc__tls_config_set(&c, "tls_verify_name", "maybe", why,
					    sizeof(why)),
			 TC_EINVAL);
	assert_non_null(strstr(why, "'maybe': expected on or off"));
	assert_int_equal(c.no_verify_name, 1);
}

static void load_fails(struct tc__tls_config *c, int code, const char *want)
{
	struct tc__tls_ctx *x = (void *)1;
	char err[1024] = "";

	int ret = tc__tls_ctx_new(c, &x, err, sizeof(err));

	if (ret != code)
		fail_msg("got %d (%s), want %d", ret, err, code);
	assert_null(x);
	if (!strstr(err, want))
		fail_msg("'%s' not in '%s'", want, err);
}

static void test_tls__load(void **state)
{
	struct tc__tls_config c = { 0 };
	struct tc__tls_ctx *x = (void *)1;
	char err[1024], want[PATH_MAX + 64];

	/* off: no context, no error */
	assert_int_equal(tc__tls_ctx_new(&c, &x, err, sizeof(err)), 0);
	assert_null(x);
	c.mode = TC_TLS_ON;
	load_fails(&c, TC_EBADCONFIG, "tls_cert tls_key tls_ca missing");
	cfg(&c, "a", "ca");
	x = ctx_of("a", "ca");
	assert_string_equal(tc__tls_ctx_subject(x), "CN = node-a");
	tc__tls_ctx_free(x);
	tc__tls_ctx_free(NULL);

	cfg(&c, "a", "none");
	snprintf(want, sizeof(want), "tls_ca '%s/none.crt': cannot open", dir);
	load_fails(&c, TC_EBADCONFIG, want);
	cfg(&c, "a", "ca");
	snprintf(c.cert, sizeof(c.cert), "%s/a.csr", dir);
	load_fails(&c, TC_EBADCONFIG, "not a PEM certificate");
	cfg(&c, "a", "ca");
	snprintf(c.key, sizeof(c.key), "%s/b.key", dir);
	load_fails(&c, TC_EBADCONFIG, "is not the key of tls_cert");
	cfg(&c, "a", "ca");
	sh("cd %s && cp a.crt notkey.pem && chmod 600 notkey.pem", dir);
	snprintf(c.key, sizeof(c.key), "%s/notkey.pem", dir);
	load_fails(&c, TC_EBADCONFIG, "not a PEM private key");
	cfg(&c, "a", "ca");
	snprintf(c.ca, sizeof(c.ca), "%s/a.key", dir);
	load_fails(&c, TC_EBADCONFIG, "not a PEM CA certificate");
	/* our own certificate must chain to the CA we demand of peers */
	cfg(&c, "r", "ca");
	load_fails(&c, TC_EBADCONFIG, "does not verify against tls_ca");
	/* a key others may read */
	cfg(&c, "a", "ca");
	chmod(c.key, 0644);
	load_fails(&c, TC_EPERM, "anyone may read the private key");
	chmod(c.key, 0600);
	/* a folder is not a file */
	cfg(&c, "a", "ca");
	snprintf(c.ca, sizeof(c.ca), "%s", dir);
	load_fails(&c, TC_EBADCONFIG, "is not a regular file");
}

/* Step both ends' TLS handshakes until neither waits; returns through
 * *rs and *rc. */
static void both(struct tc__tls *s, struct tc__tls *c, int *rs, int *rc,
		 char *es, char *ec)
{
	int ev;

	*rs = *rc = -EAGAIN;
	for (int i = 0; i < 100 && (*rs == -EAGAIN || *rc == -EAGAIN); i++) {
		if (*rc == -EAGAIN)
			*rc = tc__tls_handshake_io(c, &ev, ec, 512);
		if (*rs == -EAGAIN)
			*rs = tc__tls_handshake_io(s, &ev, es, 512);
	}
}

static void pair(int sv[2])
{
	assert_int_equal(
		socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
}

static void test_tls__handshake_and_auth(void **state)
{
	struct tc__tls_ctx *xa = ctx_of("a", "ca"), *xb = ctx_of("b", "ca");
	struct tc__tls *s, *c;
	struct tc__auth_secret sec = { 0 };
	struct tc__auth as, ac;
	static const char K[] = "0123456789abcdef0123456789abcdef-tls";
	char es[512], ec[512], buf[64];
	int sv[2], rs, rc, ev;

	pair(sv);
	assert_int_equal(tc__tls_new(xa, sv[0], true, &s), 0);
	assert_int_equal(tc__tls_new(xb, sv[1], false, &c), 0);
	both(s, c, &rs, &rc, es, ec);
	assert_int_equal(rs, 0);
	assert_int_equal(rc, 0);
	assert_non_null(strstr(tc__tls_describe(s), "CN = node-b"));
	assert_non_null(strstr(tc__tls_describe(c), "CN = node-a"));
	assert_non_null(strstr(tc__tls_describe(c), "TLSv1.3"));

	/* the cluster handshake, inside TLS */
	assert_int_equal(tc__auth_secret_set(&sec, 0, K, strlen(K)), 0);
	assert_int_equal(tc__auth_init_server(&as, &sec, TC_AUTH_ROLE_GLOBAL,
					      TC_AUTH_ROLE_ANY, "g", 2000),
			 0);
	assert_int_equal(tc__auth_init_client(&ac, &sec, TC_AUTH_ROLE_DAEMON,
					      "d", 2000),
			 0);
	rs = rc = -EAGAIN;
	for (int i = 0; i < 100 && (rs == -EAGAIN || rc == -EAGAIN); i++) {
		if (rc == -EAGAIN)
			rc = tc__auth_io_tls(&ac, sv[1], c, &ev);
		if (rs == -EAGAIN)
			rs = tc__auth_io_tls(&as, sv[0], s, &ev);
	}
	assert_int_equal(rc, 0);
	assert_int_equal(rs, 0);
	assert_string_equal(as.peer_name, "d");

	/* bytes both ways; none readable before they are sent */
	assert_int_equal(tc__tls_recv(s, buf, sizeof(buf), &ev), -EAGAIN);
	assert_int_equal(ev, TC_EV_READ);
	assert_int_equal(tc__tls_send(c, "hello", 5, &ev), 5);
	assert_int_equal(tc__tls_recv(s, buf, 2, &ev), 2);
	assert_memory_equal(buf, "he", 2);
	/* the rest of the record waits inside TLS, invisible to poll */
	assert_int_equal(tc__tls_pending(s), 3);
	assert_int_equal(tc__tls_recv(s, buf, sizeof(buf), &ev), 3);
	assert_memory_equal(buf, "llo", 3);
	assert_int_equal(tc__tls_pending(s), 0);
	/* the peer's end is 0, like recv(2) */
	tc__tls_free(c);
	close(sv[1]);
	assert_int_equal(tc__tls_recv(s, buf, sizeof(buf), &ev), 0);
	tc__tls_free(s);
	close(sv[0]);
	tc__tls_ctx_free(xa);
	tc__tls_ctx_free(xb);
}

/* Copy what one TLS end received to another (a relay). */
static void relay(struct tc__tls *from, struct tc__tls *to)
{
	uint8_t buf[1024];
	ssize_t n;
	int ev;

	while ((n = tc__tls_recv(from, buf, sizeof(buf), &ev)) > 0)
		assert_int_equal(tc__tls_send(to, buf, (size_t)n, &ev), n);
}

static void test_tls__binding(void **state)
{
	struct tc__tls_ctx *xa = ctx_of("a", "ca"), *xb = ctx_of("b", "ca");
	struct tc__tls *c, *r1, *r2, *s;
	struct tc__auth_secret sec = { 0 };
	struct tc__auth as, ac;
	static const char K[] = "0123456789abcdef0123456789abcdef-tls";
	char es[512], ec[512];
	int p1[2], p2[2], rs, rc, ev;

	/* client <-TLS-> relay <-TLS-> server; the relay holds certificates
	 * of the CA but not the secret, and passes the cluster handshake's
	 * bytes on.  The proofs are bound to each TLS session: refused. */
	pair(p1);
	pair(p2);
	assert_int_equal(tc__tls_new(xb, p1[0], false, &c), 0);
	assert_int_equal(tc__tls_new(xa, p1[1], true, &r1), 0);
	assert_int_equal(tc__tls_new(xa, p2[0], false, &r2), 0);
	assert_int_equal(tc__tls_new(xb, p2[1], true, &s), 0);
	both(r1, c, &rs, &rc, es, ec);
	assert_int_equal(rs + rc, 0);
	both(s, r2, &rs, &rc, es, ec);
	assert_int_equal(rs + rc, 0);
	assert_int_equal(tc__auth_secret_set(&sec, 0, K, strlen(K)), 0);
	assert_int_equal(tc__auth_init_server(&as, &sec, TC_AUTH_ROLE_GLOBAL,
					      TC_AUTH_ROLE_ANY, "g", 2000),
			 0);
	assert_int_equal(tc__auth_init_client(&ac, &sec, TC_AUTH_ROLE_DAEMON,
					      "d", 2000),
			 0);
	rs = rc = -EAGAIN;
	for (int i = 0; i < 50 && rs == -EAGAIN && rc == -EAGAIN; i++) {
		rc = tc__auth_io_tls(&ac, p1[0], c, &ev);
		relay(r1, r2);
		rs = tc__auth_io_tls(&as, p2[1], s, &ev);
		relay(r2, r1);
	}
	assert_int_equal(rc, TC_EPERM);
	assert_non_null(strstr(ac.err, "could not prove it knows the "
				       "cluster secret"));
	tc__tls_free(c);
	tc__tls_free(r1);
	tc__tls_free(r2);
	tc__tls_free(s);
	for (int i = 0; i < 2; i++) {
		close(p1[i]);
		close(p2[i]);
	}
	tc__tls_ctx_free(xa);
	tc__tls_ctx_free(xb);
}

static void test_tls__rogue(void **state)
{
	struct tc__tls_ctx *xa = ctx_of("a", "ca"), *xr = ctx_of("r", "both");
	struct tc__tls *s, *c;
	char es[512] = "", ec[512] = "";
	int sv[2], rs, rc;

	/* a client whose certificate another CA signed: the server refuses
	 * it, naming it */
	pair(sv);
	assert_int_equal(tc__tls_new(xa, sv[0], true, &s), 0);
	assert_int_equal(tc__tls_new(xr, sv[1], false, &c), 0);
	both(s, c, &rs, &rc, es, ec);
	assert_int_equal(rs, TC_EPERM);
	assert_non_null(strstr(es, "the peer's certificate (CN = node-r) is "
				   "refused"));
	tc__tls_free(s);
	tc__tls_free(c);
	close(sv[0]);
	close(sv[1]);

	/* the other way round: the client refuses the server's */
	pair(sv);
	assert_int_equal(tc__tls_new(xr, sv[0], true, &s), 0);
	assert_int_equal(tc__tls_new(xa, sv[1], false, &c), 0);
	both(s, c, &rs, &rc, es, ec);
	assert_int_equal(rc, TC_EPERM);
	assert_non_null(strstr(ec, "(CN = node-r) is refused"));
	assert_int_equal(rs, TC_EPERM);
	assert_non_null(strstr(es, "the peer refused our certificate"));
	tc__tls_free(s);
	tc__tls_free(c);
	close(sv[0]);
	close(sv[1]);
	tc__tls_ctx_free(xa);
	tc__tls_ctx_free(xr);
}

static void test_tls__plaintext(void **state)
{
	struct tc__tls_ctx *xa = ctx_of("a", "ca");
	struct tc__auth_secret sec = { 0 };
	static const char K[] = "0123456789abcdef0123456789abcdef-tls";
	struct tc__tls *s, *c;
	struct tc__auth ac;
	char es[512] = "";
	int sv[2], rs, ev;

	/* a plain cluster client (HELLO in the clear) to a TLS server */
	pair(sv);
	assert_int_equal(tc__tls_new(xa, sv[0], true, &s), 0);
	assert_int_equal(tc__auth_secret_set(&sec, 0, K, strlen(K)), 0);
	assert_int_equal(tc__auth_init_client(&ac, &sec, TC_AUTH_ROLE_DAEMON,
					      "d", 2000),
			 0);
	assert_int_equal(tc__auth_io(&ac, sv[1], &ev), -EAGAIN);
	rs = tc__tls_handshake_io(s, &ev, es, sizeof(es));
	assert_int_equal(rs, TC_EPROTO);
	assert_non_null(strstr(es, "the peer does not speak TLS"));
	tc__tls_free(s);
	close(sv[0]);
	close(sv[1]);

	/* a TLS client to a plain server: its ClientHello is named */
	pair(sv);
	assert_int_equal(tc__tls_new(xa, sv[1], false, &c), 0);
	assert_int_equal(tc__tls_handshake_io(c, &ev, es, sizeof(es)), -EAGAIN);
	{
		struct tc__auth as;

		assert_int_equal(
			tc__auth_init_server(&as, &sec, TC_AUTH_ROLE_GLOBAL,
					     TC_AUTH_ROLE_ANY, "g", 2000),
			0);
		assert_int_equal(tc__auth_io(&as, sv[0], &ev), TC_EPROTO);
		assert_non_null(strstr(as.err, "the peer speaks TLS"));
	}
	tc__tls_free(c);
	close(sv[0]);
	close(sv[1]);

	/* a silent peer: the blocking driver gives up at its deadline */
	pair(sv);
	assert_int_equal(tc__tls_new(xa, sv[0], true, &s), 0);
	assert_int_equal(tc__tls_handshake_run(s, tc__now_ms() + 200, es,
					       sizeof(es)),
			 -ETIMEDOUT);
	assert_non_null(strstr(es, "not finished within its deadline"));
	tc__tls_free(s);
	close(sv[0]);
	close(sv[1]);
	tc__tls_ctx_free(xa);
}

/* A client of `client` dialling `hostport` (the name it expects) meets a
 * server with certificate `cert`: returns the client's result, its error
 * in `ec`, the server's result in *rs. */
static int dial(struct tc__tls_ctx *client, const char *cert,
		const char *hostport, char *ec, int *rs)
{
	struct tc__tls_ctx *xs = ctx_of(cert, "ca");
	struct tc__tls *s, *c;
	char es[512] = "";
	int sv[2], rc;

	ec[0] = '\0';
	pair(sv);
	assert_int_equal(tc__tls_new(xs, sv[0], true, &s), 0);
	assert_int_equal(tc__tls_new(client, sv[1], false, &c), 0);
	assert_int_equal(tc__tls_expect_peer(c, hostport, ec, 512), 0);
	both(s, c, rs, &rc, es, ec);
	tc__tls_free(s);
	tc__tls_free(c);
	close(sv[0]);
	close(sv[1]);
	tc__tls_ctx_free(xs);
	return rc;
}

static void test_tls__peer_name(void **state)
{
	struct tc__tls_ctx *xb = ctx_of("b", "ca"), *off;
	struct tc__tls_config c;
	struct tc__tls *t;
	char ec[512], err[512];
	int rs, sv[2];

	assert_true(tc__tls_ctx_verify_name(xb));
	/* the names the certificate holds, and only those */
	assert_int_equal(dial(xb, "n", "node-n:7070", ec, &rs), 0);
	assert_int_equal(rs, 0);
	assert_int_equal(dial(xb, "n", "127.0.0.1:7070", ec, &rs), 0);
	assert_int_equal(dial(xb, "n", "[::1]:7070", ec, &rs), 0);
	assert_int_equal(dial(xb, "n", "x.ok.test:7070", ec, &rs), 0);
	assert_int_equal(dial(xb, "n", "NODE-N:7070", ec, &rs), 0);

	/* another host name: refused by the client, naming both */
	assert_int_equal(dial(xb, "n", "node-z:7070", ec, &rs), TC_EPERM);
	if (!strstr(ec, "(CN = node-n) does not name the host 'node-z' "
			"that we connected to: it holds DNS:node-n, "
			"DNS:*.ok.test, IP:127.0.0.1, IP:::1"))
		fail_msg("got '%s'", ec);
	assert_non_null(strstr(ec, "tls_verify_name: off"));
	/* and the server learns its certificate was refused */
	assert_int_equal(rs, TC_EPERM);
	/* a wildcard covers one label, not two, nor part of one */
	assert_int_equal(dial(xb, "n", "a.b.ok.test:1", ec, &rs), TC_EPERM);
	assert_int_equal(dial(xb, "n", "node-nx:1", ec, &rs), TC_EPERM);
	/* another address: only a subjectAltName IP matches an address */
	assert_int_equal(dial(xb, "n", "10.0.0.12:7070", ec, &rs), TC_EPERM);
	if (!strstr(ec, "does not name the address '10.0.0.12' that we "
			"connected to") ||
	    !strstr(ec, "subjectAltName IP:10.0.0.12"))
		fail_msg("got '%s'", ec);
	/* no subjectAltName at all: the CN stands in for a host name (as
	 * OpenSSL and browsers of old did), never for an address */
	assert_int_equal(dial(xb, "a", "node-a:1", ec, &rs), 0);
	assert_int_equal(dial(xb, "a", "127.0.0.1:1", ec, &rs), TC_EPERM);
	assert_non_null(strstr(ec, "it holds no subjectAltName"));

	/* tls_verify_name: off: any certificate of the CA, from anywhere */
	cfg(&c, "b", "ca");
	c.no_verify_name = 1;
	assert_int_equal(tc__tls_ctx_new(&c, &off, err, sizeof(err)), 0);
	assert_false(tc__tls_ctx_verify_name(off));
	assert_int_equal(dial(off, "n", "node-z:7070", ec, &rs), 0);
	assert_int_equal(rs, 0);

	/* not HOST:PORT: said before any byte moves */
	pair(sv);
	assert_int_equal(tc__tls_new(xb, sv[1], false, &t), 0);
	assert_int_equal(tc__tls_expect_peer(t, "node-n", err, sizeof(err)),
			 TC_EINVAL);
	assert_non_null(strstr(err, "expected HOST:PORT"));
	tc__tls_free(t);
	close(sv[0]);
	close(sv[1]);
	tc__tls_ctx_free(off);
	tc__tls_ctx_free(xb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tls__config),
		cmocka_unit_test(test_tls__load),
		cmocka_unit_test(test_tls__handshake_and_auth),
		cmocka_unit_test(test_tls__binding),
		cmocka_unit_test(test_tls__rogue),
		cmocka_unit_test(test_tls__plaintext),
		cmocka_unit_test(test_tls__peer_name),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
