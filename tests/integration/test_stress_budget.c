/*
 * test_stress_budget.c - budget-leak stress (issue 10, "Tests"): a seeded
 * random sequence of operations against a real daemon with a small host
 * budget, failing ones of many kinds interleaved with good ones.  After
 * every failing operation the daemon's state (status: host used bytes,
 * artifacts, keys, evictions, GPU; list: per artifact its bytes,
 * leases and policy, which is where pins show) must be exactly what it was
 * before; at the end, with every artifact removed, nothing is used and a
 * put of the whole budget succeeds.  The seed is printed; TC_STRESS_SEED
 * replays it (TC_STRESS_OPS changes the number of operations).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tcast/client.h"
#include "tcast/errors.h"
#include "tlib.h"

#define MiB    ((uint64_t)1 << 20)
#define BUDGET (64 * MiB)

static struct t_daemon D;
static uint64_t seed;
static struct t_rng R;
static int opno;
static const char *opname = "setup";

/* A failure names the seed and the operation, so it can be replayed. */
static void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr,
		"stress budget: FAILED at op %d (%s), seed %" PRIu64
		" (replay: TC_STRESS_SEED=%" PRIu64 "): ",
		opno, opname, seed, seed);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	kill(D.pid, SIGTERM);
	exit(1);
}

#define CHECK(cond, ...)                  \
	do {                              \
		if (!(cond))              \
			die(__VA_ARGS__); \
	} while (0)

static int lru_order = 1;

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* What a failed operation must not change, as one comparable string. */
static char *state(tc_client *c)
{
	char *st, *ls, *out = NULL;
	json_t *s, *l, *v;
	size_t i, len = 0;
	char *lines[64];
	int nlines = 0;
	FILE *f;

	CHECK(tc_status_json(c, &st) == 0, "status: %s", tc_client_errmsg(c));
	CHECK(tc_list_json(c, &ls) == 0, "list: %s", tc_client_errmsg(c));
	s = json_loads(st, 0, NULL);
	l = json_loads(ls, 0, NULL);
	CHECK(s && l, "status or list is not JSON");
	f = open_memstream(&out, &len);
	/* Not host_spare_bytes: the spare is remade on a worker thread at
	 * the next idle moment after a put or import took it, so it moves
	 * on its own (and host_used_bytes excludes it); that it gives its
	 * room back is shown by the final put of the whole budget. */
	fprintf(f,
		"used=%lld artifacts=%lld keys=%lld evictions=%lld "
		"gpu=",
		json_integer_value(json_object_get(s, "host_used_bytes")),
		json_integer_value(json_object_get(s, "artifacts")),
		json_integer_value(json_object_get(s, "keys")),
		json_integer_value(json_object_get(s, "evictions")));
	{
		char *g = json_dumps(json_object_get(s, "gpu"),
				     JSON_COMPACT | JSON_SORT_KEYS |
					     JSON_ENCODE_ANY);

		fprintf(f, "%s", g ? g : "?");
		free(g);
	}
	/* The list is in LRU order, which a failed import may not change
	 * either (it touches nothing); an attach does touch, so for attach
	 * churn the artifacts are compared as a set. */
	json_array_foreach(
		json_is_object(l) ? json_object_get(l, "artifacts") : l, i, v)
	{
		char *k = json_dumps(json_object_get(v, "keys"),
				     JSON_COMPACT | JSON_ENCODE_ANY);

		if (nlines < 64 &&
		    asprintf(&lines[nlines],
			     "\n  %s bytes=%lld mem=%lld leases=%lld "
			     "policy=%s keys=%s",
			     json_string_value(json_object_get(v, "id")),
			     json_integer_value(json_object_get(v, "bytes")),
			     json_integer_value(json_object_get(v, "mem_bytes")),
			     json_integer_value(json_object_get(v, "leases")),
			     json_string_value(json_object_get(v, "policy")),
			     k ? k : "?") > 0)
			nlines++;
		free(k);
	}
	if (!lru_order)
		qsort(lines, (size_t)nlines, sizeof(lines[0]), cmp_str);
	for (int n = 0; n < nlines; n++) {
		fputs(lines[n], f);
		free(lines[n]);
	}
	fclose(f);
	json_decref(s);
	json_decref(l);
	tc_free(st);
	tc_free(ls);
	return out;
}

/* The state must come back to `want`: at once for what this client did,
 * within 3 s for what the daemon learns from a closed connection. */
