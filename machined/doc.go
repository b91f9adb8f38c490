// Package machined is the berth daemon: the level-triggered reconciler (observe →
// diff → plan → apply), the state store, the API server and the event log.
package machined
