package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dl/sluice/internal/testenv"
)

// The manners of the command line that a user of gh or kubectl expects, checked on
// the built binary: --version, help on stdout with exit 0 for every command, usage
// errors that say where the help is, shell completion, errors that name the setting
// to change.

// sluiceRun runs bin with args in a clean environment plus env, to the end.
func sluiceRun(t *testing.T, bin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("sluice %v still running after 60s\nstdout:\n%s\nstderr:\n%s", args, out.String(), errb.String())
	}
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestCLIVersion(t *testing.T) {
	// The Makefile sets main.version; so does this build.
	bin := filepath.Join(t.TempDir(), "sluice")
	if out, err := testenv.GoBuild(bin, "-X main.version=v9.8.7-test").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"--version"}, {"-v"}, {"version"}} {
		out, errOut, code := sluiceRun(t, bin, nil, args...)
		if code != 0 || out != "sluice v9.8.7-test\n" || errOut != "" {
			t.Errorf("sluice %v: exit %d, stdout %q, stderr %q; want exit 0 and \"sluice v9.8.7-test\"", args, code, out, errOut)
		}
	}
}

var helpCommands = regexp.MustCompile(`(?m)^  ([a-z]+)  `)

// commandsIn lists the subcommands a help text names under COMMANDS.
func commandsIn(help string) []string {
	_, section, ok := strings.Cut(help, "\nCOMMANDS\n")
	if !ok {
		return nil
	}
	section, _, _ = strings.Cut(section, "\n\n")
	var names []string
	for _, m := range helpCommands.FindAllStringSubmatch(section+"\n", -1) {
		names = append(names, m[1])
	}
	return names
}

// Every command and subcommand, found by walking the help itself, answers -h, --help
// and `sluice help ...` on stdout with exit 0.
func TestCLIHelpOnStdoutForEveryCommand(t *testing.T) {
	var walk func(path []string)
	seen := 0
	walk = func(path []string) {
		var help string
		for _, flag := range []string{"-h", "--help"} {
			args := append(append([]string{}, path...), flag)
			out, errOut, code := sluiceRun(t, sluiceBin, nil, args...)
			if code != 0 || errOut != "" || !strings.Contains(out, "USAGE\n  sluice") {
				t.Fatalf("sluice %s: exit %d, stderr %q, stdout:\n%s", strings.Join(args, " "), code, errOut, out)
			}
			help = out
		}
		if len(path) > 0 {
			out, _, code := sluiceRun(t, sluiceBin, nil, append([]string{"help"}, path...)...)
			if code != 0 || out != help {
				t.Fatalf("sluice help %s: exit %d, not the same as --help:\n%s", strings.Join(path, " "), code, out)
			}
		}
		seen++
		for _, sub := range commandsIn(help) {
			walk(append(append([]string{}, path...), sub))
		}
	}
	walk(nil)
	// sluice; serve ingress worker edge publish get version; admin and its 6 (releases with its 2);
	// completion and its 3.
	if seen < 18 {
		t.Fatalf("help reached only %d commands; the walk lost its way", seen)
	}
	// A group without its subcommand shows its help too.
	if out, _, code := sluiceRun(t, sluiceBin, nil, "admin"); code != 0 || !strings.Contains(out, "COMMANDS") {
		t.Fatalf("sluice admin: exit %d\n%s", code, out)
	}
}

