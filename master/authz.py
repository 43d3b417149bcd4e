"""Authorization: which principal may do which action on which object.

Asked once before any call reads or changes state (DESIGN.md, "Security").
The model is Mesos' ACLs (docs/authorization.md upstream: ``register_frameworks``,
``run_tasks``, ``teardown_frameworks``, ``access_sandboxes``, ``view_*``,
``update_quotas``, ``update_weights``, ``reserve_resources``, ``drain_agents``)
written as an ordered rule list, as Nomad policies and Kubernetes RBAC are
read: the first rule whose principal, action and object patterns all match
decides; when none matches, the policy's default decides (deny unless the
file says otherwise).

Actions and the objects they are asked about (``OBJECTS`` below):

    register_framework   role:ROLE        (each role the framework subscribes in)
    run_task             uid:N            (the task's uid; unset is root, uid:0)
                         gid:N            (also, when the task's gid is not its uid)
                                          (uid:N@userns, gid:N@userns when it asks
                                           for a user namespace: ids inside it)
    run_unconfined       seccomp:unconfined  (a task with no seccomp filter)
    use_device           device:PATH      (a host device node the task asks for)
    use_host_path        path:PATH        (a host directory bound into the task)
    register_agent       agent:HOSTNAME   (built-in: the certificate's own name)
    view_cluster         cluster          (agents, roles, maintenance)
    view_framework       owner:PRINCIPAL  (frameworks, their explanations)
    view_task            owner:PRINCIPAL  (tasks, their usage)
    read_sandbox         owner:PRINCIPAL
    exec_task            owner:PRINCIPAL  (``corral exec`` into a running task)
    kill_task            owner:PRINCIPAL
    teardown_framework   owner:PRINCIPAL
    set_quota            role:ROLE
    set_weight           role:ROLE
    reserve_resources    role:ROLE        (operator call, or RESERVE in ACCEPT)
    unreserve_resources  role:ROLE
    drain_agent          agent:AGENT_ID
    use_api              api:FRAMEWORK:read or api:FRAMEWORK:write
                         (a bundled framework's HTTP API: batch jobs, services;
                         GET reads, anything else writes)

``owner:PRINCIPAL`` names the principal that registered the framework. In an
object pattern ``{principal}`` stands for the caller, so
``objects = ["owner:{principal}"]`` means "its own". Patterns are shell-style
(``fnmatch``: ``*``, ``?``, ``[...]``), matched case-sensitively.

The policy is pure (``Policy.decide``); :class:`Authorizer` is the shell that
loads it from a TOML file and reloads it when the file changes, keeping the
old policy when a new one does not parse.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from corral.errors import CorralError

log = structlog.get_logger(__name__)

#: every action, with the shape of the object it is asked about
OBJECTS: Mapping[str, str] = {
    "register_framework": "role:ROLE",
    "run_task": "uid:N",
    "run_unconfined": "seccomp:unconfined",
    "use_device": "device:PATH",
    "use_host_path": "path:PATH",
    "register_agent": "agent:HOSTNAME",
    "view_cluster": "cluster",
    "view_framework": "owner:PRINCIPAL",
    "view_task": "owner:PRINCIPAL",
    "read_sandbox": "owner:PRINCIPAL",
    "exec_task": "owner:PRINCIPAL",
    "kill_task": "owner:PRINCIPAL",
    "teardown_framework": "owner:PRINCIPAL",
    "set_quota": "role:ROLE",
    "set_weight": "role:ROLE",
    "reserve_resources": "role:ROLE",
    "unreserve_resources": "role:ROLE",
    "drain_agent": "agent:AGENT_ID",
    "use_api": "api:FRAMEWORK:read|write",
}
ACTIONS = tuple(OBJECTS)


class PolicyError(CorralError):
    """A policy file that cannot be used; the message names the file and the rule."""


@dataclass(frozen=True)
class Rule:
    """Allow or deny ``actions`` on ``objects`` to ``principals`` (all patterns)."""

    allow: bool
    principals: tuple[str, ...]
    actions: tuple[str, ...]
    objects: tuple[str, ...] = ("*",)

    def matches(self, principal: str, action: str, obj: str) -> bool:
        return (
            any(fnmatch.fnmatchcase(principal, p) for p in self.principals)
            and any(a in ("*", action) for a in self.actions)
            and any(fnmatch.fnmatchcase(obj, o.replace("{principal}", principal)) for o in self.objects)
        )


@dataclass(frozen=True)
class Decision:
    """The answer to one question, with the reason a refusal can quote."""

    allowed: bool
    principal: str
    action: str
    object: str
    #: index of the deciding rule in the policy, or None for the default
    rule: int | None = None
    source: str = "built-in policy"
    #: a refusal decided outside the policy (ownership), said instead of the rule
    note: str = ""

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def message(self) -> str:
        """``principal operator:bob may not kill_task owner:framework:a (denied by rule 3 of F)``."""
        verb = "may" if self.allowed else "may not"
        if self.note:
            return f"principal {self.principal} {verb} {self.action} {self.object} ({self.note})"
        why = (
            f"rule {self.rule + 1} of {self.source}"
            if self.rule is not None
            else f"no rule of {self.source} allows it"
            if not self.allowed
            else f"the default of {self.source}"
        )
        return f"principal {self.principal} {verb} {self.action} {self.object} ({why})"


@dataclass(frozen=True)
class Policy:
    """An ordered list of rules; the first match decides, else ``default_allow``."""

    rules: tuple[Rule, ...] = ()
    default_allow: bool = False
    source: str = "built-in policy"

    def decide(self, principal: str, action: str, obj: str) -> Decision:
        if action not in OBJECTS:
            raise ValueError(f"unknown action {action!r}")  # a bug in the caller, not input
        for i, rule in enumerate(self.rules):
            if rule.matches(principal, action, obj):
                return Decision(rule.allow, principal, action, obj, i, self.source)
        return Decision(self.default_allow, principal, action, obj, None, self.source)

    def allows(self, principal: str, action: str, obj: str) -> bool:
        return self.decide(principal, action, obj).allowed


#: Without a policy file and with TLS on: operators do everything; frameworks
#: register in any role, run tasks as any user but root, and see and act on
#: their own frameworks and tasks; agents register. Everything else is refused.
DEFAULT_POLICY_TOML = """\
# corral's built-in policy (master/authz.py): the first matching rule decides.
default = "deny"

