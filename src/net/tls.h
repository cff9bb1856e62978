/*
 * tls.h - optional TLS (OpenSSL libssl) on the cluster's TCP connections.
 *
 * When a process is given tls_cert, tls_key and tls_ca, every cluster
 * connection it makes or accepts (daemon <-> global store, daemon <->
 * daemon, the CLI to either) is TLS 1.3 (1.2 at least) with mutual
 * certificate verification: each side must present a certificate that
 * chains to tls_ca, or the handshake fails and the reason is logged.  The
 * cluster handshake of net/auth.h (HMAC with the cluster secret) still
 * runs, inside TLS: TLS gives confidentiality, integrity and certificate
 * identity; the secret stays the check of cluster membership
 * (docs/cluster.md, Security).
 *
 * A client also checks that the server's certificate names the address
 * it meant to reach (tc__tls_expect_peer: subjectAltName DNS or IP, the
 * way a browser does), unless `tls_verify_name: off`.  A server cannot
 * know a client's name and checks only the chain.
 *
 * What this module does not do: revocation lists, session resumption (no
 * tickets are issued).
 *
 * Connections are driven like the plain ones: tc__tls_handshake_io() is
 * one non-blocking step for an event loop, tc__tls_handshake_run() the
 * whole handshake with a deadline for a blocking caller; tc__tls_send()
 * and tc__tls_recv() behave like send(2)/recv(2) on the fd's blocking
 * mode (-EAGAIN, with the events to wait for, where those would give
 * EAGAIN).  OpenSSL writes with write(2): a process that turns TLS on
 * ignores SIGPIPE (tc__tls_ctx_new does it).  Depends only on src/common,
 * net/tcp.h (HOST:PORT parsing) and OpenSSL.
 */
#ifndef TC_TLS_H
#define TC_TLS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The `tls` switch. */
enum tc_tls_mode {
	TC_TLS_AUTO = 0, /* on when tls_cert is set (the default) */
	TC_TLS_OFF = 1,	 /* off, whatever the files say */
	TC_TLS_ON = 2,	 /* on; tls_cert, tls_key and tls_ca required */
};

/* The settings, as the configs and flags give them.  Caller storage;
 * zeroed means TLS off. */
struct tc__tls_config {
	int mode;	     /* enum tc_tls_mode */
	char cert[PATH_MAX]; /* tls_cert: PEM certificate (chain) */
	char key[PATH_MAX];  /* tls_key: PEM private key */
	char ca[PATH_MAX];   /* tls_ca: PEM CA certificate(s) */
	int no_verify_name;  /* tls_verify_name: off; 0 (the default)
				means a client checks the server's
				certificate names the address it dialled */
};

struct tc__tls_ctx; /* a loaded configuration: certificate, key, CA */
struct tc__tls;	    /* one connection */

/* ---- configuration */

/* Apply one key of a config file or flag: `tls` (auto|on|off), `tls_cert`,
 * `tls_key`, `tls_ca` (an empty value clears a path), `tls_verify_name`
 * (on|off, also true|false, yes|no, 1|0).  Returns 1 when
 * `key` is one of them and was set, 0 when it is not a TLS key, TC_EINVAL
 * with `why` for a bad value. */
int tc__tls_config_set(struct tc__tls_config *c, const char *key,
		       const char *val, char *why, size_t whylen);
/* Whether these settings turn TLS on (files not checked yet). */
bool tc__tls_config_on(const struct tc__tls_config *c);
/* "auto", "on", "off". */
const char *tc__tls_mode_name(int mode);

/* Load the certificate, key and CA into a context.  TLS off: *out = NULL
 * and 0.  Otherwise every file is checked: it exists and is readable,
 * parses as PEM, the key is not readable by others and matches the
 * certificate, the certificate is within its validity period and chains
 * to the CA.  Returns 0, TC_EBADCONFIG (missing or bad file: `err` names
 * the file and what is wrong), TC_EPERM (a key others may read) or
 * -ENOMEM.  Thread-safe to share once made. */
int tc__tls_ctx_new(const struct tc__tls_config *c, struct tc__tls_ctx **out,
		    char *err, size_t errlen);
