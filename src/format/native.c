/*
 * native.c - tcast's native on-disk layout: one folder per artifact,
 *
 *   <hex>/tcast.data            the artifact's byte space, verbatim
 *   <hex>/tcast.manifest.json   the table, the chunk digests and the id
 *
 * The data file is exactly the byte space the store serves (tensors at
 * their 256-byte aligned offsets, zeros in the gaps), so loading it is one
 * sequential read straight into artifact memory, and each 4 MiB chunk of
 * it can be checked against the manifest's digest on its own.  The
 * manifest is hostile input like any safetensors header (a folder handed
 * to tc.from_disk may come from anyone): everything is checked, the
 * offsets must be the canonical layout's and the id must be the one its
 * table and digests give, before anything is sized from it.
 *
 * Writing follows the durability rule of hostile-inputs.md section 2 (D):
 * a temporary folder, fsync each file and the folder, rename, fsync the
 * parent.  A crash leaves the temporary (removed at the next start) or the
 * complete folder, never a partial one under the artifact's name.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "canon.h"
#include "common/alloc.h"
#include "common/compiler.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "common/map.h"
#include "common/names.h"
#include "format.h"
#include "fmt_internal.h"
#include "tcast/dtype.h"
#include "tcast/errors.h"

/* JSON values a real manifest needs: a tensor is an array of name, dtype,
 * shape (rank values) offset and nbytes; metadata two per entry.  jansson
 * spends ~50-100 bytes per value, so this bounds the tree. */
#define NATIVE_MAX_VALUES \
	((uint64_t)TC_MAX_TENSORS * 12 + 2 * (uint64_t)TC_MAX_META + 64)

static uint64_t count_values(const char *json, size_t len)
{
	uint64_t n = 1;
	bool in_str = false;

	for (size_t i = 0; i < len; i++) {
		char c = json[i];

		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = false;
		} else if (c == '"') {
			in_str = true;
		} else if (c == ',' || c == ':' || c == '[' || c == '{') {
			n++;
		}
	}
	return n;
}

