/*
 * client.h - libtcast: the C ABI every tcast client uses.
 *
 * Designed for ctypes: real exported functions, opaque handles, fixed-width
 * integers, explicit lengths, option structs that begin with a field mask.
 * Every function that can fail returns 0 or a negative code (errors.h); the
 * human message of the last failure is tc_client_errmsg(c), valid until the
 * next call on that handle (from any thread).
 *
 * Lifetimes.  A tc_client is reference counted: tc_client_close() drops the
 * caller's reference, and each attached artifact holds one more, so the
 * connection stays open while any artifact (or any tensor exported from it)
 * is alive.  A tc_artifact is reference counted too: tc_artifact_close()
 * and every DLPack deleter drop one reference; the last one unmaps the
 * memory and tells the daemon (which may then evict or free it).  All
 * handle functions are thread-safe; requests on one client are serialised.
 * If the daemon dies, mapped artifacts stay readable; new calls fail with
 * TC_ECLOSED.
 */
#ifndef TCAST_CLIENT_H
#define TCAST_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "export.h"

#define TC_ID_BUFLEN \
	72 /* bytes for an artifact id ("tc2:" + 64 hex) and its NUL */

typedef struct tc_client tc_client;
typedef struct tc_artifact tc_artifact;
typedef struct tc_put tc_put;

/* Called with bytes done and total during long operations, on the thread
 * that made the call.  Must not call back into the same client. */
typedef void tc_progress_cb(uint64_t done, uint64_t total, void *arg);

/* ----------------------------------------------------------- connection */

/* The socket path a client uses by default ($TCAST_SOCKET, else
 * $XDG_RUNTIME_DIR/tcast/daemon.sock, else /tmp/tcast-$UID/daemon.sock).
 * Returns 0 or TC_ELIMIT when it does not fit in `len`. */
TC_API int tc_default_socket(char *buf, size_t len);

/* Connect and say HELLO.  `socket_path` NULL means the default.  On success
 * *out is owned by the caller (tc_client_close).  Returns 0,
 * TC_ENODAEMON (nobody listening), TC_EVERSION, TC_EPERM or -errno; `err`
 * (may be NULL) receives the message. */
TC_API int tc_client_connect(const char *socket_path, tc_client **out,
			     char *err, size_t errlen);
/* Drop the caller's reference; NULL is a no-op. */
TC_API void tc_client_close(tc_client *c);
/* Message of the last failed call on `c` (never NULL). */
TC_API const char *tc_client_errmsg(const tc_client *c);
/* Daemon process id and incarnation (changes on every daemon start). */
TC_API int32_t tc_client_daemon_pid(const tc_client *c);
TC_API uint64_t tc_client_daemon_epoch(const tc_client *c);

/* Free memory returned by libtcast (JSON strings).  NULL is a no-op. */
TC_API void tc_free(void *p);

/* ------------------------------------------------------- import and put */

#define TC_OPT_KEY	(1u << 0) /* key: publish the artifact under it */
#define TC_OPT_POLICY	(1u << 1) /* policy: cache|warm|pinned|... */
#define TC_OPT_EXPECT	(1u << 2) /* expect_gen: move the key by CAS */
#define TC_OPT_PROGRESS (1u << 3) /* progress, progress_arg */
#define TC_OPT_DEVICE	(1u << 4) /* device: tc_import straight to a GPU */
#define TC_OPT_TTL	(1u << 5) /* ttl_ms: the artifact goes after it */
#define TC_OPT_NOWAIT                                    \
	(1u << 6) /* durable policies: return before the \
		     shared-disk copy is durable */

struct tc_opts {
	uint64_t field_mask; /* TC_OPT_*: fields not in the mask are ignored */
	const char *key;     /* borrowed */
	const char *policy;  /* borrowed; default "cache" */
	uint64_t expect_gen; /* key generation expected; 0 = must not exist */
	tc_progress_cb *progress;
	void *progress_arg;
	int32_t device;	 /* this process's CUDA ordinal (TC_OPT_DEVICE) */
	uint64_t ttl_ms; /* TC_OPT_TTL: removed (memory, shared disk and
			    records) this long after it is created */
};

