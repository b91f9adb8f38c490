package spec

import "testing"

// TestPlacementHash: the same CPU set and I/O limits spelled differently hash
// the same (no restart, no live change); a real change hashes differently.
func TestPlacementHash(t *testing.T) {
	hash := func(res string) string {
		t.Helper()
		set, err := Parse("m.yaml", []byte(base+m("resources: "+res)))
		if err != nil {
			t.Fatal(err)
		}
		return set.Machine("m").Hash()
	}
	a := hash("{cpuset: '0-1', io: [{device: /dev/vda, writeBandwidth: 1M}]}")
	for _, same := range []string{
		"{cpuset: '0,1', io: [{device: /dev/vda, writeBandwidth: 1048576}]}",
		"{cpuset: ' 1, 0-1 ', io: [{writeBandwidth: 1024K, device: /dev/vda}]}",
	} {
		if h := hash(same); h != a {
			t.Errorf("%s hashes differently", same)
		}
	}
	for _, other := range []string{
		"{cpuset: '0', io: [{device: /dev/vda, writeBandwidth: 1M}]}",
		"{cpuset: '0-1', io: [{device: /dev/vda, writeBandwidth: 2M}]}",
		"{cpuset: '0-1', io: [{device: /dev/vdb, writeBandwidth: 1M}]}",
		"{cpuset: '0-1', io: [{device: /dev/vda, readBandwidth: 1M}]}",
	} {
		if h := hash(other); h == a {
			t.Errorf("%s hashes the same", other)
		}
	}
}
