/*
 * config.c - defaults and the YAML configuration file (libyaml).
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <jansson.h>
#include <unistd.h>

#include "common/compiler.h"
#include "common/kvyaml.h"
#include "common/log.h"
#include "common/tensor.h"
#include "config.h"
#include "xfer/gpu_loader.h"
#include "net/net.h"
#include "tcast/errors.h"

/* io_engine's values by TC_IO_* (gpu_loader.h). */
static const char *const io_engines[] = {
	[TC_IO_AUTO] = "auto",
	[TC_IO_PREAD] = "pread",
	[TC_IO_URING] = "io_uring",
	[TC_IO_MMAP] = "mmap",
};

const char *tc__io_engine_name(int e)
{
	return e >= 0 && e < (int)TC_ARRAY_SIZE(io_engines) ? io_engines[e] :
							      "?";
}

/* A load's threads copy page-cached bytes into pinned staging while the
 * DMA reads staging out: past ~10 their copies take more of the memory
 * bus than the DMA gains (8 GiB page-cached, bench/loader_threads.py: two
 * H100 hosts 2026-12-05, 10 threads 89-90% of pinned H2D at the daemon,
 * 12 threads 88-89%, 14 88-90%, 16 88%; an H200 host 2026-12-03, 10
 * threads 79-85%, 12 77-81%, 8 and 16 lower). */
#define GPU_LOAD_THREADS_MAX 10

int tc__cfg_gpu_load_threads(const struct tc__store_config *c)
{
	if (c->gpu_load_threads)
		return c->gpu_load_threads;
	return c->io_threads < GPU_LOAD_THREADS_MAX ? c->io_threads :
						      GPU_LOAD_THREADS_MAX;
}

void tc__config_defaults(struct tc__store_config *c)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	memset(c, 0, sizeof(*c));
	if (tc__sock_default_path(c->socket, sizeof(c->socket)) < 0)
		c->socket[0] = '\0';
	/* Half of RAM: the host tier is a cache next to the applications. */
	c->host_bytes = pages > 0 && psz > 0 ?
				(uint64_t)pages * (uint64_t)psz / 2 :
				(uint64_t)1 << 30;
	c->io_threads = ncpu > 0 ? (int)(ncpu < 16 ? ncpu : 16) : 4;
	c->gpu_load_threads = 0; /* tc__cfg_gpu_load_threads */
	c->job_threads = 2;
	c->max_clients = 1024;
	c->log_level = TC_LOG_INFO;
	c->handshake_ms = 10000;
	c->max_outbuf = (uint64_t)256 << 20;
	c->host_spare = TC_SPARE_AUTO;
	/* Off: a real client may keep a connection that holds nothing quiet
	 * for hours (a put per checkpoint), and libtcast does not reconnect.
	 * Idle connections give up their slot when the daemon is full
	 * instead (conn.c, evict_idle). */
	c->idle_timeout_ms = 0;
	c->cold_ttl_ms = 60000; /* TensorCast's cold profile: 60 s */
	c->write_stall_ms = 30000;
	c->max_clients_per_uid = 0;
	c->max_tensors = TC_MAX_TENSORS;
	/* 90% of each GPU: room for the CUDA contexts of its clients. */
	c->gpu_percent = 90;
	/* A host replica that feeds GPUs should be pinned before the first
	 * one asks (DESIGN.md 4): the pinned copy runs ~10% faster than the
	 * staging rings and needs no CPU. */
	c->pin_eager = true;
	c->gpu_spare = true;
	c->host_huge_pages = true;
	/* Longer than any pause a loaded sender shows, short enough that a
	 * pull moves a stalled source's chunks elsewhere quickly. */
	c->peer_timeout_ms = 5000;
	c->key_sync_ms = 1000;
	/* An ha put's reply waits this long for its replica on another
	 * node: seconds for artifacts of a few GB on a fast network. */
	c->ha_wait_ms = 30000;
	c->ha_check_ms = 30000;
	c->spill_bytes = TC_SPILL_AUTO;
}