void tc__native_release(struct tc__native *n)
{
	if (!n)
		return;
	tc__table_release(&n->table);
	tc__free(n->chunks);
	memset(n, 0, sizeof(*n));
	tc__table_init(&n->table);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* A JSON integer in [0, 2^63). */
static bool get_u64(const json_t *v, uint64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return false;
	*out = (uint64_t)json_integer_value(v);
	return true;
}

/* A JSON string without NUL; *len its length. */
static const char *get_str(const json_t *v, size_t *len)
{
	const char *s;

	if (!json_is_string(v))
		return NULL;
	s = json_string_value(v);
	*len = json_string_length(v);
	return strlen(s) == *len ? s : NULL;
}

static int parse_tensor(const json_t *e, uint32_t i, struct tc__tensor *x,
			uint64_t *offset, char *err, size_t errlen)
{
	const json_t *shape;
	const char *name, *dt;
	size_t nlen, dlen;
	uint64_t nbytes, want;
	char q[TC_FMT_QUOTE];
	int dtype, ret;

	if (!json_is_array(e) || json_array_size(e) != 5) {
		tc__fmt_err(err, errlen,
			    "tensor %u: not an array [name, dtype, shape, "
			    "offset, nbytes]",
			    i);
		return TC_EBADFILE;
	}
	name = get_str(json_array_get(e, 0), &nlen);
	if (!name || nlen == 0 || nlen > TC_MAX_NAME) {
		tc__fmt_err(err, errlen,
			    "tensor %u: the name is not a string of 1 to %d "
			    "bytes without NUL",
			    i, TC_MAX_NAME);
		return TC_EBADFILE;
	}
	tc__fmt_quote(q, name, nlen);
	dt = get_str(json_array_get(e, 1), &dlen);
	dtype = dt ? tc_dtype_from_name(dt) : -1;
	if (dtype < 0) {
		tc__fmt_err(err, errlen, "tensor '%s': unknown dtype", q);
		return TC_EBADDTYPE;
	}
	shape = json_array_get(e, 2);
	if (!json_is_array(shape) || json_array_size(shape) > TC_MAX_RANK) {
		tc__fmt_err(err, errlen,
			    "tensor '%s': shape is not an array of at most %d "
			    "dimensions",
			    q, TC_MAX_RANK);
		return json_is_array(shape) ? TC_ELIMIT : TC_EBADFILE;
	}
	x->ndim = (uint8_t)json_array_size(shape);
	for (uint32_t d = 0; d < x->ndim; d++)
		if (!get_u64(json_array_get(shape, d), &x->shape[d])) {
			tc__fmt_err(err, errlen,
				    "tensor '%s': dimension %u is not a "
				    "non-negative integer",
				    q, d);
			return TC_EBADFILE;
		}
	if (!get_u64(json_array_get(e, 3), offset) ||
	    !get_u64(json_array_get(e, 4), &nbytes)) {
		tc__fmt_err(err, errlen,
			    "tensor '%s': offset and nbytes must be "
			    "non-negative integers",
			    q);
		return TC_EBADFILE;
	}
	ret = tc__tensor_nbytes(dtype, x->ndim, x->shape, &want);
	if (ret < 0) {
		tc__fmt_err(err, errlen,
			    "tensor '%s': shape overflows or is not a whole "
			    "number of bytes",
			    q);
		return ret;
	}
	if (want != nbytes) {
		tc__fmt_err(err, errlen,
			    "tensor '%s': nbytes %llu, but its dtype and shape "
			    "make %llu",
			    q, (unsigned long long)nbytes,
			    (unsigned long long)want);
		return TC_EBADFILE;
	}
	x->dtype = (uint8_t)dtype;
	x->nbytes = nbytes;
	x->name = tc__strndup(name, nlen);
	return x->name ? 0 : -ENOMEM;
}

static int parse_meta(json_t *m, struct tc__table *t, char *err, size_t errlen)
{
	const char *k;
	json_t *v;
	size_t n = json_object_size(m);

	if (!json_is_object(m)) {
		tc__fmt_err(err, errlen, "'metadata' is not an object");
		return TC_EBADFILE;
	}
	if (n > TC_MAX_META) {
		tc__fmt_err(err, errlen, "%zu metadata entries (at most %d)", n,
			    TC_MAX_META);
		return TC_ELIMIT;
	}
	t->meta = tc__calloc(n ? n : 1, sizeof(*t->meta));
	if (!t->meta)
		return -ENOMEM;
	json_object_foreach(m, k, v)
	{
		struct tc__meta *e = &t->meta[t->nmeta];
		size_t vl;
		const char *s = get_str(v, &vl);

		if (!s) {
			tc__fmt_err(err, errlen,
				    "metadata entry %u is not a string "
				    "without NUL",
				    t->nmeta);
			return TC_EBADFILE;
		}
		if (strlen(k) > TC_MAX_META_BYTES || vl > TC_MAX_META_BYTES) {
			tc__fmt_err(err, errlen,
				    "metadata entry %u is over 1 MiB",
				    t->nmeta);
			return TC_ELIMIT;
		}
		e->key = tc__strdup(k);
		e->val = tc__strndup(s, vl);
		t->nmeta++;
		if (!e->key || !e->val)
			return -ENOMEM;
	}
	return 0;
}

static int parse_chunks(const json_t *v, struct tc__native *n, char *err,
			size_t errlen)
{
	uint64_t want = tc__chunk_count(n->table.total_bytes);
	const char *s;
	size_t len;

	s = get_str(v, &len);
	if (!s || len % TC_DIGEST_HEX || len / TC_DIGEST_HEX != want) {
		tc__fmt_err(err, errlen,
			    "'chunks' must be %llu digests of 64 hex digits "
			    "(one per 4 MiB of %llu bytes)",
			    (unsigned long long)want,
			    (unsigned long long)n->table.total_bytes);
		return TC_EBADFILE;
	}
	n->chunks = tc__calloc(want ? want : 1, sizeof(*n->chunks));
	if (!n->chunks)
		return -ENOMEM;
	n->nchunks = want;
	for (size_t i = 0; i < len; i += 2) {
		int hi = hexval(s[i]), lo = hexval(s[i + 1]);

		if (hi < 0 || lo < 0) {
			tc__fmt_err(err, errlen,
				    "'chunks': digest %zu is not lowercase hex",
				    i / TC_DIGEST_HEX);
			return TC_EBADFILE;
		}
		n->chunks[i / TC_DIGEST_HEX].b[(i % TC_DIGEST_HEX) / 2] =
			(uint8_t)(hi << 4 | lo);
	}
	return 0;
}

static const char *const manifest_keys[] = {
	"format", "version", "id",	 "total_bytes", "chunk_bytes",
	"data",	  "tensors", "metadata", "chunks",
};

static int check_keys(const json_t *root, char *err, size_t errlen)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)root, k, v)
	{
		bool known = false;

		for (size_t i = 0; i < TC_ARRAY_SIZE(manifest_keys); i++)
			known |= !strcmp(k, manifest_keys[i]);
		if (!known) {
			char q[TC_FMT_QUOTE];

			tc__fmt_err(err, errlen, "unknown key '%s'",
				    tc__fmt_quote(q, k, strlen(k)));
			return TC_EBADFILE;
		}
	}
	for (size_t i = 0; i < TC_ARRAY_SIZE(manifest_keys); i++)
		if (!json_object_get(root, manifest_keys[i])) {
			tc__fmt_err(err, errlen, "missing key '%s'",
				    manifest_keys[i]);
			return TC_EBADFILE;
		}
	return 0;
}