static void expect_state(tc_client *c, const char *want)
{
	char *now = NULL;

	for (int i = 0; i < 300; i++) {
		free(now);
		now = state(c);
		if (!strcmp(now, want)) {
			free(now);
			return;
		}
		usleep(10000);
	}
	die("state changed by a failing operation\nbefore: %s\nafter:  %s",
	    want, now);
}

/*
 * An operation that reserves memory before it can fail (a load that finds
 * its file short, a put aborted or killed after put_begin) may have had to
 * evict to make its room: that cannot be undone, and it is no leak.  Its
 * state is then `want` less some unleased "cache" artifacts, with the
 * eviction counter up by as many and the used bytes down by exactly their
 * size: the reservation itself must be gone.  Returns 1 when `now` is that.
 */
static int split(char *s, char **line, int max)
{
	int n = 0;

	for (char *p = strtok(s, "\n"); p && n < max; p = strtok(NULL, "\n"))
		line[n++] = p;
	return n;
}

static int evicted_only(const char *want, const char *now)
{
	char *a = strdup(want), *b = strdup(now), *la[80], *lb[80];
	long long ua, na, ka, ea, ub, nb, kb, eb, freed = 0;
	int n = split(a, la, 80), m = split(b, lb, 80), j = 1, ok = 1, gone = 0;

	if (sscanf(la[0], "used=%lld artifacts=%lld keys=%lld evictions=%lld",
		   &ua, &na, &ka, &ea) != 4 ||
	    sscanf(lb[0], "used=%lld artifacts=%lld keys=%lld evictions=%lld",
		   &ub, &nb, &kb, &eb) != 4 ||
	    strcmp(strstr(la[0], " gpu="), strstr(lb[0], " gpu=")))
		ok = 0;
	for (int i = 1; ok && i < n; i++) {
		long long mem;

		if (j < m && !strcmp(la[i], lb[j])) {
			j++;
			continue;
		}
		/* Gone: it must have been evictable. */
		if (!strstr(la[i], " leases=0 policy=cache ") ||
		    sscanf(strstr(la[i], " mem="), " mem=%lld", &mem) != 1) {
			ok = 0;
			break;
		}
		freed += mem;
		gone++;
	}
	ok = ok && j == m && kb == ka && nb == na - gone && eb == ea + gone &&
	     ub == ua - freed;
	free(a);
	free(b);
	return ok;
}

static void expect_state_or_evicted(tc_client *c, const char *want)
{
	char *now = NULL;

	for (int i = 0; i < 300; i++) {
		free(now);
		now = state(c);
		if (!strcmp(now, want) || evicted_only(want, now)) {
			free(now);
			return;
		}
		usleep(10000);
	}
	die("state changed by a failing operation (beyond evictions)\n"
	    "before: %s\nafter:  %s",
	    want, now);
}

/* A safetensors file with one U8 tensor of n bytes of `fill`. */
static void write_st(const char *path, uint64_t n, uint8_t fill)
{
	static uint8_t buf[MiB];
	char hdr[256];
	int len, fd;
	uint64_t hl;

	len = snprintf(hdr, sizeof(hdr),
		       "{\"w\":{\"dtype\":\"U8\",\"shape\":[%" PRIu64
		       "],\"data_offsets\":[0,%" PRIu64 "]}}",
		       n, n);
	while (len % 8)
		hdr[len++] = ' ';
	hl = (uint64_t)len;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
	CHECK(write(fd, &hl, 8) == 8 && write(fd, hdr, (size_t)len) == len,
	      "write header");
	memset(buf, fill, MiB);
	for (uint64_t off = 0; off < n; off += MiB) {
		size_t k = (size_t)(n - off < MiB ? n - off : MiB);

		CHECK(write(fd, buf, k) == (ssize_t)k, "write data");
	}
	close(fd);
}

/* ------------------------------------------------------- the model */

/* Keys this test published, and their generation as last seen.  An
 * evicted "cache" artifact takes its key with it, so a key may be gone:
 * keys_json says which still are. */
#define NKEYS 8
static uint64_t gen_of(tc_client *c, const char *key, int *held)
{
	char *txt;
	json_t *j, *v;
	uint64_t g = 0;
	size_t i;

	if (held)
		*held = 0;
	if (tc_keys_json(c, key, &txt) < 0)
		return 0;
	j = json_loads(txt, 0, NULL);
	tc_free(txt);
	if (json_is_object(j) && json_object_get(j, "keys"))
		v = json_object_get(j, "keys");
	else
		v = j;
	if (json_is_array(v)) {
		json_t *e;

		json_array_foreach(v, i, e)
		{
			const char *k =
				json_string_value(json_object_get(e, "key"));

			if (k && !strcmp(k, key))
				g = (uint64_t)json_integer_value(
					json_object_get(e, "generation"));
		}
	} else if (json_is_object(v) && json_object_get(v, "generation")) {
		g = (uint64_t)json_integer_value(
			json_object_get(v, "generation"));
		if (held)
			*held = json_is_true(json_object_get(v, "held"));
	}
	json_decref(j);
	return g;
}

