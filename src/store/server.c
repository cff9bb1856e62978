/*
 * server.c - the daemon's main: start-up (limits, socket, workers, GPU
 * tier, metrics), the loop's hooks, signals and shutdown.
 *
 * Connections live in conn.c, frames in dispatch.c, requests in ops_*.c
 * and binding.c (server_internal.h lists them).  Loop thread only.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "common/compiler.h"
#include "common/dynlib.h"
#include "common/io.h"
#include "common/log.h"
#include "gpu_tier.h"
#include "xfer/jobs.h"
#include "xfer/loader.h"
#include "metrics.h"
#include "net/ev.h"
#include "net/net.h"
#include "obj.h"
#include "server.h"
#include "tcast/version.h"

#include "durable.h"
#include "spill.h"
#include "server_internal.h"

/* -------------------------------------------------------------- hooks */

static void before_sleep(struct tc__ev *ev, void *arg)
{
	tc__srv_conns_sweep(arg);
}

static void on_tick(struct tc__ev *ev, void *arg)
{
	struct server *s = arg;
	uint64_t now = tc__now_ms();

	tc__srv_conns_tick(s, now);
	if (s->accept_resume_ms && now >= s->accept_resume_ms) {
		s->accept_resume_ms = 0;
		tc__sock_reserve(&s->reserve_fd);
		/* The spare's job may have taken the reserve's slot in the
		 * instant accept_shed had it closed: without a reserve no
		 * flooder is ever told why, so the spare gives its fd. */
		if (s->reserve_fd < 0 && s->spare) {
			tc__srv_spare_drop(s);
			tc__sock_reserve(&s->reserve_fd);
		}
		tc__ev_add(s->ev, s->lfd, TC_EV_READ, tc__srv_on_accept, s);
	}
	tc__srv_spare_refill(s);
	tc__srv_durable_tick(s, now);
	tc__srv_ha_tick(s, now);
	tc__srv_key_sync_tick(s, now);
	tc__gpu_tier_tick(s->gpu);
	tc__srv_metrics_publish(s, now, false);
}

static void on_signal(struct tc__ev *ev, int fd, void *arg, int mask)
{
	struct signalfd_siginfo si;

	while (read(fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
			tc__log(TC_LOG_INFO, "signal %u: shutting down",
				si.ssi_signo);
			tc__ev_stop(ev);
		}
	}
}

/* -------------------------------------------------------------- run */

/* fds kept for everything but clients: artifacts (two each), imports,
 * workers, the log. */
#define FD_HEADROOM 256
/* fds one client may hold at worst is more (queued input and output fds,
 * an import), but most hold one or two; EMFILE is handled either way. */
#define FDS_PER_CLIENT 4

/* systemd's Type=notify (docs/operations.md).  libsystemd is loaded only
 * when systemd asks to be told (NOTIFY_SOCKET), not at every start of the
 * binary (common/dynlib.h); without it systemd would wait for READY in
 * vain, so its absence is said in the log. */
static void notify_systemd(const char *state)
{
	/* The main thread's alone (start and shutdown): no lock. */
	static __typeof__(&sd_notify) fn;
	static bool tried;
	static const char *const names[] = { "sd_notify" };
	void *addr[1];
	char err[300];

	if (!getenv("NOTIFY_SOCKET"))
		return;
	if (!tried) {
		tried = true;
		if (tc__dl_load("libsystemd.so.0", "libsystemd0", names, 1,
				addr, err, sizeof(err)) == 0)
			fn = (__typeof__(fn))addr[0];
		else
			tc__log(TC_LOG_ERROR,
				"%s: systemd waits in vain for READY "
				"(NOTIFY_SOCKET is set)",
				err);
	}
	if (fn)
		fn(0, state);
}

/*
 * Raise the soft RLIMIT_NOFILE to the hard limit, and size the client
 * limit so that clients cannot take the fds artifacts and imports need.
 * Returns the fd limit the event loop must cover.
 */
