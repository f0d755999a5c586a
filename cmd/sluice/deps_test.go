package main

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluice-dl/sluice/internal/testenv"
	"github.com/sluice-dl/sluice/shared/certpool"
)

func TestRedisOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     serverConfig
		addrs   int
		master  string
		wantErr bool
	}{
		{"url", serverConfig{RedisURL: "redis://:pw@10.0.0.1:6380/2"}, 1, "", false},
		{"sentinel", serverConfig{RedisAddrs: "s1:26379, s2:26379", RedisMasterName: "main"}, 2, "main", false},
		{"cluster", serverConfig{RedisAddrs: "a:7000,b:7001,c:7002"}, 3, "", false},
		{"embedded", serverConfig{}, 0, "", false},
		{"both", serverConfig{RedisURL: "redis://x:1", RedisAddrs: "y:2"}, 0, "", true},
		{"bad url", serverConfig{RedisURL: "http://nope"}, 0, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := redisOptions(&tc.cfg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && (len(o.Addrs) != tc.addrs || o.MasterName != tc.master) {
				t.Fatalf("options %+v", o)
			}
		})
	}
	o, _ := redisOptions(&serverConfig{RedisURL: "redis://:pw@10.0.0.1:6380/2"})
	if o.Password != "pw" || o.DB != 2 || o.Addrs[0] != "10.0.0.1:6380" {
		t.Fatalf("URL parts lost: %+v", o)
	}
}

func TestRedisOptionsTLSUserAndCluster(t *testing.T) {
	ca := testenv.StartRedisTLS(t).CAFile // any PEM will do here
	for _, tc := range []struct {
		name    string
		cfg     serverConfig
		tls     bool
		cluster bool
		user    string
		wantErr bool
	}{
		{"addrs with TLS and a user", serverConfig{RedisAddrs: "r:6380", RedisTLS: true, RedisUsername: "app", RedisPassword: "pw"}, true, false, "app", false},
		{"a CA file implies TLS", serverConfig{RedisAddrs: "r:6380", RedisCAFile: ca}, true, false, "", false},
		{"one cluster endpoint", serverConfig{RedisAddrs: "cfg.cache:6379", RedisCluster: true}, false, true, "", false},
		{"url keeps its user", serverConfig{RedisURL: "rediss://u:p@r:6380/0", RedisUsername: "flag"}, true, false, "u", false},
		{"url without user takes the flag's", serverConfig{RedisURL: "redis://r:6380/0", RedisUsername: "flag", RedisTLS: true}, true, false, "flag", false},
		{"url in cluster mode", serverConfig{RedisURL: "redis://r:6380", RedisCluster: true}, false, true, "", false},
		{"cluster needs database 0", serverConfig{RedisURL: "redis://r:6380/3", RedisCluster: true}, false, false, "", true},
		{"cluster or sentinel", serverConfig{RedisAddrs: "s:26379", RedisMasterName: "m", RedisCluster: true}, false, false, "", true},
		{"CA file without a certificate", serverConfig{RedisAddrs: "r:6380", RedisCAFile: "deps_test.go"}, false, false, "", true},
		{"sentinel credentials without sentinel", serverConfig{RedisAddrs: "r:6380", RedisSentinelPassword: "pw"}, false, false, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := redisOptions(&tc.cfg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if (o.TLSConfig != nil) != tc.tls || o.IsClusterMode != tc.cluster || o.Username != tc.user {
				t.Fatalf("TLS %v cluster %v user %q; want %v %v %q", o.TLSConfig != nil, o.IsClusterMode, o.Username, tc.tls, tc.cluster, tc.user)
			}
		})
	}
	o, err := redisOptions(&serverConfig{RedisAddrs: "s1:26379,s2:26379", RedisMasterName: "main", RedisPassword: "master",
		RedisSentinelUsername: "watcher", RedisSentinelPassword: "sentinel"})
	if err != nil || o.SentinelUsername != "watcher" || o.SentinelPassword != "sentinel" || o.Password != "master" {
		t.Errorf("sentinel with its own credentials: %+v, %v", o, err)
	}
}