/* NULL is a no-op. */
void tc__tls_ctx_free(struct tc__tls_ctx *ctx);
/* Whether clients of this context check the server's name. */
bool tc__tls_ctx_verify_name(const struct tc__tls_ctx *ctx);
/* Subject of our own certificate (for logs).  Borrowed. */
const char *tc__tls_ctx_subject(const struct tc__tls_ctx *ctx);

/* ---- connections */

/* Wrap connected socket `fd` (borrowed: not closed by tc__tls_free), as
 * the server (accepting) or client side.  Returns 0 or -ENOMEM. */
int tc__tls_new(struct tc__tls_ctx *ctx, int fd, bool server,
		struct tc__tls **out);
/* Client side: the server's certificate must name the host of `hostport`
 * ("HOST:PORT", "[v6]:PORT"; the address we dialled), as a subjectAltName
 * IP when HOST is an IP address, else as a subjectAltName DNS name
 * (wildcards allowed, the subject's CN only when the certificate has no
 * DNS names).  A mismatch fails the handshake with TC_EPERM and an error
 * naming what we expected and what the certificate holds.  Call before
 * the handshake; a no-op when the context has tls_verify_name off.
 * Returns 0, TC_EINVAL (`err`: not HOST:PORT) or -ENOMEM. */
int tc__tls_expect_peer(struct tc__tls *t, const char *hostport, char *err,
			size_t errlen);
/* Free (no close_notify is sent: the cluster protocols frame their own
 * ends).  NULL is a no-op. */
void tc__tls_free(struct tc__tls *t);

/* One step of the handshake on a non-blocking fd.  Returns 0 once done,
 * -EAGAIN while waiting (*events gets TC_EV_READ and/or TC_EV_WRITE), or
 * the failure: TC_EPERM (the peer's certificate was refused, or it
 * refused ours), TC_EPROTO (not TLS, or a TLS error), TC_ECLOSED (the
 * peer hung up) or -errno; `err` says why. */
int tc__tls_handshake_io(struct tc__tls *t, int *events, char *err,
			 size_t errlen);
/* The whole handshake on a blocking or non-blocking fd, waiting in poll(2)
 * until `deadline_ms` (tc__now_ms clock).  Same returns, -ETIMEDOUT for a
 * peer that stalls; the fd's blocking mode is left as it was. */
int tc__tls_handshake_run(struct tc__tls *t, uint64_t deadline_ms, char *err,
			  size_t errlen);

/* Like send(2)/recv(2): bytes moved (> 0), 0 from recv at the peer's end,
 * -EAGAIN (*events: what to wait for; also what a blocking fd's
 * SO_RCVTIMEO/SO_SNDTIMEO gives), TC_EPROTO (a TLS error, `t` unusable)
 * or -errno.  send may move fewer than n bytes. */
ssize_t tc__tls_send(struct tc__tls *t, const void *p, size_t n, int *events);
ssize_t tc__tls_recv(struct tc__tls *t, void *p, size_t n, int *events);
/* Decrypted bytes buffered inside TLS that a poll on the fd cannot see:
 * an event loop reads again while this is > 0. */
size_t tc__tls_pending(const struct tc__tls *t);
/* Send n bytes of file `fd` from `off`: sendfile through kernel TLS when
 * the kernel and OpenSSL offer it, else SSL_write from a mapping of the
 * file (a window at a time).  Returns 0, -ETIMEDOUT, TC_ECLOSED,
 * TC_EPROTO or -errno. */
int tc__tls_send_file(struct tc__tls *t, int fd, uint64_t off, uint64_t n);
/* Whether sends go through kernel TLS (sendfile without a copy). */
bool tc__tls_ktls_send(const struct tc__tls *t);

/* 32 bytes of keying material exported from the session (label
 * "EXPORTER-tcast-auth"): the channel binding of net/auth.h.  Returns 0
 * or TC_EPROTO (no session yet). */
int tc__tls_binding(struct tc__tls *t, uint8_t out[32]);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384, peer CN=..." for logs.  Borrowed
 * until the next call on `t`. */
const char *tc__tls_describe(struct tc__tls *t);

#endif /* TC_TLS_H */
