/*
 * test_durable.c - the shared-disk tier end to end (docs/durable.md): a
 * real daemon with shared_disk, driven through libtcast; restarts by
 * SIGTERM and by kill -9; each policy's must / should / may outcome and
 * overflow; TTLs; rm with and without the disk copy; a corrupt disk copy;
 * and the disk faults: a full disk (a small tmpfs), failed fsync and
 * rename (failpoints), a read-only and a missing shared folder; the
 * shared disk's accounting as a tier of the replica core (FILLING while
 * written, READY once durable, gone with rm or a failed write).  The
 * crash loop is test_durable_crash.c.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tcast/client.h"
#include "tcast/errors.h"
#include "tlib.h"

static struct t_daemon D;
static char base[300], shared[400], setarg[460], dataroot[420];

/* A daemon whose shared disk is a fresh folder (or `where`). */
static void start(const char *where, const char *extra)
{
	char *dir = t_tmpdir();

	snprintf(base, sizeof(base), "%s", dir);
	free(dir);
	snprintf(shared, sizeof(shared), "%s", where ? where : "");
	if (!where) {
		snprintf(shared, sizeof(shared), "%s/shared", base);
		mkdir(shared, 0700);
	}
	snprintf(setarg, sizeof(setarg), "shared_disk=%s", shared);
	snprintf(dataroot, sizeof(dataroot), "%s/tcast", shared);
	t_daemon_start(&D, "64MiB", "--set", setarg, extra ? "--set" : NULL,
		       extra, NULL);
}

/* Stop the daemon and remove its folders. */
static void finish(void)
{
	assert_int_equal(t_daemon_stop(&D), 0);
	t_rmtree(base);
}

static void restart(bool kill9, const char *extra)
{
	kill(D.pid, kill9 ? SIGKILL : SIGTERM);
	assert_int_equal(t_wait_status(D.pid), kill9 ? 128 + SIGKILL : 0);
	t_daemon_restart(&D, "64MiB", "--set", setarg, extra ? "--set" : NULL,
			 extra, NULL);
}

/* Put `bytes` bytes of `fill` as tensor "x"; returns the result code, the
 * id in `id` and the persistence in *persist. */
static int put(tc_client *c, const char *key, const char *policy, uint8_t fill,
	       uint64_t bytes, uint32_t mask, uint64_t ttl_ms, char *id,
	       int *persist)
{
	struct tc_opts o = { 0 };
	int rc;

	o.field_mask = TC_OPT_POLICY | mask | (key ? TC_OPT_KEY : 0) |
		       (ttl_ms ? TC_OPT_TTL : 0);
	o.key = key;
	o.policy = policy;
	o.ttl_ms = ttl_ms;
	rc = t_put_fill(c, &o, fill, bytes, id);
	if (rc == 0 && persist)
		*persist = tc_last_persistence(c, NULL, 0);
	return rc;
}

/* Entries of the shared folder, and how many are temporaries. */
static int folder_entries(int *temps)
{
	DIR *dir = opendir(dataroot);
	struct dirent *e;
	int n = 0;

	*temps = 0;
	if (!dir)
		return -1;
	while ((e = readdir(dir))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		n++;
		*temps += !strncmp(e->d_name, ".tmp-", 5);
	}
	closedir(dir);
	return n;
}

static bool on_disk(const char *id)
{
	char path[600];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s/tcast.manifest.json", dataroot,
		 id + 4);
	return stat(path, &st) == 0;
}

static json_t *durable_status(tc_client *c)
{
	json_t *st = t_status(c),
	       *d = json_incref(json_object_get(st, "durable"));

	json_decref(st);
	assert_non_null(d);
	return d;
}

/* ------------------------------------------------------------- restart */