int tc__parse_size(const char *s, uint64_t *out)
{
	static const struct {
		const char *suffix;
		double mult;
	} units[] = { { "", 1 },
		      { "B", 1 },
		      { "K", 1e3 },
		      { "KB", 1e3 },
		      { "M", 1e6 },
		      { "MB", 1e6 },
		      { "G", 1e9 },
		      { "GB", 1e9 },
		      { "T", 1e12 },
		      { "TB", 1e12 },
		      { "KiB", 1024.0 },
		      { "MiB", 1048576.0 },
		      { "GiB", 1073741824.0 },
		      { "TiB", 1099511627776.0 } };
	char *end;
	double v;

	if (!s || !*s)
		return TC_EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || !isfinite(v) || v < 0)
		return TC_EINVAL;
	while (*end == ' ')
		end++;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (!strcasecmp(end, units[i].suffix) &&
		    (strlen(units[i].suffix) < 3 ||
		     !strcmp(end, units[i].suffix))) {
			double b = v * units[i].mult;

			if (b >= 18446744073709551615.0)
				return TC_EINVAL;
			*out = (uint64_t)b;
			return 0;
		}
	}
	return TC_EINVAL;
}

static int set_int(const char *val, int lo, int hi, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(val, &end, 10);
	if (errno || end == val || *end || v < lo || v > hi)
		return TC_EINVAL;
	*out = (int)v;
	return 0;
}

