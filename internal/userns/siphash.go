package userns

import (
	"encoding/binary"
	"math/bits"
)

// nspawnKey is the key systemd-nspawn hashes a machine's name with for its
// --private-users=pick candidate (uid_shift_pick in src/nspawn/nspawn.c).
var nspawnKey = [16]byte{0xe1, 0x56, 0xe0, 0xf0, 0x4a, 0xf0, 0x41, 0xaf, 0x96, 0x41, 0xcf, 0x41, 0x33, 0x94, 0xff, 0x72}

// nspawnCandidate is the base systemd-nspawn -U tries for a machine of this
// name: SipHash-2-4 of the name, folded into [PickMin, PickMax) and aligned.
// The same name gets the same base under nspawn and berth.
func nspawnCandidate(name string) uint32 {
	c := uint32(siphash24([]byte(name), nspawnKey))
	return (c%(PickMax-PickMin) + PickMin) &^ (Size - 1)
}

// siphash24 is SipHash-2-4, the 64-bit value as systemd's siphash24()
// returns it.
func siphash24(msg []byte, key [16]byte) uint64 {
	k0, k1 := binary.LittleEndian.Uint64(key[:8]), binary.LittleEndian.Uint64(key[8:])
	v := [4]uint64{k0 ^ 0x736f6d6570736575, k1 ^ 0x646f72616e646f6d, k0 ^ 0x6c7967656e657261, k1 ^ 0x7465646279746573}
	compress := func(m uint64, rounds int) {
		v[3] ^= m
		for i := 0; i < rounds; i++ {
			sipRound(&v)
		}
		v[0] ^= m
	}
	n := len(msg)
	for ; len(msg) >= 8; msg = msg[8:] {
		compress(binary.LittleEndian.Uint64(msg), 2)
	}
	var last [8]byte
	copy(last[:], msg)
	last[7] = byte(n)
	compress(binary.LittleEndian.Uint64(last[:]), 2)
	v[2] ^= 0xff
	for i := 0; i < 4; i++ {
		sipRound(&v)
	}
	return v[0] ^ v[1] ^ v[2] ^ v[3]
}

func sipRound(v *[4]uint64) {
	v[0] += v[1]
	v[1] = bits.RotateLeft64(v[1], 13) ^ v[0]
	v[0] = bits.RotateLeft64(v[0], 32)
	v[2] += v[3]
	v[3] = bits.RotateLeft64(v[3], 16) ^ v[2]
	v[0] += v[3]
	v[3] = bits.RotateLeft64(v[3], 21) ^ v[0]
	v[2] += v[1]
	v[1] = bits.RotateLeft64(v[1], 17) ^ v[2]
	v[2] = bits.RotateLeft64(v[2], 32)
}
