/*
 * auth.h - the cluster handshake: every TCP connection between tcast
 * processes (daemon <-> global store, daemon <-> daemon) starts with it.
 *
 * Both ends prove that they know the cluster secret without sending it:
 *
 *   C -> S  HELLO     {version, role, key id, Nc, name}
 *   S -> C  CHALLENGE {version, role, Ns, name, HMAC(K, "tcast-s" || T)}
 *   C -> S  PROOF     {HMAC(K, "tcast-c" || T)}
 *   S -> C  OK        {}
 *
 * T is the HELLO body followed by the CHALLENGE body up to its MAC, so both
 * nonces (32 bytes each, getrandom), both roles and both names are bound.
 * Fresh nonces on both sides defeat replay; the per-direction labels stop
 * a client reflecting the server's own proof back.  The key id (8 bytes of
 * HMAC(K, "tcast-keyid")) lets a server that holds the active and the
 * previous secret (rotation) pick the one the client uses; it says nothing
 * useful about K.  MACs are compared with CRYPTO_memcmp.  A server that
 * fails a client closes without saying why (the reason goes to its log).
 *
 * On its own this is admission control only: no confidentiality and no
 * integrity after the handshake.  Over TLS (net/tls.h, tc__auth_io_tls)
 * both MACs also cover a TLS exporter value (RFC 5705/8446 keying material,
 * label "EXPORTER-tcast-auth"), so the proofs are bound to that TLS session
 * (docs/cluster.md, Security).
 *
 * The state machine does no I/O of its own (tc__auth_feed / tc__auth_output)
 * so an event loop, a blocking caller and a later TLS layer can all drive
 * it; tc__auth_io() and tc__auth_run() drive it over a socket (non-blocking
 * and blocking with a deadline).  Every message is length-prefixed with a
 * hard limit per field.  Depends only on src/common and OpenSSL libcrypto.
 */
#ifndef TC_AUTH_H
#define TC_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TC_AUTH_MAGIC	   0x31414354u /* "TCA1" on the wire */
#define TC_AUTH_VERSION	   1
#define TC_AUTH_HDR	   8	/* u32 magic, u8 type, u8 0, u16 body_len */
#define TC_AUTH_MAX_BODY   256	/* bytes of any handshake body */
#define TC_AUTH_NONCE	   32	/* bytes of each nonce */
#define TC_AUTH_MAC	   32	/* HMAC-SHA256 */
#define TC_AUTH_MAX_NAME   64	/* bytes of a node name in HELLO */
#define TC_AUTH_MIN_SECRET 32	/* bytes of a secret, at least */
#define TC_AUTH_MAX_SECRET 256	/* bytes of a secret, at most */
#define TC_AUTH_MAX_KEYS   2	/* active + previous (rotation) */
#define TC_AUTH_TIMEOUT_MS 5000 /* whole handshake, default */
#define TC_AUTH_TRANSCRIPT (2 * TC_AUTH_MAX_BODY)
#define TC_AUTH_BIND	   32 /* bytes of the TLS channel binding */

/* Handshake message types. */
enum tc_auth_type {
	TC_AUTH_HELLO = 1,
	TC_AUTH_CHALLENGE = 2,
	TC_AUTH_PROOF = 3,
	TC_AUTH_OK = 4,
};

/* Who is speaking (bound into the MACs; a server may insist on one). */
enum tc_auth_role {
	TC_AUTH_ROLE_ANY = 0,	 /* tc__auth_init_server: accept any role */
	TC_AUTH_ROLE_DAEMON = 1, /* a store daemon, to the global store */
	TC_AUTH_ROLE_GLOBAL = 2, /* the global store */
	TC_AUTH_ROLE_PEER = 3,	 /* a daemon's peer client or server */
	TC_AUTH_ROLE_TOOL = 4,	 /* the CLI, a benchmark */
	TC_AUTH_ROLE__MAX = 5,
};

