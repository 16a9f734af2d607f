//go:build tools

// Package tools pins the upstream commands this module builds.
package tools

import (
	_ "github.com/heketi/heketi"
	_ "github.com/heketi/heketi/client/cli/go"
)
