//go:build tools

// Package tools pins the upstream commands this module builds.
package tools

import (
	_ "k8s.io/kubernetes/test/e2e"
	_ "github.com/onsi/ginkgo/v2/ginkgo"
)
