/*
 * gpu_tier_json.c - the GPU tier as others read it: `tcast status`'s
 * "gpu" object (devices, budgets, spares, fills, the sibling-GPU rates
 * and choices), the Prometheus gauges, and each artifact's GPU replicas
 * in `tcast inspect`.  Loop thread only, like the state it reads.
 */
#include <jansson.h>

#include "config.h"
#include "gpu_tier_internal.h"
#include "metrics.h"

/* ----------------------------------------------------------------- JSON */

/* Where a replica's bytes came from: "host", "gpu N" (a peer copy from
 * that GPU's replica), or "import" (the loader, a put, a restore). */
static const char *fill_source_name(const struct tc__gpu_replica *r)
{
	static const char *const gpus[] = {
		"gpu 0",  "gpu 1",  "gpu 2",  "gpu 3", "gpu 4",	 "gpu 5",
		"gpu 6",  "gpu 7",  "gpu 8",  "gpu 9", "gpu 10", "gpu 11",
		"gpu 12", "gpu 13", "gpu 14", "gpu 15"
	};

	if (r->fill_src == -2)
		return "import";
	if (r->fill_src < 0)
		return "host";
	return r->fill_src < 16 ? gpus[r->fill_src] : "gpu";
}

void tc__gt_obj_gpu_json(const struct tc__obj *o, void *arr)
{
	if (!o->gpu)
		return;
	for (int i = 0; i < TC_GPU_TIER_MAX_DEV; i++) {
		const struct tc__gpu_replica *r = o->gpu->rep[i];

		if (!r)
			continue;
		json_array_append_new(
			arr,
			json_pack(
				"{s:s, s:s, s:i, s:I, s:I, s:s, s:f, s:f, s:b, "
				"s:b, s:s, s:f, s:I}",
				"tier", "gpu", "device", r->dev->info.uuid_str,
				"ordinal", i, "bytes",
				(json_int_t)r->base.bytes, "leases",
				(json_int_t)r->base.leases, "state",
				gt_ready(r) ? "ready" : "filling",
				"fill_seconds", r->fill_seconds,
				"alloc_seconds", r->alloc_seconds, "pinned",
				r->fill_pinned, "reused_allocation", r->reused,
				"fill_source", fill_source_name(r), "fill_gbps",
				r->fill_gbps, "peer_bytes",
				(json_int_t)r->part_bytes));
	}
}

void tc__gpu_tier_publish_metrics(struct tc__gpu_tier *t)
{
	for (int i = 0; t->state == GT_OPEN && i < t->ndev; i++) {
		struct tc__gpu_dev *d = &t->devs[i];
		struct tc__metrics_tier m = { .replicas = d->nreplicas,
					      .budget = d->tier.budget,
					      .used = d->tier.used -
						      gt_spare_bytes(d),
					      .evictions = d->tier.evictions };

		for (struct tc__gpu_replica *r = gt_ready_first(d); r;
		     r = gt_ready_next(r)) {
			m.bytes += r->o ? r->base.bytes : 0; /* not the spare */
			m.leases += r->base.leases;
		}
		tc__metrics_set_gpu(i, d->info.uuid_str, &m);
	}
}

/* The sibling-GPU sources as measured: fills from a sibling, probes, the
 * host rate per device and the peer rate per pair (only what was seen). */
static json_t *peer_json(const struct tc__gpu_tier *t)
{
	json_t *host = json_array(), *pairs = json_array(), *j;

	for (int d = 0; d < t->ndev; d++) {
		const struct gt_rate *h = &t->host_rate[d];

		if (h->n)
			json_array_append_new(
				host,
				json_pack("{s:i, s:f, s:i}", "ordinal", d,
					  "gbps", h->gbps, "fills", (int)h->n));
		for (int s = 0; s < t->ndev; s++) {
			const struct gt_rate *p = &t->peer_rate[s][d];
			uint8_t l = t->peer_link[s][d];

			if (!p->n && !l)
				continue;
			json_array_append_new(
				pairs,
				json_pack("{s:i, s:i, s:s, s:f, s:i, s:s}",
					  "src", s, "dst", d, "link",
					  l == 1 ? "direct" :
					  l == 2 ? "staged" :
						   "unknown",
					  "gbps", p->gbps, "fills", (int)p->n,
					  "choice",
					  !p->n || !h->n    ? "probe" :
					  p->gbps > h->gbps ? "peer" :
							      "host"));
		}
	}
	j = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o}",
		      "fills", (json_int_t)t->n_peer_fills, "fill_bytes",
		      (json_int_t)t->n_peer_fill_bytes, "bind_fills",
		      (json_int_t)t->n_peer_bind_fills, "bind_fill_bytes",
		      (json_int_t)t->n_peer_bind_bytes, "part_fills",
		      (json_int_t)t->n_part_fills, "part_fill_bytes",
		      (json_int_t)t->n_part_bytes, "part_rejected",
		      (json_int_t)t->n_part_rejected, "probes",
		      (json_int_t)t->n_probes, "host_rates", host, "pairs",
		      pairs);
	/* Part fills that copied from fills still running (leads). */
	if (j) {
		json_object_set_new(j, "pipelined_fills",
				    json_integer((json_int_t)t->n_pipe_fills));
		json_object_set_new(j, "pipelined_bytes",
				    json_integer((json_int_t)t->n_pipe_bytes));
		json_object_set_new(
			j, "pipelined_fallback_bytes",
			json_integer((json_int_t)t->n_pipe_fallback_bytes));
		json_object_set_new(j, "pipelined_leads",
				    json_integer((json_int_t)t->n_pipe_leads));
	}
	return j;
}