static int check_unique(const struct tc__table *t, char *err, size_t errlen)
{
	struct tc__map m;
	int ret = 0;

	tc__map_init(&m);
	for (uint32_t i = 0; i < t->ntensors && ret == 0; i++) {
		const char *nm = t->tensors[i].name;

		if (tc__map_get(&m, nm)) {
			char q[TC_FMT_QUOTE];

			tc__fmt_err(err, errlen, "tensor '%s' appears twice",
				    tc__fmt_quote(q, nm, strlen(nm)));
			ret = TC_EBADFILE;
		} else if (tc__map_put(&m, nm, (void *)nm) < 0) {
			ret = -ENOMEM;
		}
	}
	tc__map_release(&m);
	return ret;
}

static int parse_root(const json_t *root, uint64_t data_size,
		      struct tc__native *n, char *err, size_t errlen)
{
	const json_t *tens;
	uint64_t version, cb, total, *offs = NULL;
	const char *s, *id;
	struct tc__digest root_d;
	char want_id[TC_ID_LEN + 1];
	size_t len, nt;
	int ret;

	if (!json_is_object(root)) {
		tc__fmt_err(err, errlen, "not a JSON object");
		return TC_EBADFILE;
	}
	ret = check_keys(root, err, errlen);
	if (ret < 0)
		return ret;
	s = get_str(json_object_get(root, "format"), &len);
	if (!s || strcmp(s, "tcast-native")) {
		tc__fmt_err(err, errlen, "'format' is not \"tcast-native\"");
		return TC_EBADFILE;
	}
	if (!get_u64(json_object_get(root, "version"), &version) ||
	    version != TC_NATIVE_VERSION) {
		tc__fmt_err(err, errlen,
			    "'version' is not %d (a newer tcast wrote it?)",
			    TC_NATIVE_VERSION);
		return TC_ENOTSUP;
	}
	if (!get_u64(json_object_get(root, "chunk_bytes"), &cb) ||
	    cb != TC_CHUNK_BYTES) {
		tc__fmt_err(err, errlen, "'chunk_bytes' is not %llu",
			    (unsigned long long)TC_CHUNK_BYTES);
		return TC_EBADFILE;
	}
	s = get_str(json_object_get(root, "data"), &len);
	if (!s || strcmp(s, TC_NATIVE_DATA)) {
		tc__fmt_err(err, errlen, "'data' is not \"%s\"",
			    TC_NATIVE_DATA);
		return TC_EBADFILE;
	}
	if (!get_u64(json_object_get(root, "total_bytes"), &total)) {
		tc__fmt_err(err, errlen,
			    "'total_bytes' is not a non-negative integer");
		return TC_EBADFILE;
	}
	id = get_str(json_object_get(root, "id"), &len);
	if (!id || !tc__is_id(id)) {
		tc__fmt_err(err, errlen,
			    "'id' is not an artifact id (tc2:...)");
		return TC_EBADFILE;
	}
	tens = json_object_get(root, "tensors");
	if (!json_is_array(tens)) {
		tc__fmt_err(err, errlen, "'tensors' is not an array");
		return TC_EBADFILE;
	}
	nt = json_array_size(tens);
	if (nt > TC_MAX_TENSORS) {
		tc__fmt_err(err, errlen, "%zu tensors (at most %d)", nt,
			    TC_MAX_TENSORS);
		return TC_ELIMIT;
	}
	n->table.tensors = tc__calloc(nt ? nt : 1, sizeof(*n->table.tensors));
	offs = tc__calloc(nt ? nt : 1, sizeof(*offs));
	if (!n->table.tensors || !offs) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < nt; i++) {
		ret = parse_tensor(json_array_get(tens, i), (uint32_t)i,
				   &n->table.tensors[i], &offs[i], err, errlen);
		if (ret < 0)
			goto out;
		n->table.ntensors = (uint32_t)i + 1;
	}
	ret = parse_meta((json_t *)json_object_get(root, "metadata"), &n->table,
			 err, errlen);
	if (ret < 0)
		goto out;
	ret = check_unique(&n->table, err, errlen);
	if (ret < 0)
		goto out;
	ret = tc__table_check_names(&n->table, err, errlen);
	if (ret < 0) {
		ret = ret == -ENOMEM ? ret : TC_EBADFILE;
		goto out;
	}
	/* The layout is the store's, not the file's: a manifest that places
	 * a tensor anywhere else describes some other byte space. */
	ret = tc__table_layout(&n->table);
	if (ret < 0) {
		tc__fmt_err(err, errlen, "the byte space overflows");
		goto out;
	}
	for (uint32_t i = 0; i < n->table.ntensors; i++) {
		struct tc__tensor *x = &n->table.tensors[i];

		if (offs[i] != x->offset) {
			char q[TC_FMT_QUOTE];

			tc__fmt_err(err, errlen,
				    "tensor '%s': offset %llu, where the "
				    "layout puts it at %llu",
				    tc__fmt_quote(q, x->name, strlen(x->name)),
				    (unsigned long long)offs[i],
				    (unsigned long long)x->offset);
			ret = TC_EBADFILE;
			goto out;
		}
		x->src_file = 1; /* files[0] is the manifest */
		x->src_offset = x->offset;
	}
	if (total != n->table.total_bytes) {
		tc__fmt_err(err, errlen,
			    "'total_bytes' is %llu; the tensors make %llu",
			    (unsigned long long)total,
			    (unsigned long long)n->table.total_bytes);
		ret = TC_EBADFILE;
		goto out;
	}
	if (data_size != UINT64_MAX && data_size != total) {
		tc__fmt_err(err, errlen,
			    "'%s' is %llu bytes; the manifest says %llu",
			    TC_NATIVE_DATA, (unsigned long long)data_size,
			    (unsigned long long)total);
		ret = TC_EBADFILE;
		goto out;
	}
	ret = parse_chunks(json_object_get(root, "chunks"), n, err, errlen);
	if (ret < 0)
		goto out;
	ret = tc__canon_root(&n->table, n->chunks, n->nchunks, &root_d);
	if (ret < 0)
		goto out;
	tc__digest_id(&root_d, want_id);
	if (strcmp(want_id, id)) {
		tc__fmt_err(err, errlen,
			    "'id' %s is not the id of its table and chunk "
			    "digests (%s)",
			    id, want_id);
		ret = TC_EDIGEST;
		goto out;
	}
	memcpy(n->id, id, TC_ID_LEN + 1);
