// Package api is berthd's wire vocabulary and both ends of its socket: the
// types `berth` shows (MachineStatus, Plan and its Actions, Event, Hold,
// ExitInfo), the API interface that berthd's Manager and the CLI's local mode
// implement, the HTTP server that serves an API on a Unix socket, and the
// Client that talks to it. Errors keep their errdefs class across the socket.
package api