/* Where the artifact of the last tc_import or tc_put_commit on this handle
 * is kept (docs/durable.md). */
#define TC_PERSIST_MEMORY  0 /* host memory only: gone with the daemon */
#define TC_PERSIST_DURABLE 1 /* on the shared disk and in the metadata */
#define TC_PERSIST_PENDING                      \
	2 /* being written (TC_OPT_NOWAIT): see \
	     tc_inspect_json's "durable" */

/* What a created artifact came to. */
struct tc_result {
	char id[TC_ID_BUFLEN]; /* "tc2:<64 hex>" (BLAKE3-256) */
	uint64_t bytes;	       /* size of the byte space */
	uint32_t ntensors;
	uint32_t deduplicated;	 /* 1 when the daemon already held it */
	uint64_t nanoseconds;	 /* daemon-side duration */
	uint64_t key_generation; /* 0 when no key was given */
};

/* Import a safetensors file or a Hugging Face folder (index + shards, or a
 * single model.safetensors) into daemon memory.  With TC_OPT_DEVICE the
 * daemon loads it straight into a replica on that GPU (disk -> pinned
 * staging -> GPU, no host copy); such an artifact is attached with
 * tc_attach_gpu on that GPU (tc_attach says it is held on a GPU only).  The
 * daemon reads the file through a descriptor this process opens, so it reads
 * exactly what the caller may read.  Returns 0 or a negative code; `res` may be
 * NULL. */
TC_API int tc_import(tc_client *c, const char *path, const struct tc_opts *o,
		     struct tc_result *res);

/* Import only a view of the file or folder (`view`: a JSON view spec,
 * docs/formats.md, of slices and subsets) straight to the GPU
 * o->device (TC_OPT_DEVICE is required): the daemon's GPU loader reads
 * exactly the view's byte ranges (plus O_DIRECT alignment) through its
 * pinned staging, and the artifact it makes has the view's table and an id
 * of its bytes.  Transposes and casts are refused (TC_ENOTSUP): realize
 * those with tc_view_realize_gpu.  Returns what tc_import returns, and
 * TC_EINVAL, TC_ENOTFOUND or TC_EBADDTYPE for a spec the file refuses. */
TC_API int tc_import_view(tc_client *c, const char *path, const char *view,
			  const struct tc_opts *o, struct tc_result *res);
/* What the daemon's loader read for the last tc_import_view on this handle:
 * bytes asked of the files (the view's bytes through the page cache; with
 * O_DIRECT each read rounded out to the file's alignment) and read calls.
 * Zero after a plain tc_import. */
TC_API void tc_last_import_reads(tc_client *c, uint64_t *bytes,
				 uint64_t *reads);

/* A tensor to put: name (UTF-8), dtype (enum tc_dtype), shape. */
struct tc_tensor_desc {
	const char *name;      /* borrowed */
	int32_t dtype;	       /* enum tc_dtype */
	uint32_t ndim;	       /* 0..16 */
	const uint64_t *shape; /* borrowed, ndim entries */
};

/* Begin a put: the daemon creates the artifact's memory and this process
 * maps it writable.  With TC_OPT_DEVICE that memory is a new replica on
 * GPU o->device (no host copy): fill it with tc_put_copy_from_device (or
 * any device writes to tc_put_data); commit hashes it in the daemon and
 * keeps it as the artifact's replica on that GPU.  Fill each tensor at
 * tc_put_data(p, i), then commit.  Bytes nobody writes read as zeros, on
 * a GPU too (the daemon may hand over an allocation it kept: libtcast
 * zeroes what no copy filled).  `meta_json` is a JSON object of string
 * values or NULL.  On success *out is owned by the caller until tc_put_commit
 * or tc_put_abort. */