out:
	tc__free(offs);
	return ret;
}

int tc__native_parse(const char *json, size_t len, uint64_t data_size,
		     struct tc__native *out, char *err, size_t errlen)
{
	json_error_t je;
	json_t *root;
	int ret;

	memset(out, 0, sizeof(*out));
	tc__table_init(&out->table);
	if (len > TC_NATIVE_MAX_MANIFEST) {
		tc__fmt_err(err, errlen, "%zu bytes (at most %llu)", len,
			    (unsigned long long)TC_NATIVE_MAX_MANIFEST);
		return TC_ELIMIT;
	}
	if (count_values(json, len) > NATIVE_MAX_VALUES) {
		tc__fmt_err(err, errlen,
			    "more JSON values than any manifest "
			    "of %d tensors needs",
			    TC_MAX_TENSORS);
		return TC_ELIMIT;
	}
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		tc__fmt_err(err, errlen, "line %d: %s", je.line, je.text);
		return TC_EBADFILE;
	}
	ret = parse_root(root, data_size, out, err, errlen);
	json_decref(root);
	if (ret < 0) {
		if (ret == -ENOMEM)
			tc__fmt_err(err, errlen, "out of memory");
		tc__native_release(out);
	}
	return ret;
}

/* ------------------------------------------------------------- manifest */

char *tc__native_manifest(const struct tc__table *t,
			  const struct tc__digest *chunks, uint64_t nchunks,
			  const char *id)
{
	json_t *root, *tens, *meta;
	char *hex, *out = NULL;

	hex = tc__malloc(nchunks * TC_DIGEST_HEX + 1);
	root = json_object();
	tens = json_array();
	meta = json_object();
	if (!hex || !root || !tens || !meta)
		goto out;
	hex[0] = '\0';
	for (uint64_t i = 0; i < nchunks; i++)
		tc__digest_hex(&chunks[i], hex + i * TC_DIGEST_HEX);
	for (uint32_t i = 0; i < t->ntensors; i++) {
		const struct tc__tensor *x = &t->tensors[i];
		json_t *shape = json_array(), *e;

		for (uint32_t d = 0; shape && d < x->ndim; d++)
			json_array_append_new(
				shape, json_integer((json_int_t)x->shape[d]));
		e = json_pack("[s, s, o, I, I]", x->name,
			      tc_dtype_name(x->dtype), shape,
			      (json_int_t)x->offset, (json_int_t)x->nbytes);
		if (!e || json_array_append_new(tens, e) < 0)
			goto out;
	}
	for (uint32_t i = 0; i < t->nmeta; i++)
		if (json_object_set_new(meta, t->meta[i].key,
					json_string(t->meta[i].val)) < 0)
			goto out;
	if (json_object_set_new(root, "format", json_string("tcast-native")) ||
	    json_object_set_new(root, "version",
				json_integer(TC_NATIVE_VERSION)) ||
	    json_object_set_new(root, "id", json_string(id)) ||
	    json_object_set_new(root, "total_bytes",
				json_integer((json_int_t)t->total_bytes)) ||
	    json_object_set_new(root, "chunk_bytes",
				json_integer((json_int_t)TC_CHUNK_BYTES)) ||
	    json_object_set_new(root, "data", json_string(TC_NATIVE_DATA)) ||
	    json_object_set(root, "tensors", tens) ||
	    json_object_set(root, "metadata", meta) ||
	    json_object_set_new(root, "chunks", json_string(hex)))
		goto out;
	out = json_dumps(root, JSON_COMPACT);
out:
	json_decref(tens);
	json_decref(meta);
	json_decref(root);
	tc__free(hex);
	return out;
}

