package rootfs

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

// maxLayersAtOnce bounds the layers unpacked at once, beside GOMAXPROCS:
// each holds a few MiB of buffers, and more at once do not make the disk
// faster.
const maxLayersAtOnce = 8

// storeLayers stores the layers of li the store lacks (not in have), several
// at once: up to GOMAXPROCS (and maxLayersAtOnce), lowest first, each in a
// work directory of its own, so that one layer's download and decompression
// overlap another's extraction, which waits on the kernel. A layer whose diff
// ID comes twice is stored once.
//
// A failure starts no further layer but lets those under way finish, as a
// pull one layer at a time would have stored the layers before the one that
// failed: an interrupted pull resumes with what it lacks. The error is the
// lowest failing layer's.
func (s *Store) storeLayers(ctx context.Context, li *LayeredImage, have map[string]bool, rep *reporter) error {
	prog := newLayerProgress(rep, li.Layers, have)
	errs := make([]error, len(li.Layers))
	var failed atomic.Bool
	var wg sync.WaitGroup
	sem := make(chan struct{}, min(max(1, runtime.GOMAXPROCS(0)), maxLayersAtOnce))
	for _, i := range prog.todo() {
		sem <- struct{}{}
		if failed.Load() {
			break
		}
		if err := ctx.Err(); err != nil {
			l := li.Layers[i]
			errs[i] = fmt.Errorf("layer %d of %d (%s): %w", i+1, len(li.Layers), layerLabel(l), err)
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if errs[i] = s.storeLayer(ctx, li, i, prog); errs[i] != nil {
				failed.Store(true)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// layerProgress reports the layers of an import, unpacked several at once, as
// the one after the other a display of one step at a time can follow (a log,
// berthd's events, plain lines): each layer its own phase, started, updated
// and finished in the image's order. The layer shown is the lowest not yet
// stored; those above it count their bytes meanwhile, and when their turn
// comes they start where they got to, or start and finish at once. Reports
// are made under a lock, one at a time, whatever goroutine causes them.
type layerProgress struct {
	mu     sync.Mutex
	rep    *reporter
	layers []Layer
	owner  []int // the layer that stores each layer's diff ID, -1: it was stored before the import
	done   []int64
	ended  []bool
	front  int  // the layer shown
	shown  bool // its start is reported
}

func newLayerProgress(rep *reporter, layers []Layer, have map[string]bool) *layerProgress {
	p := &layerProgress{rep: rep, layers: layers, owner: make([]int, len(layers)),
		done: make([]int64, len(layers)), ended: make([]bool, len(layers))}
	first := map[string]int{}
	for i, l := range layers {
		switch j, ok := first[l.DiffID]; {
		case have[l.DiffID]:
			p.owner[i] = -1
		case ok:
			p.owner[i] = j
		default:
			first[l.DiffID], p.owner[i] = i, i
		}
	}
	p.mu.Lock()
	p.advance()
	p.mu.Unlock()
	return p
}

// todo is the layers to store, lowest first.
func (p *layerProgress) todo() []int {
	var out []int
	for i, o := range p.owner {
		if o == i {
			out = append(out, i)
		}
	}
	return out
}

// add counts n more bytes of layer i's blob read.
func (p *layerProgress) add(i int, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done[i] += n
	if i == p.front {
		p.rep.update(p.done[i])
	}
}

// end says layer i is stored.
func (p *layerProgress) end(i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ended[i] = true
	p.advance()
}

// advance reports what the layers from the front on did, up to the first
// still under way or waiting.
func (p *layerProgress) advance() {
	for ; p.front < len(p.layers); p.front, p.shown = p.front+1, false {
		i, l := p.front, p.layers[p.front]
		if !p.shown {
			p.shown = true
			p.rep.start(LayerPhase(l), l.Size)
		}
		if p.owner[i] != i {
			// Stored before the import, or as a lower layer of the same
			// diff ID, which is past the front: done by now.
			p.rep.message("already stored")
			p.rep.finish(l.Size)
			continue
		}
		if !p.ended[i] {
			if p.done[i] > 0 {
				p.rep.update(p.done[i])
			}
			return
		}
		p.rep.finish(max(p.done[i], l.Size))
	}
}
