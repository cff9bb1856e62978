/*
 * metrics.c - atomic counters, their Prometheus text rendering, and the
 * libmicrohttpd endpoint that serves them.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/compiler.h"
#include "common/dynlib.h"
#include "common/log.h"
#include "metrics.h"
#include "proto/proto.h"
#include "tcast/errors.h"
#include "tcast/version.h"

typedef _Atomic uint64_t counter;

/* Upper bounds (seconds) of the request latency buckets: from a cached
 * STATUS (tens of microseconds) to a cold multi-GiB import (a minute). */
static const double lat_bounds[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
				     0.005,  0.01,    0.025,  0.05,  0.1,
				     0.25,   0.5,     1,      2.5,   5,
				     10,     30,      60 };
#define NBUCKETS (TC_ARRAY_SIZE(lat_bounds) + 1) /* the last is +Inf */

/* Error slots: errno values (1..255) and tcast codes (-4000..-4127). */
#define ERR_ERRNO 256
#define ERR_TC	  128
#define ERR_SLOTS (ERR_ERRNO + ERR_TC + 1) /* the last is "other" */

static const char *const path_names[TC_MPATH__N] = {
	[TC_MPATH_IMPORT_HOST] = "import_host",
	[TC_MPATH_IMPORT_GPU] = "import_gpu",
	[TC_MPATH_PUT] = "put",
	[TC_MPATH_GPU_FILL] = "gpu_fill",
	[TC_MPATH_ATTACH_HOST] = "attach_host",
	[TC_MPATH_ATTACH_GPU] = "attach_gpu",
};

struct tier_gauges {
	counter replicas, bytes, budget, used, evictions, leases;
};

struct spill_gauges {
	counter artifacts, bytes, budget, spilled, spilled_bytes, dropped,
		removed, reloads, reload_failures;
};

struct disk_gauges {
	counter replicas, bytes, filling_bytes, write_failures;
};

static struct {
	uint64_t start_s;
	counter path_bytes[TC_MPATH__N], path_ns[TC_MPATH__N],
		path_ops[TC_MPATH__N];
	/* Last transfer's rate in bytes per second, as a double's bits. */
	counter path_last_bps[TC_MPATH__N];
	counter lat[TC_MSG__MAX][NBUCKETS];
	counter lat_ns[TC_MSG__MAX];
	counter errors[ERR_SLOTS];
	counter conns_open, proto_errors;
	struct tier_gauges host;
	counter keys, jobs_pending;
	struct spill_gauges spill;
	struct disk_gauges disk;
	struct tier_gauges gpu[TC_METRICS_MAX_GPU];
	char gpu_uuid[TC_METRICS_MAX_GPU][48];
	_Atomic int ngpu; /* gpu_uuid[0..ngpu) are written (release) */
	counter scrapes;
} m;

static struct MHD_Daemon *httpd;

/* libmicrohttpd's calls, loaded when an endpoint is asked for
 * (common/dynlib.h: linking it cost every CLI command its GnuTLS chain). */
#define MHD_CALLS(X)                                             \
	X(start_daemon, MHD_start_daemon)                        \
	X(stop_daemon, MHD_stop_daemon)                          \
	X(response_from_buffer, MHD_create_response_from_buffer) \
	X(add_response_header, MHD_add_response_header)          \
	X(queue_response, MHD_queue_response)                    \
	X(destroy_response, MHD_destroy_response)

static struct {
#define FIELD(f, sym) __typeof__(&sym) f;
	MHD_CALLS(FIELD)
#undef FIELD
} mhd;

static int mhd_load(char *err, size_t errlen)
{
#define NAME(f, sym) #sym,
	static const char *const names[] = { MHD_CALLS(NAME) };
#undef NAME
	void *addr[TC_ARRAY_SIZE(names)];
	size_t i = 0;

	if (mhd.start_daemon)
		return 0;
	if (tc__dl_load("libmicrohttpd.so.12", "libmicrohttpd12", names,
			TC_ARRAY_SIZE(names), addr, err, errlen) < 0)
		return TC_ENOTSUP;
#define ASSIGN(f, sym) mhd.f = (__typeof__(mhd.f))addr[i++];
	MHD_CALLS(ASSIGN)
#undef ASSIGN
	return 0;
}

