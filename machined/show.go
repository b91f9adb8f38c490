package machined

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/berthd/berth/internal/errdefs"
	"github.com/berthd/berth/machined/api"
	"github.com/berthd/berth/spec"
)

// Definition returns a declared machine's effective definition: the one in
// force (the last good set when the definitions have errors now).
func (m *Manager) Definition(ctx context.Context, name string) (*api.Definition, error) {
	d, _ := m.current(ctx)
	mm := d.Machine(name)
	if mm == nil {
		return nil, fmt.Errorf("machine %q: %w (no definition declares it)", name, errdefs.ErrNotFound)
	}
	return DefinitionOf(mm)
}

// DefinitionOf is machine mm's effective definition as the API carries it.
func DefinitionOf(mm *spec.Machine) (*api.Definition, error) {
	b, err := json.Marshal(mm)
	if err != nil {
		return nil, fmt.Errorf("machine %q: %w", mm.Name, err)
	}
	out := &api.Definition{Definition: b, Origins: make(map[string]api.FieldOrigin, len(mm.Origins))}
	for path, o := range mm.Origins {
		out.Origins[path] = api.FieldOrigin(o)
	}
	return out, nil
}
