/*
 * tlib.h - helpers for tcast's C tests: temporary directories, a real
 * daemon on a private socket, a raw protocol client for hostile frames,
 * SHA-256, fd counting.
 */
#ifndef TC_TLIB_H
#define TC_TLIB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "proto/proto.h"
#include "tcast/client.h"

/* A private directory (mkdtemp); removed recursively by t_rmtree. */
char *t_tmpdir(void);
void t_rmtree(const char *path);

struct t_daemon {
	pid_t pid;
	char dir[256];
	char sock[300];
};

/* Start `tcast daemon run` on dir/d.sock with extra "--set k=v" style
 * arguments (NULL-terminated), wait until it accepts.  Aborts the test
 * process on failure. */
void t_daemon_start(struct t_daemon *d, const char *host_memory, ...);
/* The same run as `uid` (the caller is root), in a folder of that uid
 * under /tmp. */
void t_daemon_start_as(struct t_daemon *d, uid_t uid, const char *host_memory,
		       ...);
/* t_daemon_start again in d's directory (the same socket, log and state
 * folder), after a stop or a kill. */
void t_daemon_restart(struct t_daemon *d, const char *host_memory, ...);
/* SIGTERM and wait; returns the exit status. */
int t_daemon_stop(struct t_daemon *d);

/* Raw protocol: connect (no HELLO), send a frame, read a frame. */
int t_raw_connect(const char *sock);
int t_raw_hello(int fd);
int t_raw_send(int fd, int type, uint32_t req_id, const void *body, size_t len,
	       const int *fds, int nfds);
/* Reads one frame; body malloc'd into *body.  Returns 0, or -1 on EOF. */
int t_raw_recv(int fd, struct tc__frame_hdr *h, uint8_t **body, int *fds,
	       int *nfds);

/* Connect to the daemon at `sock`, or fail the running cmocka test. */
tc_client *t_connect(const char *sock);
/* Open fds of process `pid` (-1 if it cannot be read). */
int t_count_fds_of(pid_t pid);
/* The daemon's open fds once its count has held still for 50 ms (at most
 * 2 s): a reply's fd is the daemon's own dup, closed just after sendmsg
 * returns, so a client that reads the count right after its reply can see
 * one more than there is. */
int t_daemon_fds(pid_t pid);
/* One line from fd (without its newline) into buf, NUL-terminated. */
void t_read_line(int fd, char *buf, size_t len);
/* Wait for pid: its exit status, or 128 + the signal that killed it. */
int t_wait_status(pid_t pid);
/*
 * Run this test binary again as "--child ARGS..." (args NULL-terminated),
 * with env applied in the child only ("NAME=value" sets, "-NAME" unsets).
 * stdout_fd, if >= 0, becomes the child's stdout; keep_fd, if >= 0, stays
 * open across exec.  The child dies with the calling thread.  A fresh exec,
 * not a bare fork: CUDA cannot be used in a child forked after the driver
 * was initialised.  Returns the child's pid or -errno.
 */
pid_t t_spawn_self(const char *const args[], const char *const env[],
		   int stdout_fd, int keep_fd);
/* CLOCK_MONOTONIC in milliseconds. */
double t_now_ms(void);

void t_sha256_hex(const void *p, size_t n, char out[65]);
/* Open fds of this process. */
int t_count_fds(void);
/* Path of a test data file. */
const char *t_data(const char *rel);
/* Read a whole file (malloc'd). */
char *t_slurp(const char *path, size_t *len);

/* The daemon's STATUS document (owned: json_decref), or fail the running
 * cmocka test with the client's message. */
json_t *t_status(tc_client *c);
/* One integer field of STATUS (0 when absent). */
long long t_status_int(tc_client *c, const char *field);

/* Put one U8 tensor "x" of `bytes` bytes of `fill` with options o (NULL:
 * none); the id into `id` when not NULL.  Returns tc_put_begin's or
 * tc_put_commit's code. */
int t_put_fill(tc_client *c, const struct tc_opts *o, uint8_t fill,
	       uint64_t bytes, char *id);
/* Attach `ref` and fail the running test unless its first `bytes` bytes
 * are all `fill`.  Returns tc_attach's code (nothing checked when < 0). */
int t_check_fill(tc_client *c, const char *ref, uint8_t fill, uint64_t bytes);

/*
 * Read what a peer sends on `fd` until it closes, nothing arrives for
 * idle_ms (-1: no idle limit) or t_now_ms() reaches end_ms (0: no
 * deadline); add the bytes and the fds it passed (SCM_RIGHTS; closed at
 * once) to *bytes and *fds.  Fake daemons use it to prove a client sent
 * them nothing.
 */
void t_drain_count(int fd, int idle_ms, double end_ms, long *bytes, long *fds);

/* A seeded xorshift64* stream: one seed gives one sequence everywhere, so
 * a stress test that prints its seed can be replayed. */
struct t_rng {
	uint64_t s; /* never 0 */
};
/* The seed in environment variable `env` (any base strtoull reads), else
 * one from the clock and the pid. */
uint64_t t_rng_seed(const char *env);
void t_rng_init(struct t_rng *r, uint64_t seed);
uint64_t t_rng_next(struct t_rng *r);
/* Uniform-enough in [0, n); 0 when n is 0. */
uint64_t t_rng_below(struct t_rng *r, uint64_t n);

struct tc__table;
/* The tiny artifact of docs/formats.md into t and bytes: "a" F32 [2] =
 * {1.0, 2.0} at 0, "b" U8 [3] = {1, 2, 3} at 256, metadata {"z": "1",
 * "format": "pt"}. */
void t_tiny_artifact(struct tc__table *t, uint8_t bytes[259]);

#endif /* TC_TLIB_H */
