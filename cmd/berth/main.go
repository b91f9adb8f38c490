// Command berth is the machinectl-style command line of berth.
package main

import (
	"os"

	"github.com/berthd/berth/container"
)

func main() {
	// The berth binary is also the machine supervisor's payload stage: when it was
	// re-executed for that, Reexec runs the stage and never returns.
	container.Reexec()
	os.Exit(execute())
}