static void test_durable__survives_restart_and_kill9(void **state)
{
	char a[TC_ID_BUFLEN], b[TC_ID_BUFLEN], cache[TC_ID_BUFLEN], *json;
	int persist = -1, temps;
	uint64_t gen;
	tc_client *c;
	json_t *j, *hist;

	start(NULL, NULL);
	c = t_connect(D.sock);
	assert_int_equal(put(c, "m:v", "durable", 7, 100000, 0, 0, a, &persist),
			 0);
	assert_int_equal(persist, TC_PERSIST_DURABLE);
	assert_true(on_disk(a));
	assert_int_equal(put(c, NULL, "cache", 9, 1000, 0, 0, cache, &persist),
			 0);
	assert_int_equal(persist, TC_PERSIST_MEMORY);
	/* A second version by compare-and-swap: the history is kept. */
	assert_int_equal(put(c, NULL, "durable", 8, 5000, 0, 0, b, NULL), 0);
	assert_int_equal(tc_key_set(c, "m:v", b, 1, 1, &gen), 0);
	assert_int_equal(gen, 2);
	tc_client_close(c);

	restart(true, NULL);
	c = t_connect(D.sock);
	/* INSPECT of an artifact on disk only answers from its manifest:
	 * the table, the disk replica, and no byte read into memory. */
	assert_int_equal(tc_inspect_json(c, "m:v", &json), 0);
	j = json_loads(json, 0, NULL);
	tc_free(json);
	assert_string_equal(json_string_value(json_object_get(j, "id")), b);
	assert_string_equal(
		json_string_value(json_object_get(
			json_array_get(json_object_get(j, "tensor_table"), 0),
			"name")),
		"x");
	assert_int_equal(
		json_integer_value(json_object_get(
			json_array_get(json_object_get(j, "tensor_table"), 0),
			"nbytes")),
		5000);
	assert_int_equal(json_integer_value(json_object_get(j, "mem_bytes")),
			 0);
	assert_string_equal(
		json_string_value(json_object_get(
			json_array_get(json_object_get(j, "replicas"), 0),
			"tier")),
		"disk");
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(j, "durable"), "state")),
			    "durable");
	json_decref(j);
	j = durable_status(c);
	assert_int_equal(
		json_integer_value(json_object_get(j, "restored_host_bytes")),
		0);
	json_decref(j);
	assert_int_equal(tc_inspect_json(c, "tc2:0123", &json), TC_ENOTFOUND);
	assert_int_equal(t_check_fill(c, "m:v", 8, 5000), 0);
	assert_int_equal(t_check_fill(c, a, 7, 100000), 0);
	/* cache artifacts are gone, as documented. */
	assert_int_equal(t_check_fill(c, cache, 9, 1000), TC_ENOTFOUND);
	assert_int_equal(tc_keys_json(c, "m:v", &json), 0);
	j = json_loads(json, 0, NULL);
	tc_free(json);
	hist = json_object_get(json_array_get(json_object_get(j, "keys"), 0),
			       "history");
	if (!hist)
		hist = json_object_get(j, "history");
	assert_non_null(hist);
	assert_int_equal(json_array_size(hist), 2);
	json_decref(j);
	tc_client_close(c);

	restart(false, NULL);
	c = t_connect(D.sock);
	assert_int_equal(t_check_fill(c, "m:v", 8, 5000), 0);
	j = durable_status(c);
	assert_int_equal(json_integer_value(json_object_get(j, "artifacts")),
			 2);
	json_decref(j);
	assert_int_equal(folder_entries(&temps), 2);
	assert_int_equal(temps, 0);
	tc_client_close(c);
	finish();
}

/* Several daemons may share one folder: a daemon starting removes the
 * temporaries a crash left (no writer holds their lock) and leaves those
 * a live writer still locks (another node's put in progress). */
static void test_durable__shared_folder_keeps_live_writes(void **state)
{
	char live[600], dead[600], path[700];
	struct stat st;
	int fd, temps;

	start(NULL, NULL);
	snprintf(live, sizeof(live), "%s/.tmp-w-00000000000a11fe", dataroot);
	snprintf(dead, sizeof(dead), "%s/.tmp-w-00000000000dead0", dataroot);
	assert_int_equal(mkdir(live, 0700), 0);
	assert_int_equal(mkdir(dead, 0700), 0);
	snprintf(path, sizeof(path), "%s/tcast.data", dead);
	fd = open(path, O_RDWR | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/tcast.data", live);
	fd = open(path, O_RDWR | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), 0);
	restart(true, NULL);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(stat(dead, &st), -1);
	assert_int_equal(folder_entries(&temps), 1);
	assert_int_equal(temps, 1);
	/* The writer is gone: the next start removes its leftovers. */
	close(fd);
	restart(false, NULL);
	assert_int_equal(folder_entries(&temps), 0);
	finish();
}

/* A copy changed on disk is caught by its chunk digest when loaded: an
 * error, never other bytes. */
