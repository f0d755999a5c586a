package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Run parses args and runs one sluice command until ctx ends.
func Run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "config-reference" { // hidden: writes docs/CONFIG.md (make docs)
		return runConfigReference(os.Stdout, args[1:])
	}
	return dispatch(ctx, rootCommand(), args, os.Stdout)
}

// rootCommand is the whole command tree.
func rootCommand() *ffcli.Command {
	fs := flag.NewFlagSet("sluice", flag.ContinueOnError)
	var showVersion bool
	fs.BoolVar(&showVersion, "version", false, "print the version and exit")
	fs.BoolVar(&showVersion, "v", false, "same as --version")
	root := &ffcli.Command{
		Name:       "sluice",
		ShortUsage: "sluice <command> [flags] [arguments]",
		ShortHelp:  "sluice is a download center: tickets, fair admission under global limits, signed streaming links",
		LongHelp: "Flags go anywhere after the command. Every flag can also be set with an environment\n" +
			"variable SLUICE_<FLAG>, dashes as underscores: --ingress-addr is SLUICE_INGRESS_ADDR.\n" +
			"Run 'sluice <command> --help' for a command's flags, 'sluice completion bash|zsh|fish'\n" +
			"for shell completion.",
		FlagSet: fs,
		Subcommands: []*ffcli.Command{
			serverCommand("serve", "run ingress, workers and edge in one process (embeds NATS and Redis when no URL is set)", roleServe),
			serverCommand("ingress", "run the public HTTP API", roleIngress),
			serverCommand("worker", "run an admission worker", roleWorker),
			serverCommand("edge", "run the streaming edge that serves /d/{token}", roleEdge),
			initCommand(),
			publishCommand(),
			getCommand(),
			adminCommand(),
			healthCommand(),
			versionCommand(),
		},
	}
	root.Subcommands = append(root.Subcommands, completionCommand(root))
	root.Exec = func(context.Context, []string) error {
		if showVersion {
			return printVersion()
		}
		_, err := io.WriteString(os.Stdout, usageText([]*ffcli.Command{root}))
		return err
	}
	return root
}

type role int

const (
	roleServe role = iota
	roleIngress
	roleWorker
	roleEdge
)

func (r role) String() string {
	return [...]string{"serve", "ingress", "worker", "edge"}[r]
}

func serverCommand(name, help string, r role) *ffcli.Command {
	fs := flag.NewFlagSet("sluice "+name, flag.ContinueOnError)
	cfg := registerServerFlags(fs, r)
	return &ffcli.Command{
		Name:       name,
		ShortUsage: "sluice " + name + " [flags]",
		ShortHelp:  help,
		FlagSet:    fs,
		Options:    []ff.Option{ff.WithEnvVarPrefix("SLUICE")},
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return &exitError{exitUsage, fmt.Errorf("%s takes no arguments, got %q (run 'sluice %s --help')", name, args, name)}
			}
			return runServer(ctx, r, cfg)
		},
	}
}

func versionCommand() *ffcli.Command {
	return &ffcli.Command{
		Name:       "version",
		ShortUsage: "sluice version",
		ShortHelp:  "print the version (also: sluice --version, sluice -v)",
		Exec: func(_ context.Context, args []string) error {
			if len(args) > 0 {
				return &exitError{exitUsage, fmt.Errorf("version takes no arguments, got %q", args)}
			}
			return printVersion()
		},
	}
}

func printVersion() error {
	_, err := fmt.Fprintln(os.Stdout, "sluice", version)
	return err
}
