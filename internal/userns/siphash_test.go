package userns

import "testing"

func TestSiphash24(t *testing.T) {
	// The reference vector of the SipHash paper: key 00…0f, message 00…0e.
	var k [16]byte
	var m [15]byte
	for i := range k {
		k[i] = byte(i)
	}
	for i := range m {
		m[i] = byte(i)
	}
	if got := siphash24(m[:], k); got != 0xa129ca6149be45e5 {
		t.Fatalf("siphash24 = %#x, want 0xa129ca6149be45e5", got)
	}
	// What a published `machinectl status ubuntu` of systemd-nspawn@ubuntu
	// (-U) showed as its "ID Shift".
	if got := nspawnCandidate("ubuntu"); got != 238288896 {
		t.Fatalf("nspawn's candidate for ubuntu = %d, want 238288896", got)
	}
}