static void test_durable__corrupt_copy_is_refused(void **state)
{
	char a[TC_ID_BUFLEN], path[700];
	tc_client *c;
	uint8_t x = 1;
	int fd;

	start(NULL, NULL);
	c = t_connect(D.sock);
	assert_int_equal(put(c, "k", "durable", 3, 6 << 20, 0, 0, a, NULL), 0);
	tc_client_close(c);
	restart(true, NULL);
	snprintf(path, sizeof(path), "%s/%s/tcast.data", dataroot, a + 4);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, &x, 1, 5 << 20), 1);
	close(fd);
	c = t_connect(D.sock);
	assert_int_equal(t_check_fill(c, "k", 3, 6 << 20), TC_EDIGEST);
	assert_non_null(strstr(tc_client_errmsg(c), "chunk 1"));
	/* The daemon serves the rest. */
	assert_int_equal(put(c, NULL, "cache", 1, 100, 0, 0, NULL, NULL), 0);
	tc_client_close(c);
	finish();
}

/* ------------------------------------------------------------ policies */

static void test_durable__policies(void **state)
{
	char a[TC_ID_BUFLEN], note[512];
	int persist;
	tc_client *c;

	/* No shared disk: a must that cannot be met is an error. */
	t_daemon_start(&D, "64MiB", NULL);
	c = t_connect(D.sock);
	for (const char *const *p =
		     (const char *const[]){ "durable", "ha", "cold", NULL };
	     *p; p++) {
		assert_int_equal(put(c, "k", *p, 1, 10, 0, 0, NULL, NULL),
				 TC_EPOLICY);
		assert_non_null(strstr(tc_client_errmsg(c), "shared-disk"));
	}
	tc_client_close(c);
	assert_int_equal(t_daemon_stop(&D), 0);

	start(NULL, "cold_ttl_ms=300");
	c = t_connect(D.sock);
	/* ha: durable, and the remote replica (a should) is degraded. */
	assert_int_equal(put(c, NULL, "ha", 2, 10, 0, 0, a, &persist), 0);
	assert_int_equal(persist, TC_PERSIST_DURABLE);
	tc_last_persistence(c, note, sizeof(note));
	assert_non_null(strstr(note, "no replica on another node"));
	/* durable: nothing degraded. */
	assert_int_equal(put(c, NULL, "durable", 3, 10, 0, 0, a, &persist), 0);
	tc_last_persistence(c, note, sizeof(note));
	assert_string_equal(note, "");
	/* warm and pinned live in memory only. */
	assert_int_equal(put(c, NULL, "warm", 4, 10, 0, 0, a, &persist), 0);
	assert_int_equal(persist, TC_PERSIST_MEMORY);
	assert_false(on_disk(a));
	/* cold: on disk; its host copy goes after cold_ttl_ms unused, and
	 * the next use loads it again. */
	assert_int_equal(put(c, "c", "cold", 5, 3000, 0, 0, a, &persist), 0);
	assert_int_equal(persist, TC_PERSIST_DURABLE);
	usleep(1600 * 1000);
	{
		json_t *d = durable_status(c);

		assert_int_equal(
			json_integer_value(json_object_get(d, "cold_dropped")),
			1);
		json_decref(d);
	}
	assert_int_equal(t_check_fill(c, "c", 5, 3000), 0);
	tc_client_close(c);
	finish();
}

/* Overflow per policy: durable evicts (its own host copy stays on disk),
 * warm rejects instead of evicting, and an evicted durable artifact is
 * loaded again from disk on use. */
static void test_durable__overflow(void **state)
{
	char a[TC_ID_BUFLEN], b[TC_ID_BUFLEN];
	tc_client *c;

	start(NULL, "host_spare=0");
	c = t_connect(D.sock);
	assert_int_equal(put(c, "big1", "durable", 1, 40 << 20, 0, 0, a, NULL),
			 0);
	/* warm does not evict big1 to fit. */
	assert_int_equal(put(c, NULL, "warm", 2, 40 << 20, 0, 0, NULL, NULL),
			 TC_ENOSPACE);
	/* durable does, like cache. */
	assert_int_equal(put(c, "big2", "durable", 3, 40 << 20, 0, 0, b, NULL),
			 0);
	/* big1's host copy went; its disk copy serves it (and evicts big2's
	 * host copy to fit). */
	assert_int_equal(t_check_fill(c, "big1", 1, 40 << 20), 0);
	assert_int_equal(t_check_fill(c, b, 3, 40 << 20), 0);
	tc_client_close(c);
	finish();
}

/* -------------------------------------------------- TTL, nowait, rm */

