/*
 * jobs.h - worker threads for work that must stay off the event loop.
 *
 * A job's run() executes on a worker thread and must touch no shared daemon
 * state; its done() executes later on the loop thread, which learns of it
 * through an eventfd.  Jobs are owned by their submitter; done() is the last
 * call the pool makes on a job, and it may free it.
 *
 * Part of src/xfer (uses common, net, format, gpu): the engines that move
 * bytes for the daemon and, later, the peer module; nothing here knows
 * artifacts, connections or budgets.
 */
#ifndef TC_JOBS_H
#define TC_JOBS_H

#include "net/ev.h"

struct tc__job;
typedef void tc__job_fn(struct tc__job *job);

struct tc__job {
	tc__job_fn *run;      /* worker thread */
	tc__job_fn *done;     /* loop thread */
	struct tc__job *next; /* queue link, owned by the pool */
};

struct tc__jobs;

/* Start `nthreads` workers and register the completion eventfd on `ev`.
 * Returns 0 or a negative errno. */
int tc__jobs_new(int nthreads, struct tc__ev *ev, struct tc__jobs **out);
/* A pool that starts `nthreads` workers and adds one (up to max_threads)
 * whenever a job is submitted while every worker is busy: for jobs that
 * may block for good (a read on a hung mount), so they cannot starve the
 * jobs behind them. */
int tc__jobs_new_elastic(int nthreads, int max_threads, struct tc__ev *ev,
			 struct tc__jobs **out);
void tc__jobs_submit(struct tc__jobs *p, struct tc__job *job);
/* Number of jobs submitted and not yet done. */
int tc__jobs_pending(const struct tc__jobs *p);
/* Wait for running jobs, run every done(), stop the threads, free. */
void tc__jobs_free(struct tc__jobs *p);
/* tc__jobs_free, waiting at most `ms` for the workers: -ETIMEDOUT leaves
 * the pool allocated (a worker is blocked in it; the process should exit),
 * 0 freed it. */
int tc__jobs_free_within(struct tc__jobs *p, int ms);

#endif /* TC_JOBS_H */
