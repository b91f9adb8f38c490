// Command berthd is the berth daemon: it reconciles the host toward the declared machines.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "berthd: not implemented yet")
	os.Exit(1)
}
