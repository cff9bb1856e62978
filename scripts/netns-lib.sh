# shellcheck shell=bash
# netns-lib.sh - network-namespace nodes on one bridge, for the cluster
# tests, benches and the multi-node suite.  Source it; needs root.

# netns_join NS BRIDGE TAG ADDR: a new namespace NS linked to BRIDGE by a
# veth pair (vTAG inside, bTAG on the bridge), lo up, ADDR/24 on vTAG.
netns_join() {
	ip netns add "$1" &&
		ip link add "v$3" type veth peer name "b$3" &&
		ip link set "v$3" netns "$1" &&
		ip link set "b$3" master "$2" up &&
		ip -n "$1" link set lo up &&
		ip -n "$1" addr add "$4/24" dev "v$3" &&
		ip -n "$1" link set "v$3" up
}
