"""Versioned weight publishing: immutable version keys, a retention
window, reload triggers (docs/weight-publisher.md).

    from tcast.tools.weight_publisher import WeightPublisher, WeightPublisherConfig
    pub = WeightPublisher(WeightPublisherConfig(model_name="llama7b", keep_last=2,
                                                history_path="/var/lib/wp/llama7b.json",
                                                reload_url="http://10.0.0.5:8000/set_model_weight"))
    artifact_id = pub.publish(state_dict, version=123)
    artifact_id = pub.publish_from_disk("/shared/export/v124", version=124)

The names and defaults are TensorCast's ``tensorcast.tools.weight_publisher``
so a program written against it runs by changing the import.  What a
publish does, in order (each step's failure leaves the version served
before it served, and says why):

1. the version must be higher than every version this model has published
   (the history file and the daemon's version keys both count);
2. the key (``key_template``) must not exist: version keys are immutable;
3. pre-trim: versions beyond the retention window are retired *before*
   the put, so a keep_last=2 publisher never holds three versions;
4. put (or import) with ``expect_generation=0``: the key is created by
   compare-and-swap, so a racing publisher cannot be overwritten;
5. the key is read back and must name the artifact just made;
6. the reload trigger runs (direct URL, router fan-out, or serving
   artifact); a failure raises ReloadError with every endpoint's result
   and retires nothing;
7. post-trim to ``keep_last``, history written atomically.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import string
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import tcast as tc
from tcast import errors

HISTORY_FORMAT = "tcast.weight_publisher.history/1"
RELOAD_REQUESTS = ("set_model_weight", "serving_artifact")
_TEMPLATE_FIELDS = ("model_name", "weight_version", "version")
_KEY_MAX = 512  # the daemon's and the global store's limit


# ------------------------------------------------------------------ errors


class VersionOrderError(errors.InvalidArgumentError):
    """The version is not higher than the last one published."""


class KeyCollisionError(errors.ConflictError):
    """The version key already exists: keys are immutable."""


class KeyMappingError(errors.ConflictError):
    """After publishing, the key names something else than what was published."""


class VersionRetiredError(errors.NotFoundError):
    """The version's key still resolves, but its artifact was retired."""


class FolderChangedError(errors.DigestError):
    """A folder changed while publish_from_disk read it."""


class ReloadError(errors.TcastError):
    """The reload trigger failed on at least one endpoint.  The version is
    published (its key names it); nothing was retired, so every endpoint
    still has the version it served before."""

    name = "RELOAD_FAILED"
    code = -4014

    def __init__(self, message: str, results: Sequence["EndpointResult"] = (), artifact_id: str = "",
                 version: int = -1):
        super().__init__(message)
        self.results = list(results)
        self.artifact_id = artifact_id
        self.version = version

    def __reduce__(self):
        return (ReloadError, (self.message, self.results, self.artifact_id, self.version))


# ------------------------------------------------------------------ config


