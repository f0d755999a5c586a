package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"
)

var errHelp = errors.New("help requested")

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Run parses args and runs one sluice command until ctx ends.
func Run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "config-reference" { // hidden: writes docs/CONFIG.md (make docs)
		return runConfigReference(os.Stdout, args[1:])
	}
	root := &ffcli.Command{
		Name:       "sluice",
		ShortUsage: "sluice <command> [flags]",
		ShortHelp:  "a download center: tickets, fair admission under global limits, signed streaming links",
		LongHelp: "Every flag can also be set with an environment variable SLUICE_<FLAG>, dashes as\n" +
			"underscores: --ingress-addr is SLUICE_INGRESS_ADDR. Run 'sluice <command> -h' for a command's flags.",
		Subcommands: []*ffcli.Command{
			serverCommand("serve", "run ingress, workers and edge in one process (embeds NATS and Redis when no URL is set)", roleServe),
			serverCommand("ingress", "run the public HTTP API", roleIngress),
			serverCommand("worker", "run an admission worker", roleWorker),
			serverCommand("edge", "run the streaming edge that serves /d/{token}", roleEdge),
			publishCommand(),
			getCommand(),
			adminCommand(),
			versionCommand(),
		},
		Exec: func(context.Context, []string) error { return flag.ErrHelp },
	}
	if err := root.ParseAndRun(ctx, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return err
	}
	return nil
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
				return fmt.Errorf("%s takes no arguments, got %q", name, args)
			}
			return runServer(ctx, r, cfg)
		},
	}
}

func versionCommand() *ffcli.Command {
	return &ffcli.Command{
		Name:       "version",
		ShortUsage: "sluice version",
		ShortHelp:  "print the version",
		Exec: func(context.Context, []string) error {
			fmt.Fprintln(os.Stdout, "sluice", version)
			return nil
		},
	}
}
