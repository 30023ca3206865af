// Command tabbyctl manages Tabby network resources; see docs/reference/tabbyctl.md.
package main

import (
	"os"

	"github.com/tabbynet/tabby/ctl"
)

func main() {
	os.Exit(ctl.Execute(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