@dataclass
class WeightPublisherConfig:
    """TensorCast's names and defaults; the rest are tcast's additions.

    ``key_template`` may use {model_name} and {weight_version} (or
    {version}); it must contain the version, else two versions would share
    one key.  ``policy`` is tc.put's (durable needs the daemon's
    shared_disk; None for a node without one).  ``keep_last`` > 0 keeps that
    many newest versions realizable and retires older ones (deregistered,
    managed shared-disk copy purged; the key and its history stay).
    ``history_path`` records (version, artifact id) pairs; default
    $XDG_STATE_HOME/tcast/weight_publisher/<model_name>.json when
    keep_last > 0.
    """

    model_name: str
    key_template: str = "model:{model_name}:v{weight_version}"
    policy: Optional[str] = "durable"
    wait_persistence: bool = True
    keep_last: int = 0
    history_path: Optional[str] = None
    trigger_reload: bool = True
    # direct HTTP: POST reload_url {"weight_version", "model_overrides"}
    reload_url: Optional[str] = None
    # "set_model_weight" (TensorCast's body) or "serving_artifact" (the
    # /reload_serving_artifact selector request), for reload_url and router
    reload_request: str = "set_model_weight"
    model_overrides: Optional[Dict[str, Any]] = None
    # router mode (TensorCast's Stepcast names)
    stepcast_router: Optional[str] = None
    stepcast_served_model_name: Optional[str] = None
    stepcast_ack: bool = False
    vllm_drain_timeout_s: float = 300.0
    ack_timeout_s: float = 600.0
    ack_poll_interval_s: float = 0.5
    reload_timeout_s: float = 30.0
    reload_retries: int = 2
    reload_retry_backoff_s: float = 0.5
    from_disk_verify_checksums: bool = True
    verify_key_mapping: bool = True
    metadata: Optional[Dict[str, str]] = None
    connect_address: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str) or not self.model_name:
            raise errors.InvalidArgumentError("WeightPublisherConfig.model_name must be a non-empty string")
        _check_template(self.key_template, self.model_name)
        if self.policy is not None:
            _validate_policy(self.policy)
        if isinstance(self.keep_last, bool) or not isinstance(self.keep_last, int) or self.keep_last < 0:
            raise errors.InvalidArgumentError(f"keep_last must be an integer >= 0, not {self.keep_last!r}")
        if self.reload_request not in RELOAD_REQUESTS:
            raise errors.InvalidArgumentError(
                f"reload_request must be one of {', '.join(RELOAD_REQUESTS)}, not {self.reload_request!r}")
        if self.reload_url is not None:
            _check_url(self.reload_url, "reload_url")
        if self.stepcast_router is not None:
            if not self.stepcast_served_model_name:
                raise errors.InvalidArgumentError("stepcast_router needs stepcast_served_model_name")
            _check_url(_router_base(self.stepcast_router), "stepcast_router")
        if self.reload_url and self.stepcast_router:
            raise errors.InvalidArgumentError("set reload_url or stepcast_router, not both")
        for name in ("vllm_drain_timeout_s", "ack_timeout_s", "ack_poll_interval_s", "reload_timeout_s",
                     "reload_retry_backoff_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise errors.InvalidArgumentError(f"{name} must be a number >= 0, not {v!r}")
        if isinstance(self.reload_retries, bool) or not isinstance(self.reload_retries, int) or \
                self.reload_retries < 0:
            raise errors.InvalidArgumentError(f"reload_retries must be an integer >= 0, not {self.reload_retries!r}")
        if self.metadata is not None and not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.metadata.items()):
            raise errors.InvalidArgumentError("metadata keys and values must be strings")

    def key_for(self, version: int) -> str:
        return self.key_template.format(model_name=self.model_name, weight_version=version, version=version)


def _validate_policy(p: str) -> bool:
    from tcast._artifact import validate_policy

    validate_policy(p)
    return True


def _check_template(t: Any, model_name: str) -> None:
    if not isinstance(t, str) or not t:
        raise errors.InvalidArgumentError(f"key_template must be a non-empty string, not {t!r}")
    try:
        parsed = list(string.Formatter().parse(t))
    except ValueError as e:
        raise errors.InvalidArgumentError(f"key_template {t!r}: {e}") from None
    fields = [f for _, f, _, _ in parsed if f is not None]
    bad = [f for f in fields if f not in _TEMPLATE_FIELDS]
    if bad:
        raise errors.InvalidArgumentError(
            f"key_template {t!r}: unknown field {{{bad[0]}}} (known: {{model_name}}, {{weight_version}})")
    if not any(f in ("weight_version", "version") for f in fields):
        raise errors.InvalidArgumentError(
            f"key_template {t!r} has no {{weight_version}}: every version would get the same key, "
            "and version keys are immutable")
    key = t.format(model_name=model_name, weight_version=0, version=0)
    if len(key.encode()) > _KEY_MAX - 24:
        raise errors.InvalidArgumentError(f"key_template {t!r} makes keys longer than the {_KEY_MAX}-byte limit")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise errors.InvalidArgumentError(f"key_template {t!r} makes keys with control characters")


