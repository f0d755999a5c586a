package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/peterbourgon/ff/v3/ffcli"
)

// Shell completion, generated from the command tree itself, so a new command or flag
// completes without anyone remembering to add it: commands and subcommands by name,
// flags after a dash, file names where a command takes files.

// completionNode is one command as the completion scripts see it.
type completionNode struct {
	path  []string // names below sluice: [] is sluice itself, ["admin", "stats"]
	subs  []string
	flags []completionFlag
	files bool // arguments are file names (publish)
	help  string
}

type completionFlag struct {
	name  string // as written: --server, -o
	help  string
	value bool // takes a value
}

func completionCommand(root *ffcli.Command) *ffcli.Command {
	shell := func(name, load string, write func(io.Writer, []completionNode) error) *ffcli.Command {
		return &ffcli.Command{
			Name:       name,
			ShortUsage: "sluice completion " + name,
			ShortHelp:  "print the " + name + " completion script; " + load,
			Exec: func(_ context.Context, args []string) error {
				if len(args) > 0 {
					return &exitError{exitUsage, fmt.Errorf("completion %s takes no arguments, got %q", name, args)}
				}
				return write(os.Stdout, completionTree(root))
			},
		}
	}
	return &ffcli.Command{
		Name:       "completion",
		ShortUsage: "sluice completion bash|zsh|fish",
		ShortHelp:  "print a shell completion script for commands, subcommands and flags",
		LongHelp: "  bash: source <(sluice completion bash)      (or save it in /etc/bash_completion.d/sluice)\n" +
			"  zsh:  source <(sluice completion zsh)       (or save it as _sluice in a directory of $fpath)\n" +
			"  fish: sluice completion fish | source      (or save it in ~/.config/fish/completions/sluice.fish)",
		Subcommands: []*ffcli.Command{
			shell("bash", "load it with: source <(sluice completion bash)", writeBashCompletion),
			shell("zsh", "load it with: source <(sluice completion zsh)", writeZshCompletion),
			shell("fish", "load it with: sluice completion fish | source", writeFishCompletion),
		},
	}
}

// completionTree lists every command under root, parents before children.
func completionTree(root *ffcli.Command) []completionNode {
	var out []completionNode
	var walk func(c *ffcli.Command, path []string)
	walk = func(c *ffcli.Command, path []string) {
		n := completionNode{path: path, help: c.ShortHelp, files: strings.Contains(c.ShortUsage, "FILE")}
		for _, s := range c.Subcommands {
			n.subs = append(n.subs, s.Name)
		}
		flagSet(c).VisitAll(func(f *flag.Flag) {
			n.flags = append(n.flags, completionFlag{name: flagName(f.Name), help: firstClause(f.Usage), value: !isBoolFlag(f)})
		})
		n.flags = append(n.flags, completionFlag{name: "--help", help: "show this command's help"})
		out = append(out, n)
		for _, s := range c.Subcommands {
			walk(s, append(slices.Clip(path), s.Name))
		}
	}
	walk(root, nil)
	return out
}