#define ADD(x, v) atomic_fetch_add_explicit(&(x), (v), memory_order_relaxed)
#define SET(x, v) atomic_store_explicit(&(x), (v), memory_order_relaxed)
#define GET(x)	  atomic_load_explicit(&(x), memory_order_relaxed)

void tc__metrics_path(int path, uint64_t bytes, uint64_t ns)
{
	double bps;
	uint64_t bits;

	if (path < 0 || path >= TC_MPATH__N)
		return;
	ADD(m.path_bytes[path], bytes);
	ADD(m.path_ns[path], ns);
	ADD(m.path_ops[path], 1);
	bps = ns ? (double)bytes * 1e9 / (double)ns : 0.0;
	memcpy(&bits, &bps, sizeof(bits));
	SET(m.path_last_bps[path], bits);
}

void tc__metrics_request(int type, uint64_t ns)
{
	double s = (double)ns / 1e9;
	size_t b = 0;

	if (type < 0 || type >= TC_MSG__MAX)
		return;
	while (b < TC_ARRAY_SIZE(lat_bounds) && s > lat_bounds[b])
		b++;
	ADD(m.lat[type][b], 1);
	ADD(m.lat_ns[type], ns);
}

static int err_slot(int rc)
{
	int e = -rc;

	if (e > 0 && e < ERR_ERRNO)
		return e;
	if (e >= 4000 && e < 4000 + ERR_TC)
		return ERR_ERRNO + (e - 4000);
	return ERR_SLOTS - 1;
}

static int slot_code(int slot)
{
	return slot < ERR_ERRNO ? -slot : -(4000 + slot - ERR_ERRNO);
}

void tc__metrics_error(int rc)
{
	if (rc < 0)
		ADD(m.errors[err_slot(rc)], 1);
}

static void set_tier(struct tier_gauges *g, const struct tc__metrics_tier *t)
{
	SET(g->replicas, t->replicas);
	SET(g->bytes, t->bytes);
	SET(g->budget, t->budget);
	SET(g->used, t->used);
	SET(g->evictions, t->evictions);
	SET(g->leases, t->leases);
}

void tc__metrics_set_host(const struct tc__metrics_tier *t)
{
	set_tier(&m.host, t);
}

void tc__metrics_set_spill(const struct tc__metrics_spill *sp)
{
	SET(m.spill.artifacts, sp->artifacts);
	SET(m.spill.bytes, sp->bytes);
	SET(m.spill.budget, sp->budget);
	SET(m.spill.spilled, sp->spilled);
	SET(m.spill.spilled_bytes, sp->spilled_bytes);
	SET(m.spill.dropped, sp->dropped);
	SET(m.spill.removed, sp->removed);
	SET(m.spill.reloads, sp->reloads);
	SET(m.spill.reload_failures, sp->reload_failures);
}

void tc__metrics_set_disk(const struct tc__metrics_disk *d)
{
	SET(m.disk.replicas, d->replicas);
	SET(m.disk.bytes, d->bytes);
	SET(m.disk.filling_bytes, d->filling_bytes);
	SET(m.disk.write_failures, d->write_failures);
}

void tc__metrics_set_server(uint64_t keys, int jobs_pending, int connections,
			    uint64_t protocol_errors)
{
	SET(m.keys, keys);
	SET(m.jobs_pending, (uint64_t)(jobs_pending > 0 ? jobs_pending : 0));
	SET(m.conns_open, (uint64_t)(connections > 0 ? connections : 0));
	SET(m.proto_errors, protocol_errors);
}

void tc__metrics_set_gpu(int i, const char *uuid,
			 const struct tc__metrics_tier *t)
{
	int n = atomic_load_explicit(&m.ngpu, memory_order_relaxed);

	if (i < 0 || i >= TC_METRICS_MAX_GPU)
		return;
	set_tier(&m.gpu[i], t);
	/* Devices are published in ordinal order, each UUID before it is
	 * counted, so the scraper never reads one being written. */
	if (i == n) {
		snprintf(m.gpu_uuid[i], sizeof(m.gpu_uuid[i]), "%s",
			 uuid ? uuid : "");
		atomic_store_explicit(&m.ngpu, n + 1, memory_order_release);
	}
}

/* ---------------------------------------------------------- rendering */

static void help(FILE *f, const char *name, const char *type, const char *text)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

/* One metric of a block of counters (the spill folder's, the shared
 * disk's): its counter at `off` in the block. */
struct metric_def {
	const char *name, *type, *text;
	size_t off;
};

