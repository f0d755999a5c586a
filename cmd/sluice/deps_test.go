package main

import "testing"

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
