package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"
)

// The command tree is declared with ffcli, but read here, the same way for every
// command, with the manners of gh or kubectl: flags anywhere among the arguments
// (`sluice publish a b --channel stable`, `sluice admin stats --json`), -h/--help on
// stdout with exit 0, a group without its subcommand prints its help, an unknown
// command or flag is a usage error (exit 2) that says where the help is. A flag on
// the command line wins over its SLUICE_<FLAG> variable.

// dispatch finds the command args name, parses its flags wherever they stand and
// runs it.
func dispatch(ctx context.Context, root *ffcli.Command, args []string, stdout io.Writer) error {
	path := []*ffcli.Command{root}
	cmd := root
	var pos []string
	for {
		fs := flagSet(cmd)
		rest, err := parseUntilArgument(fs, args)
		if errors.Is(err, flag.ErrHelp) {
			_, werr := io.WriteString(stdout, usageText(path))
			return werr
		}
		if err != nil {
			return usageError(path, err)
		}
		if cmd == root && len(rest) > 0 && rest[0] == "help" { // sluice help [command...]
			return dispatch(ctx, root, append(rest[1:], "--help"), stdout)
		}
		if len(cmd.Subcommands) > 0 {
			if len(rest) == 0 {
				break // the group itself: sluice --version, or its help
			}
			sub := subcommand(cmd, rest[0])
			if sub == nil {
				return usageError(path, fmt.Errorf("unknown command %q", rest[0]))
			}
			path, cmd, args = append(path, sub), sub, rest[1:]
			continue
		}
		pos, err = parseInterspersed(fs, rest)
		if errors.Is(err, flag.ErrHelp) {
			_, werr := io.WriteString(stdout, usageText(path))
			return werr
		}
		if err != nil {
			return usageError(path, err)
		}
		break
	}
	// Variables fill in what the command line left unset, once per flag set (the
	// admin subcommands share their group's).
	seen := map[*flag.FlagSet]bool{}
	for _, c := range path {
		if len(c.Options) == 0 || seen[c.FlagSet] {
			continue
		}
		seen[c.FlagSet] = true
		if err := ff.Parse(c.FlagSet, nil, c.Options...); err != nil {
			return usageError(path, err)
		}
	}
	if cmd.Exec != nil {
		return cmd.Exec(ctx, pos)
	}
	_, err := io.WriteString(stdout, usageText(path)) // a group: say what is in it
	return err
}

// flagSet returns the command's flags, quiet: dispatch prints help and errors itself.
func flagSet(c *ffcli.Command) *flag.FlagSet {
	if c.FlagSet == nil {
		c.FlagSet = flag.NewFlagSet(c.Name, flag.ContinueOnError)
	}
	c.FlagSet.SetOutput(io.Discard)
	c.FlagSet.Usage = func() {}
	return c.FlagSet
}

func subcommand(c *ffcli.Command, name string) *ffcli.Command {
	for _, s := range c.Subcommands {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// parseUntilArgument parses the flags before the first argument and returns the
// arguments from there on.
func parseUntilArgument(fs *flag.FlagSet, args []string) ([]string, error) {
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return fs.Args(), nil
}

// parseInterspersed lets flags follow the arguments (sluice get KEY -o FILE): the
// flag package stops at the first argument, so the rest is parsed again. After
// "--" everything is an argument.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		if !strings.HasPrefix(args[0], "-") || args[0] == "-" {
			pos = append(pos, args[0])
			args = args[1:]
			continue
		}
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
	}
	return pos, nil
}

func commandName(path []*ffcli.Command) string {
	names := make([]string, len(path))
	for i, c := range path {
		names[i] = c.Name
	}
	return strings.Join(names, " ")
}

// usageError is a command line that cannot run: exit 2, pointing at the help.
func usageError(path []*ffcli.Command, err error) error {
	if f, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
		err = fmt.Errorf("unknown flag %s", flagName(strings.TrimPrefix(f, "-")))
	}
	if len(path) > 1 {
		err = fmt.Errorf("%s: %w", commandName(path[1:]), err)
	}
	return &exitError{exitUsage, fmt.Errorf("%w (run '%s --help')", err, commandName(path))}
}

// usageText is a command's help: what it does, how to call it, its subcommands and
// its flags with their defaults and variables.
func usageText(path []*ffcli.Command) string {
	c := path[len(path)-1]
	var b strings.Builder
	if c.ShortHelp != "" {
		fmt.Fprintf(&b, "%s\n\n", c.ShortHelp)
	}
	usage := c.ShortUsage
	if usage == "" {
		usage = commandName(path)
	}
	fmt.Fprintf(&b, "USAGE\n  %s\n\n", usage)
	if c.LongHelp != "" {
		fmt.Fprintf(&b, "%s\n\n", c.LongHelp)
	}
	if len(c.Subcommands) > 0 {
		b.WriteString("COMMANDS\n")
		tw := tabwriter.NewWriter(&b, 0, 2, 2, ' ', 0)
		for _, s := range c.Subcommands {
			fmt.Fprintf(tw, "  %s\t%s\n", s.Name, s.ShortHelp)
		}
		tw.Flush()
		b.WriteString("\n")
	}
	env := false
	for _, p := range path {
		env = env || len(p.Options) > 0
	}
	var flags []*flag.Flag
	flagSet(c).VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
	if len(flags) > 0 {
		b.WriteString("FLAGS\n")
		tw := tabwriter.NewWriter(&b, 0, 2, 2, ' ', 0)
		for _, f := range flags {
			arg, help := flag.UnquoteUsage(f)
			name := flagName(f.Name)
			if arg != "" && !isBoolFlag(f) {
				name += " " + arg
			}
			if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
				help += " (default " + f.DefValue + ")"
			}
			fmt.Fprintf(tw, "  %s\t%s\n", name, help)
		}
		tw.Flush()
		b.WriteString("\n")
		if env {
			b.WriteString("Every flag can also be set as SLUICE_<FLAG>, dashes as underscores (--wait-max is SLUICE_WAIT_MAX);\na flag on the command line wins.\n")
		}
	}
	return strings.TrimRight(b.String(), "\n") + "\n"
}

// flagName is how a flag is written: -o for one letter, --output for a word.
func flagName(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}