static void metric_lines(FILE *f, const void *block, const struct metric_def *d,
			 size_t n)
{
	for (size_t i = 0; i < n; i++) {
		help(f, d[i].name, d[i].type, d[i].text);
		fprintf(f, "%s %llu\n", d[i].name,
			(unsigned long long)GET(
				*(const counter *)((const char *)block +
						   d[i].off)));
	}
}

static void tier_lines(FILE *f, const char *name, const char *type,
		       const char *text, size_t field)
{
	int n = atomic_load_explicit(&m.ngpu, memory_order_acquire);

	help(f, name, type, text);
	fprintf(f, "%s{tier=\"host\"} %llu\n", name,
		(unsigned long long)GET(*(counter *)((char *)&m.host + field)));
	for (int i = 0; i < n; i++)
		fprintf(f, "%s{tier=\"gpu\",gpu=\"%d\",uuid=\"%s\"} %llu\n",
			name, i, m.gpu_uuid[i],
			(unsigned long long)GET(
				*(counter *)((char *)&m.gpu[i] + field)));
}

static void lower(char *dst, const char *src, size_t len)
{
	size_t i = 0;

	for (; src[i] && i + 1 < len; i++)
		dst[i] = (char)tolower((unsigned char)src[i]);
	dst[i] = '\0';
}

