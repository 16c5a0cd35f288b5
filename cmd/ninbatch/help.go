package main

import (
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

// A command's help lists its flags in the order they are declared (the
// ones most people need first), grouped under their Category in order of
// first appearance; urfave/cli would sort both by name.
func init() {
	cli.CommandHelpTemplate = strings.Replace(cli.CommandHelpTemplate,
		`{{if .VisibleFlagCategories}}

OPTIONS:{{template "visibleFlagCategoryTemplate" .}}{{else if .VisibleFlags}}`,
		`{{if .VisibleFlags}}

OPTIONS:{{range flagGroups .VisibleFlags}}{{if .Name}}

   {{.Name}}:{{end}}{{range .Flags}}
   {{.}}{{end}}{{end}}{{else if false}}`, 1)
	cli.HelpPrinter = func(w io.Writer, templ string, data any) {
		cli.HelpPrinterCustom(w, templ, data, map[string]any{"flagGroups": flagGroups})
	}
}

type flagGroup struct {
	Name  string
	Flags []cli.Flag
}

// flagGroups splits flags by category, keeping the declared order: the
// uncategorised group first, then each category where it first appears.
func flagGroups(flags []cli.Flag) []flagGroup {
	groups := []flagGroup{{}}
	at := map[string]int{"": 0}
	for _, f := range flags {
		cat := ""
		if cf, ok := f.(cli.CategorizableFlag); ok {
			cat = cf.GetCategory()
		}
		i, ok := at[cat]
		if !ok {
			i = len(groups)
			at[cat] = i
			groups = append(groups, flagGroup{Name: cat})
		}
		groups[i].Flags = append(groups[i].Flags, f)
	}
	return groups
}
