/*
 * cmd_doctor.c - `tcast doctor`: is this machine ready for tcast?
 *
 * One line per check with a verdict (ok, warn, fail) and, where it is not
 * ok, what to do.  Each check uses the code the daemon itself uses (the
 * CUDA driver through src/gpu's dlopen table, so TCAST_CUDA_LIB and the
 * fake driver apply; io_uring through the loader's ring), so a verdict is
 * the daemon's experience, not a guess.  Exit 1 when a check fails: a
 * failure means tcast cannot work here as configured; a warning means it
 * works with less (no GPU tier, pread instead of io_uring, ...).
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "cli.h"
#include "common/io.h"
#include "gpu/vmm.h"
#include "xfer/ioring.h"
#include "tcast/errors.h"

enum verdict { V_OK, V_WARN, V_FAIL };
static const char *const verdict_names[] = { "ok", "warn", "fail" };

struct report {
	json_t *checks;
	int nfail, nwarn;
};

/* Record one check; `fix` says what to do (NULL when ok). */
static void add(struct report *r, enum verdict v, const char *name,
		const char *fix, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static void add(struct report *r, enum verdict v, const char *name,
		const char *fix, const char *fmt, ...)
{
	char detail[1024];
	va_list ap;
	json_t *c;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	if (v == V_FAIL)
		r->nfail++;
	else if (v == V_WARN)
		r->nwarn++;
	c = json_pack("{s:s, s:s, s:s}", "check", name, "verdict",
		      verdict_names[v], "detail", detail);
	if (c && fix)
		json_object_set_new(c, "fix", json_string(fix));
	if (c)
		json_array_append_new(r->checks, c);
	if (cli.json)
		return;
	printf("%-4s  %-10s %s", verdict_names[v], name, detail);
	if (fix)
		printf(" -- %s", fix);
	putchar('\n');
}

static void check_memfd(struct report *r)
{
	const int want = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
	struct utsname u;
	char kernel[80] = "?";
	int fd, seals;

	if (uname(&u) == 0)
		snprintf(kernel, sizeof(kernel), "Linux %s", u.release);
	fd = memfd_create("tcast-doctor", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		add(r, V_FAIL, "memfd", "tcast needs Linux 3.17 or later",
		    "memfd_create failed: %s (%s)", strerror(errno), kernel);
		return;
	}
	if (ftruncate(fd, 4096) < 0 || fcntl(fd, F_ADD_SEALS, want) < 0) {
		add(r, V_FAIL, "memfd",
		    "tcast shares artifacts as sealed memfds; a kernel or "
		    "seccomp policy that refuses seals cannot run it",
		    "cannot seal a memfd: %s (%s)", strerror(errno), kernel);
		close(fd);
		return;
	}
	seals = fcntl(fd, F_GET_SEALS);
	/* A sealed memfd must refuse writes: that is what makes a shared
	 * artifact immutable. */
	if ((seals & want) != want || write(fd, "x", 1) >= 0) {
		add(r, V_FAIL, "memfd",
		    "report this kernel to the tcast authors",
		    "seals are not enforced (seals 0x%x, %s)", (unsigned)seals,
		    kernel);
		close(fd);
		return;
	}
	close(fd);
	add(r, V_OK, "memfd", NULL,
	    "sealed memfds work (write, grow and shrink refused; %s)", kernel);
}

static void check_uring(struct report *r)
{
	struct tc__ioring *ring = NULL;
	int rc = tc__ioring_new(4, 1, &ring);
	char sysctl[16] = "";
	FILE *f;

	if (rc == 0) {
		tc__ioring_free(ring);
		add(r, V_OK, "io_uring", NULL,
		    "available: imports read with io_uring");
		return;
	}
	f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
	if (f) {
		if (!fgets(sysctl, sizeof(sysctl), f))
			sysctl[0] = '\0';
		sysctl[strcspn(sysctl, "\n")] = '\0';
		fclose(f);
	}
	add(r, V_WARN, "io_uring",
	    rc == -EPERM ?
		    "allow io_uring (sysctl kernel.io_uring_disabled=0, "
		    "or the container's seccomp profile) for faster "
		    "imports from NVMe" :
		    "a kernel with io_uring (5.6+) reads faster from NVMe",
	    "unavailable (%s%s%s): imports read with pread", strerror(-rc),
	    sysctl[0] ? ", kernel.io_uring_disabled=" : "", sysctl);
}

static void check_memlock(struct report *r)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_MEMLOCK, &rl) < 0) {
		add(r, V_WARN, "ulimit -l", NULL, "cannot read: %s",
		    strerror(errno));
		return;
	}
	if (rl.rlim_cur == RLIM_INFINITY) {
		add(r, V_OK, "ulimit -l", NULL, "unlimited locked memory");
		return;
	}
	/* Pinning a host replica for the GPU (cuMemHostRegister) and the
	 * loader's pinned staging count against it. */
	add(r, rl.rlim_cur >= ((rlim_t)1 << 30) ? V_OK : V_WARN, "ulimit -l",
	    rl.rlim_cur >= ((rlim_t)1 << 30) ?
		    NULL :
		    "host replicas cannot be pinned for fast GPU copies: set "
		    "LimitMEMLOCK=infinity in the unit, or 'ulimit -l "
		    "unlimited' (/etc/security/limits.conf) for the daemon",
	    "%llu KiB of locked memory",
	    (unsigned long long)rl.rlim_cur / 1024);
}

