// Package units is everything systemd: transient scopes over D-Bus, registration
// with systemd-machined, rendering of unit files, and sd_notify.
package units
