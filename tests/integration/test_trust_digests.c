/*
 * test_trust_digests.c - the daemon adopts a client's chunk digests only
 * from its own uid (issue 11): PUT_SERVE's digests (a pull's verified
 * ones, which stand for SEAL's hash) and SEAL_GPU's trailer (the fused
 * copy+hash of a put of GPU memory).  A client of another uid (root, the
 * only other uid a daemon serves) has its put hashed by the daemon, on
 * its GPU for a GPU put, whatever it says: a PUT_SERVE that lies about
 * the bytes gets the id of the bytes, and a GPU put is not counted as
 * sealed with the client's digests.  The same calls from the daemon's own
 * uid are adopted (the lie stands: that uid could change the daemon's
 * memory anyway), which is what makes this test able to fail.
 *
 * The daemon runs as nobody on the fake driver; each client is a forked
 * child: nobody (the same uid), or root with nobody as its real uid
 * (libtcast trusts a daemon of its real uid; the daemon sees the
 * effective one, root).  Needs root; skipped otherwise.
 */
#include <errno.h>
#include <grp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "common/hash.h"
#include "common/tensor.h"
#include "format/canon.h"
#include "gpu/vmm.h"
#include "tcast/client.h"
#include "tcast/errors.h"
#include "tlib.h"

#ifndef TC_FAKECUDA_PATH
#error "TC_FAKECUDA_PATH must name the fake driver"
#endif

#define OTHER_UID 65534			    /* nobody */
#define N	  ((uint64_t)(5 << 20) + 3) /* two chunks */

static struct t_daemon D;

/* A child's failed check: say which, exit with its line. */
#define CHECK(cond)                                                          \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: %s failed (%s)\n", __FILE__, \
				__LINE__, #cond, tc_client_errmsg(c));       \
			_exit(__LINE__ % 250 + 1);                           \
		}                                                            \
	} while (0)

static long long status_int(tc_client *c, const char *field)
{
	long long v = -1;
	json_t *j;
	char *s;

	if (tc_status_json(c, &s) < 0)
		return -1;
	j = json_loads(s, 0, NULL);
	tc_free(s);
	if (j && json_is_integer(json_object_get(j, field)))
		v = json_integer_value(json_object_get(j, field));
	json_decref(j);
	return v;
}

/* The id of one U8 tensor "x" of N bytes of `fill`, and its chunk
 * digests (2 of them), as any put of those bytes gets. */
static void id_of_fill(uint8_t fill, char id[TC_ID_BUFLEN],
		       struct tc__digest chunks[2])
{
	struct tc__table t;
	struct tc__digest root;
	uint8_t *b = malloc(N);

	memset(b, fill, N);
	tc__table_init(&t);
	t.tensors = calloc(1, sizeof(*t.tensors));
	t.tensors[0].name = strdup("x");
	t.tensors[0].dtype = TC_DTYPE_U8;
	t.tensors[0].ndim = 1;
	t.tensors[0].shape[0] = N;
	t.tensors[0].nbytes = N;
	t.ntensors = 1;
	if (!b || tc__table_layout(&t) < 0)
		abort();
	for (uint64_t k = 0; k < 2; k++)
		tc__hash256(b + k * TC_CHUNK_BYTES,
			    k ? N - TC_CHUNK_BYTES : TC_CHUNK_BYTES,
			    &chunks[k]);
	if (tc__canon_root(&t, chunks, 2, &root) < 0)
		abort();
	tc__digest_id(&root, id);
	free(t.tensors[0].name);
	free(t.tensors);
	free(b);
}

/*
 * One client: `own` (the daemon's uid) or root.  A host put that says,
 * through PUT_SERVE, that it holds bytes A while it holds B; then a put of
 * GPU memory whose fused copy sends its digests with SEAL_GPU.
 */