/* --------------------------------------------------------------- writer */

/* O_DIRECT wants the buffer, the offset and the length aligned to the
 * logical block size; 4096 covers every block size Linux file systems
 * use. */
#define DIRECT_ALIGN ((uint64_t)4096)

static int write_all(int fd, const void *p, uint64_t n, uint64_t at)
{
	const uint8_t *b = p;
	uint64_t off = 0;

	while (off < n) {
		size_t len = (size_t)TC_MIN(n - off, (uint64_t)TC_FMT_IO_MAX);
		ssize_t w = pwrite(fd, b + off, len, (off_t)(at + off));

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		off += (uint64_t)w;
	}
	return 0;
}

/* fsync, with the durable_fsync failpoint.  An fsync error means the bytes
 * may not be on disk whatever a retry says: never retry (section 2 (D)). */
static int sync_fd(int fd, const char *id)
{
	if (tc__failpoint("durable_fsync", id))
		return -EIO;
	return fsync(fd) < 0 ? -errno : 0;
}

static void remove_tmp(int parent, const char *tmp)
{
	int dfd = openat(parent, tmp,
			 O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);

	if (dfd >= 0) {
		unlinkat(dfd, TC_NATIVE_DATA, 0);
		unlinkat(dfd, TC_NATIVE_MANIFEST, 0);
		close(dfd);
	}
	unlinkat(parent, tmp, AT_REMOVEDIR);
}

/* The folder `name` already exists: it is ours only when it holds a valid
 * manifest of the same id (an earlier write of the same content). */
static int check_existing(int parent, const char *name, const char *id,
			  char *err, size_t errlen)
{
	struct tc__native n;
	char path[TC_DIGEST_HEX + 64];
	int ret;

	snprintf(path, sizeof(path), "%s/%s", name, TC_NATIVE_MANIFEST);
	ret = tc__native_read_at(parent, name, &n, err, errlen);
	if (ret < 0)
		return ret;
	ret = strcmp(n.id, id) ? TC_EEXIST : 0;
	if (ret < 0)
		tc__fmt_err(err, errlen, "'%s' holds another artifact (%s)",
			    path, n.id);
	tc__native_release(&n);
	return ret;
}

static void tmp_close(struct tc__native_tmp *w)
{
	if (w->direct_fd >= 0)
		close(w->direct_fd);
	if (w->fd >= 0)
		close(w->fd);
	if (w->dfd >= 0)
		close(w->dfd);
	w->direct_fd = w->fd = w->dfd = -1;
}

void tc__native_abort(struct tc__native_tmp *w)
{
	if (!w->name[0])
		return;
	tmp_close(w);
	remove_tmp(w->parent, w->name);
	w->name[0] = '\0';
}

int tc__native_begin(int parent, const char *where, uint64_t total_bytes,
		     struct tc__native_tmp *w, char *err, size_t errlen)
{
	int ret;

	memset(w, 0, sizeof(*w));
	w->parent = parent;
	w->dfd = w->fd = w->direct_fd = -1;
	w->size = total_bytes;
	/* Named before the id is known (the bytes are written while they
	 * are hashed): .tmp-w-<random>, removed at start like any other. */
	for (int i = 0;; i++) {
		uint64_t r = 0;

		if (getrandom(&r, sizeof(r), 0) != sizeof(r))
			r = (uint64_t)getpid() * 2654435761u + (uint64_t)i;
		snprintf(w->name, sizeof(w->name), "%sw-%016llx",
			 TC_NATIVE_TMP_PREFIX, (unsigned long long)r);
		if (mkdirat(parent, w->name, 0777) == 0)
			break;
		if (errno != EEXIST || i == 16) {
			ret = -errno;
			tc__fmt_err(err, errlen,
				    "cannot create a folder in '%s': %s", where,
				    tc_strerror(ret));
			w->name[0] = '\0';
			return ret;
		}
	}
	w->dfd = openat(parent, w->name,
			O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (w->dfd < 0) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot open '%s/%s': %s", where,
			    w->name, tc_strerror(ret));
		goto fail;
	}
	w->fd = openat(w->dfd, TC_NATIVE_DATA,
		       O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
		       0666);
	if (w->fd < 0) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot create '%s/%s/%s': %s", where,
			    w->name, TC_NATIVE_DATA, tc_strerror(ret));
		goto fail;
	}
	/* Held until the rename: a daemon starting on the same shared
	 * folder (another node, or this one's successor) removes only the
	 * temporaries no live writer locks (tc__native_tmp_unowned).  A
	 * file system without locks still writes, unprotected. */
	if (flock(w->fd, LOCK_EX | LOCK_NB) < 0 && errno != ENOLCK &&
	    errno != EOPNOTSUPP)
		tc__log(TC_LOG_WARN, "cannot lock '%s/%s/%s': %s", where,
			w->name, TC_NATIVE_DATA, strerror(errno));
	/* Reserve the blocks first: a disk too small fails here, at once,
	 * rather than after gigabytes were written. */
	if (total_bytes) {
		ret = posix_fallocate(w->fd, 0, (off_t)total_bytes);
		if (ret == ENOSPC || ret == EDQUOT || ret == EFBIG) {
			ret = -ret;
			tc__fmt_err(err, errlen,
				    "cannot write %llu bytes to '%s': %s",
				    (unsigned long long)total_bytes, where,
				    tc_strerror(ret));
			goto fail;
		}
	}
	/* The bulk goes with O_DIRECT: from the artifact's memory straight
	 * to the disk, no second copy in the page cache and no dirty pages
	 * for writeback to throttle (on the dev VM buffered writes of a
	 * memfd ran at a third of the disk's speed, direct ones at ~5x dd's).
	 * File systems without it (older tmpfs, some FUSE) get the buffered
	 * path. */
	w->direct_fd = openat(w->dfd, TC_NATIVE_DATA,
			      O_WRONLY | O_DIRECT | O_NOFOLLOW | O_CLOEXEC);
	atomic_init(&w->direct, w->direct_fd >= 0);
	return 0;

