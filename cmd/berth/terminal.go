package main

import (
	"os"
	"os/signal"
	"syscall"
)

// notifyResized reports on the returned channel that this terminal was
// resized (SIGWINCH), dropping reports that nobody took yet; stop ends it.
func notifyResized() (resized <-chan struct{}, stop func()) {
	winch := make(chan os.Signal, 1)
	ch := make(chan struct{}, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	go func() {
		for range winch {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	return ch, func() { signal.Stop(winch) }
}