static void key_name(char *buf, size_t len, unsigned k)
{
	snprintf(buf, len, "stress:k%u", k);
}

static int import_opts(tc_client *c, const char *path, const char *key,
		       const char *policy, int expect, uint64_t gen,
		       tc_progress_cb *cb, void *arg, struct tc_result *r)
{
	struct tc_opts o = { 0 };

	if (key) {
		o.field_mask |= TC_OPT_KEY;
		o.key = key;
	}
	if (policy) {
		o.field_mask |= TC_OPT_POLICY;
		o.policy = policy;
	}
	if (expect) {
		o.field_mask |= TC_OPT_EXPECT;
		o.expect_gen = gen;
	}
	if (cb) {
		o.field_mask |= TC_OPT_PROGRESS;
		o.progress = cb;
		o.progress_arg = arg;
	}
	return tc_import(c, path, &o, r);
}

/* ------------------------------------------------------- operations */

enum kind {
	K_TRUNCATED,
	K_CAS_IMPORT,
	K_CAS_PUT,
	K_PUT_ABORT,
	K_PUT_KILLED,
	K_BAD_TABLE,
	K_BAD_FILE,
	K_TOO_BIG,
	K_LEASE_KILLED,
	K_CHURN,
	NKINDS
};
static const char *kind_name[NKINDS] = {
	"truncated import", "CAS import",   "CAS put",	"put aborted",
	"put killed",	    "bad table",    "bad file", "too big",
	"lease killed",	    "attach churn",
};
static long kind_count[NKINDS];

struct shrink {
	const char *path;
	int done;
};

static void shrink_on_progress(uint64_t done, uint64_t total, void *arg)
{
	struct shrink *s = arg;

	(void)done;
	(void)total;
	if (!s->done && truncate(s->path, 4096) == 0)
		s->done = 1;
}

/* A child that connects, does `what` and then waits to be killed. */
enum child_what { CH_PUT, CH_LEASE };

static void killed_child(enum child_what what, const char *ref, uint64_t nbytes)
{
	int p[2];
	pid_t pid;
	char b;

	CHECK(pipe(p) == 0, "pipe");
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		char err[256];
		tc_client *c = NULL;
		int ok = 0;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(p[0]);
		if (tc_client_connect(D.sock, &c, err, sizeof(err)) == 0) {
			if (what == CH_PUT) {
				struct tc_tensor_desc d = { "w", TC_DTYPE_U8, 1,
							    &nbytes };
				tc_put *put;

				if (tc_put_begin(c, &d, 1, NULL, NULL, &put) ==
				    0) {
					memset(tc_put_data(put, 0), 0x5a,
					       (size_t)nbytes / 2);
					ok = 1;
				}
			} else {
				tc_artifact *a;

				ok = tc_attach(c, ref, &a) == 0;
			}
		}
		if (write(p[1], ok ? "y" : "n", 1) != 1)
			_exit(2);
		pause();
		_exit(0);
	}
	close(p[1]);
	CHECK(read(p[0], &b, 1) == 1, "child did not report");
	close(p[0]);
	kill(pid, SIGKILL);
	CHECK(t_wait_status(pid) == 128 + SIGKILL, "child not killed");
	CHECK(b == 'y', "child could not %s",
	      what == CH_PUT ? "put" : "attach");
}

/* A key that exists now (and holds an artifact, when `held`), or NULL. */
static const char *some_key(tc_client *c, char *buf, size_t len, int held)
{
	unsigned start = (unsigned)t_rng_below(&R, NKEYS);

	for (unsigned i = 0; i < NKEYS; i++) {
		int h;

		key_name(buf, len, (start + i) % NKEYS);
		if (gen_of(c, buf, &h) && (h || !held))
			return buf;
	}
	return NULL;
}

/* A failing operation of kind k; returns 1 when it failed (and was
 * checked), 0 when it happened to succeed (a race the loader won). */