static void test_durable__ttl_nowait_rm(void **state)
{
	char a[TC_ID_BUFLEN], b[TC_ID_BUFLEN], k[TC_ID_BUFLEN], m[TC_ID_BUFLEN],
		*json;
	struct tc_opts o = { 0 };
	struct tc_result r;
	int persist = -1;
	tc_client *c;
	json_t *j;

	start(NULL, NULL);
	c = t_connect(D.sock);
	assert_int_equal(put(c, "t", "durable", 1, 1000, 0, 1200, a, NULL), 0);
	assert_int_equal(put(c, NULL, "cache", 2, 1000, 0, 1200, m, NULL), 0);
	assert_true(on_disk(a));
	/* wait_persistence=False: acknowledged first, durable soon after. */
	assert_int_equal(put(c, "n", "durable", 3, 3 << 20, TC_OPT_NOWAIT, 0, b,
			     &persist),
			 0);
	assert_true(persist == TC_PERSIST_PENDING ||
		    persist == TC_PERSIST_DURABLE);
	for (int i = 0; i < 200 && !on_disk(b); i++)
		usleep(10000);
	assert_true(on_disk(b));
	usleep(100000);
	assert_int_equal(tc_inspect_json(c, b, &json), 0);
	j = json_loads(json, 0, NULL);
	tc_free(json);
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(j, "durable"), "state")),
			    "durable");
	json_decref(j);
	/* TTLs: both go, the durable one with its disk copy. */
	usleep(2300 * 1000);
	assert_int_equal(t_check_fill(c, "t", 1, 1000), TC_ENOTFOUND);
	assert_int_equal(t_check_fill(c, m, 2, 1000), TC_ENOTFOUND);
	assert_false(on_disk(a));
	/* rm keeping the disk copy: the daemon forgets it, the folder stays
	 * and imports as the same artifact (digests checked). */
	assert_int_equal(put(c, "keep", "durable", 4, 5000, 0, 0, k, NULL), 0);
	assert_int_equal(tc_rm2(c, "keep", TC_RM_KEEP_SHARED_DISK), 0);
	assert_true(on_disk(k));
	{
		char path[700];

		snprintf(path, sizeof(path), "%s/%s", dataroot, k + 4);
		assert_int_equal(tc_import(c, path, &o, &r), 0);
		assert_string_equal(r.id, k);
		assert_int_equal(t_check_fill(c, k, 4, 5000), 0);
	}
	/* rm without: the folder goes, also for an artifact on disk only. */
	assert_int_equal(tc_rm(c, b), 0);
	assert_false(on_disk(b));
	tc_client_close(c);
	restart(true, NULL);
	c = t_connect(D.sock);
	assert_int_equal(t_check_fill(c, "n", 3, 3 << 20), TC_ENOTFOUND);
	tc_client_close(c);
	finish();
}

/* -------------------------------------------------------------- faults */

/* A full disk: the put fails with ENOSPC and the reason, nothing is left
 * in the folder, the daemon serves everyone, and smaller durable puts
 * still work. */
static void test_durable__disk_full(void **state)
{
	char *dir = t_tmpdir(), mnt[300], a[TC_ID_BUFLEN];
	tc_client *c;
	int temps;

	snprintf(mnt, sizeof(mnt), "%s/tmpfs", dir);
	mkdir(mnt, 0700);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=2m") < 0) {
		free(dir);
		skip(); /* not root, or no mount namespace rights */
	}
	start(mnt, NULL);
	c = t_connect(D.sock);
	assert_int_equal(put(c, "big", "durable", 1, 3 << 20, 0, 0, NULL, NULL),
			 -ENOSPC);
	assert_non_null(strstr(tc_client_errmsg(c), "No space left"));
	assert_int_equal(folder_entries(&temps), 0);
	assert_int_equal(t_check_fill(c, "big", 1, 10), TC_ENOTFOUND);
	assert_int_equal(put(c, NULL, "cache", 2, 3 << 20, 0, 0, NULL, NULL),
			 0);
	assert_int_equal(put(c, "small", "durable", 3, 100000, 0, 0, a, NULL),
			 0);
	tc_client_close(c);
	restart(true, NULL);
	c = t_connect(D.sock);
	assert_int_equal(t_check_fill(c, "small", 3, 100000), 0);
	tc_client_close(c);
	finish();
	umount2(mnt, MNT_DETACH);
	t_rmtree(dir);
	free(dir);
}

/* A read-only shared folder, then a missing one: durable requests fail
 * with the reason (a must), the rest is served, and the folder is used
 * again once it is back. */