char *tc__gpu_tier_status_json(struct tc__gpu_tier *t)
{
	static const char *const states[] = { "not loaded", "loading", "ready",
					      "unavailable" };
	json_t *j, *devs = json_array();
	char *s;

	for (int i = 0; i < t->ndev; i++) {
		struct tc__gpu_dev *d = &t->devs[i];
		uint32_t leases = 0;
		json_t *dj;

		for (struct tc__gpu_replica *r = gt_ready_first(d); r;
		     r = gt_ready_next(r))
			leases += r->base.leases;
		/* filling_bytes: of used_bytes, the FILLING replicas (attach
		 * fills, imports, restores and puts to this GPU, bindings
		 * before their first fill), as host_filling_bytes is the
		 * host tier's. */
		dj = json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, "
			       "s:I, s:I, s:I}",
			       "ordinal", i, "uuid", d->info.uuid_str, "name",
			       d->info.name, "pci_bus_id", d->info.pci_bus_id,
			       "total_bytes", (json_int_t)d->info.total_bytes,
			       "budget_bytes", (json_int_t)d->tier.budget,
			       "used_bytes",
			       (json_int_t)(d->tier.used - gt_spare_bytes(d)),
			       "filling_bytes",
			       (json_int_t)d->tier.filling_bytes, "replicas",
			       (json_int_t)d->nreplicas, "leases",
			       (json_int_t)leases, "evictions",
			       (json_int_t)d->tier.evictions,
			       "reused_allocations", (json_int_t)d->reused);
		if (dj)
			json_object_set_new(
				dj, "spare",
				json_pack("{s:I, s:I, s:I}", "bytes",
					  (json_int_t)gt_spare_bytes(d), "kept",
					  (json_int_t)d->spares_kept, "used",
					  (json_int_t)d->spares_used));
		/* Only where we already have a context: a status query
		 * must not create one (hundreds of MiB on a real GPU). */
		if (dj && d->touched) {
			uint64_t fr, tot;

			if (tc__gpu_mem_info(i, &fr, &tot, NULL, 0) == 0) {
				json_object_set_new(
					dj, "driver_free_bytes",
					json_integer((json_int_t)fr));
				json_object_set_new(
					dj, "driver_total_bytes",
					json_integer((json_int_t)tot));
			}
		}
		json_array_append_new(devs, dj);
	}
	j = json_pack("{s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:I}", "state",
		      states[t->state], "pin_host",
		      t->cfg->pin_eager ? "eager" : "on_use", "devices", devs,
		      "fills", (json_int_t)t->n_fills, "fill_failures",
		      (json_int_t)t->n_fill_failures, "fill_bytes",
		      (json_int_t)t->n_fill_bytes, "fill_pinned_bytes",
		      (json_int_t)t->n_fill_pinned_bytes, "pinned_host_bytes",
		      (json_int_t)t->pinned_host_bytes);
	if (j) {
		json_object_set_new(j, "peer", peer_json(t));
		/* Of fill_bytes, what replica fills copied from host
		 * replicas (the rest came from sibling GPUs). */
		json_object_set_new(
			j, "fill_host_bytes",
			json_integer((json_int_t)t->n_fill_host_bytes));
	}
	if (j && t->state == GT_FAILED)
		json_object_set_new(j, "error", json_string(t->open_err));
	if (j && t->state == GT_OPEN) {
		json_object_set_new(j, "driver_version",
				    json_integer(t->driver_version));
		json_object_set_new(j, "library", json_string(t->driver_path));
	}
	s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	return s;
}
