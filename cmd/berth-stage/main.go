// Command berth-stage is berth's stage binary: each machine's supervisor
// (started by berthd), a machine's init stage and application-mode reaper,
// and a network's resolver. berth and berthd re-execute it from beside them
// when it comes from the same build (see container.StageBinary): it links
// only the container runtime and the supervisor's wiring, so each running
// machine's supervisor maps and keeps less than a copy of berthd would.
package main

import (
	"github.com/berthd/berth/container"
	_ "github.com/berthd/berth/supervisor" // the supervise and resolver stages
)

func main() { container.StageMain() }