static int apply(struct tc__store_config *c, const char *key, const char *val,
		 char *why, size_t whylen)
{
	int tls = tc__tls_config_set(&c->tls, key, val, why, whylen);

	if (tls != 0)
		return tls < 0 ? tls : 0;
	if (!strcmp(key, "socket")) {
		if (strlen(val) >= sizeof(c->socket)) {
			snprintf(why, whylen, "path longer than %zu bytes",
				 sizeof(c->socket) - 1);
			return TC_EINVAL;
		}
		strcpy(c->socket, val);
		return 0;
	}
	if (!strcmp(key, "host_memory") || !strcmp(key, "max_client_buffer")) {
		uint64_t v;

		if (tc__parse_size(val, &v) < 0 || v == 0) {
			snprintf(why, whylen,
				 "'%s' is not a size (e.g. 8GiB, 512MiB)", val);
			return TC_EINVAL;
		}
		if (key[0] == 'h')
			c->host_bytes = v;
		else
			c->max_outbuf = v;
		return 0;
	}
	if (!strcmp(key, "host_spare")) {
		if (!strcmp(val, "auto")) {
			c->host_spare = TC_SPARE_AUTO;
			return 0;
		}
		if (tc__parse_size(val, &c->host_spare) < 0) {
			snprintf(
				why, whylen,
				"'%s' is not a size or 'auto' (0 turns it off)",
				val);
			return TC_EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "gpu_memory")) {
		size_t n = strlen(val);
		int pct;

		if (n > 1 && val[n - 1] == '%') {
			char num[16];

			snprintf(num, sizeof(num), "%.*s", (int)(n - 1), val);
			if (n - 1 >= sizeof(num) ||
			    set_int(num, 1, 100, &pct) < 0) {
				snprintf(why, whylen,
					 "'%s' is not a percentage 1%%..100%%",
					 val);
				return TC_EINVAL;
			}
			c->gpu_percent = pct;
			c->gpu_bytes = 0;
			return 0;
		}
		if (tc__parse_size(val, &c->gpu_bytes) < 0 ||
		    c->gpu_bytes == 0) {
			snprintf(why, whylen,
				 "'%s' is not a size or a percentage (e.g. "
				 "40GiB, 80%%)",
				 val);
			return TC_EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "io_engine")) {
		for (int e = 0; e < (int)TC_ARRAY_SIZE(io_engines); e++)
			if (!strcmp(val, io_engines[e])) {
				c->io_engine = e;
				return 0;
			}
		snprintf(why, whylen,
			 "'%s' is not auto, io_uring, pread or mmap", val);
		return TC_EINVAL;
	}
	if (!strcmp(key, "host_huge_pages")) {
		if (strcmp(val, "auto") && strcmp(val, "off")) {
			snprintf(why, whylen, "'%s' is not auto or off", val);
			return TC_EINVAL;
		}
		c->host_huge_pages = val[0] == 'a';
		return 0;
	}
	if (!strcmp(key, "gpu_spare")) {
		if (strcmp(val, "on") && strcmp(val, "off")) {
			snprintf(why, whylen, "'%s' is not on or off", val);
			return TC_EINVAL;
		}
		c->gpu_spare = val[1] == 'n';
		return 0;
	}
	if (!strcmp(key, "gpu_pin_host")) {
		if (strcmp(val, "eager") && strcmp(val, "on_use")) {
			snprintf(why, whylen, "'%s' is not eager or on_use",
				 val);
			return TC_EINVAL;
		}
		c->pin_eager = val[0] == 'e';
		return 0;
	}
	if (!strcmp(key, "io_threads") || !strcmp(key, "job_threads") ||
	    !strcmp(key, "gpu_load_threads")) {
		int *dst = key[0] == 'i' ? &c->io_threads :
			   key[0] == 'j' ? &c->job_threads :
					   &c->gpu_load_threads;

		if (set_int(val, 1, 64, dst) < 0) {
			snprintf(why, whylen, "must be an integer 1..64");
			return TC_EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "max_clients")) {
		if (set_int(val, 1, 65000, &c->max_clients) < 0) {
			snprintf(why, whylen, "must be an integer 1..65000");
			return TC_EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "handshake_ms")) {
		if (set_int(val, 1, 3600000, &c->handshake_ms) < 0) {
			snprintf(why, whylen, "must be 1..3600000");
			return TC_EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "cold_ttl_ms")) {
		if (set_int(val, 100, 86400000, &c->cold_ttl_ms) < 0) {
			snprintf(why, whylen, "must be 100..86400000 (ms)");
			return TC_EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "idle_timeout_ms") || !strcmp(key, "write_stall_ms")) {
		int *dst = key[0] == 'i' ? &c->idle_timeout_ms :
					   &c->write_stall_ms;

		if (set_int(val, key[0] == 'i' ? 0 : 100, 86400000, dst) < 0) {
			snprintf(why, whylen, "must be %s..86400000 (ms)",
				 key[0] == 'i' ? "0 (never)" : "100");
			return TC_EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "max_clients_per_uid") ||
	    !strcmp(key, "max_clients_per_pid")) {
		int *dst = key[16] == 'u' ? &c->max_clients_per_uid :
					    &c->max_clients_per_pid;

		if (set_int(val, 0, 65000, dst) < 0) {
			snprintf(why, whylen,
				 "must be an integer 0 (auto)..65000");
			return TC_EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "max_tensors")) {
		int v;

		if (set_int(val, 1, TC_MAX_TENSORS, &v) < 0) {
			snprintf(why, whylen, "must be an integer 1..%d",
				 TC_MAX_TENSORS);
			return TC_EINVAL;
		}
		c->max_tensors = (uint32_t)v;
		return 0;
	}
	if (!strcmp(key, "log_level")) {
		int l = tc__log_parse_level(val);

		if (l < 0) {
			snprintf(why, whylen,
				 "must be error, warn, info or debug");
			return TC_EINVAL;
		}
		c->log_level = l;
		return 0;
	}
	if (!strcmp(key, "metrics_port")) {
		if (set_int(val, 0, 65535, &c->metrics_port) < 0) {
			snprintf(why, whylen,
				 "must be a TCP port 1..65535, or 0 for off");
			return TC_EINVAL;
		}
		return 0;
	}
	{
		static const struct {
			const char *key;
			size_t off, len;
			bool addr;
		} strs[] = {
#define S(k, f, a)                                 \
	{ k, offsetof(struct tc__store_config, f), \
	  sizeof(((struct tc__store_config *)0)->f), a }
			S("global", global, true),
			S("peer_listen", peer_listen, true),
			S("cluster_secret_file", cluster_secret_file, false),
			S("node_name", node_name, false),
			S("zone", zone, false),
			S("rack", rack, false),
			S("host", host_label, false),
#undef S
		};

		for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
			if (strcmp(key, strs[i].key))
				continue;
			if (strlen(val) >= strs[i].len) {
				snprintf(why, whylen, "longer than %zu bytes",
					 strs[i].len - 1);
				return TC_EINVAL;
			}
			if (strs[i].addr && *val && !strchr(val, ':')) {
				snprintf(why, whylen, "'%s' is not HOST:PORT",
					 val);
				return TC_EINVAL;
			}
			/* names and labels travel to the global store:
			 * printable, no spaces */
			for (const char *p = val;
			     !strs[i].addr &&
			     strcmp(key, "cluster_secret_file") && *p;
			     p++)
				if ((unsigned char)*p < 0x21 ||
				    (unsigned char)*p > 0x7e) {
					snprintf(why, whylen,
						 "only printable ASCII without "
						 "spaces");
					return TC_EINVAL;
				}
			strcpy((char *)c + strs[i].off, val);
			return 0;
		}
	}
	if (!strcmp(key, "log_format")) {
		int f = tc__log_parse_format(val);

		if (f < 0) {
			snprintf(why, whylen, "must be text or json");
			return TC_EINVAL;
		}
		c->log_format = f;
		return 0;
	}
	if (!strcmp(key, "spill_bytes")) {
		if (!strcmp(val, "auto")) {
			c->spill_bytes = TC_SPILL_AUTO;
			return 0;
		}
		if (tc__parse_size(val, &c->spill_bytes) < 0 ||
		    c->spill_bytes == 0) {
			snprintf(why, whylen,
				 "'%s' is not a size (e.g. 64GiB) or 'auto'",
				 val);
			return TC_EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "shared_disk") || !strcmp(key, "state_dir") ||
	    !strcmp(key, "spill_dir")) {
		char *dst = key[1] == 'h' ? c->shared_disk :
			    key[1] == 'p' ? c->spill_dir :
					    c->state_dir;

		if (strlen(val) >= PATH_MAX) {
			snprintf(why, whylen, "path too long");
			return TC_EINVAL;
		}
		if (val[0] && val[0] != '/') {
			/* The daemon runs from /, not from where it was
			 * started: a relative path would name another
			 * folder. */
			snprintf(why, whylen, "must be an absolute path");
			return TC_EINVAL;
		}
		strcpy(dst, val);
		return 0;
	}
	if (!strcmp(key, "ha_wait_ms")) {
		if (set_int(val, 0, 3600000, &c->ha_wait_ms) < 0) {
			snprintf(why, whylen, "must be an integer 0..3600000");
			return TC_EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "ha_check_ms")) {
		if (set_int(val, 0, 86400000, &c->ha_check_ms) < 0) {
			snprintf(why, whylen, "must be an integer 0..86400000");
			return TC_EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "key_sync_ms")) {
		if (set_int(val, 0, 600000, &c->key_sync_ms) < 0 ||
		    (c->key_sync_ms && c->key_sync_ms < 50)) {
			snprintf(why, whylen,
				 "must be 0 (off) or an integer 50..600000");
			return TC_EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "peer_timeout_ms")) {
		if (set_int(val, 100, 600000, &c->peer_timeout_ms) < 0) {
			snprintf(why, whylen, "must be an integer 100..600000");
			return TC_EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "peer_listen")) {
		if (strlen(val) >= sizeof(c->peer_listen) ||
		    (val[0] && !strrchr(val, ':'))) {
			snprintf(why, whylen,
				 "must be HOST:PORT (port 0 picks one), or "
				 "empty for off");
			return TC_EINVAL;
		}
		strcpy(c->peer_listen, val);
		return 0;
	}
	if (!strcmp(key, "cluster_secret_file")) {
		if (strlen(val) >= sizeof(c->cluster_secret_file)) {
			snprintf(why, whylen, "path too long");
			return TC_EINVAL;
		}
		strcpy(c->cluster_secret_file, val);
		return 0;
	}
	if (!strcmp(key, "log_file")) {
		if (strlen(val) >= sizeof(c->log_file)) {
			snprintf(why, whylen, "path too long");
			return TC_EINVAL;
		}
		strcpy(c->log_file, val);
		return 0;
	}
	snprintf(why, whylen, "unknown key");
	return TC_EBADCONFIG;
}