def _check_url(u: str, what: str) -> None:
    p = urllib.parse.urlparse(u) if isinstance(u, str) else None
    if p is None or p.scheme not in ("http", "https") or not p.netloc:
        raise errors.InvalidArgumentError(f"{what} must be an http:// or https:// URL, not {u!r}")


def _router_base(r: str) -> str:
    return r.rstrip("/") if r.startswith(("http://", "https://")) else "http://" + r.rstrip("/")


# ----------------------------------------------------------------- results


@dataclass
class EndpointResult:
    """One endpoint's part of a reload."""

    endpoint: str
    request: str  # "set_model_weight" | "serving_artifact" | "discover"
    ok: bool
    status: Optional[int] = None  # HTTP status of the last attempt
    attempts: int = 0
    seconds: float = 0.0
    error: Optional[str] = None
    acked: Optional[bool] = None  # router ack: /weight_version reached the version
    ack_seconds: Optional[float] = None
    response: Any = None


@dataclass
class PublishResult:
    version: int
    key: str
    artifact_id: str
    publish_seconds: float  # put/import through key verification
    reload: List[EndpointResult] = field(default_factory=list)
    reload_seconds: float = 0.0
    retired: List[int] = field(default_factory=list)  # versions retired by this publish
    deduplicated: bool = False


# ------------------------------------------------------------------ history


class _History:
    """(version, key, artifact id, state) per published version, in a JSON
    file replaced atomically (temporary in the same folder, fsync, rename,
    fsync of the folder), guarded by an flock on a sibling lock file so two
    publishers of one model take turns."""

    def __init__(self, path: Optional[str], model_name: str, template: str):
        self.path = path
        self.model_name = model_name
        self.template = template
        self.entries: List[Dict[str, Any]] = []
        self._lockf: Optional[int] = None

    def lock(self) -> None:
        if self.path is None:
            return
        d = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(d, exist_ok=True)
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lockf = fd

    def unlock(self) -> None:
        fd, self._lockf = self._lockf, None
        if fd is not None:
            os.close(fd)

    def load(self) -> None:
        if self.path is None or not os.path.exists(self.path):
            return
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read())
        except ValueError as e:
            raise errors.ConfigError(f"history file {self.path}: not JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != HISTORY_FORMAT:
            raise errors.ConfigError(f"history file {self.path}: not a {HISTORY_FORMAT} document")
        if doc.get("model_name") != self.model_name:
            raise errors.ConfigError(
                f"history file {self.path} belongs to model {doc.get('model_name')!r}, not {self.model_name!r}")
        ents = doc.get("versions")
        if not isinstance(ents, list) or not all(
                isinstance(e, dict) and isinstance(e.get("version"), int) and isinstance(e.get("artifact_id"), str)
                and isinstance(e.get("key"), str) for e in ents):
            raise errors.ConfigError(f"history file {self.path}: 'versions' is malformed")
        self.entries = sorted(ents, key=lambda e: e["version"])

    def save(self) -> None:
        if self.path is None:
            return
        doc = {"format": HISTORY_FORMAT, "model_name": self.model_name, "key_template": self.template,
               "versions": self.entries}
        d = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".wp-history-", dir=d)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def latest(self) -> Optional[int]:
        return self.entries[-1]["version"] if self.entries else None

    def find(self, version: int) -> Optional[Dict[str, Any]]:
        for e in self.entries:
            if e["version"] == version:
                return e
        return None


# --------------------------------------------------------------- publisher


