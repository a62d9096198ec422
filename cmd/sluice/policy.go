package main

import (
	"github.com/sluiceproxy/sluice/upstream"
)

// This file is the one place that maps --lb-policy to an upstream.Selector;
// flag validation and --help both go through it.

// lbPolicyNames lists the values --lb-policy accepts (NAME stands for a
// header, query parameter or cookie name).
func lbPolicyNames() []string { return upstream.PolicyNames() }

// newPolicy returns a fresh selector for name. Its error says what would be
// valid; the flag parser prefixes the flag and value.
func newPolicy(name string) (upstream.Selector, error) {
	return upstream.PolicyByName(name)
}
