/*
 * net.h - Unix sockets, SO_PEERCRED and fd passing (SCM_RIGHTS).
 *
 * The daemon's socket lives in a directory that only its owner can enter
 * (0700), so the file system refuses other users before we see them; the
 * daemon then checks SO_PEERCRED on every accepted connection as a second
 * line.  Received fds belong to the receiver the moment recvmsg returns;
 * they are received close-on-exec and surplus ones are closed here, never
 * leaked.  Depends only on src/common.
 */
#ifndef TC_NET_H
#define TC_NET_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#define TC_MAX_FDS_PER_MSG 8 /* fds accepted in one recvmsg */

/* Default socket path: $TCAST_SOCKET, else $XDG_RUNTIME_DIR/tcast/daemon.sock,
 * else /tmp/tcast-$UID/daemon.sock.  Returns 0 or TC_ELIMIT if it does not
 * fit in `len` or in sockaddr_un. */
int tc__sock_default_path(char *buf, size_t len);

/* Create the parent directory 0700 if missing and refuse one that another
 * user owns, that others can enter, or that is a symlink.  Returns 0,
 * TC_EPERM or -errno. */
int tc__sock_prepare_dir(const char *sock_path, char *err, size_t errlen);

/* Client side, before anything is sent: the socket's directory must be the
 * user's own with mode 0700, not a symlink (or root's and not writable by
 * others, when trust_root).  Returns 0, TC_EPERM or -errno. */
int tc__sock_check_dir(const char *sock_path, int trust_root, char *err,
		       size_t errlen);

/* The peer of a connected socket must run as our uid (or root, when
 * trust_root).  Returns 0, TC_EPERM or -errno. */
int tc__sock_check_peer(int fd, int trust_root, char *err, size_t errlen);

/* TCAST_TRUST_ROOT=1 in the environment: a daemon run by root is trusted. */
int tc__sock_trust_root(void);

/* Bind and listen on `path` (non-blocking, close-on-exec).  A stale socket
 * file (nobody accepting) is removed first; a live one gives -EADDRINUSE. */
int tc__sock_listen(const char *path, int backlog, int *out_fd, char *err,
		    size_t errlen);

/* Connect to `path` (blocking, close-on-exec).  Returns 0 or -errno. */
int tc__sock_connect(const char *path, int *out_fd);

/* Peer credentials of a connected Unix socket. */
int tc__sock_peercred(int fd, pid_t *pid, uid_t *uid, gid_t *gid);

int tc__sock_set_nonblock(int fd, int on);

/* A reserve fd, kept open for the moment accept(2) fails with EMFILE or
 * ENFILE while a connection waits: the listening socket stays readable,
 * and a level-triggered loop would spin on it.  tc__sock_accept_reserve
 * spends *reserve to take the waiting connection (non-blocking, cloexec;
 * the caller turns it away and closes it), or returns -1 with no reserve;
 * tc__sock_reserve opens it (again), if it is not open.  A reserve is -1
 * when not open. */
int tc__sock_accept_reserve(int lfd, int *reserve);
void tc__sock_reserve(int *reserve);

/* sendmsg with optional fds; returns bytes sent (may be short on a
 * non-blocking socket) or -errno.  Retries EINTR. */
ssize_t tc__fdpass_send(int sock, const struct iovec *iov, int iovcnt,
			const int *fds, int nfds);

/* recvmsg into buf; fds received are stored in fds[] (*nfds set) up to
 * `maxfds`; any beyond, or a truncated control message (MSG_CTRUNC), closes
 * them all and returns TC_EPROTO.  Returns bytes read (0 = EOF) or -errno
 * (-EAGAIN on a non-blocking socket with nothing to read). */
ssize_t tc__fdpass_recv(int sock, void *buf, size_t len, int *fds, int *nfds,
			int maxfds);

#endif /* TC_NET_H */