static void test_durable__readonly_and_missing(void **state)
{
	char *dir = t_tmpdir(), mnt[300], gone[300];
	tc_client *c;

	snprintf(mnt, sizeof(mnt), "%s/tmpfs", dir);
	mkdir(mnt, 0700);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=8m") < 0) {
		free(dir);
		skip();
	}
	mkdir(strcat(strcpy(gone, mnt), "/tcast"), 0777);
	assert_int_equal(mount(NULL, mnt, NULL, MS_REMOUNT | MS_RDONLY, NULL),
			 0);
	start(mnt, NULL);
	c = t_connect(D.sock);
	assert_int_equal(put(c, "k", "durable", 1, 1000, 0, 0, NULL, NULL),
			 TC_EPOLICY);
	assert_non_null(strstr(tc_client_errmsg(c), "read-only"));
	assert_int_equal(put(c, "k2", "cache", 1, 1000, 0, 0, NULL, NULL), 0);
	assert_int_equal(mount(NULL, mnt, NULL, MS_REMOUNT, NULL), 0);
	assert_int_equal(put(c, "k", "durable", 1, 1000, 0, 0, NULL, NULL), 0);
	tc_client_close(c);
	finish();
	umount2(mnt, MNT_DETACH);

	snprintf(gone, sizeof(gone), "%s/not-yet", dir);
	start(gone, NULL);
	c = t_connect(D.sock);
	assert_int_equal(put(c, "k", "durable", 1, 1000, 0, 0, NULL, NULL),
			 TC_EPOLICY);
	assert_non_null(strstr(tc_client_errmsg(c), "No such file"));
	assert_int_equal(mkdir(gone, 0700), 0);
	assert_int_equal(put(c, "k", "durable", 1, 1000, 0, 0, NULL, NULL), 0);
	tc_client_close(c);
	finish();
	t_rmtree(dir);
	free(dir);
}

/* Failed fsync and rename (failpoints armed for every durable write):
 * the put fails with EIO, nothing is visible or left, the record is not
 * made, and a restart without the fault finds nothing half-written. */
static void test_durable__fsync_and_rename_failures(void **state)
{
	static const char *const fps[] = { "TCAST_FAILPOINTS=durable_fsync=",
					   "TCAST_FAILPOINTS=durable_rename=" };

	for (int i = 0; i < 2; i++) {
		char a[TC_ID_BUFLEN];
		tc_client *c;
		int temps;
		json_t *d;

		putenv((char *)fps[i]);
		start(NULL, NULL);
		unsetenv("TCAST_FAILPOINTS");
		c = t_connect(D.sock);
		assert_int_equal(put(c, "k", "durable", 1, 5 << 20, 0, 0, NULL,
				     NULL),
				 -EIO);
		assert_non_null(strstr(tc_client_errmsg(c),
				       i ? "cannot rename" : "cannot fsync"));
		assert_int_equal(folder_entries(&temps), 0);
		assert_int_equal(t_check_fill(c, "k", 1, 10), TC_ENOTFOUND);
		assert_int_equal(
			put(c, "c", "cache", 2, 1000, 0, 0, NULL, NULL), 0);
		d = durable_status(c);
		assert_int_equal(
			json_integer_value(json_object_get(d, "artifacts")), 0);
		/* The failed write's FILLING replica went with it. */
		assert_int_equal(
			json_integer_value(json_object_get(d, "used_bytes")),
			0);
		assert_int_equal(
			json_integer_value(json_object_get(d, "filling_bytes")),
			0);
		assert_int_equal(json_integer_value(
					 json_object_get(d, "write_failures")),
				 1);
		json_decref(d);
		tc_client_close(c);
		restart(true, NULL);
		c = t_connect(D.sock);
		assert_int_equal(t_check_fill(c, "k", 1, 10), TC_ENOTFOUND);
		assert_int_equal(
			put(c, "k", "durable", 1, 5 << 20, 0, 0, a, NULL), 0);
		assert_true(on_disk(a));
		tc_client_close(c);
		finish();
	}
}

/* One field of the durable object of STATUS. */
static long long disk_int(tc_client *c, const char *field)
{
	json_t *d = durable_status(c);
	long long v = json_integer_value(json_object_get(d, field));

	json_decref(d);
	return v;
}

/* The shared disk as a tier of the replica core (docs/store.md): a put's
 * copy is a FILLING replica while it is written (the durable_slow
 * failpoint holds each write 2 s), READY once durable, READY again after
 * a restart, and rm gives its bytes back; the tier has no budget. */
