/*
 * server_metrics.c - the loop's side of the metrics: publish what only the
 * loop may walk (artifacts, leases, connections) as gauges the scrape
 * thread reads (metrics.h).
 */
#include "durable.h"
#include "gpu_tier.h"
#include "spill.h"
#include "metrics.h"
#include "server_internal.h"

/* How often the loop refreshes the gauges: often enough for a scrape
 * interval of a second, rare enough that a node with many artifacts does
 * not walk them on every 50 ms tick. */
#define PUBLISH_MS 250

void tc__srv_metrics_publish(struct server *s, uint64_t now_ms, bool force)
{
	static uint64_t next_ms;
	struct tc__metrics_tier host = { 0 };
	struct tc__metrics_spill spill;
	struct tc__metrics_disk disk;

	if (!force && now_ms < next_ms)
		return;
	next_ms = now_ms + PUBLISH_MS;
	for (struct tc__obj *o = tc__objs_first(&s->objs); o;
	     o = tc__objs_next(o))
		if (o->shm) {
			host.replicas++;
			host.bytes += o->host.bytes;
		}
	for (struct conn *c = s->conns; c; c = c->next)
		for (uint32_t i = 0; i < c->nleases; i++)
			if (!c->leases[i].rep)
				host.leases += c->leases[i].n;
	host.budget = s->objs.host.budget;
	host.used = s->objs.host.used;
	host.evictions = s->objs.host.evictions;
	tc__metrics_set_host(&host);
	tc__spill_counts(s->spill, &spill);
	tc__metrics_set_spill(&spill);
	tc__durable_counts(s->durable, &disk);
	tc__metrics_set_disk(&disk);
	tc__metrics_set_server(s->objs.keys.count, tc__jobs_pending(s->jobs),
			       s->nconns, s->n_proto_err);
	tc__gpu_tier_publish_metrics(s->gpu);
}
