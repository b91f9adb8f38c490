package main

import (
	"github.com/berthd/berth/spec"
	"github.com/spf13/cobra"
)

func newSchemaCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of the definition language",
		Long: `schema prints the JSON Schema (draft-07) of berth's definition documents, for
editors with the YAML language server. Save it and point your files at it:

  berth schema > berth.schema.json

  # yaml-language-server: $schema=berth.schema.json   (first line of a definition)`,
		Example: `  berth schema > berth.schema.json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := cmd.OutOrStdout().Write(spec.Schema())
			return err
		},
	}
}
