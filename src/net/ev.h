/*
 * ev.h - the daemon's event loop (an `ae`-sized epoll loop).
 *
 * One thread runs the loop and is the only one that touches shared state;
 * workers hand results back through an eventfd registered like any other fd.
 * Callbacks may add or delete any fd, including their own, but must never
 * free a connection from inside its own callback: mark it closing and reap it
 * in the before-sleep hook.
 */
#ifndef TC_EV_H
#define TC_EV_H

#include <stdint.h>

#define TC_EV_READ  1
#define TC_EV_WRITE 2

struct tc__ev;
typedef void tc__ev_io_cb(struct tc__ev *ev, int fd, void *arg, int mask);
typedef void tc__ev_hook(struct tc__ev *ev, void *arg);

/* Create a loop for fds below `setsize`.  NULL on failure (errno set). */
struct tc__ev *tc__ev_new(int setsize);
void tc__ev_free(struct tc__ev *ev);
/* Watch `fd` for `mask` (replaces the previous mask and callback).
 * Returns 0, -ERANGE when fd >= setsize, or -errno from epoll_ctl. */
int tc__ev_add(struct tc__ev *ev, int fd, int mask, tc__ev_io_cb *cb,
	       void *arg);
/* Stop watching `fd` (no-op when not watched). */
void tc__ev_del(struct tc__ev *ev, int fd);
/* Current mask of `fd` (0 when not watched). */
int tc__ev_mask(const struct tc__ev *ev, int fd);
/* Run `hook` before every wait and `tick` every `tick_ms` milliseconds. */
void tc__ev_set_hooks(struct tc__ev *ev, tc__ev_hook *before_sleep,
		      tc__ev_hook *tick, int tick_ms, void *arg);
/* Run until tc__ev_stop(); returns 0 or -errno from epoll_wait. */
int tc__ev_run(struct tc__ev *ev);
void tc__ev_stop(struct tc__ev *ev);
/* From before_sleep: work is waiting that no fd will announce; poll once
 * without sleeping before calling before_sleep again. */
void tc__ev_no_sleep(struct tc__ev *ev);
/* Monotonic milliseconds. */
uint64_t tc__now_ms(void);
uint64_t tc__now_ns(void);

#endif /* TC_EV_H */