TC_API int tc_put_begin(tc_client *c, const struct tc_tensor_desc *tensors,
			uint32_t n, const char *meta_json,
			const struct tc_opts *o, tc_put **out);
/* Writable address of tensor i (NULL when i is out of range): host memory,
 * or for a GPU put (TC_OPT_DEVICE) a device address on that GPU.
 * Borrowed: valid until commit or abort. */
TC_API void *tc_put_data(tc_put *p, uint32_t i);
/* Byte offset of tensor i in the put's memory (UINT64_MAX when out of
 * range): where tc_put_write puts its bytes. */
TC_API uint64_t tc_put_offset(const tc_put *p, uint32_t i);
/* Host puts: copy n bytes from src to byte `off` of the put's memory
 * (tensor i starts at tc_put_offset(p, i)).  Same result as a memcpy to
 * tc_put_data, but through the memory's file: the pages are filled
 * without faulting a mapping in, several times faster for large puts
 * (docs/design.md).  Thread-safe for disjoint ranges.  Returns 0,
 * TC_EINVAL (a GPU put, a range outside the memory) or -errno. */
TC_API int tc_put_write(tc_put *p, uint64_t off, const void *src, uint64_t n);
/* The CUDA ordinal a put fills (TC_OPT_DEVICE in tc_put_begin), or -1. */
TC_API int32_t tc_put_device(const tc_put *p);
/* GPU puts: copy tensor index[k] from device address src[k] (on the put's
 * GPU, tc_put_nbytes(p, index[k]) bytes) for k < n, device to device on one
 * stream, and return when every copy is done.  The caller makes sure the
 * sources are written (its own streams synchronised).  Returns 0, TC_EINVAL
 * (not a GPU put, an index out of range), TC_ECUDA or TC_ENODEV. */
TC_API int tc_put_copy_from_device(tc_put *p, uint32_t n, const uint32_t *index,
				   const uint64_t *src);
TC_API uint64_t tc_put_nbytes(const tc_put *p, uint32_t i);
/* Unmap, seal (the memory is immutable from here on), hash and register.
 * Frees `p` whatever the result.  Returns 0 or a negative code. */
TC_API int tc_put_commit(tc_put *p, struct tc_result *res);
/* The persistence of the last artifact created on this handle
 * (TC_PERSIST_*), and into `degraded` (when not NULL) what a "should" of
 * its policy could not do ("" when nothing): ha without a cluster has no
 * replica on another node.  Valid until the next call on the handle. */
TC_API int tc_last_persistence(tc_client *c, char *degraded, size_t len);
/* Discard the put and free `p`.  NULL is a no-op. */
TC_API void tc_put_abort(tc_put *p);
/* While a host put fills artifact `id` (a peer pull: the caller knows the
 * id and the `nchunks` 32-byte chunk digests beforehand), have the daemon
 * serve the chunks tc_put_have names to its peers and announce the
 * filling replica to the cluster, so receivers of a fan-out pull from
 * each other.  The digests must hash, with the put's table, to `id`.
 * Returns 0, TC_EDIGEST, TC_EINVAL (not a host put, wrong chunk count),
 * TC_ENOTFOUND (the put is gone) or a connection error. */
TC_API int tc_put_serve(tc_put *p, const char *id, const void *digests,
			uint64_t nchunks);
/* Chunks[0..n) of a serving put are written and verified (n <= 65536):
 * the daemon may send them to peers now.  With TC_HAVE_FETCHING they are
 * being fetched from a sealed source: peers then ask that source for
 * other chunks first.  Fire and forget; returns 0, TC_EINVAL or a
 * connection error. */
#define TC_HAVE_FETCHING 1u
TC_API int tc_put_have(tc_put *p, const uint64_t *chunks, uint32_t n,
		       uint32_t flags);

/* ------------------------------------------------------------- attach */

/* Map an artifact, by key or id, read-only into this process: no copy.
 * On success *out is owned by the caller (tc_artifact_close).
 * Returns 0, TC_ENOTFOUND, TC_ECLOSED or -errno. */
