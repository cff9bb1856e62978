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
(``scope="node"``: the ranks of one server).  With ``scope="cluster"``
(ranks on several nodes) they are a group of the global store instead
(``tcast global group``, docs/cluster.md#groups): the group is created
with its ranks and a deadline, each rank joins it with its node and a
lease that a small helper process (``tcast global group hold``) renews
while this process lives, reports prepared, and the store decides commit
or abort by one compare-and-swap in its database transaction.  It aborts
the group at once when a member's lease is not renewed (the rank's
process died) or its node's heartbeat lease expires (the node's daemon
died), and every waiting rank hears why (which rank, which node).

By default a cluster-scope rank needs no cluster secret: it talks to its
own node's daemon (``tcast global group ... --via-daemon``, the daemon's
Unix socket), which relays each group operation to the global store with
its own secret, ties the rank to its node, and renews the rank's lease
while the helper's connection to it is open; when the rank dies the
helper exits, the connection closes and the daemon aborts the group for
that rank at once.  ``global_address`` with ``cluster_secret_file`` talks
to the global store directly instead.
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
                 global_address: Optional[str] = None, cluster_secret_file: Optional[str] = None,
                 node: Optional[str] = None, rank_lease_s: float = 3.0, group_timeout_s: float = 300.0):
        """``scope="node"``: the group's keys live in this node's daemon
        (ranks of one server).  ``scope="cluster"``: the group lives in the
        global store (ranks on several nodes): each version is a group
        ``<group>/v<version>`` whose decision the store makes in its
        database transaction.  Without ``global_address`` the rank goes
        through this process's daemon, which must be in the cluster (no
        secret here; the rank is tied to the daemon's node); with
        ``global_address`` and ``cluster_secret_file`` it talks to the
        store directly, tied to ``node`` (default: the node name of this
        process's daemon, when it is in the cluster).  A lease of
        ``rank_lease_s`` is renewed while this process lives; the store
        aborts the version when it or the node's lease lapses, or
        ``group_timeout_s`` after it was created."""
        if scope not in ("node", "cluster"):
            raise errors.InvalidArgumentError(f"scope must be 'node' or 'cluster', not {scope!r}")
        if scope == "cluster" and bool(global_address) != bool(cluster_secret_file):
            raise errors.InvalidArgumentError("scope='cluster': global_address and cluster_secret_file go together "
                                              "(or neither: through this process's daemon)")
        self.scope = scope
        self._gs = (global_address, cluster_secret_file)
        self._via_daemon = scope == "cluster" and not global_address
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
        self.rank_lease_s, self.group_timeout_s = rank_lease_s, group_timeout_s
        self._node = node if node is not None else (self._daemon_node()
                                                    if scope == "cluster" and not self._via_daemon else "")
        self._holders: Dict[int, Any] = {}
        self.outcomes: Dict[int, Dict[str, Any]] = {}  # cluster: the store's record per version

    @staticmethod
    def _daemon_node() -> str:
        """This process's daemon's node name in the cluster ("" if none)."""
        try:
            cl = tc.status().get("cluster") or {}
        except errors.TcastError:
            return ""
        return str(cl.get("node") or "")

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
        if decision not in self._markers:
            self._markers[decision] = _marker(decision)
        return self._markers[decision]

    def _get(self, key: str) -> Optional[str]:
        """The id ``key`` names, None when it does not exist."""
        try:
            return tc.key_info(key).artifact_id
        except errors.NotFoundError:
            return None

    def _create(self, key: str, aid: str) -> None:
        """Create ``key`` naming ``aid``; ConflictError if it exists."""
        tc.set_key(key, aid, expect_generation=0)

    # ------------------------------------------------- cluster: the store

    def _gid(self, version: int) -> str:
        return f"{self.group}/v{version}"

    def _cli(self, sub: str, version: int, *args: str) -> List[str]:
        """`tcast global group SUB <gid> ARGS`, to the store directly or
        through this process's daemon."""
        from tcast import _cli

        head = [_cli.binary() or "tcast"]
        if self._via_daemon:
            sock = getattr(tc._sess(), "socket_path", None)
            if sock:
                head += ["--socket", str(sock)]
        argv = head + ["--json", "global", "group", sub, self._gid(version), *args]
        if self._via_daemon:
            return argv + ["--via-daemon"]
        addr, secret = self._gs
        return argv + ["--global", str(addr), "--cluster-secret-file", str(secret)]

    def _group(self, sub: str, version: int, *args: str) -> Optional[Dict[str, Any]]:
        """`tcast global group SUB <group>/v<version> ARGS`: the group's
        record, None for a group that does not exist (yet)."""
        import json
        import subprocess

        wait = 0.0
        if "--wait-ms" in args:
            wait = int(args[args.index("--wait-ms") + 1]) / 1000
        p = subprocess.run(self._cli(sub, version, *args), capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=wait + 60)
        try:
            doc = json.loads(p.stdout.splitlines()[-1] if p.stdout.strip() else "")
        except ValueError:
            raise errors.error_from_code(-5, f"tcast global group {sub} gave no report: {p.stderr.strip()[:300]}") \
                from None
        if p.returncode == 0 and "error" not in doc:
            self._record(version, doc)
            return doc
        err = doc.get("error", {})
        code = int(err.get("errno", -4014))
        if code == -4000 and sub == "status":
            return None
        raise errors.error_from_code(code, err.get("message", f"tcast global group {sub} failed"))

    def _record(self, version: int, doc: Dict[str, Any]) -> None:
        if doc.get("state") in (COMMIT, ABORT):
            self.outcomes[version] = doc
            self._release(version)

    def _hold(self, version: int) -> None:
        """Create the version's group (every rank may: same shape, same
        group), join it with this rank's node and lease, and keep the lease
        renewed by a helper process for as long as this process lives (its
        stdin is our pipe: when we die it stops and the lease runs out)."""
        import json
        import subprocess

        if version in self._holders:
            return
        argv = self._cli("hold", version, "--rank", str(self.rank), "--ranks", str(self.world_size),
                         "--timeout-ms", str(max(1, int(self.group_timeout_s * 1000))),
                         "--rank-lease-ms", str(max(100, int(self.rank_lease_s * 1000))))
        if self._node and not self._via_daemon:
            argv += ["--node", self._node]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
        line = p.stdout.readline() if p.stdout else ""
        try:
            doc = json.loads(line)
        except ValueError:
            p.kill()
            p.wait()
            raise errors.error_from_code(-5, f"tcast global group hold gave no report (exit {p.poll()})") from None
        if "error" in doc:
            p.wait()
            err = doc["error"]
            raise errors.error_from_code(int(err.get("errno", -4014)), err.get("message", "group hold failed"))
        self._holders[version] = p
        self._record(version, doc)

    def _release(self, version: int) -> None:
        """Stop renewing this rank's lease (the group is decided, or we
        are done with it)."""
        p = self._holders.pop(version, None)
        if p is None:
            return
        try:
            p.stdin.close()
            p.wait(10)
        except Exception:  # noqa: BLE001 - never let cleanup mask a result
            p.kill()
            p.wait()

    def outcome(self, version: int) -> Optional[Dict[str, Any]]:
        """The group's record (``scope="cluster"``): state, reason, the
        rank and node an abort is about (``by_rank``, ``by_node``),
        members with their nodes and leases; None before it exists."""
        if self.scope != "cluster":
            raise errors.InvalidArgumentError("outcome() is for scope='cluster'")
        return self.outcomes.get(version) or self._group("status", version)

    def decision(self, version: int) -> Optional[str]:
        if self.scope == "cluster":
            rec = self.outcomes.get(version) or self._group("status", version)
            return rec["state"] if rec and rec["state"] != "open" else None
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
            rec = self._group("status", version)
            return sorted(m["rank"] for m in (rec or {}).get("members", []) if m["prepared"])
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
        if self.scope == "cluster":
            self._hold(version)  # a member from now on: its death aborts
        try:
            a = tc.artifact(ref)
            staged = view(a).kept_id() if view is not None else a.artifact_id
            if not self.fake_gpu and self.device != "cpu":
                tc.artifact(staged).prefetch(self.device)
        except BaseException as e:
            self.abort(version, f"rank {self.rank} could not stage {ref}: {e}")
            raise
        self._staged[version] = staged
        if self.scope == "cluster":
            self._group("prepare", version, "--rank", str(self.rank), "--id", staged)
        else:
            self._create(self._k(version, f"rank{self.rank}"), staged)
        return staged

    def wait(self, version: int, timeout_s: float = 60.0) -> str:
        """The barrier: "commit" once every rank is prepared (this rank may
        be the one that decides), "abort" when a rank aborted, or on this
        rank's timeout (which then aborts for everyone)."""
        deadline = time.monotonic() + timeout_s
        if self.scope == "cluster":
            return self._wait_cluster(version, deadline, timeout_s)
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

    def _wait_cluster(self, version: int, deadline: float, timeout_s: float) -> str:
        """The store answers a waiting status the moment it decides."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return self.abort(version, f"rank {self.rank} timed out waiting after {timeout_s:g} s")
            rec = self._group("status", version, "--wait-ms", str(max(1, min(int(left * 1000), 600000))))
            if rec is None:  # no rank created it yet
                time.sleep(self.poll_s)
            elif rec["state"] != "open":
                return rec["state"]

    def abort(self, version: int, reason: str = "") -> str:
        """Abort ``version`` for every rank unless it was decided already;
        returns the decision that stands."""
        if self.scope == "cluster":
            try:
                rec = self._group("abort", version, "--rank", str(self.rank), "--reason", reason or "no reason given")
            except errors.NotFoundError:  # nobody created it: create it to abort it
                self._group("create", version, "--ranks", str(self.world_size),
                            "--timeout-ms", str(max(1, int(self.group_timeout_s * 1000))))
                rec = self._group("abort", version, "--rank", str(self.rank), "--reason", reason or "no reason given")
            assert rec is not None
            return rec["state"]
        return self._decide(version, ABORT)

    def acquire(self, version: int) -> Any:
        """Switch: copy the staged values into the live binding (bound at
        the first version); only after a commit.  Returns the binding."""
        d = self.decision(version)
        if d != COMMIT:
            why = ""
            if self.scope == "cluster" and version in self.outcomes:
                why = f" ({self.outcomes[version].get('reason')})"
            raise GroupAborted(f"group {self.group} v{version} is {d or 'undecided'}{why}: rank {self.rank} stays "
                               f"on version {self.version}")
        staged = self._staged.pop(version)
        if self.binding is None:
            self.binding = self._bind(staged)
        else:
            self.binding.swap(staged)
        self.version = version
        return self.binding

    def cleanup(self, version: int) -> None:
        """Drop the group's keys for ``version`` (after every rank acted;
        cluster scope: stop renewing this rank's lease; the store keeps
        the decided group's record for an hour)."""
        if self.scope != "node":
            self._release(version)
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
