package ctl

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newValidateCmd(g *globals) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "validate -f FILENAME",
		Short: "Check resource files offline",
		Long: `Decode, default and validate every object of the files, and check that no two IP pools
of the files overlap, without contacting the cluster (pools already stored are not
considered: apply checks those too). Prints "valid: N resources", or every error.`,
		Example: "  tabbyctl validate -f pools.yaml\n  tabbyctl validate -f manifests/ -f extra.yaml",
		Args:    noArgs,
	}
	fileFlag(cmd.Flags(), &files, "the resources to validate")
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		if len(files) == 0 {
			return usageErrorf("validate needs -f FILENAME")
		}
		items, _, err := loadChecked(cmd.Context(), g, files, true)
		if err != nil {
			return err
		}
		fmt.Fprintf(g.stdout, "valid: %d resources\n", len(items))
		return nil
	})
	return cmd
}
