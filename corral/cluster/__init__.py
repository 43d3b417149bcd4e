"""Multi-node test clusters on one Linux host (``corral cluster up|status|down``).

Each ZooKeeper node, master and agent is a real process in its own network
namespace (a veth on a bridge the cluster creates, its own address on a private
/24), its own UTS namespace (hostname), work directory and cgroup.

- ``topology``: pure planning (names, addresses, commands' arguments).
- ``kernel``: the setns/unshare seam; ``enter``: the launcher a node's process
  starts through (join cgroup, enter netns, new UTS, exec).
- ``netns``: bridge, namespaces and veths through iproute2, and what is left.
- ``state``: the record of what a cluster made (``$CORRAL_HOME/clusters/NAME.json``).
- ``runner``: up, status and down.
"""
