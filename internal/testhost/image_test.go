package testhost

import "testing"

func TestImage(t *testing.T) {
	root := Image(t)
	t.Logf("test host image: %s", root)
}
