package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// Hash is a stable content hash of the machine's defaulted definition: the
// canonical JSON of the struct (fields in declaration order, map keys sorted, the
// Source position left out) under sha256, in hex. Comments, key order, whitespace,
// the file it lives in and spelling a default out do not change it; any change of
// meaning does. berthd compares it with the hash it applied to detect drift; to
// see what changed it compares the sub-structs (Resources, Network, Mounts, Root…).
//
// The hash is over the effective definition, the machine's profiles merged in:
// which profiles gave the fields is left out, so a change to a profile changes
// the machines that use it, and moving a field between a profile and a machine
// changes nothing.
func (m *Machine) Hash() string {
	c := *m
	c.Profiles = nil
	return hashOf(KindMachine, &c)
}

// Hash is the network's content hash (see Machine.Hash).
func (n *Network) Hash() string { return hashOf(KindNetwork, n) }

// Hash is the image's content hash (see Machine.Hash). It covers the source's
// definition, not the bytes of a directory or archive.
func (i *Image) Hash() string { return hashOf(KindImage, i) }

func hashOf(kind string, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic("spec: cannot encode " + kind + ": " + err.Error()) // only plain data types
	}
	h := sha256.New()
	h.Write([]byte(APIVersion + "/" + kind + "\n"))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}