static int apply_cb(void *arg, const char *key, const char *val, char *why,
		    size_t whylen)
{
	return apply(arg, key, val, why, whylen);
}

int tc__config_load(struct tc__store_config *c, const char *path, char *err,
		    size_t errlen)
{
	return tc__kvyaml_load(path, apply_cb, c, err, errlen);
}

int tc__config_set(struct tc__store_config *c, const char *key, const char *val,
		   char *err, size_t errlen)
{
	char why[160];
	int rc = apply(c, key, val, why, sizeof(why));

	if (rc < 0) {
		snprintf(err, errlen, "key '%s': %s", key, why);
		return TC_EBADCONFIG;
	}
	return 0;
}

/* Every value in the syntax apply() reads back, so that `daemon restart`
 * can hand the running daemon's configuration to the next one unchanged. */
char *tc__config_json(const struct tc__store_config *c)
{
	static const char *const levels[] = { "error", "warn", "info",
					      "debug" };
	json_t *j = json_object();
	char num[32], *out;

#define TC__CFG_NUM(key, v)                                                  \
	do {                                                                 \
		snprintf(num, sizeof(num), "%llu", (unsigned long long)(v)); \
		json_object_set_new(j, key, json_string(num));               \
	} while (0)
	if (!j)
		return NULL;
	json_object_set_new(j, "socket", json_string(c->socket));
	TC__CFG_NUM("host_memory", c->host_bytes);
	TC__CFG_NUM("io_threads", c->io_threads);
	TC__CFG_NUM("gpu_load_threads", tc__cfg_gpu_load_threads(c));
	TC__CFG_NUM("job_threads", c->job_threads);
	TC__CFG_NUM("max_clients", c->max_clients);
	json_object_set_new(
		j, "log_level",
		json_string(c->log_level >= 0 &&
					    c->log_level <
						    (int)TC_ARRAY_SIZE(levels) ?
				    levels[c->log_level] :
				    "info"));
	json_object_set_new(j, "log_file", json_string(c->log_file));
	TC__CFG_NUM("handshake_ms", c->handshake_ms);
	TC__CFG_NUM("max_client_buffer", c->max_outbuf);
	if (c->gpu_bytes) {
		TC__CFG_NUM("gpu_memory", c->gpu_bytes);
	} else {
		snprintf(num, sizeof(num), "%d%%", c->gpu_percent);
		json_object_set_new(j, "gpu_memory", json_string(num));
	}
	if (c->host_spare == TC_SPARE_AUTO)
		json_object_set_new(j, "host_spare", json_string("auto"));
	else
		TC__CFG_NUM("host_spare", c->host_spare);
	json_object_set_new(j, "io_engine",
			    json_string(tc__io_engine_name(c->io_engine)));
	json_object_set_new(j, "gpu_pin_host",
			    json_string(c->pin_eager ? "eager" : "on_use"));
	json_object_set_new(j, "host_huge_pages",
			    json_string(c->host_huge_pages ? "auto" : "off"));
	json_object_set_new(j, "gpu_spare",
			    json_string(c->gpu_spare ? "on" : "off"));
	TC__CFG_NUM("metrics_port", c->metrics_port);
	json_object_set_new(j, "log_format",
			    json_string(c->log_format == TC_LOG_JSON ? "json" :
								       "text"));
	TC__CFG_NUM("idle_timeout_ms", c->idle_timeout_ms);
	TC__CFG_NUM("cold_ttl_ms", c->cold_ttl_ms);
	TC__CFG_NUM("write_stall_ms", c->write_stall_ms);
	TC__CFG_NUM("max_clients_per_uid", c->max_clients_per_uid);
	TC__CFG_NUM("max_clients_per_pid", c->max_clients_per_pid);
	TC__CFG_NUM("max_tensors", c->max_tensors);
	json_object_set_new(j, "shared_disk", json_string(c->shared_disk));
	json_object_set_new(j, "state_dir", json_string(c->state_dir));
	json_object_set_new(j, "spill_dir", json_string(c->spill_dir));
	if (c->spill_bytes == TC_SPILL_AUTO)
		json_object_set_new(j, "spill_bytes", json_string("auto"));
	else
		TC__CFG_NUM("spill_bytes", c->spill_bytes);
	json_object_set_new(j, "peer_listen", json_string(c->peer_listen));
	json_object_set_new(j, "cluster_secret_file",
			    json_string(c->cluster_secret_file));
	TC__CFG_NUM("peer_timeout_ms", c->peer_timeout_ms);
	json_object_set_new(j, "tls",
			    json_string(tc__tls_mode_name(c->tls.mode)));
	json_object_set_new(j, "tls_cert", json_string(c->tls.cert));
	json_object_set_new(j, "tls_key", json_string(c->tls.key));
	json_object_set_new(j, "tls_ca", json_string(c->tls.ca));
	json_object_set_new(j, "tls_verify_name",
			    json_string(c->tls.no_verify_name ? "off" : "on"));
	TC__CFG_NUM("key_sync_ms", c->key_sync_ms);
	TC__CFG_NUM("ha_wait_ms", c->ha_wait_ms);
	TC__CFG_NUM("ha_check_ms", c->ha_check_ms);
#undef TC__CFG_NUM
	{
		const char *const k[] = { "global", "node_name", "zone", "rack",
					  "host" };
		const char *const v[] = { c->global, c->node_name, c->zone,
					  c->rack, c->host_label };

		for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++)
			if (v[i][0])
				json_object_set_new(j, k[i], json_string(v[i]));
	}
	out = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	return out;
}