static int size_limits(struct server *s)
{
	const struct tc__store_config *cfg = s->cfg;
	struct rlimit rl;
	rlim_t want;
	int fit, nofile = 1024;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		want = rl.rlim_max;
		/* An unlimited hard limit still has the kernel's cap, and
		 * the loop keeps a slot per fd number: stay reasonable. */
		if (want == RLIM_INFINITY || want > (rlim_t)1 << 20)
			want = (rlim_t)1 << 20;
		if (rl.rlim_cur < want) {
			rl.rlim_cur = want;
			if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
				getrlimit(RLIMIT_NOFILE, &rl);
		}
		nofile = rl.rlim_cur > (rlim_t)1 << 20 ? 1 << 20 :
							 (int)rl.rlim_cur;
	}
	fit = (nofile - TC_MIN(FD_HEADROOM, nofile / 2)) / FDS_PER_CLIENT;
	if (fit < 1)
		fit = 1;
	s->max_clients = cfg->max_clients;
	if (s->max_clients > fit) {
		tc__log(TC_LOG_WARN,
			"max_clients %d lowered to %d: the fd limit is %d "
			"(raise the hard limit, ulimit -Hn, for more)",
			cfg->max_clients, fit, nofile);
		s->max_clients = fit;
	}
	s->max_per_uid =
		cfg->max_clients_per_uid ?
			TC_MIN(cfg->max_clients_per_uid, s->max_clients) :
			s->max_clients - s->max_clients / 8;
	if (s->max_per_uid < 1)
		s->max_per_uid = 1;
	s->max_per_pid =
		cfg->max_clients_per_pid ?
			TC_MIN(cfg->max_clients_per_pid, s->max_clients) :
			TC_MAX(TC_MIN(4, s->max_clients), s->max_clients / 4);
	return nofile;
}

