"""CLI commands about the master's ACL policy (master/authz.py).

corral acl default                          # print the built-in policy (a start for your own)
corral acl check FILE                       # parse a policy; exit 2 naming the bad rule
corral acl test FILE PRINCIPAL ACTION OBJ   # what FILE decides, and which rule decides it
"""

from __future__ import annotations

import click

from corral.cli.common import console, fail, handle_errors


@click.group()
def acl() -> None:
    """The master's authorization policy: print, check and try it."""


@acl.command("default")
def default() -> None:
    """Print the built-in policy (used with TLS when no --acls file is given)."""
    from corral.master.authz import DEFAULT_POLICY_TOML

    click.echo(DEFAULT_POLICY_TOML, nl=False)


@acl.command()
@click.argument("path", type=click.Path(dir_okay=False))
@handle_errors
def check(path: str) -> None:
    """Parse a policy file and say how many rules it has."""
    from corral.master.authz import load_policy

    policy = load_policy(path)
    console.print(
        f"{path}: {len(policy.rules)} rule(s), default {'allow' if policy.default_allow else 'deny'}",
        highlight=False,
        markup=False,
    )


@acl.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.argument("principal")
@click.argument("action")
@click.argument("obj", metavar="OBJECT")
@handle_errors
def test(path: str, principal: str, action: str, obj: str) -> None:
    """Ask FILE whether PRINCIPAL (KIND:NAME) may ACTION OBJECT; exit 1 if not."""
    from corral.identity import Principal
    from corral.master.authz import ACTIONS, load_policy

    if action not in ACTIONS:
        fail(f"action: {action!r} is not known; known: {', '.join(ACTIONS)}")
    Principal.parse(principal)  # a ValueError names the problem
    decision = load_policy(path).decide(principal, action, obj)
    console.print(decision.message, highlight=False, markup=False)
    raise SystemExit(0 if decision.allowed else 1)