static void test_durable__tier_filling_ready_rm(void **state)
{
	const uint64_t n = 3 << 20;
	char a[TC_ID_BUFLEN], b[TC_ID_BUFLEN];
	bool seen = false;
	tc_client *c;
	json_t *d;
	pid_t pid;

	putenv((char *)"TCAST_FAILPOINTS=durable_slow=");
	start(NULL, NULL);
	unsetenv("TCAST_FAILPOINTS");
	c = t_connect(D.sock);
	d = durable_status(c);
	assert_int_equal(json_integer_value(json_object_get(d, "used_bytes")),
			 0);
	assert_true(json_is_null(json_object_get(d, "budget_bytes")));
	json_decref(d);
	/* A put that waits for its disk copy, from another process. */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		tc_client *pc = t_connect(D.sock);

		_exit(put(pc, "slow", "durable", 7, n, 0, 0, NULL, NULL) == 0 ?
			      0 :
			      1);
	}
	for (int i = 0; i < 300 && !seen; i++) {
		d = durable_status(c);
		if (json_integer_value(json_object_get(d, "filling_bytes")) ==
		    (json_int_t)n) {
			seen = true;
			/* Charged to the tier, not recorded yet. */
			assert_int_equal(json_integer_value(json_object_get(
						 d, "used_bytes")),
					 n);
			assert_int_equal(json_integer_value(json_object_get(
						 d, "artifacts")),
					 0);
			/* "bytes" is what is recorded: derived from the
			 * tier (READY), not a count beside it. */
			assert_int_equal(
				json_integer_value(json_object_get(d, "bytes")),
				0);
		}
		json_decref(d);
		if (!seen)
			usleep(10000);
	}
	assert_true(seen);
	assert_int_equal(t_wait_status(pid), 0);
	assert_int_equal(disk_int(c, "filling_bytes"), 0);
	assert_int_equal(disk_int(c, "used_bytes"), n);
	assert_int_equal(disk_int(c, "replicas"), 1);
	assert_int_equal(t_check_fill(c, "slow", 7, n), 0);
	/* NOWAIT: acknowledged at once, its copy FILLING until written. */
	assert_int_equal(
		put(c, "nw", "durable", 8, n, TC_OPT_NOWAIT, 0, b, NULL), 0);
	assert_int_equal(disk_int(c, "filling_bytes"), n);
	assert_int_equal(disk_int(c, "used_bytes"), 2 * n);
	assert_int_equal(disk_int(c, "bytes"), n);
	for (int i = 0; i < 400 && disk_int(c, "filling_bytes"); i++)
		usleep(10000);
	assert_int_equal(disk_int(c, "filling_bytes"), 0);
	assert_int_equal(disk_int(c, "used_bytes"), 2 * n);
	assert_int_equal(disk_int(c, "bytes"), 2 * n);
	assert_true(on_disk(b));
	/* The records come back READY after a restart. */
	tc_client_close(c);
	restart(true, NULL);
	c = t_connect(D.sock);
	assert_int_equal(disk_int(c, "used_bytes"), 2 * n);
	assert_int_equal(disk_int(c, "bytes"), 2 * n);
	assert_int_equal(disk_int(c, "replicas"), 2);
	assert_int_equal(disk_int(c, "filling_bytes"), 0);
	/* rm gives the bytes back, with the copy. */
	assert_int_equal(tc_rm(c, b), 0);
	assert_false(on_disk(b));
	assert_int_equal(disk_int(c, "used_bytes"), n);
	assert_int_equal(put(c, NULL, "durable", 7, n, 0, 0, a, NULL), 0);
	assert_int_equal(tc_rm(c, a), 0);
	assert_int_equal(disk_int(c, "used_bytes"), 0);
	assert_int_equal(disk_int(c, "bytes"), 0);
	assert_int_equal(disk_int(c, "replicas"), 0);
	tc_client_close(c);
	finish();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_durable__survives_restart_and_kill9),
		cmocka_unit_test(test_durable__shared_folder_keeps_live_writes),
		cmocka_unit_test(test_durable__corrupt_copy_is_refused),
		cmocka_unit_test(test_durable__policies),
		cmocka_unit_test(test_durable__overflow),
		cmocka_unit_test(test_durable__ttl_nowait_rm),
		cmocka_unit_test(test_durable__disk_full),
		cmocka_unit_test(test_durable__readonly_and_missing),
		cmocka_unit_test(test_durable__fsync_and_rename_failures),
		cmocka_unit_test(test_durable__tier_filling_ready_rm),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
