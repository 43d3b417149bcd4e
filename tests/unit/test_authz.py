"""The ACL policy alone: first match decides, patterns, {principal}, errors naming the rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.master.authz import (
    ACTIONS,
    ALLOW_ALL,
    DEFAULT_POLICY,
    Authorizer,
    Policy,
    PolicyError,
    Rule,
    parse_policy,
)

# The built-in policy (TLS on, no --acls file), row by row.
DEFAULT_CASES = [
    ("operator:alice", "kill_task", "owner:framework:a", True),
    ("operator:alice", "set_quota", "role:ml", True),
    ("framework:a", "register_framework", "role:ml", True),
    ("framework:a", "run_task", "uid:0", False),  # root only where a policy allows it
    ("framework:a", "run_task", "uid:0@userns", True),  # root of its own user namespace is not host root
    ("framework:a", "run_task", "uid:65534", True),
    ("framework:a", "run_unconfined", "seccomp:unconfined", False),  # no filter: operators only
    ("framework:a", "use_device", "device:/dev/kvm", False),
    ("operator:alice", "use_device", "device:/dev/kvm", True),
    ("framework:a", "kill_task", "owner:framework:a", True),  # its own
    ("framework:a", "kill_task", "owner:framework:b", False),  # another's
    ("framework:a", "read_sandbox", "owner:framework:b", False),
    ("framework:a", "exec_task", "owner:framework:a", True),  # into its own tasks
    ("framework:a", "exec_task", "owner:framework:b", False),
    ("operator:alice", "exec_task", "owner:framework:b", True),
    ("framework:a", "teardown_framework", "owner:framework:b", False),
    ("framework:a", "set_quota", "role:ml", False),
    ("framework:a", "drain_agent", "agent:a1", False),
    ("agent:n1", "register_agent", "agent:n1", True),
    ("agent:n1", "register_framework", "role:*", False),  # kinds are distinct
    ("agent:n1", "view_task", "owner:framework:a", False),
    ("anonymous:x", "view_cluster", "cluster", False),
]


@pytest.mark.parametrize(("principal", "action", "obj", "allowed"), DEFAULT_CASES)
def test_the_built_in_policy(principal: str, action: str, obj: str, allowed: bool) -> None:
    assert DEFAULT_POLICY.decide(principal, action, obj).allowed is allowed


def test_a_refusal_names_the_principal_the_action_the_object_and_the_rule() -> None:
    decision = DEFAULT_POLICY.decide("framework:a", "run_task", "uid:0")
    assert decision.message == (
        "principal framework:a may not run_task uid:0 (rule 3 of the built-in policy)"
    )
    nothing = DEFAULT_POLICY.decide("anonymous:x", "view_cluster", "cluster")
    assert "no rule of the built-in policy allows it" in nothing.message


def test_the_first_matching_rule_decides() -> None:
    policy = parse_policy(
        """
        [[rules]]
        allow = false
        principals = ["operator:intern"]
        actions = ["teardown_framework"]

        [[rules]]
        allow = true
        principals = ["operator:*"]
        actions = ["*"]
        """
    )
    assert not policy.allows("operator:intern", "teardown_framework", "owner:framework:a")
    assert policy.allows("operator:intern", "kill_task", "owner:framework:a")
    assert policy.allows("operator:bob", "teardown_framework", "owner:framework:a")
    assert not policy.allows("framework:a", "kill_task", "owner:framework:a")  # default deny


def test_default_allow_and_self_objects() -> None:
    policy = parse_policy(
        """
        default = "allow"
        [[rules]]
        allow = false
        principals = ["framework:*"]
        actions = ["view_task"]
        objects = ["owner:framework:*"]

        [[rules]]
        allow = true
        principals = ["framework:team-?"]
        actions = ["kill_task"]
        objects = ["owner:{principal}"]
        """
    )
    assert not policy.allows("framework:a", "view_task", "owner:framework:a")
    assert policy.allows("framework:team-a", "kill_task", "owner:framework:team-a")
    assert policy.allows("operator:x", "set_quota", "role:ml")  # default


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("rules = 3", "rules: must be an array"),
        ('default = "maybe"', "default: must be 'allow' or 'deny'"),
        ("colour = 1", "unknown key(s) colour"),
        ("[[rules]]\nprincipals=['*']\nactions=['*']", "rules[0] (rule 1): allow: must be true or false"),
        ("[[rules]]\nallow=true\nactions=['*']", "rules[0] (rule 1): principals and actions are required"),
        (
            "[[rules]]\nallow=true\nprincipals=['*']\nactions=['*']\n[[rules]]\nallow=true\n"
            "principals=['*']\nactions=['fly']",
            "rules[1] (rule 2).actions: unknown action 'fly'",
        ),
        ("[[rules]]\nallow=true\nprincipals=[]\nactions=['*']", "principals: must be a non-empty list"),
        ("[[rules]]\nallow=true\nprincipals=['*']\nactions=['*']\nwho='me'", "unknown key(s) who"),
        ("[[rules]\n", "not valid TOML"),
    ],
)
def test_bad_policies_are_refused_naming_the_file_and_the_rule(text: str, words: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "acls.toml")
    assert str(e.value).startswith("acls.toml: ")
    assert words in str(e.value)


def test_the_authorizer_reloads_a_changed_file_and_keeps_the_old_policy_on_a_bad_one(tmp_path: Path) -> None:
    path = tmp_path / "acls.toml"
    path.write_text('default = "deny"\n')
    authz = Authorizer(ALLOW_ALL, str(path))
    assert not authz.decide("operator:a", "set_quota", "role:x").allowed
    assert not authz.reload_if_changed()  # unchanged: not even read
    path.write_text('default = "allow"\n# longer, so the size changes too\n')
    assert authz.reload_if_changed()
    assert authz.decide("operator:a", "set_quota", "role:x").allowed
    path.write_text("default = \n")
    assert not authz.reload_if_changed()
    assert authz.decide("operator:a", "set_quota", "role:x").allowed  # the old one stays


def test_a_missing_policy_file_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        Authorizer(ALLOW_ALL, str(tmp_path / "nope.toml"))


# -- properties --------------------------------------------------------------

_principals = st.sampled_from(["operator:ops", "framework:a", "framework:b", "agent:n1", "anonymous:x"])
_objects = st.sampled_from(
    ["role:ml", "role:*", "uid:0", "uid:1000", "owner:framework:a", "cluster", "agent:a1"]
)
_patterns = st.sampled_from(["*", "operator:*", "framework:*", "framework:a", "agent:*", "owner:{principal}"])
_rules = st.builds(
    Rule,
    st.booleans(),
    st.lists(_patterns, min_size=1, max_size=2).map(tuple),
    st.lists(st.sampled_from([*ACTIONS, "*"]), min_size=1, max_size=3).map(tuple),
    st.lists(st.sampled_from(["*", "role:*", "uid:0", "owner:{principal}", "cluster"]), min_size=1).map(
        tuple
    ),
)


@given(st.lists(_rules, max_size=6), st.booleans(), _principals, st.sampled_from(ACTIONS), _objects)
def test_a_decision_is_the_first_matching_rule_or_the_default(
    rules: list[Rule], default: bool, principal: str, action: str, obj: str
) -> None:
    policy = Policy(tuple(rules), default)
    decision = policy.decide(principal, action, obj)
    first = next((i for i, r in enumerate(rules) if r.matches(principal, action, obj)), None)
    assert decision.rule == first
    assert decision.allowed == (rules[first].allow if first is not None else default)
    # Rules that match nothing never change a decision.
    padded = Policy((Rule(True, ("nobody:*",), ("*",)), *rules), default)
    assert padded.decide(principal, action, obj).allowed == decision.allowed
