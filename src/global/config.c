/*
 * config.c - the global store's configuration (gs.h): defaults, a flat
 * YAML file, flags on top.  Strict: an unknown key or a bad value is an
 * error naming it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/kvyaml.h"
#include "common/log.h"
#include "gs.h"
#include "tcast/errors.h"

void tc__gs_config_defaults(struct tc__gs_config *c)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");

	memset(c, 0, sizeof(*c));
	snprintf(c->listen, sizeof(c->listen), "0.0.0.0:7470");
	if (xdg && *xdg)
		snprintf(c->state_dir, sizeof(c->state_dir), "%s/tcast-global",
			 xdg);
	else
		snprintf(c->state_dir, sizeof(c->state_dir),
			 "/tmp/tcast-%u/global", (unsigned)getuid());
	c->log_level = TC_LOG_INFO;
	c->lease_ms = 5000;
	c->heartbeat_ms = 1000;
	c->max_conns = 4096;
	c->handshake_ms = 5000;
	c->idle_ms = 60000;
	c->sources_max = 8;
}

void tc__gs_config_finish(struct tc__gs_config *c)
{
	if (!c->db[0])
		snprintf(c->db, sizeof(c->db), "%s/global.db", c->state_dir);
}

static int set_int(const char *val, int lo, int hi, int *out, char *why,
		   size_t whylen)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(val, &end, 10);
	if (!*val || *end || errno || v < lo || v > hi) {
		snprintf(why, whylen, "'%s' is not an integer in %d..%d", val,
			 lo, hi);
		return TC_EINVAL;
	}
	*out = (int)v;
	return 0;
}

static int set_path(char *dst, size_t len, const char *val, char *why,
		    size_t whylen)
{
	if (!*val || strlen(val) >= len) {
		snprintf(why, whylen, "empty or too long");
		return TC_EINVAL;
	}
	strcpy(dst, val);
	return 0;
}

static int apply(void *arg, const char *key, const char *val, char *why,
		 size_t whylen)
{
	struct tc__gs_config *c = arg;
	int ret = tc__tls_config_set(&c->tls, key, val, why, whylen);

	if (ret != 0)
		return ret < 0 ? ret : 0;

	if (!strcmp(key, "listen")) {
		if (!*val || strlen(val) > TC_GSP_MAX_ADDR ||
		    !strchr(val, ':')) {
			snprintf(why, whylen, "'%s' is not HOST:PORT", val);
			return TC_EINVAL;
		}
		strcpy(c->listen, val);
		return 0;
	}
	if (!strcmp(key, "cluster_secret_file"))
		return set_path(c->secret_file, sizeof(c->secret_file), val,
				why, whylen);
	if (!strcmp(key, "db"))
		return set_path(c->db, sizeof(c->db), val, why, whylen);
	if (!strcmp(key, "log_file"))
		return set_path(c->log_file, sizeof(c->log_file), val, why,
				whylen);
	if (!strcmp(key, "state_dir"))
		return set_path(c->state_dir, sizeof(c->state_dir), val, why,
				whylen);
	if (!strcmp(key, "log_level")) {
		int l = tc__log_parse_level(val);

		if (l < 0) {
			snprintf(why, whylen, "expected error|warn|info|debug");
			return TC_EINVAL;
		}
		c->log_level = l;
		return 0;
	}
	if (!strcmp(key, "lease_ms"))
		return set_int(val, 500, 3600000, &c->lease_ms, why, whylen);
	if (!strcmp(key, "heartbeat_ms"))
		return set_int(val, 100, 600000, &c->heartbeat_ms, why, whylen);
	if (!strcmp(key, "max_connections"))
		return set_int(val, 4, 1 << 20, &c->max_conns, why, whylen);
	if (!strcmp(key, "handshake_ms"))
		return set_int(val, 100, 60000, &c->handshake_ms, why, whylen);
	if (!strcmp(key, "idle_ms"))
		return set_int(val, 1000, 86400000, &c->idle_ms, why, whylen);
	if (!strcmp(key, "sources_max"))
		return set_int(val, 1, TC_GSP_MAX_SOURCES, &c->sources_max, why,
			       whylen);
	if (!strcmp(key, "durability")) {
		if (strcmp(val, "normal") && strcmp(val, "full")) {
			snprintf(why, whylen, "expected normal|full");
			return TC_EINVAL;
		}
		c->sync_full = !strcmp(val, "full");
		return 0;
	}
	snprintf(why, whylen, "unknown key");
	return TC_EBADCONFIG;
}

int tc__gs_config_load(struct tc__gs_config *c, const char *path, char *err,
		       size_t errlen)
{
	return tc__kvyaml_load(path, apply, c, err, errlen);
}

int tc__gs_config_set(struct tc__gs_config *c, const char *key, const char *val,
		      char *err, size_t errlen)
{
	char why[256];

	if (apply(c, key, val, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "key '%s': %s", key, why);
		return TC_EBADCONFIG;
	}
	return 0;
}
