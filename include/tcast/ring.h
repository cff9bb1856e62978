/*
 * ring.h - rings of reusable GPU slabs for per-call tensors between two
 * processes (tcast.shared's direct calls; docs/shared.md, "The slab ring").
 *
 * A per-call tensor that travels as an artifact pays, every call, a VMM
 * allocation, an export, a map in the receiver and a hash in the daemon.
 * A ring pays those once per slab: the writer (the OWNER ring) allocates
 * exportable VMM slabs, sends each slab's fd to the other process once
 * (SCM_RIGHTS over a Unix socket in the 0700 runtime directory), and the
 * reader (a READER ring) imports and maps it once.  A call is then a copy
 * into a free slab, a stream sync, and {slot, generation, layout} in the
 * control message.
 *
 * One payload in flight per slab, one reader per payload: so the reader
 * maps slabs read-write (its tensors are its private copy; writing them
 * reaches nobody else).  A slab goes back to the writer when every reader
 * tensor of it has died: the reader's DLPack deleter records (slot,
 * generation) as dead, the reader drains the dead list after a stream
 * sync (so no queued kernel still reads it) and piggybacks it on its next
 * message, and the owner's tc_ring_put_back() makes the slab free again.
 * The generation makes a stale or repeated report harmless.
 *
 * Memory: a slab's GPU memory lives until the owner freed its ring AND
 * every reader unmapped it (VMM semantics, docs/gpu.md), so either side
 * may die first; when both live, the reader unmaps first and the owner
 * frees after (tcast.shared's channel close does so).  A ring handle is
 * reference counted by its live DLPack views: tc_ring_free() drops the
 * caller's reference and the mappings go with the last view.  A slab is
 * unmapped only after the device is synchronised (every stream of this
 * process), since a view can die on the host while kernels queued on it
 * still run: tc_ring_free(), tc_ring_trim(), a refill and the deleter of
 * a slab's last view may therefore block for the GPU's queued work.
 *
 * All functions are thread-safe; DLPack deleters may run on any thread.
 * Errors: TC_EINVAL (bad argument, wrong role, unknown or empty slot,
 * stale generation), TC_ENOSPACE (owner: every slab is in use and another
 * would pass cap_bytes: send this payload another way), -ENOMEM, or the
 * GPU layer's TC_ENODEV / TC_EDEVICE / TC_ENOTSUP / TC_ECUDA; the message is
 * in tc_ring_errmsg().
 */
#ifndef TCAST_RING_H
#define TCAST_RING_H

#include <stdint.h>

#include "export.h"

typedef struct tc_ring tc_ring;

#define TC_RING_OWNER  1 /* allocates slabs, writes payloads */
#define TC_RING_READER 2 /* imports the owner's slabs, reads payloads */

#define TC_RING_MAX_SLOTS 64 /* slabs per ring */

/* tc_ring_view flags.  HOST: describe the memory as host memory
 * (kDLCPU); only for the fake driver of the tests, whose "device"
 * addresses are host addresses. */
#define TC_RING_VIEW_HOST 0x1

/* Counters of one ring (tc_ring_stats). */
struct tc_ring_stats {
	uint32_t slabs;	   /* slots holding a slab */
	uint32_t busy;	   /* owner: slabs acquired and not put back */
	uint64_t bytes;	   /* sum of slab sizes */
	uint64_t views;	   /* live DLPack views */
	uint64_t acquired; /* owner: payloads placed */
	uint64_t created;  /* owner: slabs allocated (exports) */
	uint64_t imported; /* reader: slabs imported (maps) */
	uint64_t refused;  /* owner: TC_ENOSPACE answers */
	uint32_t dead;	   /* reader: dead (slot, gen) not drained */
	uint32_t reserved;
};

/* Make an empty ring on CUDA device `device` (this process's ordinal).
 * role: TC_RING_OWNER or TC_RING_READER.  cap_bytes: the owner's limit on
 * the sum of its slab sizes (0: 1 GiB); ignored for readers.  *out is
 * owned by the caller (tc_ring_free), NULL on failure.  Returns 0,
 * TC_EINVAL or -ENOMEM; the driver is loaded on the first slab. */
TC_API int tc_ring_create(int device, int role, uint64_t cap_bytes,
			  tc_ring **out);

/* Drop the caller's reference.  Owner slabs and reader mappings are
 * released once no DLPack view of them is alive.  NULL is a no-op. */
TC_API void tc_ring_free(tc_ring *r);

/* The message of this ring's last failure, valid until its next failing
 * call; never NULL. */
TC_API const char *tc_ring_errmsg(const tc_ring *r);

/* ---- owner --------------------------------------------------------- */

/* Take a free slab of at least nbytes: the smallest free one that fits,
 * else a new one (power of two >= 2 MiB) while the ring stays under its
 * cap (a free slab too small is replaced to make room).  Writes the slot,
 * its new generation and the slab's device address; *is_new is 1 while
 * the slab has not been handed out by tc_ring_fd (the reader has not
 * mapped it: send the fd with this payload), else 0.  Returns 0, TC_EINVAL,
 * TC_ENOSPACE or a GPU error. */
TC_API int tc_ring_acquire(tc_ring *r, uint64_t nbytes, uint32_t *slot,
			   uint32_t *gen, uint64_t *dptr, int *is_new);

/* The slab of `slot`: its exported fd (borrowed: valid until the slot's
 * slab is replaced or the ring freed; send it, never close it) and size.
 * Returns 0 or TC_EINVAL. */
TC_API int tc_ring_fd(tc_ring *r, uint32_t slot, int *fd, uint64_t *size);

/* The reader is done with (slot, gen): the slab is free again.  Returns 0,
 * or TC_EINVAL when the slot is not busy with that generation (a stale or
 * repeated report, which changes nothing). */
TC_API int tc_ring_put_back(tc_ring *r, uint32_t slot, uint32_t gen);

/* Free every slab not in use (the owner's memory goes back to the GPU once
 * readers unmap).  Returns how many were freed. */
TC_API int tc_ring_trim(tc_ring *r);

/* ---- reader -------------------------------------------------------- */

/* Map the owner's slab `slot` (fd borrowed: close it after; size from the
 * owner's tc_ring_fd) read-write, replacing the slot's previous slab
 * (still-live views keep theirs).  Returns 0, TC_EINVAL or a GPU error. */
TC_API int tc_ring_import(tc_ring *r, uint32_t slot, int fd, uint64_t size);

/* ---- both ---------------------------------------------------------- */

/* A legacy DLManagedTensor (uint8, 1-D, nbytes) over the start of slot's
 * slab, holding a reference on the slab and the ring; *out is owned by the
 * caller (hand it to a consumer or call its deleter).  On a reader ring
 * the deleter records (slot, gen) as dead for tc_ring_drain(); on an owner
 * ring gen is ignored (the writer's own view).  flags: 0 or
 * TC_RING_VIEW_HOST.  Returns 0, TC_EINVAL (no slab, nbytes larger than
 * it) or -ENOMEM. */
TC_API int tc_ring_view(tc_ring *r, uint32_t slot, uint32_t gen,
			uint64_t nbytes, uint32_t flags, void **out);

/* Reader: move up to `max` dead (slot << 32 | gen) into out[]; returns the
 * count.  Call it only after synchronising the streams that used the
 * views, since the owner may overwrite the slab as soon as it learns. */
TC_API int tc_ring_drain(tc_ring *r, uint64_t *out, uint32_t max);

/* Fill *out.  Returns 0. */
TC_API int tc_ring_stats(tc_ring *r, struct tc_ring_stats *out);

#endif /* TCAST_RING_H */