fail:
	tc__native_abort(w);
	return ret;
}

int tc__native_write_data(struct tc__native_tmp *w, const void *buf,
			  uint64_t off, uint64_t len)
{
	const uint8_t *b = buf;
	uint64_t head = 0, mid = 0;
	int ret;

	if (off > w->size || len > w->size - off)
		return -EINVAL;
	/* Aligned middle part with O_DIRECT, the rest (a tail shorter than
	 * a block, or a misaligned buffer) through the page cache: the two
	 * never share a block, and fsync flushes both. */
	if (atomic_load(&w->direct) &&
	    ((uintptr_t)b % DIRECT_ALIGN) == (off % DIRECT_ALIGN)) {
		head = (DIRECT_ALIGN - off % DIRECT_ALIGN) % DIRECT_ALIGN;
		head = TC_MIN(head, len);
		mid = (len - head) / DIRECT_ALIGN * DIRECT_ALIGN;
	}
	if (head) {
		ret = write_all(w->fd, b, head, off);
		if (ret < 0)
			return ret;
	}
	if (mid) {
		ret = write_all(w->direct_fd, b + head, mid, off + head);
		if (ret == -EINVAL) {
			/* The file system refused this direct write after
			 * all: the page cache for everything from now on. */
			atomic_store(&w->direct, false);
			ret = write_all(w->fd, b + head, mid, off + head);
		}
		if (ret < 0)
			return ret;
	}
	if (len > head + mid)
		return write_all(w->fd, b + head + mid, len - head - mid,
				 off + head + mid);
	return 0;
}

