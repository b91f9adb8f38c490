package sources

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthd/berth/machined/config"
)

// TestLiteralSecretsRefusedInSnapshots: a literal credential value is an
// error (with its file, line and field) in the definitions berth apply PATH
// would keep, and fine in a watched directory; file, env and credential
// sources are fine in both.
func TestLiteralSecretsRefusedInSnapshots(t *testing.T) {
	const doc = "apiVersion: berth/v1\nkind: Image\nname: img\ndirectory: /srv/img\n---\napiVersion: berth/v1\nkind: Machine\nname: m\nimage: img\ncredentials:\n  a: {%s}\n"
	for _, c := range []struct {
		name, cred string
		refused    bool
	}{
		{"literal", `value: "hunter2"`, true},
		{"file", "file: /etc/berth/a", false},
		{"env", "env: A", false},
		{"credential", "credential: a", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "m.yaml"), []byte(strings.Replace(doc, "%s", c.cred, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			sn, err := ReadSnapshot(dir)
			if err != nil {
				t.Fatal(err)
			}
			_, errs := New(&config.Config{StateDir: t.TempDir()}).Load(context.Background(), sn)
			got := strings.Join(errs, "\n")
			if c.refused != (len(errs) > 0) || c.refused && !strings.Contains(got, filepath.Join(dir, "m.yaml")+":6:1: credentials.a.value: machine \"m\": berth apply PATH keeps a copy") {
				t.Errorf("apply PATH: errors %q", got)
			}
			if strings.Contains(got, "hunter2") {
				t.Errorf("the error shows the value: %s", got)
			}
			if _, errs := New(&config.Config{StateDir: t.TempDir(), Sources: []config.SourceConfig{{Path: dir}}}).Load(context.Background(), nil); len(errs) > 0 {
				t.Errorf("watched directory: %v", errs)
			}
		})
	}
}
