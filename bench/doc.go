// Package bench holds Tabby's benchmarks, one program per folder (bench/<name>/main.go),
// run by `make bench BENCH=<name>`. Each measures Tabby and a reference (ip -batch, FRR,
// iptables, no program) in the same run and ends with one line:
//
//	RESULT <name> ours=<number><unit> ref=<number><unit> ratio=<number> goal=<goal> ok|short
//
// Figures are recorded in docs/benchmarks.md. Nothing here is a pass/fail test.
package bench
