"""Leader election and detection against a real ZooKeeper server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NotEmptyError

from corral.detector import StaticDetector, detector_for
from corral.master.election import StandaloneElection, ZooKeeperElection
from corral.testing import eventually
from corral.testing_zookeeper import ZooKeeperServer
from corral.zk import ZkUrlError, parse_zk_url
from corral.zk_detector import ZooKeeperDetector


def _info(name: str) -> dict[str, Any]:
    return {"id": name, "address": f"{name}.example:5050", "version": "test"}


class Recorder:
    def __init__(self) -> None:
        self.changes: list[bool] = []
        self.event = asyncio.Event()

    def __call__(self, leading: bool) -> None:
        self.changes.append(leading)
        self.event.set()


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://h:1/x", "starts with zk://"),
        ("zk://h:2181", "needs a path"),
        ("zk://h:2181/", "needs a path"),
        ("zk://h/x", "not HOST:PORT"),
        ("zk://h:2181/a/../b", "bad path"),
    ],
)
def test_bad_zk_urls_are_refused_with_a_reason(url: str, problem: str) -> None:
    with pytest.raises(ZkUrlError, match=problem):
        parse_zk_url(url)


def test_zk_url_and_static_detection() -> None:
    url = parse_zk_url("zk://10.0.0.1:2181,10.0.0.2:2181/corral/prod/")
    assert (url.hosts, url.path, url.leader_dir) == (
        "10.0.0.1:2181,10.0.0.2:2181",
        "/corral/prod",
        "/corral/prod/leader",
    )
    assert isinstance(detector_for("127.0.0.1:5050"), StaticDetector)


async def test_standalone_leads_at_once() -> None:
    rec = Recorder()
    election = StandaloneElection()
    await election.start(rec)
    assert election.leading
    assert rec.changes == [True]


async def test_lowest_leads_and_the_next_takes_over_when_it_leaves(zk_url: str) -> None:
    url = parse_zk_url(zk_url)
    recs = [Recorder() for _ in range(3)]
    elections = [ZooKeeperElection(url, _info(f"m{i}"), session_timeout_s=2) for i in range(3)]
    detector = ZooKeeperDetector(url, session_timeout_s=2)
    try:
        for election, rec in zip(elections, recs, strict=True):
            await election.start(rec)
        await detector.start()
        await eventually(lambda: elections[0].leading, 10, "m0 to lead")
        assert [e.leading for e in elections] == [True, False, False]
        assert await detector.wait_leader(10) == "m0.example:5050"

        await elections[0].stop()  # a clean exit closes the session: fast hand-over
        await eventually(lambda: elections[1].leading, 5, "m1 to take over")
        assert not elections[2].leading
        await eventually(lambda: detector.leader() == "m1.example:5050", 5, "the detector to follow")
    finally:
        for election in elections:
            await election.stop()
        await detector.stop()


async def test_leader_whose_session_expires_steps_down_and_contends_again(zk_url: str) -> None:
    url = parse_zk_url(zk_url)
    first, second = Recorder(), Recorder()
    leader = ZooKeeperElection(url, _info("a"), session_timeout_s=2)
    follower = ZooKeeperElection(url, _info("b"), session_timeout_s=2)
    try:
        await leader.start(first)
        await follower.start(second)
        await eventually(lambda: leader.leading, 10, "a to lead")
        # Expire a's session for real (kazoo's own harness trick): a second
        # client on the same session id, started and closed, ends it server-side.
        session_id, password = leader.client.client_id
        twin = KazooClient(hosts=url.hosts, client_id=(session_id, password))
        await asyncio.to_thread(twin.start)
        await asyncio.to_thread(twin.stop)
        await asyncio.to_thread(twin.close)
        await eventually(lambda: follower.leading, 10, "b to take over")
        await eventually(lambda: False in first.changes, 10, "a to step down")
        # a contends again with a new znode, now behind b.
        await eventually(lambda: leader.znode is not None, 10, "a to re-join the election")
        assert not leader.leading
    finally:
        await leader.stop()
        await follower.stop()


async def test_a_leader_whose_znode_is_deleted_steps_down(zk_url: str) -> None:
    url = parse_zk_url(zk_url)
    a = ZooKeeperElection(url, _info("a"), session_timeout_s=2)
    b = ZooKeeperElection(url, _info("b"), session_timeout_s=2)
    try:
        await a.start(Recorder())
        await b.start(Recorder())
        await eventually(lambda: a.leading, 10, "a to lead")
        assert a.znode is not None
        await asyncio.to_thread(a.client.delete, a.znode)
        await eventually(lambda: b.leading, 10, "b to take over")
        await eventually(lambda: not a.leading, 10, "a to step down")
        await eventually(lambda: a.znode is not None and a.znode != "", 10, "a to contend again")
        await asyncio.sleep(0.5)
        assert [a.leading, b.leading] == [False, True]  # never two leaders
    finally:
        await a.stop()
        await b.stop()


async def test_deleting_the_cluster_path_leaves_one_leader_once_it_is_back(zk_url: str) -> None:
    url = parse_zk_url(zk_url)
    elections = [ZooKeeperElection(url, _info(n), session_timeout_s=2) for n in ("a", "b")]
    detector = ZooKeeperDetector(url, session_timeout_s=2)
    try:
        for e in elections:
            await e.start(Recorder())
        await detector.start()
        await eventually(lambda: elections[0].leading, 10, "a to lead")
        await detector.wait_leader(10)
        # The contenders re-create their znodes as soon as they see them go,
        # which can race the recursive delete: try a few times.
        for _ in range(10):
            try:
                await asyncio.to_thread(elections[0].client.delete, url.path, recursive=True)
                break
            except NotEmptyError:
                continue
        # Both re-contend (makepath), exactly one leads, the detector follows it.
        await eventually(lambda: sum(e.leading for e in elections) == 1, 15, "exactly one leader")
        await asyncio.sleep(0.5)
        leaders = [e for e in elections if e.leading]
        assert len(leaders) == 1
        await eventually(
            lambda: detector.leader() == leaders[0].info["address"], 10, "the detector to follow"
        )
    finally:
        for e in elections:
            await e.stop()
        await detector.stop()


async def test_detector_survives_zookeeper_down_at_start(tmp_path: Path) -> None:
    server = ZooKeeperServer(tmp_path / "zk")
    url = parse_zk_url(f"zk://127.0.0.1:{server.port}/late")
    detector = ZooKeeperDetector(url, session_timeout_s=2)
    election = ZooKeeperElection(url, _info("late"), session_timeout_s=2)
    try:
        await detector.start()  # nothing listens yet: must not raise or block
        with pytest.raises(TimeoutError):
            await detector.wait_leader(0.5)
        await asyncio.to_thread(server.start)
        await election.start(Recorder())
        assert await detector.wait_leader(15) == "late.example:5050"
        # ZooKeeper goes away: the leader is no longer known, not the stale one.
        await asyncio.to_thread(server.stop)
        await eventually(lambda: detector.leader() is None, 15, "the detector to forget the leader")
        await eventually(lambda: not election.leading, 15, "the leader to step down")
    finally:
        await election.stop()
        await detector.stop()
        server.stop()


@pytest.mark.slow
async def test_leader_steps_down_on_quorum_loss_and_leads_again_when_it_returns(tmp_path: Path) -> None:
    from corral.testing_zookeeper import ZooKeeperEnsemble, available

    if (reason := available()) is not None:
        pytest.skip(reason)
    ensemble = ZooKeeperEnsemble(tmp_path / "ensemble")
    await asyncio.to_thread(ensemble.start)
    url = parse_zk_url(f"zk://{ensemble.hosts}/quorum")
    rec = Recorder()
    election = ZooKeeperElection(url, _info("q"), session_timeout_s=2)
    try:
        await election.start(rec)
        await eventually(lambda: election.leading, 15, "the master to lead")
        # Two of three nodes lost: no quorum, nobody may lead.
        await asyncio.to_thread(ensemble.stop_node, 1)
        await asyncio.to_thread(ensemble.stop_node, 2)
        await eventually(lambda: not election.leading, 15, "the master to step down without quorum")
        # Quorum back: it contends again and leads.
        await asyncio.to_thread(ensemble.start_node, 1)
        await asyncio.to_thread(ensemble.start_node, 2)
        await asyncio.to_thread(ensemble.wait_serving, [0, 1, 2])
        await eventually(lambda: election.leading, 30, "the master to lead again")
        assert rec.changes[:3] == [True, False, True]
    finally:
        await election.stop()
        await asyncio.to_thread(ensemble.stop)