static int failing(tc_client *c, enum kind k, const char *path)
{
	char key[64], *before;
	struct tc_result r;
	int rc = 0, failed = 1;

	lru_order = k != K_CHURN && k != K_LEASE_KILLED;
	before = state(c);

	switch (k) {
	case K_TRUNCATED: {
		struct shrink s = { path, 0 };

		write_st(path, (8 + t_rng_below(&R, 40)) * MiB,
			 (uint8_t)t_rng_next(&R));
		free(before);
		before = state(c);
		rc = import_opts(c, path,
				 t_rng_below(&R, 2) ? "stress:trunc" : NULL,
				 NULL, 0, 0, shrink_on_progress, &s, &r);
		if (rc == 0) {
			/* The loader won the race: undo, and it is no
			 * failure to check. */
			CHECK(tc_rm(c, r.id) == 0, "rm: %s",
			      tc_client_errmsg(c));
			failed = 0;
		}
		break;
	}
	case K_CAS_IMPORT: {
		const char *kk = some_key(c, key, sizeof(key), 0);
		uint64_t g;

		/* Sizes up to the whole budget: a right generation would
		 * have had to evict. */
		write_st(path, (1 + t_rng_below(&R, 60)) * MiB,
			 (uint8_t)t_rng_next(&R));
		free(before);
		before = state(c);
		if (kk && t_rng_below(&R, 3)) {
			g = gen_of(c, kk, NULL) + 1 + t_rng_below(&R, 5);
		} else {
			snprintf(key, sizeof(key), "stress:absent");
			kk = key;
			g = 1 + t_rng_below(&R, 9);
		}
		rc = import_opts(c, path, kk, NULL, 1, g, NULL, NULL, &r);
		CHECK(rc == TC_ECONFLICT,
		      "CAS import with generation %" PRIu64 " of '%s': %d (%s)",
		      g, kk, rc, tc_client_errmsg(c));
		break;
	}
	case K_CAS_PUT: {
		const char *kk = some_key(c, key, sizeof(key), 0);
		uint64_t n = (1 + t_rng_below(&R, 60)) * MiB, g;
		struct tc_tensor_desc d = { "w", TC_DTYPE_U8, 1, &n };
		struct tc_opts o = { 0 };
		tc_put *p = NULL;

		if (!kk) {
			snprintf(key, sizeof(key), "stress:absent");
			kk = key;
			g = 1 + t_rng_below(&R, 9);
		} else {
			g = gen_of(c, kk, NULL) + 1 + t_rng_below(&R, 5);
		}
		o.field_mask = TC_OPT_KEY | TC_OPT_EXPECT;
		o.key = kk;
		o.expect_gen = g;
		rc = tc_put_begin(c, &d, 1, NULL, &o, &p);
		CHECK(rc == TC_ECONFLICT, "CAS put: %d (%s)", rc,
		      tc_client_errmsg(c));
		break;
	}
	case K_PUT_ABORT: {
		uint64_t n = (1 + t_rng_below(&R, 30)) * MiB;
		struct tc_tensor_desc d = { "w", TC_DTYPE_U8, 1, &n };
		struct tc_opts o = { 0 };
		tc_put *p;

		o.field_mask = TC_OPT_KEY;
		o.key = "stress:aborted";
		rc = tc_put_begin(c, &d, 1, NULL,
				  t_rng_below(&R, 2) ? &o : NULL, &p);
		if (rc == TC_ENOSPACE) {
			/* Pinned artifacts leave no room: a failure too. */
			break;
		}
		CHECK(rc == 0, "put_begin: %d (%s)", rc, tc_client_errmsg(c));
		memset(tc_put_data(p, 0), 1, (size_t)t_rng_below(&R, n));
		tc_put_abort(p);
		break;
	}
	case K_PUT_KILLED:
		killed_child(CH_PUT, NULL, (1 + t_rng_below(&R, 24)) * MiB);
		break;
	case K_BAD_TABLE: {
		static const char *names[] = { "", "bad\x01name", "x\xff\xfe",
					       "w" };
		uint64_t shape[17] = { 0 }, n = 1 + t_rng_below(&R, 4);
		struct tc_tensor_desc d[2];
		unsigned v = (unsigned)t_rng_below(&R, 5);
		tc_put *p;

		for (int i = 0; i < 17; i++)
			shape[i] = 2;
		d[0] = (struct tc_tensor_desc){ "a", TC_DTYPE_U8, 1, &n };
		d[1] = (struct tc_tensor_desc){ "b", TC_DTYPE_U8, 1, &n };
		switch (v) {
		case 0: /* a bad name */
			d[1].name = names[t_rng_below(&R, 3)];
			break;
		case 1: /* an unknown dtype */
			d[1].dtype = 999;
			break;
		case 2: /* too many dimensions */
			d[1].ndim = 17;
			d[1].shape = shape;
			break;
		case 3: /* a size that overflows */
			shape[0] = UINT64_MAX / 2;
			shape[1] = 4;
			d[1].ndim = 2;
			d[1].shape = shape;
			break;
		default: /* the same name twice */
			d[1].name = "a";
			break;
		}
		rc = tc_put_begin(c, d, 2, NULL, NULL, &p);
		CHECK(rc < 0, "bad tensor table %u accepted", v);
		break;
	}
	case K_BAD_FILE: {
		/* A header that lies: offsets past the end of the file, or
		 * not JSON at all. */
		FILE *f = fopen(path, "w");
		uint64_t hl;
		const char *h =
			t_rng_below(&R, 2) ?
				"{\"w\":{\"dtype\":\"U8\",\"shape\":[1048576],"
				"\"data_offsets\":[0,1048576]}}" :
				"{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"da";

		CHECK(f, "fopen");
		hl = strlen(h);
		fwrite(&hl, 8, 1, f);
		fputs(h, f);
		fputs("0123", f);
		fclose(f);
		rc = import_opts(c, path, "stress:badfile", NULL, 0, 0, NULL,
				 NULL, &r);
		CHECK(rc < 0, "bad file accepted");
		break;
	}
	case K_TOO_BIG:
		write_st(path, BUDGET + (1 + t_rng_below(&R, 8)) * MiB, 9);
		rc = import_opts(c, path, NULL, NULL, 0, 0, NULL, NULL, &r);
		CHECK(rc < 0, "import bigger than the budget accepted");
		break;
	case K_LEASE_KILLED: {
		const char *kk = some_key(c, key, sizeof(key), 1);

		if (!kk) {
			failed = 0;
			break;
		}
		killed_child(CH_LEASE, kk, 0);
		break;
	}
	case K_CHURN: {
		/* Attach and release, many times, some handles shared:
		 * nets to nothing. */
		const char *kk = some_key(c, key, sizeof(key), 1);
		tc_artifact *a[16];
		int n = (int)(1 + t_rng_below(&R, 16));

		if (!kk) {
			failed = 0;
			break;
		}
		for (int i = 0; i < n; i++) {
			rc = tc_attach(c, kk, &a[i]);
			CHECK(rc == 0, "attach %s: %s", kk,
			      tc_client_errmsg(c));
		}
		for (int i = n - 1; i >= 0; i--)
			tc_artifact_close(a[i]);
		rc = 0;
		break;
	}
	default:
		break;
	}
	if (failed &&
	    (k == K_TRUNCATED || k == K_PUT_ABORT || k == K_PUT_KILLED))
		expect_state_or_evicted(c, before);
	else if (failed)
		expect_state(c, before);
	free(before);
	lru_order = 1;
	return failed;
}