char *tc__metrics_render(size_t *len)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);
	struct timespec now;

	if (!f)
		return NULL;
	ADD(m.scrapes, 1);
	clock_gettime(CLOCK_MONOTONIC, &now);

	help(f, "tcast_build_info", "gauge", "Version of the running daemon.");
	fprintf(f, "tcast_build_info{version=\"%s\"} 1\n", TC_VERSION_STRING);
	help(f, "tcast_uptime_seconds", "gauge", "Seconds since start.");
	fprintf(f, "tcast_uptime_seconds %llu\n",
		(unsigned long long)((uint64_t)now.tv_sec - m.start_s));
	help(f, "tcast_metrics_scrapes_total", "counter",
	     "Scrapes answered, this one included.");
	fprintf(f, "tcast_metrics_scrapes_total %llu\n",
		(unsigned long long)GET(m.scrapes));

	help(f, "tcast_path_bytes_total", "counter",
	     "Bytes moved per data path.");
	for (int p = 0; p < TC_MPATH__N; p++)
		fprintf(f, "tcast_path_bytes_total{path=\"%s\"} %llu\n",
			path_names[p],
			(unsigned long long)GET(m.path_bytes[p]));
	help(f, "tcast_path_seconds_total", "counter",
	     "Seconds spent moving those bytes per data path.");
	for (int p = 0; p < TC_MPATH__N; p++)
		fprintf(f, "tcast_path_seconds_total{path=\"%s\"} %.9f\n",
			path_names[p], (double)GET(m.path_ns[p]) / 1e9);
	help(f, "tcast_path_operations_total", "counter",
	     "Transfers finished per data path.");
	for (int p = 0; p < TC_MPATH__N; p++)
		fprintf(f, "tcast_path_operations_total{path=\"%s\"} %llu\n",
			path_names[p], (unsigned long long)GET(m.path_ops[p]));
	help(f, "tcast_path_last_gigabytes_per_second", "gauge",
	     "Rate of the last transfer per data path (GB/s, 1e9 bytes).");
	for (int p = 0; p < TC_MPATH__N; p++) {
		uint64_t bits = GET(m.path_last_bps[p]);
		double bps;

		memcpy(&bps, &bits, sizeof(bps));
		fprintf(f,
			"tcast_path_last_gigabytes_per_second{path=\"%s\"} "
			"%.6f\n",
			path_names[p], bps / 1e9);
	}

	tier_lines(f, "tcast_replicas", "gauge", "Replicas held per tier.",
		   offsetof(struct tier_gauges, replicas));
	tier_lines(f, "tcast_replica_bytes", "gauge",
		   "Bytes held by replicas per tier.",
		   offsetof(struct tier_gauges, bytes));
	tier_lines(f, "tcast_budget_bytes", "gauge",
		   "Memory budget (limit) per tier.",
		   offsetof(struct tier_gauges, budget));
	tier_lines(f, "tcast_budget_used_bytes", "gauge",
		   "Bytes charged to the budget per tier.",
		   offsetof(struct tier_gauges, used));
	tier_lines(f, "tcast_evictions_total", "counter",
		   "Replicas evicted to make room, per tier.",
		   offsetof(struct tier_gauges, evictions));
	tier_lines(f, "tcast_leases", "gauge",
		   "Attaches clients hold and have not released, per tier.",
		   offsetof(struct tier_gauges, leases));
	{
		static const struct metric_def sl[] = {
#define TC__SPILL(n, t, x, f) { n, t, x, offsetof(struct spill_gauges, f) }
			TC__SPILL("tcast_spill_artifacts", "gauge",
				  "Evicted cache artifacts held in the spill "
				  "folder (or being written).",
				  artifacts),
			TC__SPILL("tcast_spill_bytes", "gauge",
				  "Bytes of those spilled copies.", bytes),
			TC__SPILL("tcast_spill_budget_bytes", "gauge",
				  "spill_bytes: what the spill folder may "
				  "hold.",
				  budget),
			TC__SPILL("tcast_spilled_total", "counter",
				  "Evicted cache artifacts written to the "
				  "spill folder.",
				  spilled),
			TC__SPILL("tcast_spilled_bytes_total", "counter",
				  "Bytes written to the spill folder.",
				  spilled_bytes),
			TC__SPILL("tcast_spill_dropped_total", "counter",
				  "Evicted cache artifacts dropped instead "
				  "of spilled (folder unusable or full, "
				  "write failed).",
				  dropped),
			TC__SPILL("tcast_spill_removed_total", "counter",
				  "Spilled copies removed by the spill "
				  "folder's LRU.",
				  removed),
			TC__SPILL("tcast_spill_reloads_total", "counter",
				  "Spilled artifacts loaded back.", reloads),
			TC__SPILL("tcast_spill_reload_failures_total",
				  "counter",
				  "Loads from the spill folder that failed "
				  "(a corrupt copy among them).",
				  reload_failures),
#undef TC__SPILL
		};

		metric_lines(f, &m.spill, sl, TC_ARRAY_SIZE(sl));
	}
	{
		static const struct metric_def dl[] = {
#define TC__DISK(n, t, x, f) { n, t, x, offsetof(struct disk_gauges, f) }
			TC__DISK("tcast_shared_disk_replicas", "gauge",
				 "Copies on the shared disk (durable, ha, "
				 "cold), recorded or being written.",
				 replicas),
			TC__DISK("tcast_shared_disk_bytes", "gauge",
				 "Bytes of those copies (the tier has no "
				 "budget).",
				 bytes),
			TC__DISK("tcast_shared_disk_filling_bytes", "gauge",
				 "Of those, bytes of copies being written.",
				 filling_bytes),
			TC__DISK("tcast_shared_disk_write_failures_total",
				 "counter",
				 "Writes of puts and imports to the shared "
				 "disk that failed.",
				 write_failures),
#undef TC__DISK
		};

		metric_lines(f, &m.disk, dl, TC_ARRAY_SIZE(dl));
	}
	help(f, "tcast_keys", "gauge", "Keys the daemon holds.");
	fprintf(f, "tcast_keys %llu\n", (unsigned long long)GET(m.keys));
	help(f, "tcast_jobs_pending", "gauge",
	     "Imports, digests and fills queued or running.");
	fprintf(f, "tcast_jobs_pending %llu\n",
		(unsigned long long)GET(m.jobs_pending));

	help(f, "tcast_connections", "gauge", "Client connections open.");
	fprintf(f, "tcast_connections %llu\n",
		(unsigned long long)GET(m.conns_open));
	help(f, "tcast_protocol_errors_total", "counter",
	     "Connections dropped for malformed frames.");
	fprintf(f, "tcast_protocol_errors_total %llu\n",
		(unsigned long long)GET(m.proto_errors));

	help(f, "tcast_errors_total", "counter",
	     "Requests answered with an error, by code.");
	for (int s = 0; s < ERR_SLOTS; s++) {
		uint64_t v = GET(m.errors[s]);

		if (!v)
			continue;
		fprintf(f, "tcast_errors_total{code=\"%s\"} %llu\n",
			s == ERR_SLOTS - 1 ? "other" :
					     tc_err_name(slot_code(s)),
			(unsigned long long)v);
	}

	help(f, "tcast_request_duration_seconds", "histogram",
	     "Time from a request's arrival to its reply, per type.");
	for (int t = 0; t < TC_MSG__MAX; t++) {
		uint64_t cum = 0, b[NBUCKETS];
		const char *name = tc__proto_name(t);
		char lname[32];

		for (size_t i = 0; i < NBUCKETS; i++) {
			b[i] = GET(m.lat[t][i]);
			cum += b[i];
		}
		if (!cum || !name || name[0] == '?')
			continue;
		lower(lname, name, sizeof(lname));
		cum = 0;
		for (size_t i = 0; i < NBUCKETS; i++) {
			cum += b[i];
			if (i + 1 < NBUCKETS)
				fprintf(f,
					"tcast_request_duration_seconds_bucket"
					"{type=\"%s\",le=\"%g\"} %llu\n",
					lname, lat_bounds[i],
					(unsigned long long)cum);
			else
				fprintf(f,
					"tcast_request_duration_seconds_bucket"
					"{type=\"%s\",le=\"+Inf\"} %llu\n",
					lname, (unsigned long long)cum);
		}
		fprintf(f,
			"tcast_request_duration_seconds_sum{type=\"%s\"} "
			"%.9f\n",
			lname, (double)GET(m.lat_ns[t]) / 1e9);
		fprintf(f,
			"tcast_request_duration_seconds_count{type=\"%s\"} "
			"%llu\n",
			lname, (unsigned long long)cum);
	}
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	if (len)
		*len = n;
	return buf;
}

