/*
 * metrics.h - the daemon's Prometheus counters and their HTTP endpoint.
 *
 * The loop thread and the job workers update plain atomics (relaxed: each
 * value is independent and a scrape may see one a moment older than
 * another); libmicrohttpd's own thread reads them to answer GET /metrics on
 * 127.0.0.1.  Nothing here takes a lock the loop could wait on, so a slow
 * or hostile scraper never stalls a request.  State that only the loop may
 * walk (artifacts, replicas, leases) reaches the scraper as gauges the loop
 * publishes every tick (tc__metrics_set_*).
 *
 * One set of counters per process: there is one daemon per process.  Names
 * and labels are listed in docs/operations.md.
 */
#ifndef TC_METRICS_H
#define TC_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Data paths whose bytes and time are counted. */
enum tc__mpath {
	TC_MPATH_IMPORT_HOST, /* disk -> host memfd (import) */
	TC_MPATH_IMPORT_GPU,  /* disk -> GPU straight (import --device) */
	TC_MPATH_PUT,	      /* client bytes -> sealed artifact (put) */
	TC_MPATH_GPU_FILL,    /* host replica -> GPU replica */
	TC_MPATH_ATTACH_HOST, /* host replica mapped by a client */
	TC_MPATH_ATTACH_GPU,  /* GPU replica mapped by a client */
	TC_MPATH__N
};

#define TC_METRICS_MAX_GPU 64

/* One finished transfer of `bytes` on `path` that took `ns`. */
void tc__metrics_path(int path, uint64_t bytes, uint64_t ns);
/* A reply to a request of message type `type`, `ns` after it arrived. */
void tc__metrics_request(int type, uint64_t ns);
/* A request answered with error `rc` (< 0). */
void tc__metrics_error(int rc);

/* Gauges the loop publishes (every tick). */
struct tc__metrics_tier {
	uint64_t replicas;
	uint64_t bytes; /* bytes held by replicas */
	uint64_t budget;
	uint64_t used; /* charged to the budget (replicas, spare, reserved) */
	uint64_t evictions;
	uint64_t leases;
};
void tc__metrics_set_host(const struct tc__metrics_tier *t);
void tc__metrics_set_server(uint64_t keys, int jobs_pending, int connections,
			    uint64_t protocol_errors);
/* The spill tier (spill.h): spilled copies held, their budget, and
 * counts since start.  All zero when no spill_dir is set. */
struct tc__metrics_spill {
	uint64_t artifacts, bytes, budget;
	uint64_t spilled, spilled_bytes, dropped, removed, reloads,
		reload_failures;
};
void tc__metrics_set_spill(const struct tc__metrics_spill *sp);
/* The shared-disk tier (durable.h): its replicas (durable copies, READY
 * or being written), their bytes, those being written, and failed writes
 * since start.  All zero when no shared_disk is set. */
struct tc__metrics_disk {
	uint64_t replicas, bytes, filling_bytes, write_failures;
};
void tc__metrics_set_disk(const struct tc__metrics_disk *d);
/* GPU `i` (ordinal) with its UUID; `uuid` is copied the first time only. */
void tc__metrics_set_gpu(int i, const char *uuid,
			 const struct tc__metrics_tier *t);

/* Render the whole exposition (text format 0.0.4) into a malloc'd string;
 * NULL on out of memory. */
char *tc__metrics_render(size_t *len);

/* Serve GET /metrics on 127.0.0.1:port from a thread of libmicrohttpd,
 * loaded here by name (common/dynlib.h).  Returns 0, or -errno, TC_EINVAL
 * (no such port) or TC_ENOTSUP (libmicrohttpd cannot be loaded), with
 * `err` saying why. */
int tc__metrics_start(int port, char *err, size_t errlen);
void tc__metrics_stop(void);

#endif /* TC_METRICS_H */