// A real redis-server answering TLS only, with an ACL user: reached with
// --redis-addrs, --redis-tls, --redis-ca-file, --redis-username and --redis-password,
// and with a rediss:// URL plus --redis-ca-file.
func TestRedisOverTLSWithAnACLUser(t *testing.T) {
	r := testenv.StartRedisTLS(t, "--user", "sluice", "on", ">s3cret", "~*", "&*", "+@all", "--user", "default", "off")
	for name, cfg := range map[string]serverConfig{
		"addrs": {RedisAddrs: r.Addr, RedisTLS: true, RedisCAFile: r.CAFile, RedisUsername: "sluice", RedisPassword: "s3cret"},
		"url":   {RedisURL: "rediss://sluice:s3cret@" + r.Addr + "/0", RedisCAFile: r.CAFile},
	} {
		t.Run(name, func(t *testing.T) {
			o, err := redisOptions(&cfg)
			if err != nil {
				t.Fatal(err)
			}
			rdb := redis.NewUniversalClient(o)
			defer rdb.Close()
			who, err := rdb.Do(t.Context(), "ACL", "WHOAMI").Text()
			if err != nil || who != "sluice" {
				t.Fatalf("ACL WHOAMI = %q, %v; want sluice", who, err)
			}
		})
	}
	for name, cfg := range map[string]serverConfig{
		"no CA":          {RedisAddrs: r.Addr, RedisTLS: true, RedisUsername: "sluice", RedisPassword: "s3cret"},
		"wrong password": {RedisAddrs: r.Addr, RedisCAFile: r.CAFile, RedisUsername: "sluice", RedisPassword: "nope"},
		"no TLS":         {RedisAddrs: r.Addr, RedisUsername: "sluice", RedisPassword: "s3cret"},
	} {
		t.Run(name, func(t *testing.T) {
			o, err := redisOptions(&cfg)
			if err != nil {
				t.Fatal(err)
			}
			o.MaxRetries, o.DialTimeout, o.ReadTimeout = -1, 2*time.Second, 2*time.Second
			rdb := redis.NewUniversalClient(o)
			defer rdb.Close()
			if err := rdb.Ping(t.Context()).Err(); err == nil {
				t.Fatal("PING succeeded, want a refusal")
			}
		})
	}
}

// --redis-cluster with a cluster's single endpoint speaks Cluster (follows its slot
// map), where one address alone would make a plain client.
func TestRedisClusterModeWithOneEndpoint(t *testing.T) {
	r := testenv.StartRedisTLS(t, "--cluster-enabled", "yes", "--tls-cluster", "yes",
		// A node that never met another one knows no address of its own to announce.
		"--cluster-announce-ip", "127.0.0.1")
	admin := redis.NewClient(&redis.Options{Addr: r.Addr, TLSConfig: mustTLS(t, r.CAFile)})
	defer admin.Close()
	ctx := t.Context()
	if err := admin.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", "0", "16383").Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, _ := admin.ClusterInfo(ctx).Result()
		if strings.Contains(info, "cluster_state:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok within 20s: %s", info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	o, err := redisOptions(&serverConfig{RedisAddrs: r.Addr, RedisCAFile: r.CAFile, RedisCluster: true})
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewUniversalClient(o)
	defer rdb.Close()
	if _, ok := rdb.(*redis.ClusterClient); !ok {
		t.Fatalf("--redis-cluster made a %T, want a *redis.ClusterClient", rdb)
	}
	if err := rdb.Set(ctx, "{sluice}probe", "1", time.Minute).Err(); err != nil {
		t.Fatalf("SET through the cluster client: %v", err)
	}
	if o, _ := redisOptions(&serverConfig{RedisAddrs: r.Addr}); o.IsClusterMode {
		t.Error("one address without --redis-cluster: want a plain client")
	}
}

func mustTLS(t *testing.T, caFile string) *tls.Config {
	t.Helper()
	pool, err := certpool.FromFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}
