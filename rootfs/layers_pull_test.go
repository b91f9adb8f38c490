package rootfs

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

// TestLayerProgressInOrder: layers stored at once, finishing out of order,
// are reported one after the other in the image's order, each its own phase
// from its start to its total; those stored already, or as a lower layer of
// the same diff ID, say so.
func TestLayerProgressInOrder(t *testing.T) {
	layers := []Layer{
		{DiffID: "sha256:a", Digest: "sha256:1a", Size: 100},
		{DiffID: "sha256:b", Digest: "sha256:1b", Size: 10},
		{DiffID: "sha256:c", Digest: "sha256:1c", Size: 30},
		{DiffID: "sha256:a", Digest: "sha256:1a", Size: 100},
		{DiffID: "sha256:d", Digest: "sha256:1d", Size: 40},
	}
	var mu sync.Mutex
	var got []string
	rep := newReporter(func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case p.Message != "":
			got = append(got, p.Phase+" "+p.Message)
		case p.Done == 0:
			got = append(got, p.Phase+" start")
		case p.Done >= p.Total:
			got = append(got, fmt.Sprintf("%s %d/%d", p.Phase, p.Done, p.Total))
		}
	})
	p := newLayerProgress(rep, layers, map[string]bool{"sha256:b": true})
	if todo := fmt.Sprint(p.todo()); todo != "[0 2 4]" {
		t.Fatalf("todo %s, want [0 2 4]", todo)
	}
	var wg sync.WaitGroup
	for _, i := range []int{4, 2} { // the upper layers end first
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.add(i, layers[i].Size)
			p.end(i)
		}()
	}
	wg.Wait()
	p.add(0, 60)
	p.add(0, 40)
	p.end(0)
	want := []string{
		"layer sha256:1a start", "layer sha256:1a 100/100",
		"layer sha256:1b start", "layer sha256:1b already stored", "layer sha256:1b 10/10",
		"layer sha256:1c start", "layer sha256:1c 30/30",
		"layer sha256:1a start", "layer sha256:1a already stored", "layer sha256:1a 100/100",
		"layer sha256:1d start", "layer sha256:1d 40/40",
	}
	// Updates of the layer in front may come between its start and end.
	var ends []string
	for i, g := range got {
		if i > 0 && g == got[i-1] {
			continue
		}
		ends = append(ends, g)
	}
	if strings.Join(ends, "\n") != strings.Join(want, "\n") {
		t.Errorf("reports:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