[[rules]]
allow = true
principals = ["operator:*"]
actions = ["*"]

[[rules]]
allow = true
principals = ["framework:*"]
actions = ["register_framework", "view_cluster"]

[[rules]]
allow = false
principals = ["framework:*"]
actions = ["run_task"]
objects = ["uid:0", "gid:0"]

[[rules]]
allow = true
principals = ["framework:*"]
actions = ["run_task", "use_host_path"]

[[rules]]
allow = true
principals = ["framework:*"]
actions = ["view_framework", "view_task", "read_sandbox", "exec_task", "kill_task", "teardown_framework"]
objects = ["owner:{principal}"]

# An agent registers under the host name its certificate names, so that one
# node's certificate cannot claim another node's name (and its placement).
[[rules]]
allow = true
principals = ["agent:*"]
actions = ["register_agent"]
objects = ["{principal}"]
"""

#: ``corral local`` and ``corral cluster up``: one operator, who does
#: everything, and the bundled frameworks acting for it, which may run tasks
#: as any user (the operator's jobs run as root unless they say otherwise);
#: other frameworks as in the built-in policy.
LOCAL_POLICY_TOML = """\
# corral's policy for a local or test cluster (master/authz.py): the bundled
# frameworks run the operator's jobs as any user, then the built-in rules.
default = "deny"

[[rules]]
allow = true
principals = ["framework:batch", "framework:service"]
actions = ["register_framework", "run_task", "view_cluster"]