TC_API int tc_attach(tc_client *c, const char *ref, tc_artifact **out);
/* Map an artifact's replica on a GPU, read-only, into this process: the
 * daemon makes the replica on that GPU if it has none (a host-to-device
 * copy from its host copy, once, shared by every process that attaches it
 * there), then this process imports it.  `device` is this process's CUDA
 * ordinal; the daemon is told the GPU's UUID, so CUDA_VISIBLE_DEVICES may
 * differ between processes.  tc_artifact_data() is then a device pointer,
 * tc_artifact_device() the ordinal, and DLPack exports are kDLCUDA tensors.
 * Device writes through the mapping fail.  On success *out is owned by the
 * caller (tc_artifact_close, which unmaps and releases the GPU lease).
 * Returns 0, TC_ENOTFOUND, TC_ENODEV (no GPU driver here or in the daemon),
 * TC_EDEVICE (no such ordinal here, or the daemon does not see that GPU),
 * TC_ENOTSUP (the GPU cannot share VMM memory), TC_ENOSPACE (the GPU's
 * budget is held by replicas in use), TC_ECUDA, TC_ECLOSED or -errno. */
TC_API int tc_attach_gpu(tc_client *c, const char *ref, int32_t device,
			 tc_artifact **out);
/* Take one more reference. */
TC_API void tc_artifact_ref(tc_artifact *a);
/* Drop one reference; the last unmaps and releases.  NULL is a no-op. */
TC_API void tc_artifact_close(tc_artifact *a);

/* Accessors: strings and arrays are borrowed, valid while `a` lives. */
TC_API const char *tc_artifact_id(const tc_artifact *a);
/* Host address of byte 0, or the device address for tc_attach_gpu. */
TC_API const void *tc_artifact_data(const tc_artifact *a);
/* The CUDA ordinal (in this process) the data lives on, or -1: host. */
TC_API int32_t tc_artifact_device(const tc_artifact *a);
/* Where a GPU attach's replica got its bytes when the daemon made it:
 * TC_FILL_HOST (copied from the daemon's host replica), a GPU ordinal of
 * the daemon >= 0 (a peer copy from that GPU's replica: a sibling
 * source), TC_FILL_LOADED (loaded, put or restored straight to that
 * GPU), or TC_FILL_UNKNOWN (a host attach, a binding, an older daemon).
 * *gbps (may be NULL): the copy's rate, 0 when unknown. */
#define TC_FILL_HOST	-1
#define TC_FILL_LOADED	-2
#define TC_FILL_UNKNOWN -3
TC_API int32_t tc_artifact_fill_source(const tc_artifact *a, double *gbps);
TC_API uint64_t tc_artifact_size(const tc_artifact *a);
TC_API uint32_t tc_artifact_count(const tc_artifact *a);
/* Index of the tensor called `name`, or TC_ENOTFOUND. */
TC_API int64_t tc_artifact_find(const tc_artifact *a, const char *name);

/* One tensor of an attached artifact (fixed layout, part of the ABI). */
struct tc_tensor_info {
	const char *name; /* borrowed */
	int32_t dtype;	  /* enum tc_dtype */
	uint32_t ndim;
	uint64_t offset; /* bytes from tc_artifact_data() */
	uint64_t nbytes;
	uint64_t shape[16];
};

/* The whole table at once (ntensors entries), borrowed; for bindings that
 * would otherwise make several calls per tensor. */
TC_API const struct tc_tensor_info *tc_artifact_tensors(const tc_artifact *a);
/* Every tensor's name in table order, each followed by a NUL, in one
 * block of *len bytes (len must not be NULL): borrowed, valid until
 * tc_artifact_close(a); tc_tensor_info.name points into it.  A binding
 * splits it once instead of reading ntensors strings. */
TC_API const char *tc_artifact_names(const tc_artifact *a, uint64_t *len);

