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

/* The parent directory of sock_path into dir; 0 when there is none (a
 * path without a slash, or one directly under /). */
static int parent_dir(const char *sock_path, char *dir, size_t dirlen,
		      char *err, size_t errlen)
{
	char *slash;

	if (strlen(sock_path) >= dirlen) {
		snprintf(err, errlen, "socket path too long: '%s'", sock_path);
		return TC_ELIMIT;
	}
	strcpy(dir, sock_path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	return 1;
}

int tc__sock_trust_root(void)
{
	const char *e = getenv("TCAST_TRUST_ROOT");

	return e && strcmp(e, "1") == 0;
}

/*
 * Whoever controls the directory controls which daemon answers on the
 * socket inside it, so it must be ours (or root's, when root is trusted),
 * a real directory (fstat of an O_NOFOLLOW open, so a symlink is never
 * followed) and closed to everyone else.
 */
static int check_dir(const char *dir, int trust_root, char *err, size_t errlen)
{
	struct stat st;
	uid_t me = getuid();
	int dfd, e;

	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0) {
		e = errno;
		if (e == ELOOP || e == ENOTDIR) {
			snprintf(
				err, errlen,
				"unsafe socket directory '%s': it is a symlink "
				"or not a directory",
				dir);
			return TC_EPERM;
		}
		snprintf(err, errlen, "cannot open socket directory '%s': %s",
			 dir, strerror(e));
		return -e;
	}
	if (fstat(dfd, &st) < 0) {
		e = errno;
		close(dfd);
		snprintf(err, errlen, "cannot stat '%s': %s", dir, strerror(e));
		return -e;
	}
	close(dfd);
	if (st.st_uid == me && !(st.st_mode & 0077))
		return 0;
	/* A root-owned directory others cannot write (/run/tcast) is as safe
	 * as root itself, which the user chose to trust. */
	if (trust_root && st.st_uid == 0 && !(st.st_mode & 0022))
		return 0;
	snprintf(
		err, errlen,
		"unsafe socket directory '%s': owned by uid %u with mode %04o; "
		"it must be owned by uid %u with mode 0700 (%s)",
		dir, (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
		(unsigned)me,
		st.st_uid == 0 && !trust_root ?
			"or by root, not writable by others, with "
			"TCAST_TRUST_ROOT=1 set to trust a root daemon" :
			"another user may have created it: remove it or "
			"choose another socket path");
	return TC_EPERM;
}

int tc__sock_check_dir(const char *sock_path, int trust_root, char *err,
		       size_t errlen)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int rc = parent_dir(sock_path, dir, sizeof(dir), err, errlen);

	if (rc <= 0)
		return rc;
	return check_dir(dir, trust_root, err, errlen);
}

int tc__sock_prepare_dir(const char *sock_path, char *err, size_t errlen)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int rc = parent_dir(sock_path, dir, sizeof(dir), err, errlen);

	if (rc <= 0)
		return rc;
	/* mkdir never follows a symlink at the last component (EEXIST), and
	 * check_dir opens with O_NOFOLLOW: a planted link is refused, not
	 * used. */
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		int e = errno;

		snprintf(err, errlen, "cannot create socket directory '%s': %s",
			 dir, strerror(e));
		return -e;
	}
	return check_dir(dir, 0, err, errlen);
}

int tc__sock_check_peer(int fd, int trust_root, char *err, size_t errlen)
{
	pid_t pid = 0;
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;
	int rc = tc__sock_peercred(fd, &pid, &uid, &gid);

	if (rc < 0) {
		snprintf(err, errlen,
			 "cannot read the daemon's credentials: %s",
			 strerror(-rc));
		return rc;
	}
	if (uid == getuid() || (trust_root && uid == 0))
		return 0;
	snprintf(err, errlen,
		 "the daemon on this socket runs as uid %u (pid %d), not as "
		 "uid %u%s; refusing to talk to it",
		 (unsigned)uid, (int)pid, (unsigned)getuid(),
		 uid == 0 ? " (set TCAST_TRUST_ROOT=1 to trust a root daemon)" :
			    "");
	return TC_EPERM;
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

int tc__sock_accept_reserve(int lfd, int *reserve)
{
	if (*reserve < 0)
		return -1;
	close(*reserve);
	*reserve = -1;
	return accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

void tc__sock_reserve(int *reserve)
{
	if (*reserve < 0)
		*reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
}