func firstClause(s string) string {
	if i := strings.IndexAny(s, ";("); i > 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

func (n completionNode) flagNames() string {
	names := make([]string, len(n.flags))
	for i, f := range n.flags {
		names[i] = f.name
	}
	return strings.Join(names, " ")
}

// shellCases is the case arms that walk the words typed so far from one command to
// its subcommand ("admin/stats"), shared by bash and zsh.
func shellCases(nodes []completionNode) string {
	var arms []string
	for _, n := range nodes {
		if len(n.path) > 0 {
			parent := strings.Join(n.path[:len(n.path)-1], " ")
			arms = append(arms, fmt.Sprintf("%q", parent+"/"+n.path[len(n.path)-1]))
		}
	}
	return strings.Join(arms, "|")
}

func writeBashCompletion(w io.Writer, nodes []completionNode) error {
	var b strings.Builder
	b.WriteString(`# bash completion for sluice; load it with: source <(sluice completion bash)
_sluice() {
    local cur="${COMP_WORDS[COMP_CWORD]}" path="" word i subs="" flags=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${COMP_WORDS[i]}"
        case "$path/$word" in
            ` + shellCases(nodes) + `) path="${path:+$path }$word" ;;
        esac
    done
    case "$path" in
`)
	for _, n := range nodes {
		fmt.Fprintf(&b, "        %q) subs=%q; flags=%q ;;\n", strings.Join(n.path, " "), strings.Join(n.subs, " "), n.flagNames())
	}
	b.WriteString(`    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    elif [[ -n $subs ]]; then
        COMPREPLY=($(compgen -W "$subs" -- "$cur"))
    else
        COMPREPLY=() # file names (complete -o default)
    fi
}
complete -o default -F _sluice sluice
`)
	_, err := io.WriteString(w, b.String())
	return err
}

func writeZshCompletion(w io.Writer, nodes []completionNode) error {
	var b strings.Builder
	b.WriteString(`#compdef sluice
# zsh completion for sluice; load it with: source <(sluice completion zsh)
# (or save it as _sluice in a directory of $fpath)
_sluice() {
    local p="" word i
    local -a subs flags
    for ((i = 2; i < CURRENT; i++)); do
        word="${words[i]}"
        case "$p/$word" in
            ` + shellCases(nodes) + `) p="${p:+$p }$word" ;;
        esac
    done
    case "$p" in
`)
	for _, n := range nodes {
		fmt.Fprintf(&b, "        %q) subs=(%s); flags=(%s) ;;\n", strings.Join(n.path, " "), strings.Join(n.subs, " "), n.flagNames())
	}
	b.WriteString(`    esac
    if [[ $PREFIX == -* ]]; then
        compadd -- $flags
    elif (( ${#subs} )); then
        compadd -- $subs
    else
        _files
    fi
}
if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
    _sluice "$@"
else
    compdef _sluice sluice
fi
`)
	_, err := io.WriteString(w, b.String())
	return err
}

func writeFishCompletion(w io.Writer, nodes []completionNode) error {
	quote := func(s string) string {
		return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
	}
	var b strings.Builder
	b.WriteString("# fish completion for sluice; load it with: sluice completion fish | source\ncomplete -c sluice -f\n")
	// condition: the words typed so far name this command and none of its subcommands.
	condition := func(n completionNode) string {
		if len(n.path) == 0 {
			return "__fish_use_subcommand"
		}
		var parts []string
		for _, name := range n.path {
			parts = append(parts, "__fish_seen_subcommand_from "+name)
		}
		if len(n.subs) > 0 {
			parts = append(parts, "not __fish_seen_subcommand_from "+strings.Join(n.subs, " "))
		}
		return strings.Join(parts, "; and ")
	}
	byPath := map[string]completionNode{}
	for _, n := range nodes {
		byPath[strings.Join(n.path, " ")] = n
	}
	for _, n := range nodes {
		cond := quote(condition(n))
		for _, s := range n.subs {
			sub := byPath[strings.TrimSpace(strings.Join(n.path, " ")+" "+s)]
			fmt.Fprintf(&b, "complete -c sluice -n %s -a %s -d %s\n", cond, s, quote(firstClause(sub.help)))
		}
		for _, f := range n.flags {
			opt := "-l " + strings.TrimPrefix(f.name, "--")
			if !strings.HasPrefix(f.name, "--") {
				opt = "-s " + strings.TrimPrefix(f.name, "-")
			}
			if f.value {
				opt += " -r"
			}
			fmt.Fprintf(&b, "complete -c sluice -n %s %s -d %s\n", cond, opt, quote(f.help))
		}
		if n.files {
			fmt.Fprintf(&b, "complete -c sluice -n %s -F\n", cond)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
