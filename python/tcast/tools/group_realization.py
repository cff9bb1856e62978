"""Group realization: tensor-parallel ranks switch to a new version together
or not at all (docs/weight-publisher.md#group-realization).

    g = GroupRealization("llama-serve", rank=r, world_size=4, device="cuda:0")
    g.stage(version, "model:llama:v12", view=lambda a: a.view(slices=...))   # prepared
    if g.wait(version, timeout_s=30) == "commit":                          # the barrier
        tensors = g.acquire(version)                                        # switch
    # else: every rank stays on the version it had

Each rank stages its rank-local view of the new version (the daemon keeps
the view as an artifact, ready on the device), then reports *prepared*.
The group's decision is one key created by compare-and-swap
(``expect_generation=0``): the rank that sees every rank prepared creates
it naming the commit marker, a rank that fails, gives up or is told to
abort creates it naming the abort marker, and whichever comes first is the
decision for everyone.  A rank that dies mid-stage never reports prepared,
so the group can only abort (at the latest when a surviving rank's wait
times out).  Only after a commit does a rank copy the staged values into
its live binding (same addresses; ``acquire``), so an abort leaves every
rank on the old version, bit for bit.

The prepared reports and the decision are keys of the node's daemon
(``scope="node"``: the ranks of one server), or of the global store
(``scope="cluster"``: ranks on several nodes; the keys are created by the
store's compare-and-swap through ``tcast global key-set`` and read with
``tcast global resolve``, so every rank needs the cluster secret; a rank's
death is then seen through the timeout only).
"""
from __future__ import annotations

import ctypes
import os
import time
from typing import Any, Callable, Dict, List, Optional

import tcast as tc
from tcast import errors

_PREFIX = "tcast.group/"
COMMIT, ABORT = "commit", "abort"


def _marker(decision: str) -> str:
    """The artifact a decision key names: content-addressed, so every rank
    that makes it gets the same id."""
    import numpy as np

    a = tc.put({"decision": np.array([1 if decision == COMMIT else 0], dtype=np.uint8)},
               metadata={"tcast.group.decision": decision})
    # a key of its own keeps it while decision keys come and go (removing
    # the last key naming an artifact removes the artifact)
    tc.set_key(f"{_PREFIX}_marker/{decision}", a.artifact_id)
    return a.artifact_id


class GroupAborted(errors.TcastError):
    name = "GROUP_ABORTED"
    code = -4011


