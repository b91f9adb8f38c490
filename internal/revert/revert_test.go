package revert

import (
	"slices"
	"testing"
)

func TestReverter(t *testing.T) {
	var ran []int
	r := New()
	r.Add(func() { ran = append(ran, 1) })
	r.Add(func() { ran = append(ran, 2) })
	r.Fail()
	r.Fail() // once only
	if !slices.Equal(ran, []int{2, 1}) {
		t.Errorf("undo ran %v, want [2 1]", ran)
	}
	ran = nil
	r = New()
	r.Add(func() { ran = append(ran, 1) })
	r.Success()
	r.Fail()
	if ran != nil {
		t.Errorf("after Success, undo ran %v", ran)
	}
}
