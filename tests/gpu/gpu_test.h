/*
 * gpu_test.h - helpers shared by tests/unit/test_gpu.c (fake driver) and
 * tests/gpu/test_gpu_real.c (real driver): a second process, real fd
 * passing, fd counting and checksums.
 *
 * The second process is this test binary run again ("--child MODE FD"),
 * not a bare fork: CUDA cannot be used in a child forked after the driver
 * was initialised, so a fresh exec is what a real client looks like.  The
 * parent and child talk over a SOCK_SEQPACKET socketpair; fds travel with
 * SCM_RIGHTS exactly as the daemon will send them.
 */
#ifndef TC_TESTS_GPU_TEST_H
#define TC_TESTS_GPU_TEST_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gpu/vmm.h"
#include "tcast/errors.h"
#include "tlib.h"

/*
 * The start every real-GPU test shares: *bytes from TC_GPU_TEST_BYTES
 * (default 1 GiB), *dev from TC_GPU_TEST_DEVICE (default 0), then the
 * driver.  Returns -1 to go on, else the exit status: 77 (skip) without a
 * usable driver or GPU, 1 on any other failure.
 */
static inline int t_gpu_start(uint64_t *bytes, int *dev)
{
	const char *env = getenv("TC_GPU_TEST_BYTES");
	char err[512];
	int ret;

	*bytes = (uint64_t)1 << 30;
	if (env) { /* bytes, or with a K/M/G suffix ("8GiB") */
		char *end;
		unsigned long long v = strtoull(env, &end, 0);
		int sh = *end == 'K' ? 10 :
			 *end == 'M' ? 20 :
			 *end == 'G' ? 30 :
				       0;

		if ((*end && !sh) || v == 0 || (sh && v > (~0ull >> sh))) {
			printf("FAIL: TC_GPU_TEST_BYTES='%s' is not a size\n",
			       env);
			return 1;
		}
		*bytes = (uint64_t)v << sh;
	}
	if (*bytes < ((uint64_t)64 << 20)) {
		printf("FAIL: TC_GPU_TEST_BYTES must be at least 64 MiB\n");
		return 1;
	}
	env = getenv("TC_GPU_TEST_DEVICE");
	*dev = env ? atoi(env) : 0;
	ret = tc__gpu_init(err, sizeof(err));
	if (ret == TC_ENODEV) {
		printf("SKIP: no usable CUDA driver or GPU: %s\n", err);
		return 77;
	}
	if (ret < 0) {
		printf("FAIL: %s: %s\n", tc_err_name(ret), err);
		return 1;
	}
	return -1;
}

/* Open fds of this process that are ours: the CUDA driver opens its own
 * device nodes and eventfds lazily, once, and they are not leaks. */
static inline int t_count_own_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char path[64], target[256];
		ssize_t k;

		if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d))
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		k = readlink(path, target, sizeof(target) - 1);
		if (k < 0)
			continue;
		target[k] = '\0';
		if (!strncmp(target, "/dev/nvidia", 11) ||
		    !strncmp(target, "anon_inode:", 11))
			continue;
		n++;
	}
	closedir(d);
	return n;
}

/* Send n bytes and, if fd >= 0, one fd.  Returns 0 or -errno. */
static inline int t_send(int sock, int fd, const void *buf, size_t n)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { (void *)buf, n };
	struct msghdr msg = { 0 };
	struct cmsghdr *c;

	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (fd >= 0) {
		memset(cbuf, 0, sizeof(cbuf));
		msg.msg_control = cbuf;
		msg.msg_controllen = sizeof(cbuf);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	if (sendmsg(sock, &msg, MSG_NOSIGNAL) != (ssize_t)n)
		return -errno;
	return 0;
}

/* Receive exactly n bytes and at most one fd (into *fd, -1 if none; the
 * receiver owns it).  Returns 0, -EPROTO on a short or truncated message,
 * or -errno. */
static inline int t_recv(int sock, int *fd, void *buf, size_t n)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { buf, n };
	struct msghdr msg = { 0 };
	struct cmsghdr *c;
	ssize_t got;

	if (fd)
		*fd = -1;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = cbuf;
	msg.msg_controllen = sizeof(cbuf);
	got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	if (got < 0)
		return -errno;
	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		int rfd;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		memcpy(&rfd, CMSG_DATA(c), sizeof(int));
		if (fd && *fd < 0)
			*fd = rfd;
		else
			close(rfd);
	}
	if ((size_t)got != n || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
		if (fd && *fd >= 0) {
			close(*fd);
			*fd = -1;
		}
		return -EPROTO;
	}
	return 0;
}

/*
 * Run this binary again as "--child MODE FD" with env changes (see
 * t_spawn_self).  *sock gets the parent's end of a SOCK_SEQPACKET
 * socketpair whose other end is FD in the child.  Returns the child's pid
 * or -errno.
 */
static inline pid_t t_spawn_child(const char *mode, const char *const env[],
				  int *sock)
{
	char fdbuf[16];
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	snprintf(fdbuf, sizeof(fdbuf), "%d", sv[1]);
	pid = t_spawn_self((const char *const[]){ mode, fdbuf, NULL }, env, -1,
			   sv[1]);
	close(sv[1]);
	if (pid < 0)
		close(sv[0]);
	else
		*sock = sv[0];
	return pid;
}

/* A deterministic, position-dependent pattern (so a shifted or partial copy
 * is caught, not only a missing one). */
static inline void t_fill_pattern(void *p, size_t n, uint64_t seed)
{
	uint64_t *w = p, x = seed * 0x9E3779B97F4A7C15ull + 1;
	size_t i;

	for (i = 0; i < n / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w[i] = x + i;
	}
	for (i = n / 8 * 8; i < n; i++)
		((uint8_t *)p)[i] = (uint8_t)(seed + i);
}

#endif /* TC_TESTS_GPU_TEST_H */