/* --------------------------------------------------------------- HTTP */

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn,
			      const char *url, const char *method,
			      const char *version, const char *upload,
			      size_t *upload_len, void **state)
{
	static const char not_found[] = "not found: try /metrics\n";
	static const char bad_method[] = "only GET\n";
	struct MHD_Response *resp;
	enum MHD_Result ret;
	unsigned code = MHD_HTTP_OK;
	char *body;
	size_t len = 0;

	if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
		resp = mhd.response_from_buffer(sizeof(bad_method) - 1,
						(void *)bad_method,
						MHD_RESPMEM_PERSISTENT);
		code = MHD_HTTP_METHOD_NOT_ALLOWED;
	} else if (strcmp(url, "/metrics")) {
		resp = mhd.response_from_buffer(sizeof(not_found) - 1,
						(void *)not_found,
						MHD_RESPMEM_PERSISTENT);
		code = MHD_HTTP_NOT_FOUND;
	} else {
		body = tc__metrics_render(&len);
		if (!body)
			return MHD_NO; /* out of memory: drop the connection */
		resp = mhd.response_from_buffer(len, body,
						MHD_RESPMEM_MUST_FREE);
		if (!resp)
			free(body);
	}
	if (!resp)
		return MHD_NO;
	mhd.add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
				code == MHD_HTTP_OK ?
					"text/plain; version=0.0.4; "
					"charset=utf-8" :
					"text/plain; charset=utf-8");
	ret = mhd.queue_response(conn, code, resp);
	mhd.destroy_response(resp);
	return ret;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[256];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	tc__log(TC_LOG_WARN, "metrics endpoint: %s", msg);
}

int tc__metrics_start(int port, char *err, size_t errlen)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct timespec now;

	/* Monotonic: a wall-clock step (NTP) must not wrap the uptime. */
	clock_gettime(CLOCK_MONOTONIC, &now);
	m.start_s = (uint64_t)now.tv_sec;
	if (port <= 0 || port > 65535) {
		snprintf(err, errlen, "metrics port %d is not 1..65535", port);
		return TC_EINVAL;
	}
	/* Loopback only: the numbers say what the node holds and does; a
	 * scraper elsewhere reaches them through its own local agent or an
	 * SSH tunnel, never by opening the port to the network. */
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (mhd_load(err, errlen) < 0)
		return TC_ENOTSUP;
	errno = 0; /* dlopen's search leaves ENOENT behind */
	httpd = mhd.start_daemon(
		MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
			MHD_USE_ERROR_LOG,
		(uint16_t)port, NULL, NULL, answer, NULL, MHD_OPTION_SOCK_ADDR,
		(const struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT,
		(unsigned)32, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
		MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
	if (!httpd) {
		int e = errno ? errno : EADDRINUSE;

		snprintf(err, errlen,
			 "cannot serve metrics on 127.0.0.1:%d: %s", port,
			 strerror(e));
		return -e;
	}
	return 0;
}

void tc__metrics_stop(void)
{
	if (httpd)
		mhd.stop_daemon(httpd);
	httpd = NULL;
}
