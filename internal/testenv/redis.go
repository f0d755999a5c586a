package testenv

import (
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a real redis-server started for one test.
type Redis struct {
	*Process
	URL    string
	CAFile string // StartRedisTLS: the PEM of the CA its certificate is from

	bin, dir string
	port     int
}

// StartRedis starts redis-server on a random loopback port with no persistence and
// the noeviction policy the admission ledger requires.
func StartRedis(tb testing.TB) *Redis {
	tb.Helper()
	r := &Redis{
		bin:  Binary(tb, "redis-server", "SLUICE_REDIS_SERVER_BIN", "apt-get install -y redis-server"),
		port: FreePort(tb),
		dir:  tb.TempDir(),
	}
	r.launch(tb)
	r.URL = "redis://" + r.Addr + "/0"
	return r
}

func (r *Redis) launch(tb testing.TB) {
	tb.Helper()
	p := startProcess(tb, r.dir, r.bin, nil,
		"--bind", "127.0.0.1", "--port", strconv.Itoa(r.port), "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--maxmemory-policy", "noeviction")
	p.Addr = "127.0.0.1:" + strconv.Itoa(r.port)
	waitTCP(tb, p.Addr, 10*time.Second, p.Log)
	r.Process = p
}

// Restart starts redis-server again on the same port after Stop (a crash without
// persistence: it comes back empty). A running server is killed first.
func (r *Redis) Restart(tb testing.TB) {
	tb.Helper()
	r.Stop()
	r.launch(tb)
}

// Client returns a go-redis client for the server, closed at cleanup.
func (r *Redis) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	tb.Cleanup(func() { c.Close() })
	if err := c.Ping(context.Background()).Err(); err != nil {
		tb.Fatalf("ping redis %s: %v", describe(r.Process), err)
	}
	return c
}

// CommandStat is one command's line of Redis's INFO commandstats.
type CommandStat struct {
	Calls, Usec float64
}

var commandStatLine = regexp.MustCompile(`(?m)^cmdstat_(\w+):calls=(\d+),usec=(\d+)`)

// CommandStats reads how often Redis ran each command and for how long, in all, since
// it started or the last CONFIG RESETSTAT (INFO commandstats).
func CommandStats(tb testing.TB, rdb redis.UniversalClient) map[string]CommandStat {
	tb.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		tb.Fatal(err)
	}
	stats := map[string]CommandStat{}
	for _, m := range commandStatLine.FindAllStringSubmatch(info, -1) {
		calls, _ := strconv.ParseFloat(m[2], 64)
		usec, _ := strconv.ParseFloat(m[3], 64)
		stats[m[1]] = CommandStat{Calls: calls, Usec: usec}
	}
	return stats
}