int tc__native_commit(struct tc__native_tmp *w, const char *where,
		      const char *id, const struct tc__table *t,
		      const struct tc__digest *chunks, uint64_t nchunks,
		      int data_rc, char *err, size_t errlen)
{
	const char *name = id + strlen(TC_ID_PREFIX);
	char *manifest = NULL;
	int fd = -1, ret = data_rc;

	if (!tc__is_id(id)) {
		tc__fmt_err(err, errlen, "'%s' is not an artifact id", id);
		ret = TC_EINVAL;
		goto out_remove;
	}
	if (ret == 0 && tc__failpoint("durable_enospc", id))
		ret = -ENOSPC;
	if (ret < 0) {
		tc__fmt_err(err, errlen, "cannot write '%s/%s': %s", where,
			    TC_NATIVE_DATA, tc_strerror(ret));
		goto out_remove;
	}
	/* Tests: a write as slow as a large one's to a network disk (STATUS
	 * shows its copy as filling meanwhile). */
	if (ret == 0 && tc__failpoint("durable_slow", id))
		nanosleep(&(struct timespec){ 2, 0 }, NULL);
	ret = tc__native_have(w->parent, where, id, err, errlen);
	if (ret != 0) {
		/* Written already (the same content, put before): ours is
		 * not needed. */
		tc__native_abort(w);
		return ret < 0 ? ret : 0;
	}
	ret = sync_fd(w->fd, id);
	if (ret < 0) {
		tc__fmt_err(err, errlen, "cannot fsync '%s/%s': %s", where,
			    TC_NATIVE_DATA, tc_strerror(ret));
		goto out_remove;
	}
	manifest = tc__native_manifest(t, chunks, nchunks, id);
	if (!manifest) {
		tc__fmt_err(err, errlen, "out of memory writing a manifest");
		ret = -ENOMEM;
		goto out_remove;
	}
	fd = openat(w->dfd, TC_NATIVE_MANIFEST,
		    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
	if (fd < 0) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot create '%s/%s': %s", where,
			    TC_NATIVE_MANIFEST, tc_strerror(ret));
		goto out_remove;
	}
	ret = write_all(fd, manifest, strlen(manifest), 0);
	if (ret == 0)
		ret = sync_fd(fd, id);
	if (ret == 0)
		ret = sync_fd(w->dfd, id);
	close(fd);
	if (ret < 0) {
		tc__fmt_err(err, errlen, "cannot write '%s/%s': %s", where,
			    TC_NATIVE_MANIFEST, tc_strerror(ret));
		goto out_remove;
	}
	if (tc__failpoint("durable_rename", id)) {
		ret = -EIO;
		tc__fmt_err(err, errlen, "cannot rename into '%s': %s", where,
			    tc_strerror(ret));
		goto out_remove;
	}
	if (renameat2(w->parent, w->name, w->parent, name, RENAME_NOREPLACE) <
	    0) {
		ret = -errno;
		if (ret != -EEXIST && ret != -ENOTEMPTY) {
			tc__fmt_err(err, errlen, "cannot rename into '%s': %s",
				    where, tc_strerror(ret));
			goto out_remove;
		}
		/* Another writer of the same content won the race. */
		ret = check_existing(w->parent, name, id, err, errlen);
		if (ret < 0)
			goto out_remove;
		tc__native_abort(w);
	}
	tmp_close(w);
	w->name[0] = '\0';
	ret = sync_fd(w->parent, id);
	if (ret < 0) {
		/* Named but perhaps not durably: not acknowledged, and the
		 * caller's record of it must not say durable either. */
		tc__fmt_err(err, errlen, "cannot fsync '%s': %s", where,
			    tc_strerror(ret));
	}
	tc__free(manifest);
	return ret;

out_remove:
	tc__native_abort(w);
	tc__free(manifest);
	return ret;
}

int tc__native_have(int parent, const char *where, const char *id, char *err,
		    size_t errlen)
{
	const char *name = id + strlen(TC_ID_PREFIX);
	struct stat st;
	int ret;

	if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	ret = check_existing(parent, name, id, err, errlen);
	if (ret < 0)
		return ret;
	/* Make sure the rename that put it there is durable too. */
	ret = sync_fd(parent, id);
	if (ret < 0) {
		tc__fmt_err(err, errlen, "cannot fsync '%s': %s", where,
			    tc_strerror(ret));
		return ret;
	}
	return 1;
}

int tc__native_write(int parent, const char *where, const char *id,
		     const struct tc__table *t, const void *base,
		     const struct tc__digest *chunks, uint64_t nchunks,
		     char *err, size_t errlen)
{
	struct tc__native_tmp w;
	int ret;

	if (!tc__is_id(id)) {
		tc__fmt_err(err, errlen, "'%s' is not an artifact id", id);
		return TC_EINVAL;
	}
	ret = tc__native_have(parent, where, id, err, errlen);
	if (ret != 0)
		return ret < 0 ? ret : 0;
	ret = tc__native_begin(parent, where, t->total_bytes, &w, err, errlen);
	if (ret < 0)
		return ret;
	ret = tc__native_write_data(&w, base, 0, t->total_bytes);
	return tc__native_commit(&w, where, id, t, chunks, nchunks, ret, err,
				 errlen);
}