/* The cluster secret(s).  keys[0] is the active one, keys[1] (when n == 2)
 * the previous one, still accepted while a cluster rotates. */
struct tc__auth_secret {
	int n; /* keys loaded, 1..2 */
	uint8_t key[TC_AUTH_MAX_KEYS][TC_AUTH_MAX_SECRET]; /* secret bytes */
	size_t len[TC_AUTH_MAX_KEYS];			   /* bytes of each */
	uint64_t id[TC_AUTH_MAX_KEYS];			   /* key ids */
};

/* A decoded handshake message (fuzzed: tests/fuzz/fuzz_auth.c). */
struct tc__auth_msg {
	uint8_t type;			 /* enum tc_auth_type */
	uint16_t version;		 /* HELLO, CHALLENGE */
	uint8_t role;			 /* HELLO, CHALLENGE */
	uint64_t key_id;		 /* HELLO */
	uint8_t nonce[TC_AUTH_NONCE];	 /* HELLO, CHALLENGE */
	char name[TC_AUTH_MAX_NAME + 1]; /* HELLO, CHALLENGE; NUL-terminated */
	uint8_t mac[TC_AUTH_MAC];	 /* CHALLENGE, PROOF */
	size_t mac_off;			 /* CHALLENGE: body bytes before mac */
};

enum tc_auth_state {
	TC_AUTH_S_SEND_HELLO,	  /* client */
	TC_AUTH_S_WAIT_HELLO,	  /* server */
	TC_AUTH_S_WAIT_CHALLENGE, /* client */
	TC_AUTH_S_WAIT_PROOF,	  /* server */
	TC_AUTH_S_WAIT_OK,	  /* client */
	TC_AUTH_S_DONE,		  /* authenticated; out may still hold OK */
	TC_AUTH_S_FAILED,	  /* err says why */
};

/*
 * One handshake.  Caller storage; tc__auth_init_* fills it; nothing to
 * release (tc__auth_wipe clears the transcript).  Invariants: in[0..in_len)
 * is the part of the current message received so far and never exceeds
 * TC_AUTH_HDR + TC_AUTH_MAX_BODY; out[out_off..out_len) is unsent.
 */
struct tc__auth {
	bool server;			      /* which side we are */
	int state;			      /* enum tc_auth_state */
	uint8_t role;			      /* our role */
	uint8_t want_role;		      /* server: required peer role */
	const struct tc__auth_secret *sec;    /* borrowed */
	int key;			      /* index into sec chosen for T */
	char name[TC_AUTH_MAX_NAME + 1];      /* our name */
	char peer_name[TC_AUTH_MAX_NAME + 1]; /* theirs, once known */
	uint8_t peer_role;		      /* theirs, once known */
	uint8_t nonce[TC_AUTH_NONCE];	      /* ours */
	uint8_t tr[TC_AUTH_TRANSCRIPT];	      /* T so far */
	size_t tr_len;
	uint8_t in[TC_AUTH_HDR + TC_AUTH_MAX_BODY]; /* message being read */
	size_t in_len;
	uint8_t out[TC_AUTH_HDR + TC_AUTH_MAX_BODY]; /* messages to send */
	size_t out_len, out_off;
	uint8_t bind[TC_AUTH_BIND]; /* TLS exporter value (tc__auth_io_tls) */
	bool bound;		    /* bind is set: MACs cover it */
	uint64_t deadline_ms;	    /* tc__now_ms() clock */
	int error;		    /* the failure code, once FAILED */
	char err[256];		    /* why it failed (for the log) */
};

/* ---- the secret file */

/* Load the secret file: a regular file (not a symlink) owned by us, mode
 * 0600 or stricter, holding one secret per line (the active one, then
 * optionally the previous one), each 32..256 bytes after the trailing
 * newline is removed.  `openssl rand -hex 32` makes a good one.  Returns 0,
 * TC_EPERM (mode or owner), TC_EBADCONFIG (content) or -errno; `err` names
 * the file and the reason. */
