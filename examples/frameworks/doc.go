// Package frameworks holds no code of its own: each directory is a
// runnable example of the library in a web framework (chi, gorilla, echo,
// gin) or a gRPC server, with its test. See README.md. This package's
// test keeps the README's snippets equal to the tested code.
package frameworks