static void client(bool own)
{
	uint64_t shape[1] = { N }, ptr[1];
	struct tc_tensor_desc d = { "x", TC_DTYPE_U8, 1, shape };
	uint8_t fa = own ? 0x11 : 0x21, fb = fa + 1, fg = fa + 2;
	char ida[TC_ID_BUFLEN], idb[TC_ID_BUFLEN], idg[TC_ID_BUFLEN];
	char err[512];
	struct tc__digest ca[2], cb[2], cg[2];
	struct tc_opts o = { 0 };
	struct tc__gpu_mem src;
	struct tc_result res;
	uint32_t idx[1] = { 0 };
	tc_client *c = NULL;
	long long before;
	uint8_t *host;
	tc_put *p;

	if (setgroups(0, NULL) < 0 || setgid(OTHER_UID) < 0 ||
	    setresuid(OTHER_UID, own ? OTHER_UID : 0, own ? OTHER_UID : 0) < 0)
		_exit(100);
	if (tc_client_connect(D.sock, &c, err, sizeof(err)) < 0) {
		fprintf(stderr, "connect: %s\n", err);
		_exit(101);
	}
	id_of_fill(fa, ida, ca);
	id_of_fill(fb, idb, cb);
	id_of_fill(fg, idg, cg);

	/* PUT_SERVE says A; the memory holds B. */
	before = status_int(c, "puts_verified_by_pull");
	CHECK(before >= 0);
	CHECK(tc_put_begin(c, &d, 1, NULL, NULL, &p) == 0);
	CHECK(tc_put_serve(p, ida, ca, 2) == 0);
	memset(tc_put_data(p, 0), fb, N);
	CHECK(tc_put_commit(p, &res) == 0);
	if (own) {
		/* adopted: the pull's digests stand for the hash */
		CHECK(!strcmp(res.id, ida));
		CHECK(status_int(c, "puts_verified_by_pull") == before + 1);
	} else {
		/* hashed at SEAL: the id of what the memory holds */
		CHECK(!strcmp(res.id, idb));
		CHECK(status_int(c, "puts_verified_by_pull") == before);
	}
	CHECK(tc_rm(c, res.id) == 0);

	/* A put of GPU memory with the fused copy's digests (right ones):
	 * adopted from the own uid only; the id is the bytes' either way. */
	host = malloc(N);
	CHECK(host != NULL);
	memset(host, fg, N);
	CHECK(tc__gpu_alloc(0, N, 0, &src, err, sizeof(err)) == 0);
	CHECK(tc__gpu_mem_write(&src, 0, host, N, NULL, err, sizeof(err)) == 0);
	ptr[0] = src.dptr;
	o.field_mask = TC_OPT_DEVICE;
	o.device = 0;
	before = status_int(c, "gpu_puts_hashed_by_client");
	CHECK(before >= 0);
	CHECK(tc_put_begin(c, &d, 1, NULL, &o, &p) == 0);
	CHECK(tc_put_copy_from_device(p, 1, idx, ptr) == 0);
	CHECK(tc_put_commit(p, &res) == 0);
	CHECK(!strcmp(res.id, idg));
	CHECK(status_int(c, "gpu_puts_hashed_by_client") == before + own);
	CHECK(tc_rm(c, res.id) == 0);
	tc__gpu_release(&src);
	free(host);
	tc_client_close(c);
	_exit(0);
}

static void run_client(bool own)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0)
		client(own);
	assert_int_equal(t_wait_status(pid), 0);
}

static void test_trust_digests__own_uid_adopted_other_uid_hashed(void **state)
{
	char path[400], *log;

	(void)state;
	t_daemon_start_as(&D, OTHER_UID, "256MiB", NULL);
	run_client(true);
	run_client(false);
	/* The other uid's GPU put was hashed on the daemon's side. */
	snprintf(path, sizeof(path), "%s/daemon.log", D.dir);
	log = t_slurp(path, NULL);
	assert_non_null(strstr(log, "sealed with the client's digests"));
	assert_non_null(strstr(log, "from device memory: 5242883 bytes, "
				    "hashed"));
	free(log);
	assert_int_equal(t_daemon_stop(&D), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			test_trust_digests__own_uid_adopted_other_uid_hashed),
	};

	if (geteuid() != 0) {
		fprintf(stderr, "test_trust_digests: needs root to act as "
				"another uid; skipped\n");
		return 77;
	}
	/* The daemon and the clients run on the fake's GPUs. */
	setenv("TCAST_CUDA_LIB", TC_FAKECUDA_PATH, 1);
	setenv("TC_FAKECUDA_DEVICES", "2", 1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