/* A good operation: an import or a put under one of the keys, sometimes
 * pinned.  It may evict; when pinned bytes leave no room it fails with
 * TC_ENOSPACE, and then it too must change nothing. */
static void good(tc_client *c, const char *path, int *pinned)
{
	char key[64], *before;
	uint64_t n = (1 + t_rng_below(&R, 20)) * MiB;
	int pin = !*pinned && t_rng_below(&R, 6) == 0, rc;
	struct tc_result r;
	uint64_t gen;

	key_name(key, sizeof(key), (unsigned)t_rng_below(&R, NKEYS));
	/* A key that exists moves only by compare-and-swap: the right
	 * generation, which may have to evict. */
	gen = gen_of(c, key, NULL);
	if (t_rng_below(&R, 2)) {
		write_st(path, n, (uint8_t)t_rng_next(&R));
		before = state(c);
		rc = import_opts(c, path, key, pin ? "pinned" : NULL, gen != 0,
				 gen, NULL, NULL, &r);
	} else {
		struct tc_tensor_desc d = { "w", TC_DTYPE_U8, 1, &n };
		struct tc_opts o = { 0 };
		tc_put *p;

		o.field_mask = TC_OPT_KEY | (pin ? TC_OPT_POLICY : 0) |
			       (gen ? TC_OPT_EXPECT : 0);
		o.key = key;
		o.expect_gen = gen;
		o.policy = "pinned";
		before = state(c);
		rc = tc_put_begin(c, &d, 1, NULL, &o, &p);
		if (rc == 0) {
			memset(tc_put_data(p, 0), (int)(t_rng_next(&R) & 0xff),
			       (size_t)n);
			rc = tc_put_commit(p, &r);
		}
	}
	if (rc == TC_ENOSPACE) {
		expect_state(c, before);
	} else {
		CHECK(rc == 0, "good op on '%s': %d (%s)", key, rc,
		      tc_client_errmsg(c));
		if (pin)
			*pinned = 1;
	}
	free(before);
}

