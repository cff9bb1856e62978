/*
 * config.h - the daemon's configuration: defaults, YAML file, overrides.
 *
 * Configuration is strict: an unknown key, a malformed size or a value out
 * of range is an error at start-up that names the key, never a silent
 * default.  Precedence: built-in defaults < config file < command line.
 */
#ifndef TC_CONFIG_H
#define TC_CONFIG_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/un.h>

#include "net/tls.h"

struct tc__objs_observer;

/* How the store asks another node for a replica (policy ha), wired by the
 * daemon's main when it runs a peer server (the store does not know the
 * peer layer).  replicate() blocks, on an I/O worker: it asks the node
 * whose peer server is at `addr` to pull `id` from `source` (this node's
 * peer server) and waits at most wait_ms for the outcome.  Returns 0 once
 * that node holds it, or a negative code with `err` saying why not. */
struct tc__ha_ops {
	void *arg;
	int (*replicate)(void *arg, const char *addr, const char *id,
			 const char *source, int wait_ms, char *err,
			 size_t errlen);
};

struct tc__store_config {
	char socket[sizeof(((struct sockaddr_un *)0)->sun_path)];
	uint64_t host_bytes;	 /* host-memory budget */
	int io_threads;		 /* threads per import or digest */
	int gpu_load_threads;	 /* threads of a load straight to a GPU; 0:
				    tc__cfg_gpu_load_threads decides */
	int job_threads;	 /* imports/digests running at once */
	int max_clients;	 /* connections accepted at once */
	int log_level;		 /* enum tc_log_level */
	char log_file[PATH_MAX]; /* "" = stderr */
	int handshake_ms;	 /* time a new connection has to say HELLO */
	uint64_t max_outbuf; /* bytes queued to a client before dropping it */
	uint64_t gpu_bytes;  /* GPU budget per device; 0: gpu_percent */
	uint64_t host_spare; /* bytes kept allocated for the next import or
				put; TC_SPARE_AUTO: min(1 GiB, budget / 8) */
	int gpu_percent;     /* GPU budget per device, % of its memory */
	int io_engine;	     /* how GPU loads read files: TC_IO_AUTO,
				TC_IO_URING or TC_IO_PREAD (gpu_loader.h) */
	int metrics_port;    /* Prometheus endpoint on 127.0.0.1; 0 = off */
	int log_format;	     /* TC_LOG_TEXT or TC_LOG_JSON (common/log.h) */
	int idle_timeout_ms; /* a connection holding nothing (no lease, put,
				binding or job) and sending nothing this long
				is closed; 0 = never (default) */
	int write_stall_ms;  /* a client whose queued replies make no
				progress this long is dropped */
	int max_clients_per_uid; /* connections of one uid; 0 = auto
				    (max_clients - max_clients / 8: the
				    rest is kept for root) */
	int max_clients_per_pid; /* connections of one process; 0 = auto
				    (max_clients / 4, at least 4) */
	uint32_t max_tensors;	 /* tensors per artifact (<= TC_MAX_TENSORS) */
	char shared_disk[PATH_MAX]; /* the shared-disk tier: durable, ha and
				       cold artifacts are written under
				       <shared_disk>/tcast/; "" = none */
	int cold_ttl_ms;	    /* cold: host copy kept this long after
				       its last use */
	char state_dir[PATH_MAX];   /* the daemon's own metadata (SQLite);
				       "" = "state" next to the socket */
	char spill_dir[PATH_MAX];   /* this node's own folder where evicted
				       cache artifacts may spill, under
				       <spill_dir>/tcast-spill/, emptied at
				       start; "" = no spilling */
	uint64_t spill_bytes;	    /* bytes the spill folder may hold;
				       TC_SPILL_AUTO: half of its file
				       system's free space at start */
	bool gpu_spare;		    /* gpu_spare: keep one allocation per GPU
				       for the next put of its size */
	bool host_huge_pages;	    /* host_huge_pages: advise segments'
				       mappings MADV_HUGEPAGE (auto) */
	bool pin_eager;	       /* gpu_pin_host: pin large host replicas when
				  they are sealed, once a GPU is in use
				  (eager), or after their first GPU fill
				  (on_use) */
	char peer_listen[128]; /* HOST:PORT of the peer server
				  (port 0 picks one); "" = off */
	char cluster_secret_file[PATH_MAX]; /* 0600 file; required with
					       peer_listen */
	struct tc__tls_config tls; /* tls, tls_cert, tls_key, tls_ca: every
				      cluster connection (global store and
				      peers) through TLS (net/tls.h) */
	int peer_timeout_ms;	   /* a peer silent this long mid-transfer is
				      given up (its chunks go elsewhere) */
	int key_sync_ms;	   /* in a cluster: how often the daemon reads
				      the cluster's generation of the keys it
				      has (0 = never; docs/cluster.md) */
	/* Not configuration: wired by the daemon's main (obj.h). */
	const struct tc__objs_observer *observer;
	/* Not configuration: the ha replication hook, or NULL (no peer
	 * server: no other node can pull from this one). */
	const struct tc__ha_ops *ha;
	int ha_wait_ms;	 /* a put or import with policy ha waits this long for
			    its replica on another node before it replies
			    (then "pending"; the replication goes on) */
	int ha_check_ms; /* how often the ha replicas are checked against the
			    global store (lost ones made again); 0 = never */
	/* Not configuration: the address the peer server bound (peer_listen
	 * with its port chosen), advertised to the cluster; "" = peer_listen.
	 */
	char peer_bound[128];
	/* The cluster (docs/cluster.md); empty global: this node is alone. */
	char global[129];   /* global store HOST:PORT */
	char node_name[65]; /* unique in the cluster; hostname */
	char zone[65], rack[65], host_label[65]; /* topology labels */
};

