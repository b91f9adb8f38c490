package container

import (
	"strings"
	"testing"
)

// TestNextHealth walks the health states through passes and failures, in
// the start period and after it.
func TestNextHealth(t *testing.T) {
	hc := HealthCheck{Retries: 3}
	type step struct {
		ok, inStart bool
		want        string
		streak      int
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"pass", []step{{true, false, HealthHealthy, 0}}},
		{"fails up to retries", []step{{false, false, HealthStarting, 1}, {false, false, HealthStarting, 2}, {false, false, HealthUnhealthy, 3}}},
		{"healthy then fails", []step{{true, false, HealthHealthy, 0}, {false, false, HealthHealthy, 1}, {false, false, HealthHealthy, 2}, {false, false, HealthUnhealthy, 3}, {true, false, HealthHealthy, 0}}},
		{"start period does not count", []step{{false, true, HealthStarting, 1}, {false, true, HealthStarting, 2}, {false, true, HealthStarting, 3}, {false, true, HealthStarting, 4}, {false, false, HealthUnhealthy, 5}}},
		{"a pass in the start period ends it", []step{{false, true, HealthStarting, 1}, {true, true, HealthHealthy, 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h Health
			for i, s := range tc.steps {
				h = nextHealth(h, hc, s.ok, s.inStart)
				if h.Status != s.want || h.FailingStreak != s.streak || h.Checks != i+1 {
					t.Fatalf("step %d: %+v, want %s with streak %d", i, h, s.want, s.streak)
				}
			}
		})
	}
}

// TestCleanGuestText: what a guest writes reaches state.json and terminals
// without control characters, as valid UTF-8 and bounded.
func TestCleanGuestText(t *testing.T) {
	for _, tc := range []struct {
		in    string
		limit int
		want  string
	}{
		{"  ok\n", 64, "ok"},
		{"a\x1b[2Jb\rc", 64, "a\uFFFD[2Jb\uFFFDc"},
		{"line1\nline2\tx", 64, "line1\nline2\tx"},
		{"bad\xffutf8", 64, "bad\uFFFDutf8"},
		{"rtl\u202eevil", 64, "rtl\uFFFDevil"},
		{strings.Repeat("x", 20) + "end", 10, "…" + strings.Repeat("x", 7) + "end"},
		{strings.Repeat("é", 10), 9, "…éééé"}, // never half a character
	} {
		if got := cleanGuestText([]byte(tc.in), tc.limit); got != tc.want {
			t.Errorf("cleanGuestText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
