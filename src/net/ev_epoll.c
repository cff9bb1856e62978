/*
 * ev_epoll.c - epoll backend of the event loop.
 */
#include <errno.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/clock.h"
#include "ev.h"

struct ev_slot {
	int mask;
	tc__ev_io_cb *cb;
	void *arg;
};

struct tc__ev {
	int epfd;
	int setsize;
	int stop;
	int no_sleep;	       /* poll once without waiting (tc__ev_no_sleep) */
	struct ev_slot *slots; /* owned, setsize entries */
	struct epoll_event *events; /* owned, setsize entries */
	tc__ev_hook *before_sleep;
	tc__ev_hook *tick;
	int tick_ms;
	uint64_t next_tick_ms;
	void *hook_arg;
};

uint64_t tc__now_ns(void)
{
	return tc__mono_ns();
}

uint64_t tc__now_ms(void)
{
	return tc__now_ns() / 1000000u;
}

struct tc__ev *tc__ev_new(int setsize)
{
	struct tc__ev *ev = tc__calloc(1, sizeof(*ev));

	if (!ev)
		return NULL;
	ev->setsize = setsize;
	ev->slots = tc__calloc((size_t)setsize, sizeof(*ev->slots));
	ev->events = tc__calloc((size_t)setsize, sizeof(*ev->events));
	if (!ev->slots || !ev->events)
		goto out_free;
	ev->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (ev->epfd < 0)
		goto out_free;
	return ev;

out_free:
	tc__free(ev->slots);
	tc__free(ev->events);
	tc__free(ev);
	return NULL;
}

void tc__ev_free(struct tc__ev *ev)
{
	if (!ev)
		return;
	close(ev->epfd);
	tc__free(ev->slots);
	tc__free(ev->events);
	tc__free(ev);
}

int tc__ev_add(struct tc__ev *ev, int fd, int mask, tc__ev_io_cb *cb, void *arg)
{
	struct epoll_event e = { 0 };
	int op;

	if (fd < 0 || fd >= ev->setsize)
		return -ERANGE;
	op = ev->slots[fd].mask ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	e.events = (mask & TC_EV_READ ? EPOLLIN : 0) |
		   (mask & TC_EV_WRITE ? EPOLLOUT : 0);
	e.data.fd = fd;
	if (epoll_ctl(ev->epfd, op, fd, &e) < 0)
		return -errno;
	ev->slots[fd].mask = mask ? mask : -1;
	ev->slots[fd].cb = cb;
	ev->slots[fd].arg = arg;
	return 0;
}

void tc__ev_del(struct tc__ev *ev, int fd)
{
	if (fd < 0 || fd >= ev->setsize || !ev->slots[fd].mask)
		return;
	epoll_ctl(ev->epfd, EPOLL_CTL_DEL, fd, NULL);
	ev->slots[fd].mask = 0;
	ev->slots[fd].cb = NULL;
	ev->slots[fd].arg = NULL;
}

int tc__ev_mask(const struct tc__ev *ev, int fd)
{
	if (fd < 0 || fd >= ev->setsize || ev->slots[fd].mask < 0)
		return 0;
	return ev->slots[fd].mask;
}

void tc__ev_set_hooks(struct tc__ev *ev, tc__ev_hook *before_sleep,
		      tc__ev_hook *tick, int tick_ms, void *arg)
{
	ev->before_sleep = before_sleep;
	ev->tick = tick;
	ev->tick_ms = tick_ms;
	ev->hook_arg = arg;
	ev->next_tick_ms = tc__now_ms() + (uint64_t)tick_ms;
}

void tc__ev_stop(struct tc__ev *ev)
{
	ev->stop = 1;
}

void tc__ev_no_sleep(struct tc__ev *ev)
{
	ev->no_sleep = 1;
}

int tc__ev_run(struct tc__ev *ev)
{
	ev->stop = 0;
	while (!ev->stop) {
		int n, timeout = -1;

		if (ev->before_sleep)
			ev->before_sleep(ev, ev->hook_arg);
		if (ev->stop)
			break;
		if (ev->tick) {
			uint64_t now = tc__now_ms();

			timeout = now >= ev->next_tick_ms ?
					  0 :
					  (int)(ev->next_tick_ms - now);
		}
		if (ev->no_sleep) {
			ev->no_sleep = 0;
			timeout = 0;
		}
		n = epoll_wait(ev->epfd, ev->events, ev->setsize, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n; i++) {
			int fd = ev->events[i].data.fd;
			uint32_t r = ev->events[i].events;
			struct ev_slot *s = &ev->slots[fd];
			int mask = 0;

			if (r & (EPOLLIN | EPOLLHUP | EPOLLERR))
				mask |= TC_EV_READ;
			if (r & (EPOLLOUT | EPOLLERR))
				mask |= TC_EV_WRITE;
			/* A callback earlier in this batch may have removed
			 * this fd; its slot is then empty. */
			if (s->cb && s->mask > 0)
				s->cb(ev, fd, s->arg, mask & s->mask);
		}
		if (ev->tick && tc__now_ms() >= ev->next_tick_ms) {
			ev->next_tick_ms = tc__now_ms() + (uint64_t)ev->tick_ms;
			ev->tick(ev, ev->hook_arg);
		}
	}
	return 0;
}
