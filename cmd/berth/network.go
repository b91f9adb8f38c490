package main

import (
	"strings"

	"github.com/berthd/berth/machined/api"
	"github.com/spf13/cobra"
)

func newNetworkCmd() *cobra.Command {
	c := &cobra.Command{Use: "network", Short: "Networks: list"}
	c.AddCommand(&cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the declared networks: bridge, subnet, the machines' DNS domain, machines",
		Example: `  berth network list
  berth network list -o json`,
		Args: cobra.NoArgs,
		RunE: withAPI(func(cmd *cobra.Command, ctl api.API, _ []string) error {
			nets, err := ctl.Networks(cmd.Context())
			if err != nil {
				return err
			}
			return printList(outputOf(cmd), nets, networkHeader, networkRow)
		}),
	})
	return c
}

// networkHeader and networkRow are berth network list's table.
var networkHeader = []string{"NAME", "BRIDGE", "SUBNET", "DNS", "MACHINES"}

func networkRow(n api.NetworkStatus) []string {
	subnet := n.Subnet
	if n.Subnet6 != "" {
		subnet += "," + n.Subnet6
	}
	bridge := n.Bridge
	if !n.Present {
		bridge += " (absent)"
	}
	dns := n.Domain
	if dns != "" && !n.Resolver {
		dns += " (not running)"
	}
	return []string{n.Name, bridge, subnet, dash(dns), dash(strings.Join(n.Machines, ","))}
}