#define TC_SPARE_AUTO UINT64_MAX
#define TC_SPILL_AUTO UINT64_MAX

void tc__config_defaults(struct tc__store_config *c);
/*
 * Threads of one load straight to a GPU: gpu_load_threads when set, else
 * io_threads, at most 10.  Page cache -> pinned staging copies and the DMA
 * out of staging share the host's memory bus: past ~10 copying threads the
 * DMA slows (config.c has the measurements; bench/loader_threads.py).
 */
int tc__cfg_gpu_load_threads(const struct tc__store_config *c);

/* Load a YAML mapping of the keys above (socket, host_memory, io_threads,
 * job_threads, max_clients, log_level, log_file, handshake_ms,
 * max_client_buffer, gpu_memory, host_spare, io_engine, gpu_pin_host,
 * metrics_port, log_format, idle_timeout_ms, write_stall_ms,
 * max_clients_per_uid, max_clients_per_pid, max_tensors, shared_disk,
 * state_dir, spill_dir, spill_bytes, cold_ttl_ms, peer_listen,
 * cluster_secret_file, peer_timeout_ms, ha_wait_ms).  Returns 0, TC_EBADCONFIG
 * or -errno; `err` names the file, line and key. */
int tc__config_load(struct tc__store_config *c, const char *path, char *err,
		    size_t errlen);
/* Apply one key as if it were a line of a config file (`--set`,
 * `daemon restart`).  Returns 0 or TC_EBADCONFIG; `err` names the key. */
int tc__config_set(struct tc__store_config *c, const char *key, const char *val,
		   char *err, size_t errlen);
/* The effective configuration as a JSON object of strings, each in the
 * syntax tc__config_set reads (malloc'd; NULL on OOM).  Reported by STATUS
 * as "config" so that a restart keeps what the running daemon was given. */
char *tc__config_json(const struct tc__store_config *c);
/* Parse "8GiB", "512MiB", "1.5G", "100%"-free byte sizes: plain integers,
 * K/M/G/T (powers of 1000) and KiB/MiB/GiB/TiB.  Returns 0 or TC_EINVAL. */
int tc__parse_size(const char *s, uint64_t *out);
/* The config name of an io_engine value (TC_IO_*). */
const char *tc__io_engine_name(int e);

#endif /* TC_CONFIG_H */