// A command line that cannot run exits 2 and says what is wrong and where the help is.
func TestCLIUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, `unknown command "bogus" (run 'sluice --help')`},
		{[]string{"admin", "bogus"}, `unknown command "bogus" (run 'sluice admin --help')`},
		{[]string{"get", "demo/hello.txt", "--bogus"}, `get: unknown flag --bogus (run 'sluice get --help')`},
		{[]string{"admin", "stats", "--timeout"}, `flag needs an argument`},
		{[]string{"get"}, "get takes one object key"},
		{[]string{"publish", "--channel", "stable"}, "name at least one FILE"},
		{[]string{"serve", "extra"}, "serve takes no arguments"},
		{[]string{"completion", "tcsh"}, `unknown command "tcsh"`},
	} {
		_, errOut, code := sluiceRun(t, sluiceBin, nil, tc.args...)
		if code != 2 || !strings.Contains(errOut, tc.want) {
			t.Errorf("sluice %s: exit %d, stderr %q; want exit 2 saying %q", strings.Join(tc.args, " "), code, errOut, tc.want)
		}
	}
	// A bad value in a variable names the variable.
	_, errOut, code := sluiceRun(t, sluiceBin, []string{"SLUICE_TIMEOUT=soon"}, "admin", "stats")
	if code != 2 || !strings.Contains(errOut, "SLUICE_TIMEOUT") {
		t.Errorf("SLUICE_TIMEOUT=soon: exit %d, stderr %q", code, errOut)
	}
}

// Each shell's script completes commands, subcommands and flags as that shell asks
// for them: bash through COMP_WORDS/COMP_CWORD, zsh through words/CURRENT/PREFIX (its
// compadd and _files stood in for, as they only run inside the line editor), fish
// through its own `complete -C`.
func TestCLICompletion(t *testing.T) {
	script := func(shell string) string {
		t.Helper()
		out, _, code := sluiceRun(t, sluiceBin, nil, "completion", shell)
		if code != 0 {
			t.Fatalf("completion %s: exit %d", shell, code)
		}
		file := filepath.Join(t.TempDir(), "sluice."+shell)
		if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		return file
	}
	run := func(shell, prog string) string {
		t.Helper()
		out, err := exec.Command(shell, "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", shell, err, out)
		}
		return string(out)
	}
	quoted := func(words []string) string {
		q := make([]string, len(words))
		for i, w := range words {
			q[i] = strconv.Quote(w)
		}
		return strings.Join(q, " ")
	}
	bash, zsh, fish := script("bash"), script("zsh"), script("fish")
	shells := map[string]func(words []string) []string{
		"bash": func(words []string) []string {
			return strings.Fields(run("bash", "source "+bash+"; COMP_WORDS=("+quoted(words)+"); COMP_CWORD="+
				strconv.Itoa(len(words)-1)+`; _sluice; printf '%s\n' "${COMPREPLY[@]}"`))
		},
		"zsh": func(words []string) []string {
			prefix := words[len(words)-1]
			out := run("zsh", `compdef() { :; }; compadd() { [[ $1 == -- ]] && shift; print -l -- "$@"; }; _files() { :; }
source `+zsh+"; words=("+quoted(words)+"); CURRENT="+strconv.Itoa(len(words))+"; PREFIX="+strconv.Quote(prefix)+"; _sluice")
			var got []string
			for _, c := range strings.Fields(out) { // the real compadd keeps those that match what was typed
				if strings.HasPrefix(c, prefix) {
					got = append(got, c)
				}
			}
			return got
		},
		"fish": func(words []string) []string {
			var got []string
			for _, line := range strings.Split(strings.TrimSpace(run("fish", "source "+fish+"; complete -C "+strconv.Quote(strings.Join(words, " ")))), "\n") {
				if c, _, _ := strings.Cut(line, "\t"); c != "" {
					got = append(got, c)
				}
			}
			return got
		},
	}
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{"sluice", ""}, "admin completion edge get health ingress init publish serve version worker"},
		{[]string{"sluice", "ad"}, "admin"},
		{[]string{"sluice", "admin", "st"}, "stats"},
		{[]string{"sluice", "admin", "--json", "l"}, "limits"},
		{[]string{"sluice", "admin", "stats", "--j"}, "--json"},
		{[]string{"sluice", "admin", "releases", ""}, "dead replay"},
		{[]string{"sluice", "admin", "releases", "dead", "--j"}, "--json"},
		{[]string{"sluice", "get", "demo/hello.txt", "--conn"}, "--connections"},
		{[]string{"sluice", "publish", "--ch"}, "--channel"},
		{[]string{"sluice", "--ver"}, "--version"},
		{[]string{"sluice", "completion", ""}, "bash fish zsh"},
		{[]string{"sluice", "get", "x"}, ""}, // an object key: nothing to offer
	} {
		for name, complete := range shells {
			got := complete(tc.words)
			slices.Sort(got)
			if strings.Join(got, " ") != tc.want {
				t.Errorf("%s completing %q: %q, want %q", name, tc.words, got, tc.want)
			}
		}
	}
	// publish takes files: each shell offers them there.
	if out := run("fish", "cd "+t.TempDir()+"; touch release.tar.gz; source "+fish+"; complete -C 'sluice publish rel'"); !strings.Contains(out, "release.tar.gz") {
		t.Errorf("fish offers no file names after publish: %q", out)
	}
}

