/*
 * client_internal.h - what the files of libtcast share.
 */
#ifndef TC_CLIENT_INTERNAL_H
#define TC_CLIENT_INTERNAL_H

#include "common/buf.h"
#include "proto/proto.h"
#include "tcast/client.h"

/* A reply body (after the status) and the fds that came with it; both
 * owned by the holder until reply_release. */
struct reply {
	uint8_t *data;
	struct tc__cur body;
	int fds[TC_PROTO_MAX_FDS];
	int nfds;
};

void reply_release(struct reply *rep);
/* Start a request frame with a fresh req_id; returns the header offset. */
size_t tc__client_begin(tc_client *c, struct tc__buf *b, int type);
/* Send and wait for the reply (see client.c). */
int tc__client_call(tc_client *c, struct tc__buf *req, const int *fds, int nfds,
		    const struct tc_opts *o, struct reply *rep);
/* Send a frame that has no reply. */
int tc__client_send(tc_client *c, struct tc__buf *req);
void tc__client_ref(tc_client *c);
/* Record a message on the handle and return rc. */
int tc__client_err(tc_client *c, int rc, const char *msg);
void tc__client_put_opts(struct tc__buf *b, const struct tc_opts *o,
			 uint32_t flags);
int tc__client_read_result(tc_client *c, struct reply *rep,
			   struct tc_result *res);

/* Write artifact `ref` as a safetensors stream to `fd` (a pipe, stdout:
 * `tcast export REF -`); the caller owns `fd`.  Returns 0 or a code, with
 * the message in tc_client_errmsg(c). */
int tc__client_export_fd(tc_client *c, const char *ref, int fd);

/* tc_attach_gpu whose import of the mapping also gets `import_flags`
 * (TC_GPU_ACCESS_LATER, for TC_REALIZE_F_ACCESS_LATER). */
int tc__attach_gpu(tc_client *c, const char *ref, int32_t device,
		   unsigned import_flags, tc_artifact **out);

/* How the daemon came to hold what `a` maps for the attach that made it
 * (TC_ORIGIN_* of proto.h: TC_ORIGIN_HELD unless it was loaded from the
 * shared disk for that request). */
uint32_t tc__artifact_origin(const tc_artifact *a);

/* Calls of tc_put_write that went through p's file and its mapping so
 * far (calls[0], calls[1]): for tests of the adaptive choice. */
void tc__put_write_ways(tc_put *p, uint64_t calls[2]);

/* A host put's writable mapping of its whole memory when its pages are
 * huge (common/io.h: faults through it are then cheap), so that a caller
 * may write in place what it would hand to tc_put_write; NULL otherwise
 * (a GPU put, 4 KiB pages, TCAST_PUT_WRITE=pwrite|map); always with
 * TCAST_PUT_WRITE=inplace (tests).  Nothing is populated: the caller's
 * first writes fault the pages in. */
uint8_t *tc__put_huge_map(tc_put *p);

#endif /* TC_CLIENT_INTERNAL_H */
