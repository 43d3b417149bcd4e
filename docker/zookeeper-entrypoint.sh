#!/bin/sh
# One node of a ZooKeeper ensemble, in the foreground (Debian's zookeeper jars).
#
#   corral-zookeeper MYID "HOST1 HOST2 HOST3"
#
# MYID is this node's position (1-based) in the list. ZK_TICK_MS (2000)
# sets tickTime; sessions may be 2-20 ticks.
set -eu
myid=$1
servers=$2
data=${ZK_DATA:-/var/lib/zookeeper}
mkdir -p "$data"
echo "$myid" > "$data/myid"
{
    echo "tickTime=${ZK_TICK_MS:-2000}"
    echo "initLimit=10"
    echo "syncLimit=5"
    echo "dataDir=$data"
    echo "clientPort=2181"
    echo "quorumListenOnAllIPs=true"
    echo "maxClientCnxns=0"
    echo "admin.enableServer=false"
    echo "4lw.commands.whitelist=ruok,srvr,stat,mntr"
    i=1
    for s in $servers; do
        echo "server.$i=$s:2888:3888"
        i=$((i + 1))
    done
} > "$data/zoo.cfg"
exec java -Xmx${ZK_HEAP:-256m} -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
    -cp /usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$data/zoo.cfg"