/* `count` tensors of one dtype and shape, `spacing` bytes apart from
 * `offset` on: one strided view of shape (count,) + shape, split by one
 * unbind, makes all of them (fixed layout, part of the ABI). */
struct tc_tensor_run {
	uint32_t first;	  /* index into order[] of its first member */
	uint32_t count;	  /* >= min_run */
	uint64_t offset;  /* bytes: the first member's */
	uint64_t spacing; /* bytes from one member to the next, > 0 */
};
/* Group table `t` (n entries: tc_artifact_tensors, tc_view_plan_tensors)
 * into runs of at least min_run (>= 2) tensors of one dtype and shape at
 * equal spacing, whatever their places in the table; sub-byte dtypes and
 * empty tensors are in none.  runs[] needs room for n / min_run entries,
 * order[] for n: run r's members, as table positions in offset order, are
 * order[runs[r].first .. + count); after every run's members come the
 * tensors in no run, in table order.  Returns the number of runs,
 * TC_EINVAL or -ENOMEM. */
TC_API int64_t tc_tensor_runs(const struct tc_tensor_info *t, uint32_t n,
			      uint32_t min_run, struct tc_tensor_run *runs,
			      uint32_t *order);
TC_API uint32_t tc_artifact_meta_count(const tc_artifact *a);
TC_API const char *tc_artifact_meta_key(const tc_artifact *a, uint32_t i);
TC_API const char *tc_artifact_meta_value(const tc_artifact *a, uint32_t i);

/* Export tensor i as a DLPack capsule payload (on the CPU, or kDLCUDA with
 * device_id = tc_artifact_device(a) for a GPU attach): a
 * DLManagedTensorVersioned (versioned != 0, flags READ_ONLY) or a legacy
 * DLManagedTensor.  The tensor holds a reference on `a`; its deleter drops
 * it.  *out is owned by the consumer (call its deleter).  Returns 0,
 * TC_EINVAL (i out of range) or -ENOMEM. */
TC_API int tc_artifact_dlpack(tc_artifact *a, uint32_t i, int versioned,
			      void **out);

/* The whole byte space (tc_artifact_size bytes) as one 1-D uint8 DLPack
 * tensor on the artifact's device, holding a reference on `a` like
 * tc_artifact_dlpack.  Bindings slice typed views of every tensor out of
 * it with one framework call each.  Returns 0 or -ENOMEM. */
TC_API int tc_artifact_dlpack_bytes(tc_artifact *a, int versioned, void **out);

/* -------------------------------------------------------- realization */

/* Where tc_realize may take an artifact from.  On one node the sources
 * are the daemon's replicas ("local") and the disk path ("disk"). */
enum tc_source {
	TC_SOURCE_AUTO = 0,	  /* attach the daemon's replica; when it holds
				     none and a disk path is known, import it */
	TC_SOURCE_LOCAL_ONLY = 1, /* attach; never read disk */
	TC_SOURCE_DISK_FIRST = 2, /* import from the disk path (deduplicated
				     against what the daemon holds); attach the
				     local replica when the file cannot be read
				   */
	TC_SOURCE_DISK_ONLY = 3,  /* import from the disk path; no fallback */
};

/* What served a tc_realize call (tc_realize_info.served). */
#define TC_SERVED_LOCAL 1 /* attached a replica the daemon already held */
#define TC_SERVED_DISK	2 /* imported from the disk path, then attached */
#define TC_SERVED_SHARED_DISK                                                \
	3 /* the daemon loaded it from its shared-disk tier for this call (a \
	     durable artifact not in memory), then attached: gpu_direct says \
	     it went straight to the GPU replica */
#define TC_SERVED_SPILL                                                   \
	4 /* the same from the daemon's spill folder (a cache artifact it \
	     had spilled under memory pressure) */