static void check_cuda(struct report *r)
{
	char err[512] = "", name[16];
	const char *path = NULL;
	int rc, n, version = 0;

	rc = tc__gpu_init(err, sizeof(err));
	if (rc == TC_ENODEV) {
		add(r, V_WARN, "cuda",
		    "install the NVIDIA driver (or set TCAST_CUDA_LIB) to "
		    "use GPUs; host memory works without",
		    "no driver: %s", err);
		return;
	}
	if (rc < 0) {
		add(r, V_FAIL, "cuda",
		    "check nvidia-smi and the driver's kernel module",
		    "the driver fails: %s", err);
		return;
	}
	tc__gpu_driver_version(&version, &path, err, sizeof(err));
	n = tc__gpu_device_count(err, sizeof(err));
	add(r, V_OK, "cuda", NULL, "driver %d.%d (%s), %d GPU%s",
	    version / 1000, version % 1000 / 10, path ? path : "?", n,
	    n == 1 ? "" : "s");
	for (int i = 0; i < n; i++) {
		struct tc__gpu_info gi;
		char total[32];

		snprintf(name, sizeof(name), "gpu%d", i);
		if (tc__gpu_device_info(i, &gi, err, sizeof(err)) < 0) {
			add(r, V_FAIL, name, "check nvidia-smi",
			    "cannot query: %s", err);
			continue;
		}
		cli_bytes(gi.total_bytes, total, sizeof(total));
		if (!gi.vmm || !gi.posix_fd) {
			add(r, V_FAIL, name,
			    "tcast shares GPU memory as VMM allocations with "
			    "POSIX fd handles: use a newer driver or GPU, or "
			    "hide this GPU (CUDA_VISIBLE_DEVICES)",
			    "%s (%s, %s): %s", gi.name, gi.uuid_str, total,
			    !gi.vmm ? "no virtual memory management (VMM)" :
				      "no POSIX fd export of VMM memory");
			continue;
		}
		add(r, V_OK, name, NULL,
		    "%s (%s, %s, sm %d.%d): VMM with POSIX fd export%s",
		    gi.name, gi.uuid_str, total, gi.cc_major, gi.cc_minor,
		    gi.host_register ? ", host registration" : "");
	}
}

static void check_socket(struct report *r)
{
	char sock[sizeof(((struct sockaddr_un *)0)->sun_path)], dir[PATH_MAX];
	char fix[PATH_MAX + 128];
	struct stat st;
	char *slash;
	tc_client *c;

	if (cli.socket)
		snprintf(sock, sizeof(sock), "%s", cli.socket);
	else if (tc_default_socket(sock, sizeof(sock)) < 0) {
		add(r, V_FAIL, "socket",
		    "set TCAST_SOCKET or --socket to a shorter path",
		    "the default socket path is too long");
		return;
	}
	snprintf(dir, sizeof(dir), "%s", sock);
	slash = strrchr(dir, '/');
	if (slash && slash != dir)
		*slash = '\0';
	else
		snprintf(dir, sizeof(dir), ".");
	if (lstat(dir, &st) < 0) {
		char parent[PATH_MAX];

		snprintf(parent, sizeof(parent), "%s", dir);
		slash = strrchr(parent, '/');
		if (slash && slash != parent)
			*slash = '\0';
		if (errno == ENOENT && access(parent, W_OK | X_OK) == 0) {
			add(r, V_OK, "socket", NULL,
			    "'%s' will be created with mode 0700 at the "
			    "daemon's first start",
			    dir);
			return;
		}
		snprintf(fix, sizeof(fix),
			 "create it: mkdir -m 700 '%s', or choose another "
			 "--socket",
			 dir);
		add(r, V_FAIL, "socket", fix, "cannot use '%s': %s", dir,
		    strerror(errno));
		return;
	}
	if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() ||
	    (st.st_mode & 0077)) {
		snprintf(fix, sizeof(fix),
			 "the daemon refuses it: chown %u '%s' && chmod 700 "
			 "'%s'",
			 (unsigned)getuid(), dir, dir);
		add(r, V_FAIL, "socket", fix,
		    "'%s' is %s owned by uid %u with mode %04o (need a "
		    "directory of uid %u, mode 0700)",
		    dir,
		    S_ISDIR(st.st_mode) ? "a directory" : "not a directory",
		    (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777),
		    (unsigned)getuid());
		return;
	}
	if (tc_client_connect(sock, &c, NULL, 0) == 0) {
		add(r, V_OK, "socket", NULL,
		    "'%s' (0700, uid %u): daemon pid %d serves '%s'", dir,
		    (unsigned)getuid(), (int)tc_client_daemon_pid(c), sock);
		tc_client_close(c);
		return;
	}
	add(r, V_OK, "socket", NULL,
	    "'%s' (0700, uid %u); no daemon on '%s' now (tcast daemon start)",
	    dir, (unsigned)getuid(), sock);
}