/* Remove every artifact the daemon holds (keys go with them). */
static void remove_all(tc_client *c)
{
	char *ls;
	json_t *l, *a, *v;
	size_t i;

	CHECK(tc_list_json(c, &ls) == 0, "list");
	l = json_loads(ls, 0, NULL);
	tc_free(ls);
	a = json_is_object(l) ? json_object_get(l, "artifacts") : l;
	json_array_foreach(a, i, v)
	{
		const char *id = json_string_value(json_object_get(v, "id"));

		CHECK(tc_rm(c, id) == 0, "rm %s: %s", id, tc_client_errmsg(c));
	}
	json_decref(l);
	/* Keys outlive their artifacts (they keep their generation): drop
	 * them too, so that the daemon holds nothing. */
	for (unsigned k = 0; k < NKEYS; k++) {
		char key[64];

		key_name(key, sizeof(key), k);
		tc_rm(c, key);
	}
	tc_rm(c, "stress:trunc");
	tc_rm(c, "stress:aborted");
}

int main(void)
{
	long ops = getenv("TC_STRESS_OPS") ? atol(getenv("TC_STRESS_OPS")) :
					     800;
	char path[400], err[256];
	tc_client *c = NULL;
	long nfail = 0, ngood = 0, nkinds = 0;
	int pinned = 0;
	double t0 = t_now_ms();

	seed = t_rng_seed("TC_STRESS_SEED");
	t_rng_init(&R, seed);
	printf("stress budget: seed %" PRIu64 " (TC_STRESS_SEED=%" PRIu64
	       " replays it), %ld ops\n",
	       seed, seed, ops);
	fflush(stdout);
	t_daemon_start(&D, "64MiB", NULL);
	snprintf(path, sizeof(path), "%s/f.safetensors", D.dir);
	CHECK(tc_client_connect(D.sock, &c, err, sizeof(err)) == 0, "%s", err);
	for (opno = 0; opno < ops; opno++) {
		if (t_rng_below(&R, 3) == 0) {
			opname = "good";
			good(c, path, &pinned);
			ngood++;
			continue;
		}
		enum kind k = (enum kind)t_rng_below(&R, NKINDS);

		opname = kind_name[k];
		if (failing(c, k, path)) {
			nfail++;
			kind_count[k]++;
		}
	}
	opname = "final";
	remove_all(c);
	{
		char *s = state(c);

		CHECK(!strncmp(s, "used=0 artifacts=0 keys=0 ", 26),
		      "after removing everything: %s", s);
		free(s);
	}
	/* And the whole budget is usable. */
	{
		uint64_t n = BUDGET;
		struct tc_tensor_desc d = { "w", TC_DTYPE_U8, 1, &n };
		struct tc_result r;
		tc_put *p;
		int rc = tc_put_begin(c, &d, 1, NULL, NULL, &p);

		CHECK(rc == 0, "put of the full budget: %d (%s)", rc,
		      tc_client_errmsg(c));
		memset(tc_put_data(p, 0), 3, (size_t)n);
		CHECK(tc_put_commit(p, &r) == 0,
		      "commit of the full budget: %s", tc_client_errmsg(c));
		CHECK(tc_rm(c, r.id) == 0, "rm");
	}
	tc_client_close(c);
	CHECK(t_daemon_stop(&D) == 0, "daemon exit status");
	t_rmtree(D.dir);
	for (int k = 0; k < NKINDS; k++) {
		if (kind_count[k])
			nkinds++;
		printf("  %-16s %ld\n", kind_name[k], kind_count[k]);
	}
	printf("stress budget: %ld ops (%ld failing, %ld kinds; %ld good), "
	       "status equal after every failure; seed %" PRIu64 ", %.1f s\n",
	       ops, nfail, nkinds, ngood, seed, (t_now_ms() - t0) / 1000.0);
	return nkinds == NKINDS ? 0 :
				  (fprintf(stderr, "not every kind ran\n"), 1);
}