#define TC_REALIZE_SOURCE (1u << 0) /* source */
#define TC_REALIZE_DEVICE (1u << 1) /* device */
#define TC_REALIZE_IMPORT (1u << 2) /* import: options of an import */
#define TC_REALIZE_FLAGS  (1u << 3) /* flags */
/* A GPU attach returns once the replica is mapped, while a thread of
 * libtcast grants this process's device access to it (cuMemSetAccess:
 * half of a fresh process's attach of 16 GiB on an H100); the caller
 * builds its views of the address meanwhile and calls tc_artifact_wait
 * before anything reads the memory.  Host attaches ignore it. */
#define TC_REALIZE_F_ACCESS_LATER 0x1

struct tc_realize_opts {
	uint64_t field_mask; /* TC_REALIZE_*: fields not in the mask are
				ignored */
	int32_t source;	     /* enum tc_source; default TC_SOURCE_AUTO */
	int32_t device;	     /* this process's CUDA ordinal, or -1 (the
				default): host memory */
	const struct tc_opts *import; /* borrowed: key, policy, expect_gen and
					 progress of an import (device is
					 ignored: `device` above decides) */
	uint32_t flags;		      /* TC_REALIZE_F_* */
	uint32_t reserved;
};

/* What tc_realize did, for diagnostics (the same for every client). */
struct tc_realize_info {
	int32_t served;	     /* TC_SERVED_* */
	int32_t device;	     /* where the returned artifact is: the CUDA
				ordinal, or -1: host memory (a GPU was asked
				for and fallback_reason says why not) */
	uint32_t imported;   /* 1: `import` describes the import made */
	uint32_t gpu_direct; /* 1: imported (or, served TC_SERVED_SHARED_DISK,
				loaded from the shared disk) straight to the
				GPU by the daemon's loader (no host copy) */
	struct tc_result import;
	uint64_t import_ns;	   /* wall time of the import, this side */
	uint64_t attach_ns;	   /* wall time of the attach, this side */
	char fallback_reason[512]; /* why the preferred source or device was
				      not used; "" when it was */
};

/* Realize artifact `ref` (a key or an id; may be NULL) known to live at
 * `disk_path` (a safetensors file or a Hugging Face folder; may be NULL)
 * by the rules of `o->source` (docs/python.md, "Sources"), attached in
 * host memory or, with TC_REALIZE_DEVICE, on that GPU: imports for a GPU go
 * straight to it through the daemon's loader, and a replica held in host
 * memory is copied to the GPU by the daemon once.  When the daemon has no
 * GPU tier (no driver, no VMM) the host copy is attached instead and
 * info->device is -1, with the reason.  On success *out is owned by the
 * caller (tc_artifact_close).  `o` and `info` may be NULL.  Returns 0,
 * TC_EINVAL (the source needs a ref or a disk path the call lacks; the
 * message says which), TC_ENOTFOUND, or any code of tc_attach,
 * tc_attach_gpu and tc_import; the message names every source tried. */
TC_API int tc_realize(tc_client *c, const char *ref, const char *disk_path,
		      const struct tc_realize_opts *o, tc_artifact **out,
		      struct tc_realize_info *info);
/* Wait until a's memory may be read: at once, unless a was realized on a
 * GPU with TC_REALIZE_F_ACCESS_LATER and its access is still being
 * granted.  Returns 0, or TC_ECUDA / TC_EDEVICE when the grant failed
 * (the mapping stays unreadable: close a).  The thread that realized a
 * calls it, before a is shared with any other thread: the grant is
 * joined once, never concurrently. */
TC_API int tc_artifact_wait(tc_artifact *a);
/* "auto", "local_only", "disk_first", "disk_only", or NULL. */
TC_API const char *tc_source_name(int32_t source);

/* ------------------------------------------------------------ bindings */

/* Bind an artifact on a GPU: the daemon allocates memory it owns for this
 * client, copies the artifact in, and this process maps it read-only: a
 * tc_artifact like tc_attach_gpu's, at addresses that stay the same for
 * the binding's life.  Closing it (tc_artifact_close, or the client going
 * away) frees the memory.  Returns 0, TC_ENOTFOUND, TC_ENODEV,
 * TC_EDEVICE, TC_ENOSPACE (the GPU's budget), TC_ENOTSUP or TC_ECUDA. */