class GroupRealization:
    def __init__(self, group: str, rank: int, world_size: int, *, device: str = "cuda:0",
                 fake_gpu: bool = False, poll_s: float = 0.05, scope: str = "node",
                 global_address: Optional[str] = None, cluster_secret_file: Optional[str] = None):
        """``scope="node"``: the group's keys live in this node's daemon
        (ranks of one server).  ``scope="cluster"``: they live in the global
        store at ``global_address`` (ranks on several nodes; needs the
        cluster secret), created by its compare-and-swap, which it
        acknowledges only once committed to its database."""
        if scope not in ("node", "cluster"):
            raise errors.InvalidArgumentError(f"scope must be 'node' or 'cluster', not {scope!r}")
        if scope == "cluster" and not (global_address and cluster_secret_file):
            raise errors.InvalidArgumentError("scope='cluster' needs global_address and cluster_secret_file")
        self.scope = scope
        self._gs = (global_address, cluster_secret_file)
        if not isinstance(group, str) or not group or "/" in group:
            raise errors.InvalidArgumentError(f"group must be a non-empty name without '/', not {group!r}")
        if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int) and 0 <= rank < world_size):
            raise errors.InvalidArgumentError(f"rank {rank!r} of world_size {world_size!r}: need 0 <= rank < world_size")
        self.group, self.rank, self.world_size = group, rank, world_size
        self.device, self.fake_gpu, self.poll_s = device, fake_gpu, poll_s
        self.binding: Any = None
        self.version: Optional[int] = None  # the version the live binding holds
        self._staged: Dict[int, str] = {}
        self._markers: Dict[str, str] = {}
        self._alive = self._announce() if scope == "node" else None

    def _announce(self) -> Any:
        """This rank's liveness: an artifact unique to this process that
        this process keeps attached (a lease in the daemon), named by
        ``tcast.group/<group>/alive/rank<r>``.  When the process dies, its
        connection closes and the lease goes: the other ranks see it at
        once instead of waiting for their timeout."""
        import numpy as np

        a = tc.put({"alive": np.array([self.rank, os.getpid(), time.time_ns()], dtype=np.int64)},
                   metadata={"tcast.group": self.group})
        a.attach()
        key = f"{_PREFIX}{self.group}/alive/rank{self.rank}"
        try:
            gen = tc.key_info(key).generation
        except errors.NotFoundError:
            gen = 0
        tc.set_key(key, a.artifact_id, expect_generation=gen)
        return a

    def dead_ranks(self) -> List[int]:
        """Ranks whose process announced itself and has since gone (its
        liveness artifact holds no lease any more)."""
        if self.scope != "node":
            return []  # across nodes a death is seen by the timeout only
        leases = {x["id"]: x.get("leases", 0) for x in tc.list_artifacts()}
        dead = []
        for r in range(self.world_size):
            try:
                aid = tc.key_info(f"{_PREFIX}{self.group}/alive/rank{r}").artifact_id
            except errors.NotFoundError:
                continue  # not started yet: only the timeout covers it
            if leases.get(aid, 0) == 0:
                dead.append(r)
        return dead

    # -------------------------------------------------------------- keys

    def _k(self, version: int, what: str) -> str:
        return f"{_PREFIX}{self.group}/v{version}/{what}"

    def _marker_id(self, decision: str) -> str:
        if self.scope == "cluster":
            return f"tcast-group:{decision}"  # global keys may name any id
        if decision not in self._markers:
            self._markers[decision] = _marker(decision)
        return self._markers[decision]

    def _get(self, key: str) -> Optional[str]:
        """The id ``key`` names, None when it does not exist."""
        if self.scope == "node":
            try:
                return tc.key_info(key).artifact_id
            except errors.NotFoundError:
                return None
        p = self._global("resolve", key, "--max", "1")
        if p is None:
            return None
        return p["id"]

    def _create(self, key: str, aid: str) -> None:
        """Create ``key`` naming ``aid``; ConflictError if it exists."""
        if self.scope == "node":
            tc.set_key(key, aid, expect_generation=0)
        else:
            self._global("key-set", key, aid, "--expect", "0")

    def _global(self, verb: str, *args: str) -> Optional[Dict[str, Any]]:
        """`tcast global VERB` against the global store: its JSON, None for
        a key that does not exist, the mapped error otherwise."""
        import json
        import subprocess

        from tcast import _cli

        addr, secret = self._gs
        p = subprocess.run([_cli.binary() or "tcast", "--json", "global", verb, *args, "--global", str(addr),
                            "--cluster-secret-file", str(secret)], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
        try:
            doc = json.loads(p.stdout)
        except ValueError:
            raise errors.error_from_code(-5, f"tcast global {verb} gave no report: {p.stderr.strip()[:300]}") \
                from None
        if p.returncode == 0:
            return doc
        err = doc.get("error", {})
        code = int(err.get("errno", -4014))
        if code == -4000 and verb == "resolve":
            return None
        raise errors.error_from_code(code, err.get("message", f"tcast global {verb} failed"))

    def decision(self, version: int) -> Optional[str]:
        aid = self._get(self._k(version, "decision"))
        if aid is None:
            return None
        if aid == self._marker_id(COMMIT):
            return COMMIT
        if aid == self._marker_id(ABORT):
            return ABORT
        raise errors.ConflictError(f"group {self.group} v{version}: the decision key names {aid}, neither marker")

    def _decide(self, version: int, decision: str) -> str:
        """Create the decision key; whoever created it first decided."""
        try:
            self._create(self._k(version, "decision"), self._marker_id(decision))
            return decision
        except errors.ConflictError:
            d = self.decision(version)
            assert d is not None
            return d

    def prepared(self, version: int) -> List[int]:
        """The ranks that reported prepared for ``version``."""
        if self.scope == "cluster":
            return [r for r in range(self.world_size) if self._get(self._k(version, f"rank{r}")) is not None]
        pre = self._k(version, "rank")
        out = []
        for k in tc.keys():
            if k.key.startswith(pre):
                try:
                    out.append(int(k.key[len(pre):]))
                except ValueError:
                    pass
        return sorted(out)

    # ----------------------------------------------------------- the steps

    def stage(self, version: int, ref: str, *, view: Optional[Callable[[Any], Any]] = None) -> str:
        """Make this rank's values of ``version`` ready (the view kept by the
        daemon, without touching the live binding), then report prepared.
        Returns the staged artifact id.  A failure aborts the group's
        version and raises."""
        try:
            a = tc.artifact(ref)
            staged = view(a).kept_id() if view is not None else a.artifact_id
            if not self.fake_gpu and self.device != "cpu":
                tc.artifact(staged).prefetch(self.device)
        except BaseException as e:
            self.abort(version, f"rank {self.rank} could not stage {ref}: {e}")
            raise
        self._staged[version] = staged
        self._create(self._k(version, f"rank{self.rank}"), staged)
        return staged

    def wait(self, version: int, timeout_s: float = 60.0) -> str:
        """The barrier: "commit" once every rank is prepared (this rank may
        be the one that decides), "abort" when a rank aborted, or on this
        rank's timeout (which then aborts for everyone)."""
        deadline = time.monotonic() + timeout_s
        while True:
            d = self.decision(version)
            if d is not None:
                return d
            have = self.prepared(version)
            if len(have) >= self.world_size:
                return self._decide(version, COMMIT)
            if set(self.dead_ranks()) - set(have):
                return self._decide(version, ABORT)
            if time.monotonic() >= deadline:
                have = self.prepared(version)
                missing = sorted(set(range(self.world_size)) - set(have))
                return self._decide(version, ABORT) if missing else self._decide(version, COMMIT)
            time.sleep(self.poll_s)

    def abort(self, version: int, reason: str = "") -> str:
        return self._decide(version, ABORT)

    def acquire(self, version: int) -> Any:
        """Switch: copy the staged values into the live binding (bound at
        the first version); only after a commit.  Returns the binding."""
        d = self.decision(version)
        if d != COMMIT:
            raise GroupAborted(f"group {self.group} v{version} is {d or 'undecided'}: rank {self.rank} stays on "
                               f"version {self.version}")
        staged = self._staged.pop(version)
        if self.binding is None:
            self.binding = self._bind(staged)
        else:
            self.binding.swap(staged)
        self.version = version
        return self.binding

    def cleanup(self, version: int) -> None:
        """Drop the group's keys for ``version`` (after every rank acted;
        node scope: the global store keeps its keys, append-only)."""
        if self.scope != "node":
            return
        for k in tc.keys():
            if k.key.startswith(self._k(version, "")):
                try:
                    tc.deregister_artifact(k.key)
                except errors.TcastError:
                    pass

    def _bind(self, aid: str) -> Any:
        if not self.fake_gpu:
            return tc.artifact(aid).bind(self.device)
        from tcast._artifact import Binding

        s = tc._sess()
        h = ctypes.c_void_p()
        s.call(s.lib.tc_bind, aid.encode(), int(self.device.partition(":")[2] or 0), ctypes.byref(h))
        return Binding(s, h.value, self.device)

    def host_views(self) -> Dict[str, Any]:
        """The live binding's torch tensors; on the fake driver (CI), CPU
        views of its memory."""
        return fake_gpu_views(self.binding) if self.fake_gpu else self.binding.tensors


def fake_gpu_views(binding: Any, framework: str = "torch") -> Dict[str, Any]:
    """CPU tensors (torch or numpy) over a binding's memory on the fake
    driver (tests/fakecuda), where device memory is host memory mapped into
    this process.  Never on a real GPU: the address is a device address
    there."""
    from tcast import dtypes

    maps = dtypes.numpy_mappings() if framework == "numpy" else dtypes.torch_mappings()
    out = {}
    base = binding.data_ptr
    for t in binding.table:
        dt = dtypes.BY_NAME[t.dtype]
        m = maps[dt.id]
        buf = (ctypes.c_ubyte * max(t.nbytes, 1)).from_address(base + t.offset)
        count = t.nbytes // m.itemsize
        if framework == "numpy":
            import numpy as np

            flat = np.frombuffer(buf, dtype=m.fw_dtype, count=count)
        else:
            import torch

            flat = torch.frombuffer(buf, dtype=m.fw_dtype, count=count) if count else torch.empty(0, dtype=m.fw_dtype)
        out[t.name] = flat.reshape(m.out_shape(dt, tuple(t.shape), t.nbytes))
    return out
