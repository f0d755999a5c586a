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
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v9.8.7-test", "-o", bin, "../cmd/sluice")
	if out, err := build.CombinedOutput(); err != nil {
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

// The bash script completes commands, subcommands and flags the way bash asks for
// them (COMP_WORDS, COMP_CWORD); zsh and fish list the same.
func TestCLICompletion(t *testing.T) {
	script, _, code := sluiceRun(t, sluiceBin, nil, "completion", "bash")
	if code != 0 {
		t.Fatalf("completion bash: exit %d", code)
	}
	file := filepath.Join(t.TempDir(), "sluice.bash")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) []string {
		t.Helper()
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = strconv.Quote(w)
		}
		prog := "source " + file + "; COMP_WORDS=(" + strings.Join(quoted, " ") + "); COMP_CWORD=" +
			strconv.Itoa(len(words)-1) + `; _sluice; printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.Command("bash", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.Fields(string(out))
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
		{[]string{"sluice", "admin", "releases", "r"}, "replay"},
		{[]string{"sluice", "get", "demo/hello.txt", "--conn"}, "--connections"},
		{[]string{"sluice", "publish", "--ch"}, "--channel"},
		{[]string{"sluice", "--ver"}, "--version"},
		{[]string{"sluice", "completion", ""}, "bash fish zsh"},
		{[]string{"sluice", "get", "x"}, ""}, // file names, from bash itself
	} {
		got := complete(tc.words...)
		slices.Sort(got)
		if strings.Join(got, " ") != tc.want {
			t.Errorf("completing %q: %q, want %q", tc.words, got, tc.want)
		}
	}

	zsh, _, _ := sluiceRun(t, sluiceBin, nil, "completion", "zsh")
	fish, _, _ := sluiceRun(t, sluiceBin, nil, "completion", "fish")
	for _, want := range []string{"#compdef sluice", `"admin") subs=(stats limits pause resume workers releases)`, "--connections", "compdef _sluice sluice"} {
		if !strings.Contains(zsh, want) {
			t.Errorf("zsh completion lacks %q", want)
		}
	}
	for _, want := range []string{
		"complete -c sluice -n '__fish_use_subcommand' -a get",
		"complete -c sluice -n '__fish_seen_subcommand_from admin; and not __fish_seen_subcommand_from stats limits pause resume workers releases' -a stats",
		"complete -c sluice -n '__fish_seen_subcommand_from get' -l connections -r",
		"complete -c sluice -n '__fish_seen_subcommand_from publish' -F",
	} {
		if !strings.Contains(fish, want) {
			t.Errorf("fish completion lacks %q", want)
		}
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