class WeightPublisher:
    """Publishes versions of one model (see the module's docstring)."""

    def __init__(self, config: WeightPublisherConfig):
        if not isinstance(config, WeightPublisherConfig):
            raise errors.InvalidArgumentError("WeightPublisher takes a WeightPublisherConfig")
        self.config = config
        hp = config.history_path
        if hp is None and config.keep_last > 0:
            base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", config.model_name)
            hp = os.path.join(base, "tcast", "weight_publisher", safe + ".json")
        self.history_path = hp
        self._history = _History(hp, config.model_name, config.key_template)
        self._lock = threading.Lock()
        self.last_result: Optional[PublishResult] = None
        if config.connect_address is not None and not tc.is_initialized():
            tc.init("connect", config.connect_address)
        self._history.load()
        self._key_re = _template_regex(config.key_template, config.model_name)

    # ---------------------------------------------------------- public

    def publish(self, tensors: Mapping[str, Any], *, version: int) -> str:
        """Put ``tensors`` (CUDA tensors on one device, or CPU tensors) as
        ``version``; returns the artifact id."""
        if not isinstance(tensors, Mapping) or not tensors:
            raise errors.InvalidArgumentError("publish() takes a non-empty mapping of name -> tensor")

        def make(key: str, meta: Dict[str, str]):
            a = tc.put(tensors, key=key, policy=self.config.policy, metadata=meta, expect_generation=0,
                       wait_persistence=self.config.wait_persistence)
            return a.artifact_id, bool(a.last_import and a.last_import.deduplicated)

        return self._publish(version, make, source="tensors")

    def publish_from_disk(self, hf_folder: "str | os.PathLike", *, version: int) -> str:
        """Import a safetensors file or Hugging Face folder as ``version``;
        returns the artifact id.  The folder must be immutable per version:
        with ``from_disk_verify_checksums`` a folder whose files change while
        it is read is refused (FolderChangedError) and nothing is published."""
        folder = os.fspath(hf_folder)
        if not os.path.exists(folder):
            raise errors.error_from_code(-2, f"publish_from_disk: cannot open '{folder}': No such file or directory")
        verify = self.config.from_disk_verify_checksums

        def make(key: str, meta: Dict[str, str]):
            before = _snapshot(folder) if verify else None
            # Imported without the key: the key is set only once the folder
            # is known not to have changed under the import.
            a = tc.import_from_disk(folder, policy=self.config.policy,
                                    wait_persistence=self.config.wait_persistence)
            aid = a.artifact_id
            dedup = bool(a.last_import and a.last_import.deduplicated)
            if before is not None:
                after = _snapshot(folder)
                if after != before:
                    what = _changed(before, after)
                    if not dedup and not self._named_by_other_key(aid, set()):
                        _quiet_rm(aid)
                    raise FolderChangedError(
                        f"publish_from_disk: {folder} changed while it was read ({what}); version {version} "
                        f"was not published and the previous version stays served. Export each version to "
                        f"its own folder and do not write it after publishing starts")
            try:
                tc.set_key(key, aid, expect_generation=0)
            except errors.ConflictError:
                if not dedup:
                    _quiet_rm(aid)
                raise KeyCollisionError(_collision_msg(key, version)) from None
            return aid, dedup

        return self._publish(version, make, source=folder)

    def latest_version(self) -> Optional[int]:
        """The highest version published for this model (history or keys)."""
        vs = [v for v in (self._history.latest(), self._latest_from_keys()) if v is not None]
        return max(vs) if vs else None

    def history(self) -> List[Dict[str, Any]]:
        """Copies of the history entries, oldest first."""
        with self._lock:
            self._history.load()
            return [dict(e) for e in self._history.entries]

    def key_for(self, version: int) -> str:
        return self.config.key_for(_check_version_type(version))

    def resolve(self, version: int) -> str:
        """The artifact id version's key names, or named before its
        artifact was retired: keys are append-only and outlive retention."""
        key = self.key_for(version)
        ki = tc.key_info(key)  # NotFoundError: never published
        if ki.artifact_id:
            return ki.artifact_id
        for h in ki.history or []:
            if h.get("id"):
                return h["id"]
        raise errors.NotFoundError(f"key {key!r} exists but names no artifact and has no history")

    def is_realizable(self, version: int) -> bool:
        try:
            aid = self.resolve(version)
        except errors.NotFoundError:
            return False
        return tc.artifact(aid).exists()

    def realize(self, version: int, *, device: str = "cpu") -> Dict[str, Any]:
        """The version's tensors; VersionRetiredError once retention retired it."""
        aid = self.resolve(version)
        if not tc.artifact(aid).exists():
            e = self._history.find(version)
            why = f" at version {e['retired_by']}" if e and e.get("retired_by") is not None else ""
            raise VersionRetiredError(
                f"version {version} of {self.config.model_name} (key {self.key_for(version)!r} -> {aid}) was "
                f"retired by the retention window (keep_last={self.config.keep_last}){why}: the key still "
                "resolves but the artifact is no longer held anywhere this daemon knows")
        return tc.artifact(aid).tensor_dict(device=device)

    def trigger(self, version: int, artifact_id: str = "") -> List[EndpointResult]:
        """Run the configured reload trigger for ``version`` (already
        published) and return each endpoint's result; raises nothing."""
        key = self.key_for(version)
        return self._trigger(version, key, artifact_id or self.resolve(version))

    # ---------------------------------------------------------- internals

    def _publish(self, version: int, make, *, source: str) -> str:
        cfg = self.config
        v = _check_version_type(version)
        key = cfg.key_for(v)
        with self._lock:
            self._history.lock()
            try:
                self._history.load()
                # Our own record first, then the key (a key someone else
                # made says more than "not higher"), then every version
                # key the daemon holds for this model.
                for latest, where in ((self._history.latest(), f"history {self.history_path or 'in memory'}"),
                                      (None, ""), (self._latest_from_keys(), "a version key in the daemon")):
                    if not where:
                        self._check_key_free(key, v)
                    elif latest is not None and v <= latest:
                        raise VersionOrderError(
                            f"version {v} of {cfg.model_name}: versions must increase strictly and {latest} was "
                            f"already published ({where}); nothing was changed")
                retired = self._trim(cfg.keep_last - 1 if cfg.keep_last > 0 else None, v)
                meta = dict(cfg.metadata or {})
                t0 = time.perf_counter()
                # when publishing started: receivers measure publish-to-apply from it
                meta.update({"tcast.weight_version": str(v), "tcast.model_name": cfg.model_name,
                             "tcast.published_unix_ms": str(int(time.time() * 1000))})
                try:
                    aid, dedup = make(key, meta)
                except errors.ConflictError as e:
                    if isinstance(e, KeyCollisionError):
                        raise
                    raise KeyCollisionError(_collision_msg(key, v) + f" ({e.message})") from None
                if cfg.verify_key_mapping:
                    ki = tc.key_info(key)
                    if ki.artifact_id != aid:
                        raise KeyMappingError(
                            f"key {key!r} names {ki.artifact_id or 'nothing'} (generation {ki.generation}) right "
                            f"after version {v} was published as {aid}: another writer moved it")
                publish_s = time.perf_counter() - t0
                entry = {"version": v, "key": key, "artifact_id": aid, "published_unix_ms": int(time.time() * 1000),
                         "state": "live", "reload": "pending" if self._trigger_configured() else "skipped",
                         "source": source}
                self._history.entries.append(entry)
                self._history.save()
            finally:
                self._history.unlock()
            res = PublishResult(v, key, aid, publish_s, retired=retired, deduplicated=dedup)
            self.last_result = res
            if self._trigger_configured():
                t1 = time.perf_counter()
                res.reload = self._trigger(v, key, aid)
                res.reload_seconds = time.perf_counter() - t1
                failed = [r for r in res.reload if not r.ok or r.acked is False]
                self._history.lock()
                try:
                    self._history.load()
                    e = self._history.find(v)
                    if e is not None:
                        e["reload"] = "failed" if failed else "ok"
                    self._history.save()
                finally:
                    self._history.unlock()
                if failed:
                    lines = "; ".join(f"{r.endpoint}: {r.error or 'not acknowledged'}" for r in failed)
                    raise ReloadError(
                        f"version {v} ({key} -> {aid}) is published but its reload failed on {len(failed)} of "
                        f"{len(res.reload)} endpoint(s): {lines}. Nothing was retired: the previous version "
                        "stays registered and served", res.reload, aid, v)
            if cfg.keep_last > 0:
                self._history.lock()
                try:
                    self._history.load()
                    res.retired += self._trim(cfg.keep_last, None)
                finally:
                    self._history.unlock()
            return aid

    def _trigger_configured(self) -> bool:
        c = self.config
        return bool(c.trigger_reload and (c.reload_url or c.stepcast_router))

    def _check_key_free(self, key: str, v: int) -> None:
        try:
            ki = tc.key_info(key)
        except errors.NotFoundError:
            return
        raise KeyCollisionError(_collision_msg(key, v) + f": it names {ki.artifact_id or 'a retired artifact'} "
                                f"(generation {ki.generation})")

    def _latest_from_keys(self) -> Optional[int]:
        best = None
        try:
            ks = tc.keys()
        except errors.TcastError:
            return None
        for k in ks:
            m = self._key_re.fullmatch(k.key)
            if m:
                n = int(m.group(1))
                best = n if best is None or n > best else best
        return best

    def _named_by_other_key(self, aid: str, ours: set) -> bool:
        for k in tc.keys():
            if k.artifact_id == aid and k.key not in ours:
                return True
        return False

    def _trim(self, keep: Optional[int], publishing: Optional[int]) -> List[int]:
        """Retire live versions beyond the newest ``keep``.  Never the
        newest version whose reload succeeded (or needed none): that one is
        what serving runs on until a newer one is applied.  Never an
        artifact a kept version (deduplicated content) or a foreign key
        still names.  Returns the versions retired."""
        if keep is None:
            return []
        live = [e for e in self._history.entries if e.get("state") == "live"]
        served = [e for e in live if e.get("reload") in ("ok", "skipped")]
        protect = {id(served[-1])} if served else set()
        keep_set = live[-keep:] if keep > 0 else []
        kept_ids = {e["artifact_id"] for e in keep_set} | {e["artifact_id"] for e in live if id(e) in protect}
        retired = []
        our_keys = {e["key"] for e in self._history.entries}
        for e in live:
            if e in keep_set or id(e) in protect:
                continue
            aid = e["artifact_id"]
            if aid not in kept_ids and not self._named_by_other_key(aid, our_keys):
                try:
                    tc.deregister_artifact(aid, keep_shared_disk_copy=False)
                except errors.NotFoundError:
                    pass
            e["state"] = "retired"
            e["retired_unix_ms"] = int(time.time() * 1000)
            e["retired_by"] = publishing
            retired.append(e["version"])
        if retired:
            self._history.save()
        return retired

    # ----------------------------------------------------------- triggers

    def _body(self, version: int, key: str, aid: str) -> Tuple[str, Dict[str, Any]]:
        c = self.config
        if c.reload_request == "serving_artifact":
            return "serving_artifact", {"selector": {"kind": "version_key", "value": key},
                                        "policy": {"mode": "from_manifest"}, "model_overrides": c.model_overrides}
        ov = dict(c.model_overrides or {})
        ov.setdefault("tcast_key", key)
        ov.setdefault("tcast_artifact_id", aid)
        return "set_model_weight", {"weight_version": version, "model_overrides": ov}

    def _trigger(self, version: int, key: str, aid: str) -> List[EndpointResult]:
        c = self.config
        req, body = self._body(version, key, aid)
        if c.reload_url:
            return [_post(c.reload_url, req, body, c.reload_timeout_s, c.reload_retries, c.reload_retry_backoff_s)]
        base = _router_base(c.stepcast_router or "")
        disc_url = f"{base}/v1/model/{urllib.parse.quote(c.stepcast_served_model_name or '', safe='')}"
        t0 = time.perf_counter()
        try:
            doc, status, attempts = _http_json("GET", disc_url, None, c.reload_timeout_s, c.reload_retries,
                                               c.reload_retry_backoff_s)
            endpoints = _endpoints_of(doc)
        except _HttpFailure as e:
            return [EndpointResult(disc_url, "discover", False, e.status, e.attempts, time.perf_counter() - t0,
                                   f"endpoint discovery failed: {e}")]
        if not endpoints:
            return [EndpointResult(disc_url, "discover", False, status, attempts, time.perf_counter() - t0,
                                   f"router lists no endpoint for {c.stepcast_served_model_name!r}")]
        path = "/set_model_weight" if req == "set_model_weight" else "/reload_serving_artifact"
        query = "?drain_timeout_s=" + _num(c.vllm_drain_timeout_s) if req == "set_model_weight" else ""
        results: List[Optional[EndpointResult]] = [None] * len(endpoints)

        def one(i: int, ep: str) -> None:
            # the drain is the endpoint's time to finish requests in flight
            r = _post(ep + path + query, req, body, c.reload_timeout_s + c.vllm_drain_timeout_s,
                      c.reload_retries, c.reload_retry_backoff_s)
            r.endpoint = ep
            if r.ok and c.stepcast_ack and req == "set_model_weight":
                r.acked, r.ack_seconds, err = _poll_ack(ep, version, c.ack_timeout_s, c.ack_poll_interval_s,
                                                        c.reload_timeout_s)
                if not r.acked:
                    r.error = err
            results[i] = r

        threads = [threading.Thread(target=one, args=(i, ep), daemon=True) for i, ep in enumerate(endpoints)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [r for r in results if r is not None]


# ----------------------------------------------------------------- helpers


def _check_version_type(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise errors.InvalidArgumentError(f"version must be an integer >= 0, not {version!r}")
    return version


def _collision_msg(key: str, v: int) -> str:
    return (f"key {key!r} for version {v} already exists: version keys are immutable and never reused; "
            "publish a higher version (nothing was changed, the previous version stays served)")


def _template_regex(template: str, model_name: str) -> "re.Pattern[str]":
    out = []
    captured = False
    for lit, f, _spec, _conv in string.Formatter().parse(template):
        out.append(re.escape(lit))
        if f == "model_name":
            out.append(re.escape(model_name))
        elif f in ("weight_version", "version"):
            out.append("(?:[0-9]+)" if captured else "([0-9]+)")
            captured = True
    return re.compile("".join(out))


def _snapshot(folder: str) -> Dict[str, Tuple[int, int, int, int]]:
    """(inode, size, mtime_ns, ctime_ns) per regular file: any write or
    replacement changes ctime, which a writer cannot set back."""
    files = [folder] if os.path.isfile(folder) else sorted(
        os.path.join(folder, n) for n in os.listdir(folder))
    snap = {}
    for p in files:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            continue
        if os.path.isfile(p):
            snap[os.path.basename(p)] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return snap


def _changed(a: Dict[str, Any], b: Dict[str, Any]) -> str:
    for n in sorted(set(a) | set(b)):
        if n not in a:
            return f"{n} appeared"
        if n not in b:
            return f"{n} disappeared"
        if a[n] != b[n]:
            return f"{n} was " + ("replaced" if a[n][0] != b[n][0] else "written")
    return "?"


def _quiet_rm(aid: str) -> None:
    try:
        tc.deregister_artifact(aid)
    except errors.TcastError:
        pass


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


class _HttpFailure(Exception):
    def __init__(self, msg: str, status: Optional[int], attempts: int):
        super().__init__(msg)
        self.status = status
        self.attempts = attempts


def _http_json(method: str, url: str, body: Any, timeout: float, retries: int, backoff: float):
    """(decoded JSON or text, status, attempts).  Retries connection
    failures, timeouts and 5xx answers; a 4xx is final (the endpoint
    refused this request and will again)."""
    data = json.dumps(body).encode() if body is not None else None
    last: Optional[str] = None
    status: Optional[int] = None
    for attempt in range(1, retries + 2):
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read(1 << 20)
                status = r.status
                try:
                    return json.loads(raw) if raw else None, status, attempt
                except ValueError:
                    return raw.decode(errors="replace"), status, attempt
        except urllib.error.HTTPError as e:
            status = e.code
            txt = e.read(4096).decode(errors="replace").strip()
            last = f"HTTP {e.code} from {url}: {txt[:300] or e.reason}"
            if e.code < 500:
                raise _HttpFailure(last, status, attempt) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            last = f"cannot reach {url}: {reason}"
            status = None
        if attempt <= retries:
            time.sleep(backoff * (2 ** (attempt - 1)))
    raise _HttpFailure(f"{last} (after {retries + 1} attempts)", status, retries + 1)


def _post(url: str, req: str, body: Any, timeout: float, retries: int, backoff: float) -> EndpointResult:
    t0 = time.perf_counter()
    try:
        doc, status, attempts = _http_json("POST", url, body, timeout, retries, backoff)
        return EndpointResult(url, req, True, status, attempts, time.perf_counter() - t0, response=doc)
    except _HttpFailure as e:
        return EndpointResult(url, req, False, e.status, e.attempts, time.perf_counter() - t0, str(e))


def _endpoints_of(doc: Any) -> List[str]:
    """Endpoint base URLs from a router's /v1/model/{name} answer: a list,
    or {"endpoints"|"instances"|"replicas": [...]}, each a URL, a
    "host:port", or {"url"} / {"endpoint"} / {"host", "port"}."""
    items = doc
    if isinstance(doc, dict):
        for k in ("endpoints", "instances", "replicas", "urls"):
            if isinstance(doc.get(k), list):
                items = doc[k]
                break
        else:
            items = []
    if not isinstance(items, list):
        raise _HttpFailure(f"router answer is not a list of endpoints: {str(doc)[:200]}", None, 1)
    out = []
    for it in items:
        if isinstance(it, dict):
            u = it.get("url") or it.get("endpoint") or it.get("address")
            if not u and it.get("host") and it.get("port"):
                u = f"{it['host']}:{it['port']}"
        else:
            u = it
        if not isinstance(u, str) or not u:
            raise _HttpFailure(f"router answer has an endpoint that is not an address: {it!r}", None, 1)
        out.append(u.rstrip("/") if u.startswith(("http://", "https://")) else "http://" + u.rstrip("/"))
    return out


def _poll_ack(ep: str, version: int, timeout: float, interval: float, req_timeout: float):
    """Poll GET {ep}/weight_version until it reports ``version``."""
    t0 = time.perf_counter()
    last = "no answer"
    while True:
        try:
            doc, _, _ = _http_json("GET", ep + "/weight_version", None, req_timeout, 0, 0)
            got = doc.get("weight_version") if isinstance(doc, dict) else doc
            try:
                got_v = int(got) if got is not None else None
            except (TypeError, ValueError):
                got_v = None
            if got_v == version:
                return True, time.perf_counter() - t0, None
            last = f"reports weight_version {got!r}"
        except _HttpFailure as e:
            last = str(e)
        if time.perf_counter() - t0 >= timeout:
            return False, time.perf_counter() - t0, f"not acknowledged within {timeout:g} s ({last})"
        time.sleep(interval)


__all__ = [
    "WeightPublisher",
    "WeightPublisherConfig",
    "PublishResult",
    "EndpointResult",
    "ReloadError",
    "VersionOrderError",
    "KeyCollisionError",
    "KeyMappingError",
    "VersionRetiredError",
    "FolderChangedError",
]
