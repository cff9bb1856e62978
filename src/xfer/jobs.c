/*
 * jobs.c - a small worker pool with completions through an eventfd.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/alloc.h"
#include "jobs.h"

struct tc__jobs {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct tc__job *todo_head, *todo_tail; /* waiting for a worker */
	struct tc__job *done_head;	       /* finished, for the loop */
	int pending;			       /* submitted, not done() */
	int stopping;
	int efd;
	struct tc__ev *ev;
	int nthreads;
	int max_threads; /* elastic pools grow up to this */
	int idle;	 /* workers waiting for a job */
	int queued;	 /* jobs waiting for a worker */
	pthread_t *threads;
};

static void *worker(void *arg)
{
	struct tc__jobs *p = arg;
	uint64_t one = 1;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct tc__job *j;

		while (!p->todo_head && !p->stopping) {
			p->idle++;
			pthread_cond_wait(&p->cond, &p->lock);
			p->idle--;
		}
		if (!p->todo_head)
			break;
		p->queued--;
		j = p->todo_head;
		p->todo_head = j->next;
		if (!p->todo_head)
			p->todo_tail = NULL;
		pthread_mutex_unlock(&p->lock);
		j->run(j);
		pthread_mutex_lock(&p->lock);
		j->next = p->done_head;
		p->done_head = j;
		if (write(p->efd, &one, sizeof(one)) < 0) {
			/* The counter cannot overflow in practice; the loop
			 * drains the list on any wakeup anyway. */
		}
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

static void drain(struct tc__jobs *p)
{
	struct tc__job *list, *next;

	pthread_mutex_lock(&p->lock);
	list = p->done_head;
	p->done_head = NULL;
	pthread_mutex_unlock(&p->lock);
	/* Completions were pushed newest first; run them oldest first. */
	struct tc__job *rev = NULL;

	for (; list; list = next) {
		next = list->next;
		list->next = rev;
		rev = list;
	}
	for (; rev; rev = next) {
		next = rev->next;
		p->pending--;
		rev->done(rev);
	}
}

static void on_efd(struct tc__ev *ev, int fd, void *arg, int mask)
{
	uint64_t v;

	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return;
	drain(arg);
}

int tc__jobs_new(int nthreads, struct tc__ev *ev, struct tc__jobs **out)
{
	return tc__jobs_new_elastic(nthreads, nthreads, ev, out);
}

int tc__jobs_new_elastic(int nthreads, int max_threads, struct tc__ev *ev,
			 struct tc__jobs **out)
{
	struct tc__jobs *p = tc__calloc(1, sizeof(*p));
	int rc;

	*out = NULL;
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	p->ev = ev;
	p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->efd < 0) {
		rc = -errno;
		goto out_free;
	}
	rc = tc__ev_add(ev, p->efd, TC_EV_READ, on_efd, p);
	if (rc < 0)
		goto out_close;
	if (max_threads < nthreads)
		max_threads = nthreads;
	p->max_threads = max_threads;
	p->threads = tc__calloc((size_t)max_threads, sizeof(pthread_t));
	if (!p->threads) {
		rc = -ENOMEM;
		goto out_del;
	}
	for (int i = 0; i < nthreads; i++) {
		rc = -pthread_create(&p->threads[i], NULL, worker, p);
		if (rc < 0) {
			p->nthreads = i;
			tc__jobs_free(p);
			return rc;
		}
	}
	p->nthreads = nthreads;
	*out = p;
	return 0;

out_del:
	tc__ev_del(ev, p->efd);
out_close:
	close(p->efd);
out_free:
	tc__free(p);
	return rc;
}

void tc__jobs_submit(struct tc__jobs *p, struct tc__job *job)
{
	job->next = NULL;
	pthread_mutex_lock(&p->lock);
	if (p->todo_tail)
		p->todo_tail->next = job;
	else
		p->todo_head = job;
	p->todo_tail = job;
	p->pending++;
	p->queued++;
	/* Every worker busy (perhaps blocked in a read that never returns):
	 * an elastic pool adds one rather than make this job wait behind
	 * them.  Failing to add one only means waiting; a stopping pool (its
	 * workers joined) adds none. */
	if (p->queued > p->idle && p->nthreads < p->max_threads &&
	    !p->stopping &&
	    pthread_create(&p->threads[p->nthreads], NULL, worker, p) == 0)
		p->nthreads++;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

int tc__jobs_pending(const struct tc__jobs *p)
{
	return p->pending;
}

static void pool_destroy(struct tc__jobs *p)
{
	drain(p);
	tc__ev_del(p->ev, p->efd);
	close(p->efd);
	tc__free(p->threads);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
	tc__free(p);
}

void tc__jobs_free(struct tc__jobs *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	/* Workers finish what is queued before they exit. */
	for (int i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	pool_destroy(p);
}

int tc__jobs_free_within(struct tc__jobs *p, int ms)
{
	struct timespec dl;

	if (!p)
		return 0;
	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += ms / 1000;
	dl.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	for (int i = 0; i < p->nthreads; i++)
		if (pthread_timedjoin_np(p->threads[i], NULL, &dl) != 0)
			return -ETIMEDOUT; /* p stays: a worker still uses it */
	pool_destroy(p);
	return 0;
}