[[rules]]
allow = true
principals = ["framework:batch", "framework:service"]
actions = ["view_framework", "view_task", "read_sandbox", "exec_task", "kill_task", "teardown_framework"]
objects = ["owner:{principal}"]
""" + DEFAULT_POLICY_TOML.split("\n", 2)[2]

#: A master without TLS authenticates nobody: the built-in policy there allows
#: everything, as before ACLs (a policy file still applies, to claimed principals).
ALLOW_ALL = Policy(default_allow=True, source="the insecure default (no TLS: allow all)")


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(f"{where}: must be a non-empty list of strings, got {value!r}")
    return tuple(value)


def parse_policy(text: str, source: str = "policy") -> Policy:
    """A policy from TOML text; PolicyError naming ``source`` and the rule otherwise."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"{source}: not valid TOML: {e}") from e
    unknown = set(data) - {"default", "rules"}
    if unknown:
        raise PolicyError(f"{source}: unknown key(s) {', '.join(sorted(unknown))}; expected default, rules")
    default = data.get("default", "deny")
    if default not in ("allow", "deny"):
        raise PolicyError(f"{source}: default: must be 'allow' or 'deny', got {default!r}")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise PolicyError(f"{source}: rules: must be an array of tables ([[rules]])")
    rules = [_parse_rule(raw, f"{source}: rules[{i}] (rule {i + 1})") for i, raw in enumerate(raw_rules)]
    return Policy(tuple(rules), default == "allow", source)


def _parse_rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: must be a table")
    unknown = set(raw) - {"allow", "principals", "actions", "objects"}
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if not isinstance(raw.get("allow"), bool):
        raise PolicyError(f"{where}: allow: must be true or false")
    if "principals" not in raw or "actions" not in raw:
        raise PolicyError(f"{where}: principals and actions are required")
    actions = _strings(raw["actions"], f"{where}.actions")
    bad = [a for a in actions if a != "*" and a not in OBJECTS]
    if bad:
        raise PolicyError(f"{where}.actions: unknown action {bad[0]!r}; known: {', '.join(ACTIONS)}")
    return Rule(
        raw["allow"],
        _strings(raw["principals"], f"{where}.principals"),
        actions,
        _strings(raw.get("objects", ["*"]), f"{where}.objects"),
    )


DEFAULT_POLICY = parse_policy(DEFAULT_POLICY_TOML, "the built-in policy")
LOCAL_POLICY = parse_policy(LOCAL_POLICY_TOML, "the local cluster's policy")


def load_policy(path: str | os.PathLike[str]) -> Policy:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise PolicyError(f"{p}: cannot read the policy file: {e.strerror or e}") from e
    return parse_policy(text, str(p))


@dataclass
class Authorizer:
    """The master's current policy, loaded from ``path`` if one is given.

    ``reload_if_changed`` is cheap (one stat) and is called by the master
    server every second; ``reload`` is also called on SIGHUP. A file that no
    longer parses leaves the old policy in force, logged.
    """

    fallback: Policy = field(default_factory=lambda: DEFAULT_POLICY)
    path: str | None = None
    policy: Policy = field(init=False)
    _stamp: tuple[int, int] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.policy = self.fallback
        if self.path is not None:
            self.policy = load_policy(self.path)  # a bad file at start is an error
            self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def reload(self) -> bool:
        """Load the file again; returns whether the new policy is in force."""
        if self.path is None:
            return False
        self._stamp = self._stat()
        try:
            policy = load_policy(self.path)
        except PolicyError as e:
            log.error("authz.reload_failed", path=self.path, error=str(e), kept=self.policy.source)
            return False
        self.policy = policy
        log.info("authz.reloaded", path=self.path, rules=len(policy.rules))
        return True

    def reload_if_changed(self) -> bool:
        if self.path is None or self._stat() == self._stamp:
            return False
        return self.reload()

    def decide(self, principal: object, action: str, obj: str) -> Decision:
        return self.policy.decide(str(principal), action, obj)

    def decide_all(self, principal: object, action: str, objects: Iterable[str]) -> Decision:
        """The first refusal among ``objects``, or the last approval."""
        decision = Decision(True, str(principal), action, "", None, self.policy.source)
        for obj in objects:
            decision = self.decide(principal, action, obj)
            if not decision.allowed:
                return decision
        return decision
