// Package doccheck holds the tests that keep README.md and docs/ true: every
// Go block compiles against the current API, the quick start is the file the
// tests run, every relative link and anchor resolves, every test or
// benchmark the text names exists, and CI runs the README's test command.
// It has no code of its own.
package doccheck
