"""Masters with ZooKeeper credentials own their znodes (corral/zk.py,
"Access"), against a real ZooKeeper: anyone finds the leader, nobody else
can pose as one or read and rewrite the registry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from corral.frameworks import Task, TaskState
from corral.master.registry import AGENTS, FRAMEWORKS
from corral.master.server import MasterServer
from corral.resources import Resources
from corral.testing import FAST_MASTER, elected_cluster, eventually, framework
from corral.zk import ZkAccessDenied, ZkCredentials, ZkUrl, parse_zk_url

CREDS = ZkCredentials("corral-master", "a-test-password-of-some-length")


@contextmanager
def zk_client(url: ZkUrl, creds: ZkCredentials | None = None) -> Iterator[KazooClient]:
    client = KazooClient(hosts=url.hosts, auth_data=None if creds is None else creds.auth_data)
    client.start(timeout=10)
    try:
        yield client
    finally:
        client.stop()
        client.close()


def _registry(url: ZkUrl, kind: str) -> str:
    return f"{url.path}/registry/{kind}"


def assert_owned(url: ZkUrl, agent_id: str) -> None:
    """What a client without the masters' credentials can and cannot do."""
    with zk_client(url) as anyone:
        members = anyone.get_children(url.leader_dir)
        assert members, "the leader's znodes are readable by anyone"
        data, _ = anyone.get(f"{url.leader_dir}/{sorted(members)[0]}")
        assert b"address" in data
        with pytest.raises(NoAuthError):  # no posing as a master
            anyone.create(
                f"{url.leader_dir}/member_", b'{"address": "evil:1"}', ephemeral=True, sequence=True
            )
        with pytest.raises(NoAuthError):  # no rewriting the leader's address
            anyone.set(f"{url.leader_dir}/{sorted(members)[0]}", b'{"address": "evil:1"}')
        with pytest.raises(NoAuthError):  # no deposing it
            anyone.delete(f"{url.leader_dir}/{sorted(members)[0]}")
        with pytest.raises(NoAuthError):  # the registry is private
            anyone.get_children(_registry(url, AGENTS))
        with pytest.raises(NoAuthError):
            anyone.get(f"{_registry(url, AGENTS)}/{agent_id}")
        with pytest.raises(NoAuthError):
            anyone.create(f"{_registry(url, FRAMEWORKS)}/fw-evil", b"x")
    # Other credentials are nobody too.
    other = ZkCredentials("corral-master", "not-the-password-at-all")
    with zk_client(url, other) as client, pytest.raises(NoAuthError):
        client.get_children(_registry(url, AGENTS))
    with zk_client(url, CREDS) as masters:
        assert agent_id in masters.get_children(_registry(url, AGENTS))


@pytest.mark.root
async def test_masters_with_credentials_own_the_tree_and_anyone_finds_the_leader(
    zk_url: str, tmp_path: Path
) -> None:
    url = parse_zk_url(zk_url)
    async with (
        elected_cluster(zk_url, tmp_path, zk_credentials=CREDS) as ((leader, standby), agent),
        # The framework finds the leader through ZooKeeper without credentials.
        framework(zk_url) as (driver, rec),
    ):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("t", "true", Resources.of(cpus=0.1, mem=32))])
        await rec.wait_state("t", TaskState.FINISHED)
        assert leader.master is not None
        assert leader.master.registry is not None
        await leader.master.registry.flush()
        assert_owned(url, agent.agent_id)
        # The standby takes over on the same tree, and writes its registry.
        await leader.stop()
        await eventually(lambda: standby.master is not None, 15, "the standby to lead")
        assert standby.master is not None
        assert agent.agent_id in standby.master.state.agents


async def test_a_master_without_the_credentials_is_refused(zk_url: str) -> None:
    async with elected_cluster_masters(zk_url, CREDS):
        for creds in (None, ZkCredentials("corral-master", "not-the-password-at-all")):
            intruder = MasterServer("127.0.0.1:0", FAST_MASTER, zk=zk_url, zk_credentials=creds)
            try:
                with pytest.raises(ZkAccessDenied, match="--zk-credentials"):
                    await intruder.start()
            finally:
                await intruder.stop()


@pytest.mark.root
async def test_an_open_tree_is_taken_over_by_masters_with_credentials(zk_url: str, tmp_path: Path) -> None:
    url = parse_zk_url(zk_url)
    async with elected_cluster(zk_url, tmp_path / "open", masters=1) as ((leader,), agent):
        assert leader.master is not None
        assert leader.master.registry is not None
        await leader.master.registry.flush()
        with zk_client(url) as anyone:  # before: open to anyone
            assert agent.agent_id in anyone.get_children(_registry(url, AGENTS))
    async with elected_cluster(zk_url, tmp_path / "owned", masters=1, zk_credentials=CREDS) as (
        (leader,),
        agent2,
    ):
        assert leader.master is not None
        assert leader.master.registry is not None
        # The agent of the open run is known from the registry it took over.
        assert agent.agent_id in leader.master.state.agents
        await leader.master.registry.flush()
        assert_owned(url, agent.agent_id)
        assert_owned(url, agent2.agent_id)


@asynccontextmanager
async def elected_cluster_masters(zk_url: str, creds: ZkCredentials) -> AsyncIterator[MasterServer]:
    """One master (no agent, so no root needed) elected with ``creds``."""
    server = MasterServer("127.0.0.1:0", FAST_MASTER, zk=zk_url, zk_credentials=creds)
    try:
        await server.start()
        await eventually(lambda: server.leading, 10, "the master to lead")
        yield server
    finally:
        await server.stop()
