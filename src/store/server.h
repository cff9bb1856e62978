/*
 * server.h - the store daemon: one event-loop thread serving clients over a
 * Unix socket, with imports and digests on worker threads.
 *
 * Protocol per docs/protocol.md.  A connection must say HELLO within
 * handshake_ms; a protocol error ends that connection only; a connection
 * whose replies pile up past max_outbuf (a client that stopped reading) is
 * dropped so it cannot hold the daemon's memory.  When a connection ends,
 * every lease it held is released and its unfinished puts are discarded.
 */
#ifndef TC_SERVER_H
#define TC_SERVER_H

#include "config.h"

/* Run the daemon until SIGTERM or SIGINT.  `ready_fd` >= 0 receives one
 * byte once the socket accepts (then is closed), so `tcast daemon start`
 * returns only when the daemon is usable.  Returns 0 or a negative code;
 * start-up errors are written to `err`. */
int tc__server_run(const struct tc__store_config *cfg, int ready_fd, char *err,
		   size_t errlen);

#endif /* TC_SERVER_H */