int tc__auth_load_secret(const char *path, struct tc__auth_secret *out,
			 char *err, size_t errlen);
/* Build a secret from bytes (tests, tools).  Returns 0 or TC_EINVAL. */
int tc__auth_secret_set(struct tc__auth_secret *s, int idx, const void *key,
			size_t len);
/* Zero the secret's memory. */
void tc__auth_secret_wipe(struct tc__auth_secret *s);

/* ---- the state machine */

/* Start a client (`sec` borrowed until the handshake ends; `name` is cut
 * to TC_AUTH_MAX_NAME bytes).  `timeout_ms` 0 means TC_AUTH_TIMEOUT_MS.
 * Returns 0 or -errno from getrandom. */
int tc__auth_init_client(struct tc__auth *a, const struct tc__auth_secret *sec,
			 int role, const char *name, int timeout_ms);
/* Start a server; `want_role` TC_AUTH_ROLE_ANY accepts any peer role. */
int tc__auth_init_server(struct tc__auth *a, const struct tc__auth_secret *sec,
			 int role, int want_role, const char *name,
			 int timeout_ms);
/* Bytes the machine needs before it can move (0 when done or failed).  A
 * caller reads at most this many, so no byte after the handshake is
 * consumed. */
size_t tc__auth_need(const struct tc__auth *a);
/* Hand the machine `n` received bytes (n <= tc__auth_need()).  Returns 0
 * (go on), or the failure code (the machine is FAILED, `err` says why). */
int tc__auth_feed(struct tc__auth *a, const uint8_t *p, size_t n);
/* Bytes waiting to be sent: *p and the count (0 when none). */
size_t tc__auth_output(const struct tc__auth *a, const uint8_t **p);
/* `n` of those bytes went out. */
void tc__auth_sent(struct tc__auth *a, size_t n);
/* Authenticated and nothing left to send. */
bool tc__auth_done(const struct tc__auth *a);
/* The deadline passed (a stalled peer): marks the machine FAILED. */
bool tc__auth_expired(struct tc__auth *a, uint64_t now_ms);
/* Clear nonces and transcript (call after done or failure). */
void tc__auth_wipe(struct tc__auth *a);

/* ---- driving it over a socket */

/* One non-blocking step on `fd` (MSG_DONTWAIT, so the fd may be either
 * kind): send what is pending, read what is needed.  Returns 0 when
 * authenticated, -EAGAIN while waiting (*events gets TC_EV_READ and/or
 * TC_EV_WRITE, the ev.h masks, to wait for), or the failure code: TC_EPERM
 * (wrong secret or role), TC_EPROTO (garbage), TC_EVERSION, TC_ECLOSED
 * (the peer hung up), -ETIMEDOUT, or -errno; `err` says why. */
int tc__auth_io(struct tc__auth *a, int fd, int *events);
/* The whole handshake on `fd`, waiting in poll(2) until it ends or its
 * deadline passes.  Same returns as tc__auth_io, never -EAGAIN. */
int tc__auth_run(struct tc__auth *a, int fd);

/* The same over TLS (net/tls.h; NULL: plain, as above), once its own
 * handshake is done.  tc__auth_io_tls needs a non-blocking fd;
 * tc__auth_run_tls makes the fd non-blocking for the handshake and
 * restores it. */
struct tc__tls;
int tc__auth_io_tls(struct tc__auth *a, int fd, struct tc__tls *tls,
		    int *events);
int tc__auth_run_tls(struct tc__auth *a, int fd, struct tc__tls *tls);

/* Decode one whole message (header + body, `n` bytes).  Returns 0,
 * TC_EPROTO, TC_EVERSION or TC_ELIMIT; `err` says which field. */
int tc__auth_decode(const uint8_t *p, size_t n, struct tc__auth_msg *m,
		    char *err, size_t errlen);
/* Name of a role ("daemon") or "?". */
const char *tc__auth_role_name(int role);

#endif /* TC_AUTH_H */
