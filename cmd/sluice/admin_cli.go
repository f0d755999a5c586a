package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffcli"

	"github.com/sluice-dl/sluice/client"
)

// adminCLI is sluice admin: the operators' API from a shell, as tables or JSON.
type adminCLI struct {
	clientConfig
	JSON   bool
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	start  time.Time // the command's start: --timeout bounds it, retries included
}

func adminCommand() *ffcli.Command {
	a := &adminCLI{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	fs := flag.NewFlagSet("sluice admin", flag.ContinueOnError)
	registerClientFlags(fs, &a.clientConfig)
	fs.BoolVar(&a.JSON, "json", false, "print the server's JSON instead of tables")
	sub := func(name, usage, help string, run func(ctx context.Context, api *client.Client, args []string) error) *ffcli.Command {
		return &ffcli.Command{
			Name: name, ShortUsage: "sluice admin " + usage + " [flags]", ShortHelp: help,
			// The group's flags, before or after the subcommand's name.
			FlagSet: fs, Options: []ff.Option{ff.WithEnvVarPrefix("SLUICE")},
			Exec: func(ctx context.Context, args []string) error {
				a.start = time.Now()
				api, err := a.client(a.getenv, "")
				if err != nil {
					return err
				}
				return adminExit(&a.clientConfig, run(ctx, api, args))
			},
		}
	}
	return &ffcli.Command{
		Name:       "admin",
		ShortUsage: "sluice admin stats|limits|pause|resume|workers|releases [flags]",
		ShortHelp:  "operate a running sluice: stats, limits, pause and resume admission, workers and edges, dead release events",
		LongHelp: "Calls the admin API with the operator key in $SLUICE_API_KEY (or --api-key-file).\n" +
			"Flags go anywhere: sluice admin stats --json.\n\n" +
			"  limits set global=N tenant_default=N TENANT.limit=N TENANT.weight=W TENANT.rate_bps=N",
		FlagSet: fs,
		Options: []ff.Option{ff.WithEnvVarPrefix("SLUICE")},
		Subcommands: []*ffcli.Command{
			sub("stats", "stats", "admission snapshot: limit, slots in use, backlog, tenants, activity", a.stats),
			sub("limits", "limits [set KEY=VALUE ...]", "show the limits, or change them at runtime", a.limits),
			sub("pause", "pause", "stop admitting tickets (queued tickets keep their place)", func(ctx context.Context, api *client.Client, args []string) error {
				return a.setPaused(ctx, api, args, true)
			}),
			sub("resume", "resume", "admit tickets again", func(ctx context.Context, api *client.Client, args []string) error {
				return a.setPaused(ctx, api, args, false)
			}),
			sub("workers", "workers", "workers, edges and ingresses with their last heartbeat", a.workers),
			{
				Name: "releases", ShortUsage: "sluice admin releases dead|replay [flags]",
				ShortHelp: "release events the workers gave up on: list them, send one back",
				FlagSet:   fs, Options: []ff.Option{ff.WithEnvVarPrefix("SLUICE")},
				Subcommands: []*ffcli.Command{
					sub("dead", "releases dead", "dead-lettered release events with their reason, oldest first", a.deadReleases),
					sub("replay", "releases replay ID", "send a dead-lettered event back to the workers (after fixing its cause)", a.replayRelease),
				},
			},
		},
	}
}

// retry calls f through an outage of the server, for up to --timeout from the
// command's start, telling the operator once per outage.
func (a *adminCLI) retry(ctx context.Context, f func() error) error {
	p := client.RetryPolicy{Budget: a.Timeout, Deadline: a.start.Add(a.Timeout),
		Notify: func(msg string) { fmt.Fprintln(a.stderr, "sluice: "+msg) }}
	return p.Do(ctx, f)
}

// adminExit maps API refusals to the client exit codes.
func adminExit(c *clientConfig, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := errors.AsType[*exitError](err); ok {
		return err
	}
	return apiExit(c, err)
}

func (a *adminCLI) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func noArgs(cmd string, args []string) error {
	if len(args) > 0 {
		return &exitError{exitUsage, fmt.Errorf("admin %s takes no arguments, got %q", cmd, args)}
	}
	return nil
}

func (a *adminCLI) stats(ctx context.Context, api *client.Client, args []string) error {
	if err := noArgs("stats", args); err != nil {
		return err
	}
	var s client.Stats
	err := a.retry(ctx, func() (err error) { s, err = api.Stats(ctx); return err })
	if err != nil {
		return err
	}
	if a.JSON {
		return a.printJSON(s)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	admission := "running"
	if s.Paused {
		admission = "PAUSED"
	}
	fmt.Fprintf(tw, "admission\t%s\n", admission)
	fmt.Fprintf(tw, "slots in use\t%d of %d\n", s.SlotsInUse, s.GlobalLimit)
	fmt.Fprintf(tw, "backlog\t%d queued (%d admissible now)\n", s.Backlog, s.Admissible)
	fmt.Fprintf(tw, "completions\t%.2f/s\n", s.Rate)
	fmt.Fprintf(tw, "tickets\t%s\n", counts(s.Tickets, "queued", "admitting", "ready", "streaming"))
	fmt.Fprintf(tw, "ended\t%s\n", counts(s.Ended, "done", "expired", "failed", "canceled"))
	if s.Activity != nil {
		fmt.Fprintf(tw, "activity\t%.1f admissions/s, %s/s (last %ds)\n", s.Activity.AdmissionsPerSecond,
			humanize.IBytes(uint64(s.Activity.BytesPerSecond)), s.Activity.RateSeconds)
		fmt.Fprintf(tw, "wait p50/p90/p99\t%.1fs / %.1fs / %.1fs (last %ds)\n", s.Activity.WaitP50, s.Activity.WaitP90, s.Activity.WaitP99, s.Activity.WaitSeconds)
	}
	fmt.Fprintf(tw, "nodes\t%s; %d edge streams\n", countsAll(s.Nodes), s.EdgeStreams)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(s.Tenants) == 0 {
		return nil
	}
	fmt.Fprintln(a.stdout)
	tw = tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tQUEUED\tIN USE\tLIMIT\tWEIGHT")
	for _, name := range sortedKeys(s.Tenants) {
		t := s.Tenants[name]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%g\n", name, t.Queued, t.InUse, limitText(t.Limit), t.Weight)
	}
	return tw.Flush()
}

func counts[V int | int64](m map[string]V, order ...string) string {
	var parts []string
	for _, k := range order {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

func countsAll(m map[string]int) string {
	if len(m) == 0 {
		return "none registered"
	}
	return counts(m, sortedKeys(m)...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func limitText[N int | int64](n N) string {
	if n <= 0 {
		return "none"
	}
	return strconv.FormatInt(int64(n), 10)
}

func (a *adminCLI) limits(ctx context.Context, api *client.Client, args []string) error {
	var l client.Limits
	var err error
	switch {
	case len(args) == 0:
		err = a.retry(ctx, func() (err error) { l, err = api.Limits(ctx); return err })
	case args[0] == "set" && len(args) > 1:
		u, perr := parseLimits(args[1:])
		if perr != nil {
			return &exitError{exitUsage, perr}
		}
		err = a.retry(ctx, func() (err error) { l, err = api.SetLimits(ctx, u); return err })
	default:
		return &exitError{exitUsage, errors.New("usage: sluice admin limits [set global=N tenant_default=N TENANT.limit=N TENANT.weight=W TENANT.rate_bps=N ...]")}
	}
	if err != nil {
		return err
	}
	if a.JSON {
		return a.printJSON(l)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "global\t%d\n", l.Global)
	fmt.Fprintf(tw, "tenant default\t%s\n", limitText(l.TenantDefault))
	fmt.Fprintf(tw, "paused\t%t\n", l.Paused)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(l.Tenants) == 0 {
		return nil
	}
	fmt.Fprintln(a.stdout)
	tw = tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tLIMIT\tWEIGHT\tRATE")
	for _, name := range sortedKeys(l.Tenants) {
		t := l.Tenants[name]
		limit, weight, rate := "default", "1", "edge default"
		if t.Limit != nil {
			limit = limitText(*t.Limit)
		}
		if t.Weight != nil {
			weight = strconv.FormatFloat(*t.Weight, 'g', -1, 64)
		}
		if t.RateBps != nil && *t.RateBps > 0 {
			rate = humanize.IBytes(uint64(*t.RateBps)) + "/s"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, limit, weight, rate)
	}
	return tw.Flush()
}

// parseLimits reads KEY=VALUE pairs: global, tenant_default, TENANT.limit,
// TENANT.weight, TENANT.rate_bps (rates also as 1M, 500k).
func parseLimits(args []string) (client.LimitsUpdate, error) {
	u := client.LimitsUpdate{}
	for _, arg := range args {
		k, v, ok := strings.Cut(arg, "=")
		if !ok || v == "" {
			return u, fmt.Errorf("%q is not KEY=VALUE", arg)
		}
		intVal := func() (int, error) {
			n, err := strconv.Atoi(v)
			if err != nil {
				return 0, fmt.Errorf("%s: %q is not a whole number", k, v)
			}
			return n, nil
		}
		switch k {
		case "global":
			n, err := intVal()
			if err != nil {
				return u, err
			}
			u.Global = &n
			continue
		case "tenant_default":
			n, err := intVal()
			if err != nil {
				return u, err
			}
			u.TenantDefault = &n
			continue
		}
		tenant, field, ok := strings.Cut(k, ".")
		if !ok || tenant == "" {
			return u, fmt.Errorf("unknown limit %q: use global, tenant_default, TENANT.limit, TENANT.weight or TENANT.rate_bps", k)
		}
		if u.Tenants == nil {
			u.Tenants = map[string]client.TenantLimits{}
		}
		t := u.Tenants[tenant]
		switch field {
		case "limit":
			n, err := intVal()
			if err != nil {
				return u, err
			}
			t.Limit = &n
		case "weight":
			w, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return u, fmt.Errorf("%s: %q is not a number", k, v)
			}
			t.Weight = &w
		case "rate_bps":
			n, err := humanize.ParseBytes(v)
			if err != nil {
				return u, fmt.Errorf("%s: %q is not a rate like 0, 500k or 2M", k, v)
			}
			r := int64(n)
			t.RateBps = &r
		default:
			return u, fmt.Errorf("unknown tenant limit %q: use limit, weight or rate_bps", field)
		}
		u.Tenants[tenant] = t
	}
	return u, nil
}

func (a *adminCLI) setPaused(ctx context.Context, api *client.Client, args []string, paused bool) error {
	name := map[bool]string{true: "pause", false: "resume"}[paused]
	if err := noArgs(name, args); err != nil {
		return err
	}
	if err := a.retry(ctx, func() error { return api.SetPaused(ctx, paused) }); err != nil {
		return err
	}
	if a.JSON {
		return a.printJSON(map[string]bool{"paused": paused})
	}
	if paused {
		fmt.Fprintln(a.stdout, "admission paused: queued tickets keep their place; 'sluice admin resume' restarts it")
	} else {
		fmt.Fprintln(a.stdout, "admission resumed")
	}
	return nil
}

func (a *adminCLI) workers(ctx context.Context, api *client.Client, args []string) error {
	if err := noArgs("workers", args); err != nil {
		return err
	}
	var nodes []client.Node
	err := a.retry(ctx, func() (err error) { nodes, err = api.Workers(ctx); return err })
	if err != nil {
		return err
	}
	if a.JSON {
		if nodes == nil {
			nodes = []client.Node{}
		}
		return a.printJSON(map[string]any{"nodes": nodes})
	}
	if len(nodes) == 0 {
		fmt.Fprintln(a.stdout, "no workers, edges or ingresses have reported a heartbeat")
		return nil
	}
	slices.SortFunc(nodes, func(x, y client.Node) int {
		return strings.Compare(x.Role+" "+x.ID, y.Role+" "+y.ID)
	})
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tID\tADDRESS\tIN FLIGHT\tUP\tLAST BEAT\tVERSION")
	now := time.Now()
	for _, n := range nodes {
		up := "-"
		if !n.Started.IsZero() {
			up = now.Sub(n.Started).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%.1fs ago\t%s\n", n.Role, n.ID, orDash(n.Address), n.InFlight, up, n.AgeSeconds, orDash(n.Version))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// deadReleases lists every dead-lettered release event, a page at a time.
func (a *adminCLI) deadReleases(ctx context.Context, api *client.Client, args []string) error {
	if err := noArgs("releases dead", args); err != nil {
		return err
	}
	const page = 1000
	all := []client.DeadLetter{}
	for after := uint64(0); ; {
		var list []client.DeadLetter
		var more bool
		err := a.retry(ctx, func() (err error) { list, more, err = api.DeadReleases(ctx, after, page); return err })
		if err != nil {
			return err
		}
		all = append(all, list...)
		if !more || len(list) == 0 {
			break
		}
		after = list[len(list)-1].ID
	}
	if a.JSON {
		return a.printJSON(map[string]any{"dead": all})
	}
	if len(all) == 0 {
		fmt.Fprintln(a.stdout, "no dead-lettered release events")
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tDEAD AT\tATTEMPTS\tOBJECT\tREASON")
	for _, d := range all {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", d.ID, d.DeadAt.Local().Format(time.DateTime), d.Attempts, orDash(deadObject(d)), d.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, "\nfix the cause (for example, put the object into the store), then: sluice admin releases replay ID")
	return nil
}

// deadObject is the object a dead-lettered API event names; "" for another shape
// (a MinIO notification, or the malformed event that was dead-lettered for it).
func deadObject(d client.DeadLetter) string {
	var ev struct {
		Object string `json:"object"`
	}
	if json.Unmarshal(d.Event, &ev) != nil {
		return ""
	}
	return ev.Object
}

func (a *adminCLI) replayRelease(ctx context.Context, api *client.Client, args []string) error {
	if len(args) != 1 {
		return &exitError{exitUsage, fmt.Errorf("admin releases replay takes one dead-letter ID (sluice admin releases dead lists them), got %q", args)}
	}
	id, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil {
		return &exitError{exitUsage, fmt.Errorf("dead-letter ID %q is not a number (sluice admin releases dead lists them)", args[0])}
	}
	var d client.DeadLetter
	// Not retried through an outage: a replay whose answer was lost may have gone
	// through, and the dead letter would then be gone (404) on the second try.
	if d, err = api.ReplayRelease(ctx, id); err != nil {
		return err
	}
	if a.JSON {
		return a.printJSON(map[string]any{"replayed": d})
	}
	fmt.Fprintf(a.stdout, "replayed dead letter %d (%s): the workers process it again\n", d.ID, orDash(deadObject(d)))
	return nil
}
