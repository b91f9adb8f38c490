// Package netconf wires machines to networks through netlink: bridges, veth pairs,
// addresses and routes, IPAM with persisted leases, and NAT and port forwards in
// berth's own nftables table.
package netconf
