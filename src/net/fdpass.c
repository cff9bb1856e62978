/*
 * fdpass.c - sendmsg/recvmsg with SCM_RIGHTS.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net.h"
#include "tcast/errors.h"

ssize_t tc__fdpass_send(int sock, const struct iovec *iov, int iovcnt,
			const int *fds, int nfds)
{
	union {
		char buf[CMSG_SPACE(TC_MAX_FDS_PER_MSG * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct msghdr msg;
	ssize_t n;

	if (nfds < 0 || nfds > TC_MAX_FDS_PER_MSG)
		return -EINVAL;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = (struct iovec *)iov;
	msg.msg_iovlen = (size_t)iovcnt;
	if (nfds > 0) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
	}
	do {
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

static void close_all(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		close(fds[i]);
}

ssize_t tc__fdpass_recv(int sock, void *buf, size_t len, int *fds, int *nfds,
			int maxfds)
{
	/* Room for more than we accept, so surplus fds arrive (and get
	 * closed) rather than being silently truncated by the kernel. */
	union {
		char buf[CMSG_SPACE(2 * TC_MAX_FDS_PER_MSG * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct msghdr msg;
	struct iovec iov = { buf, len };
	struct cmsghdr *c;
	ssize_t n;
	int got = 0, bad = 0;

	*nfds = 0;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = ctl.buf;
	msg.msg_controllen = sizeof(ctl.buf);
	do {
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		int k, *p;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
			bad = 1;
			continue;
		}
		k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		p = (int *)CMSG_DATA(c);
		for (int i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, p + i, sizeof(int));
			if (got < maxfds)
				fds[got++] = fd;
			else {
				close(fd);
				bad = 1;
			}
		}
	}
	if (bad || (msg.msg_flags & MSG_CTRUNC)) {
		close_all(fds, got);
		return TC_EPROTO;
	}
	*nfds = got;
	return n;
}