static void check_memory(struct report *r)
{
	unsigned long long total = 0, avail = 0, v;
	char line[256], a[32], t[32];
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f) {
		add(r, V_WARN, "memory", NULL, "cannot read /proc/meminfo: %s",
		    strerror(errno));
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "MemTotal: %llu kB", &v) == 1)
			total = v * 1024;
		else if (sscanf(line, "MemAvailable: %llu kB", &v) == 1)
			avail = v * 1024;
	}
	fclose(f);
	cli_bytes(avail, a, sizeof(a));
	cli_bytes(total, t, sizeof(t));
	/* The default host budget is half of RAM (config.c). */
	if (avail < (1ull << 30) || avail < total / 10)
		add(r, V_WARN, "memory",
		    "free memory or lower host_memory: the daemon's budget "
		    "must fit in what is available",
		    "%s available of %s", a, t);
	else
		add(r, V_OK, "memory", NULL,
		    "%s available of %s (default host budget: half of RAM)", a,
		    t);
}

/* Whether artifacts' memfds can take 2 MiB pages (common/io.h): a
 * warning, not a failure, since 4 KiB pages work, only slower to fill. */
static void check_huge_pages(struct report *r)
{
	const char *m = tc__shm_huge_mode();

	if (tc__shm_huge((size_t)1 << 30))
		add(r, V_OK, "hugepages", NULL,
		    "memfd segments take 2 MiB pages (shmem_enabled %s)", m);
	else if (!strcmp(m, "unknown"))
		add(r, V_OK, "hugepages", NULL,
		    "this kernel has no transparent huge pages for shared "
		    "memory: segments fill with 4 KiB pages");
	else
		add(r, V_WARN, "hugepages",
		    "echo advise > "
		    "/sys/kernel/mm/transparent_hugepage/shmem_enabled (as "
		    "root; docs/store.md, \"Huge pages\")",
		    "shmem_enabled is %s: artifacts fill with 4 KiB pages, "
		    "up to 6x slower than with 2 MiB pages",
		    m);
}

int cmd_doctor(int argc, char **argv)
{
	struct report r = { 0 };
	char *doc;

	/* --help and -h are answered by main() from the verb table. */
	if (argc > 1)
		return cli_usage_error("unknown option '%s'", cli_esc(argv[1]));
	r.checks = json_array();
	if (!r.checks)
		return cli_fail(-ENOMEM, "out of memory");
	check_memfd(&r);
	check_uring(&r);
	check_memlock(&r);
	check_cuda(&r);
	check_socket(&r);
	check_memory(&r);
	check_huge_pages(&r);
	if (cli.json) {
		json_t *j = json_pack("{s:o, s:b, s:i, s:i}", "checks",
				      r.checks, "ok", r.nfail == 0, "failed",
				      r.nfail, "warnings", r.nwarn);

		doc = j ? json_dumps(j, JSON_COMPACT) : NULL;
		json_decref(j);
		if (!doc)
			return cli_fail(-ENOMEM, "out of memory");
		puts(doc);
		free(doc);
	} else {
		json_decref(r.checks);
		printf("%s: %d failed, %d warning%s\n",
		       r.nfail ? "not ready" : "ready", r.nfail, r.nwarn,
		       r.nwarn == 1 ? "" : "s");
	}
	return r.nfail ? EXIT_RUNTIME : 0;
}