// A server that is not there is named with the setting that names another.
func TestCLINamesTheServerSetting(t *testing.T) {
	nobody := "http://127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)) // nothing listens there
	env := []string{"SLUICE_SERVER=" + nobody, "SLUICE_API_KEY=slk_whatever"}
	for _, args := range [][]string{
		{"get", "demo/hello.txt", "--wait-max", "1s"},
		{"admin", "stats", "--timeout", "1s"},
	} {
		_, errOut, code := sluiceRun(t, sluiceBin, env, args...)
		if code != 7 || !strings.Contains(errOut, nobody) || !strings.Contains(errOut, "set --server or SLUICE_SERVER") {
			t.Errorf("sluice %s: exit %d, stderr:\n%s\nwant exit 7 naming %s and SLUICE_SERVER", strings.Join(args, " "), code, errOut, nobody)
		}
	}
	file := filepath.Join(t.TempDir(), "NOTES.txt")
	os.WriteFile(file, []byte("notes"), 0o644)
	_, errOut, code := sluiceRun(t, sluiceBin, append(env, "SLUICE_DATA_DIR="+t.TempDir()), "publish", file, "--wait", "1s")
	if code == 0 || !strings.Contains(errOut, "set --server or SLUICE_SERVER") {
		t.Errorf("sluice publish: exit %d, stderr:\n%s", code, errOut)
	}
}

// sluice serve says "sluice is ready" only once /readyz answers 200: with Redis down
// at the start it says what is failing instead, and "ready" once Redis is back. It
// says how to listen on every interface.
func TestCLIServeSaysReadyOnlyWhenReady(t *testing.T) {
	redis := testenv.StartRedis(t)
	redis.Stop() // down at the start; the same port comes back below
	api := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	proc := testenv.Start(t, t.TempDir(), sluiceBin, []string{
		"SLUICE_DATA_DIR=" + t.TempDir(),
		"SLUICE_INGRESS_ADDR=" + api,
		"SLUICE_EDGE_ADDR=127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
		"SLUICE_REDIS_URL=" + redis.URL,
		"SLUICE_DEMO=false",
	}, "serve")
	logText := func() string { b, _ := os.ReadFile(proc.Log); return string(b) }
	eventually(t, 30*time.Second, "serve names the failing check", func() bool {
		return strings.Contains(logText(), "not ready yet") && strings.Contains(logText(), `failing="ingress: redis"`)
	})
	if httpStatus("http://"+api+"/readyz") != 503 {
		t.Fatalf("/readyz does not answer 503 with Redis down; the test shows nothing\n%s", logText())
	}
	time.Sleep(2 * time.Second) // a few more rounds of checks
	if strings.Contains(logText(), "sluice is ready") {
		t.Fatalf("serve said it is ready while /readyz answers 503:\n%s", logText())
	}
	redis.Restart(t)
	eventually(t, 60*time.Second, "serve says it is ready once Redis is back", func() bool {
		return strings.Contains(logText(), "sluice is ready; try: curl")
	})
	if httpStatus("http://"+api+"/readyz") != 200 {
		t.Fatalf("said ready, but /readyz does not answer 200\n%s", logText())
	}
	if !strings.Contains(logText(), "SLUICE_INGRESS_ADDR=:8080") || !strings.Contains(logText(), "SLUICE_EDGE_ADDR=:8081") {
		t.Fatalf("serve on loopback does not say how to listen elsewhere:\n%s", logText())
	}
}