TC_API int tc_bind(tc_client *c, const char *ref, int32_t device,
		   tc_artifact **out);
/* Refill the binding in place with another artifact of the same layout
 * (tensor names, dtypes, shapes and offsets), so consumers keep their
 * pointers; tc_artifact_id(a) then names the new artifact.  Returns when
 * the copy is complete.  It does not wait for kernels reading the
 * binding: pause them around the swap.  Returns 0, TC_ESHAPE (another
 * layout: nothing was written), TC_ENOTFOUND, TC_EINVAL (not a binding)
 * or TC_ECUDA (the content is then undefined until a swap succeeds). */
TC_API int tc_binding_swap(tc_artifact *a, const char *ref);
/* tc_bind / tc_binding_swap with flags.  TC_BIND_PUBLISH: the binding is
 * also a source of what it holds, for peer daemons (their pulls read it
 * through this daemon's peer server) and the global store (a replica of
 * tier gpu on this node), from when the fill or swap is done until the
 * next swap or its close; needs a daemon with peer_listen (and global
 * for the store) to matter.  A swap with flags 0 stops publishing; plain
 * tc_binding_swap keeps the binding's setting.  Same returns, and
 * TC_EINVAL for an unknown flag. */
#define TC_BIND_PUBLISH 0x1u
TC_API int tc_bind2(tc_client *c, const char *ref, int32_t device,
		    uint32_t flags, tc_artifact **out);
TC_API int tc_binding_swap2(tc_artifact *a, const char *ref, uint32_t flags);

/* ------------------------------------------------------ keys and verbs */

/* Point `key` at artifact `id`.  `has_expect` = 0: create, or no-op when it
 * already points there (else TC_ECONFLICT).  `has_expect` = 1: move only if
 * the key is at generation `expect_gen` (0 = must not exist).  *gen (may
 * be NULL) receives the resulting generation. */
TC_API int tc_key_set(tc_client *c, const char *key, const char *id,
		      int has_expect, uint64_t expect_gen, uint64_t *gen);
/* Remove a key (and its artifact when no other key names it) or an artifact
 * by id.  Memory a client still maps is freed when it lets go. */
TC_API int tc_rm(tc_client *c, const char *ref);
/* tc_rm with flags: TC_RM_KEEP_SHARED_DISK leaves a durable artifact's
 * shared-disk folder in place (readable with tc_import and tcast verify;
 * the daemon forgets it).  Without it the folder goes too. */
#define TC_RM_KEEP_SHARED_DISK 0x1u
TC_API int tc_rm2(tc_client *c, const char *ref, uint32_t flags);

/* JSON documents (docs/protocol.md); *out is freed with tc_free. */
TC_API int tc_status_json(tc_client *c, char **out);
TC_API int tc_list_json(tc_client *c, char **out);
TC_API int tc_inspect_json(tc_client *c, const char *ref, char **out);
/* One key with its history, or every key when `key` is NULL or "". */
TC_API int tc_keys_json(tc_client *c, const char *key, char **out);

/* Write an artifact to a safetensors file (atomically: tmp, fsync,
 * rename).  Returns 0 or a negative code. */
TC_API int tc_export(tc_client *c, const char *ref, const char *path);
/* tc_export with flags.  Export writes a fresh temporary beside `path` and
 * renames it into place (mode 0666 & ~umask); it never replaces anything
 * but a regular file (a FIFO, device, folder or symlink: TC_EINVAL), and a
 * regular file only with TC_EXPORT_FORCE (else TC_EEXIST). */
#define TC_EXPORT_FORCE 1u
TC_API int tc_export_ex(tc_client *c, const char *ref, const char *path,
			uint32_t flags);

#endif /* TCAST_CLIENT_H */
