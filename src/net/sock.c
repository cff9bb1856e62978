/*
 * sock.c - Unix-domain listen/connect, directory checks, peer credentials.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "net.h"
#include "tcast/errors.h"

int tc__sock_default_path(char *buf, size_t len)
{
	const char *env = getenv("TCAST_SOCKET");
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	if (env && *env)
		n = snprintf(buf, len, "%s", env);
	else if (xdg && *xdg)
		n = snprintf(buf, len, "%s/tcast/daemon.sock", xdg);
	else
		n = snprintf(buf, len, "/tmp/tcast-%u/daemon.sock",
			     (unsigned)getuid());
	if (n < 0 || (size_t)n >= len ||
	    (size_t)n >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return TC_ELIMIT;
	return 0;
}

int tc__sock_prepare_dir(const char *sock_path, char *err, size_t errlen)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *slash;
	struct stat st;

	if (strlen(sock_path) >= sizeof(dir)) {
		snprintf(err, errlen, "socket path too long: '%s'", sock_path);
		return TC_ELIMIT;
	}
	strcpy(dir, sock_path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		int e = errno;

		snprintf(err, errlen, "cannot create socket directory '%s': %s",
			 dir, strerror(e));
		return -e;
	}
	if (lstat(dir, &st) < 0) {
		int e = errno;

		snprintf(err, errlen, "cannot stat '%s': %s", dir, strerror(e));
		return -e;
	}
	/* A directory someone else owns, or others can enter, would let them
	 * replace our socket or connect to it. */
	if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() ||
	    (st.st_mode & 0077)) {
		snprintf(err, errlen,
			 "unsafe socket directory '%s': must be a directory "
			 "owned by uid %u with mode 0700",
			 dir, (unsigned)getuid());
		return TC_EPERM;
	}
	return 0;
}

static int fill_addr(const char *path, struct sockaddr_un *a)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(a->sun_path))
		return TC_ELIMIT;
	strcpy(a->sun_path, path);
	return 0;
}

int tc__sock_connect(const char *path, int *out_fd)
{
	struct sockaddr_un a;
	int fd, rc;

	*out_fd = -1;
	rc = fill_addr(path, &a);
	if (rc < 0)
		return rc;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	do {
		rc = connect(fd, (struct sockaddr *)&a, sizeof(a));
	} while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	*out_fd = fd;
	return 0;
}

int tc__sock_listen(const char *path, int backlog, int *out_fd, char *err,
		    size_t errlen)
{
	struct sockaddr_un a;
	int fd, probe, rc;

	*out_fd = -1;
	rc = fill_addr(path, &a);
	if (rc < 0) {
		snprintf(err, errlen, "socket path too long: '%s'", path);
		return rc;
	}
	/* Someone accepting there means a daemon already runs; a socket file
	 * nobody accepts on is left over from a crash, so remove it. */
	if (tc__sock_connect(path, &probe) == 0) {
		close(probe);
		snprintf(err, errlen, "a daemon is already listening on '%s'",
			 path);
		return -EADDRINUSE;
	}
	unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    chmod(path, 0600) < 0 || listen(fd, backlog) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot listen on '%s': %s", path,
			 strerror(-rc));
		close(fd);
		return rc;
	}
	*out_fd = fd;
	return 0;
}

int tc__sock_peercred(int fd, pid_t *pid, uid_t *uid, gid_t *gid)
{
	struct ucred uc;
	socklen_t len = sizeof(uc);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
		return -errno;
	*pid = uc.pid;
	*uid = uc.uid;
	*gid = uc.gid;
	return 0;
}

int tc__sock_set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -errno;
	fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
	if (fcntl(fd, F_SETFL, fl) < 0)
		return -errno;
	return 0;
}