bool tc__native_tmp_unowned(int parent, const char *name)
{
	int dfd = openat(parent, name,
			 O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	int fd = dfd >= 0 ? openat(dfd, TC_NATIVE_DATA,
				   O_RDWR | O_NOFOLLOW | O_CLOEXEC) :
			    -1;
	bool held = fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0 &&
		    errno == EWOULDBLOCK;

	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	return !held;
}

int tc__native_remove(int parent, const char *id)
{
	const char *name = id + strlen(TC_ID_PREFIX);
	char tmp[TC_DIGEST_HEX + 40];
	uint64_t r = 0;

	if (!tc__is_id(id))
		return TC_EINVAL;
	/* Out of the artifact's name first, in one step: a crash then
	 * leaves a temporary (removed at the next start), never a folder
	 * that is neither whole nor gone under the name. */
	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = (uint64_t)getpid();
	snprintf(tmp, sizeof(tmp), "%s%s-rm-%016llx", TC_NATIVE_TMP_PREFIX,
		 name, (unsigned long long)r);
	if (renameat(parent, name, parent, tmp) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fsync(parent) < 0)
		return -errno;
	remove_tmp(parent, tmp);
	return 0;
}

/* --------------------------------------------------------------- reader */

static int read_manifest_fd(int mfd, uint64_t data_size, const char *where,
			    struct tc__native *out, char *err, size_t errlen)
{
	struct stat st;
	char *buf;
	size_t got;
	int ret;

	memset(out, 0, sizeof(*out));
	tc__table_init(&out->table);
	if (fstat(mfd, &st) < 0 || !S_ISREG(st.st_mode)) {
		tc__fmt_err(err, errlen, "'%s/%s' is not a regular file", where,
			    TC_NATIVE_MANIFEST);
		return TC_EBADFILE;
	}
	if ((uint64_t)st.st_size > TC_NATIVE_MAX_MANIFEST) {
		tc__fmt_err(err, errlen, "'%s/%s': %llu bytes (at most %llu)",
			    where, TC_NATIVE_MANIFEST,
			    (unsigned long long)st.st_size,
			    (unsigned long long)TC_NATIVE_MAX_MANIFEST);
		return TC_ELIMIT;
	}
	buf = tc__malloc((size_t)st.st_size + 1);
	if (!buf)
		return -ENOMEM;
	ret = tc__pread_full(mfd, buf, (size_t)st.st_size, 0, &got);
	if (ret == 0)
		ret = tc__native_parse(buf, got, data_size, out, err, errlen);
	else
		tc__fmt_err(err, errlen, "cannot read '%s/%s': %s", where,
			    TC_NATIVE_MANIFEST, tc_strerror(ret));
	if (ret < 0 && ret != -ENOMEM && got == (size_t)st.st_size)
		tc__fmt_prefix(err, errlen, "%s/%s", where, TC_NATIVE_MANIFEST);
	tc__free(buf);
	return ret;
}

int tc__native_read_at(int parent, const char *name, struct tc__native *out,
		       char *err, size_t errlen)
{
	int dfd, mfd, ret;

	memset(out, 0, sizeof(*out));
	tc__table_init(&out->table);
	dfd = openat(parent, name,
		     O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (dfd < 0) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot open '%s': %s", name,
			    tc_strerror(ret));
		return ret;
	}
	mfd = openat(dfd, TC_NATIVE_MANIFEST,
		     O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW);
	if (mfd < 0) {
		ret = -errno;
		tc__fmt_err(err, errlen, "cannot open '%s/%s': %s", name,
			    TC_NATIVE_MANIFEST, tc_strerror(ret));
	} else {
		ret = read_manifest_fd(mfd, UINT64_MAX, name, out, err, errlen);
		close(mfd);
	}
	close(dfd);
	return ret;
}

int tc__native_source(struct tc__source *s, int mfd, int datafd,
		      const char *where, char *err, size_t errlen)
{
	struct tc__native n;
	struct stat st;
	int ret;

	if (fstat(datafd, &st) < 0 || !S_ISREG(st.st_mode)) {
		tc__fmt_err(err, errlen, "'%s/%s' is not a regular file", where,
			    TC_NATIVE_DATA);
		ret = TC_EBADFILE;
		goto out_close;
	}
	ret = read_manifest_fd(mfd, (uint64_t)st.st_size, where, &n, err,
			       errlen);
	if (ret < 0)
		goto out_close;
	s->files = tc__calloc(2, sizeof(*s->files));
	if (!s->files) {
		tc__native_release(&n);
		ret = -ENOMEM;
		goto out_close;
	}
	s->nfiles = 2;
	s->files[0].fd = mfd;
	s->files[1].fd = datafd;
	s->files[1].size = (uint64_t)st.st_size;
	s->files[0].name = tc__strdup(TC_NATIVE_MANIFEST);
	s->files[1].name = tc__strdup(TC_NATIVE_DATA);
	s->table = n.table;
	s->expect_chunks = n.chunks;
	s->nexpect = n.nchunks;
	memcpy(s->expect_id, n.id, sizeof(s->expect_id));
	if (!s->files[0].name || !s->files[1].name)
		return -ENOMEM; /* the caller frees s and with it all this */
	return 0;

out_close:
	close(mfd);
	close(datafd);
	return ret;
}

int tc__native_check(const struct tc__source *s,
		     const struct tc__digest *chunks, uint64_t n,
		     const char *id, char *err, size_t errlen)
{
	if (!s->expect_id[0])
		return 0;
	for (uint64_t i = 0; i < n && i < s->nexpect; i++)
		if (!tc__digest_eq(&chunks[i], &s->expect_chunks[i])) {
			tc__fmt_err(err, errlen,
				    "'%s/%s': chunk %llu (from byte %llu) does "
				    "not match the manifest's digest",
				    s->display, TC_NATIVE_DATA,
				    (unsigned long long)i,
				    (unsigned long long)(i * TC_CHUNK_BYTES));
			return TC_EDIGEST;
		}
	if (n != s->nexpect || strcmp(id, s->expect_id)) {
		tc__fmt_err(err, errlen,
			    "'%s': read back as %s, the manifest says %s",
			    s->display, id, s->expect_id);
		return TC_EDIGEST;
	}
	return 0;
}