int tc__server_run(const struct tc__store_config *cfg, int ready_fd, char *err,
		   size_t errlen)
{
	struct server s = { 0 };
	char state[512];
	sigset_t mask;
	int rc;

	tc__log_set_format(cfg->log_format);
	s.cfg = cfg;
	s.lfd = s.sigfd = s.reserve_fd = -1;
	s.epoch =
		(uint64_t)time(NULL) * 1000000000u + tc__now_ns() % 1000000000u;
	s.start_ms = tc__now_ms();
	tc__objs_init(&s.objs, cfg->host_bytes);
	s.objs.observer = cfg->observer;
	s.spare_target = cfg->host_spare != TC_SPARE_AUTO ?
				 TC_MIN(cfg->host_spare, cfg->host_bytes / 2) :
				 TC_MIN((uint64_t)1 << 30, cfg->host_bytes / 8);
	tc__shm_huge_set(cfg->host_huge_pages);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	pthread_sigmask(SIG_BLOCK, &mask, NULL);

	s.ev = tc__ev_new(size_limits(&s));
	if (!s.ev) {
		snprintf(err, errlen, "cannot create the event loop: %s",
			 strerror(errno));
		return -errno;
	}
	rc = tc__sock_prepare_dir(cfg->socket, err, errlen);
	if (rc < 0)
		goto out_ev;
	/* Before listening: the first client already finds every durable
	 * artifact and key a restart or crash left. */
	rc = tc__srv_durable_init(&s, err, errlen);
	if (rc < 0)
		goto out_ev;
	rc = tc__sock_listen(cfg->socket, 512, &s.lfd, err, errlen);
	if (rc < 0)
		goto out_ev;
	tc__sock_reserve(&s.reserve_fd);
	s.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (s.sigfd < 0) {
		rc = -errno;
		snprintf(err, errlen, "signalfd: %s", strerror(errno));
		goto out_listen;
	}
	rc = tc__jobs_new(cfg->job_threads, s.ev, &s.jobs);
	if (rc == 0)
		rc = tc__jobs_new_elastic(cfg->job_threads, IO_JOBS_MAX, s.ev,
					  &s.io_jobs);
	if (rc == 0)
		rc = tc__jobs_new_elastic(1, FOLLOW_JOBS_MAX, s.ev,
					  &s.follow_jobs);
	if (rc < 0) {
		snprintf(err, errlen, "cannot start workers: %s",
			 strerror(-rc));
		goto out_jobs;
	}
	/* Evicted cache artifacts may spill once the I/O workers run. */
	rc = tc__spill_open(cfg, s.io_jobs, &s.spill, err, errlen);
	if (rc < 0)
		goto out_jobs;
	s.objs.evicting = s.spill ? tc__spill_evicting : NULL;
	s.objs.evicting_arg = s.spill;
	rc = tc__gpu_tier_new(cfg, &s.objs, s.jobs, s.follow_jobs, &s.gpu);
	if (rc < 0) {
		snprintf(err, errlen, "out of memory");
		goto out_jobs;
	}
	rc = tc__srv_cluster_start(&s, err, errlen);
	if (rc < 0) {
		tc__gpu_tier_free(s.gpu);
		goto out_jobs;
	}
	tc__ev_add(s.ev, s.lfd, TC_EV_READ, tc__srv_on_accept, &s);
	tc__ev_add(s.ev, s.sigfd, TC_EV_READ, on_signal, &s);
	tc__ev_set_hooks(s.ev, before_sleep, on_tick, 50, &s);
	tc__log(TC_LOG_INFO,
		"tcast daemon %s listening on '%s' (pid %d, host budget %llu "
		"bytes, %d io threads)",
		TC_VERSION_STRING, cfg->socket, (int)getpid(),
		(unsigned long long)cfg->host_bytes, cfg->io_threads);
	tc__log(TC_LOG_INFO,
		"a first read of a mapped page costs %llu ns here: puts are "
		"hashed through %s",
		(unsigned long long)tc__page_fault_ns(),
		tc__faults_dear() ? "their memfd's file" : "the mapping");
	/* Where segments could fill faster, the operator hears how once
	 * (docs/store.md; `tcast doctor` says it too). */
	tc__log(TC_LOG_INFO, "segments fill with %s pages (shmem_enabled %s%s)",
		tc__shm_huge((size_t)1 << 30) ? "2 MiB" : "4 KiB",
		tc__shm_huge_mode(),
		!cfg->host_huge_pages ? ", host_huge_pages off" :
		tc__shm_huge((size_t)1 << 30) ?
					"" :
					"; 'echo advise > /sys/kernel/mm/"
					"transparent_hugepage/shmem_enabled' "
					"fills them up to 6x faster");
	if (cfg->metrics_port) {
		/* Asked for and unavailable is a start-up error, not a
		 * silently missing endpoint. */
		rc = tc__metrics_start(cfg->metrics_port, err, errlen);
		if (rc < 0)
			goto out_stop;
		tc__log(TC_LOG_INFO, "metrics on http://127.0.0.1:%d/metrics",
			cfg->metrics_port);
	}
	tc__srv_metrics_publish(&s, tc__now_ms(), true);
	/* systemd Type=notify: ready once the socket accepts. */
	snprintf(state, sizeof(state),
		 "READY=1\nMAINPID=%d\nSTATUS=serving on %s", (int)getpid(),
		 cfg->socket);
	notify_systemd(state);
	if (ready_fd >= 0) {
		if (write(ready_fd, "R", 1) < 0) {
			/* The starter went away; keep serving anyway. */
		}
		close(ready_fd);
	}
	rc = tc__ev_run(s.ev);

	/* Shutdown: stop accepting, finish jobs, drop every connection. */
	notify_systemd("STOPPING=1\nSTATUS=shutting down");
out_stop:
	tc__metrics_stop();
	tc__ev_del(s.ev, s.lfd);
	for (struct conn *c = s.conns; c; c = c->next)
		tc__srv_conn_close(c, NULL);
	tc__gpu_tier_stop(s.gpu);
	s.stopping = true;
	/* An import blocked in a read that never returns (a hung mount)
	 * must not hold the stop: give I/O jobs a moment, then leave them
	 * blocked (the process exits under them).  Their pool and their
	 * connections stay allocated: a blocked worker still uses them. */
	if (tc__jobs_free_within(s.io_jobs, STOP_IO_WAIT_MS) < 0)
		tc__log(TC_LOG_WARN,
			"stopping with imports still blocked in I/O");
	tc__jobs_free(s.follow_jobs); /* they wait on s.jobs, not back */
	tc__jobs_free(s.jobs);
	tc__srv_spare_drop(&s);
	before_sleep(s.ev, &s);
	tc__srv_cluster_stop(&s);
	tc__objs_release(&s.objs);
	tc__gpu_tier_free(s.gpu);
	unlink(cfg->socket);
	tc__log(TC_LOG_INFO, "tcast daemon stopped");
	goto out_sig;
out_jobs:
	tc__jobs_free(s.follow_jobs);
	tc__jobs_free(s.io_jobs);
	tc__jobs_free(s.jobs);
out_sig:
	close(s.sigfd);
	if (s.reserve_fd >= 0)
		close(s.reserve_fd);
out_listen:
	close(s.lfd);
out_ev:
	tc__spill_close(s.spill);
	tc__durable_close(s.durable);
	tc__ev_free(s.ev);
	return rc;
}
