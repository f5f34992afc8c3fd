// Command petsage-bench-watchers opens many grpc.health.v1 Watch streams from
// one grpc-go client process, driven by bench/run.py over stdin/stdout, so the
// benchmark's fan-out rows are limited by the server, not by the client:
//
//	petsage-bench-watchers ADDRESS COUNT CONNECTIONS
//
// It opens COUNT Watch streams of "" in one burst, spread over CONNECTIONS
// connections, and prints one JSON line once every stream has its first status
// (or 120 s passed): {"opened", "failed": {code: n}, "first_all_s"}. Then it
// reads commands from stdin, each answered with one JSON line:
//
//	expect STATUS SECONDS [CANCEL]  cancel CANCEL open streams at once, then
//	                                wait until every other stream's latest
//	                                status is STATUS: {"arrivals": [CLOCK_MONOTONIC
//	                                seconds], "missing": n, "received": n}
//	quit                            close everything and exit
//
// "received" counts every message of every stream since the previous answer.
// Times are CLOCK_MONOTONIC seconds, Python's time.monotonic() on the same
// machine.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func monotonic() float64 {
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
		panic(err)
	}
	return float64(now.Sec) + float64(now.Nsec)/1e9
}

// stream is one Watch stream; every field is guarded by the watchers' lock.
type stream struct {
	cancel context.CancelFunc
	latest healthpb.HealthCheckResponse_ServingStatus
	has    bool   // a status arrived
	code   string // set once the stream ended
	seenAt map[healthpb.HealthCheckResponse_ServingStatus]float64
}

type watchers struct {
	mu       sync.Mutex
	changed  *sync.Cond
	streams  []*stream
	received int
}

func (w *watchers) follow(s *stream, client healthpb.HealthClient, ctx context.Context) {
	call, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: ""}, grpc.WaitForReady(true))
	for err == nil {
		var response *healthpb.HealthCheckResponse
		response, err = call.Recv()
		if err != nil {
			break
		}
		at := monotonic()
		w.mu.Lock()
		s.latest, s.has = response.Status, true
		if _, seen := s.seenAt[response.Status]; !seen {
			s.seenAt[response.Status] = at
		}
		w.received++
		w.changed.Broadcast()
		w.mu.Unlock()
	}
	w.mu.Lock()
	s.code = status.Code(err).String()
	w.changed.Broadcast()
	w.mu.Unlock()
}

// waitUntil waits, at most until deadline, for done() (called under the lock).
func (w *watchers) waitUntil(deadline time.Time, done func() bool) {
	timer := time.AfterFunc(time.Until(deadline), func() {
		w.mu.Lock()
		w.changed.Broadcast()
		w.mu.Unlock()
	})
	defer timer.Stop()
	for !done() && time.Now().Before(deadline) {
		w.changed.Wait()
	}
}

func say(value any) {
	line, _ := json.Marshal(value)
	fmt.Println(string(line))
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: petsage-bench-watchers ADDRESS COUNT CONNECTIONS")
		os.Exit(2)
	}
	address := os.Args[1]
	count, err1 := strconv.Atoi(os.Args[2])
	connections, err2 := strconv.Atoi(os.Args[3])
	if err1 != nil || err2 != nil || count < 1 || connections < 1 {
		fmt.Fprintln(os.Stderr, "COUNT and CONNECTIONS must be positive integers")
		os.Exit(2)
	}
	var clients []healthpb.HealthClient
	for i := 0; i < connections; i++ {
		conn, err := grpc.Dial(address, grpc.WithInsecure(),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<20)))
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			os.Exit(1)
		}
		defer conn.Close()
		clients = append(clients, healthpb.NewHealthClient(conn))
	}

	w := &watchers{}
	w.changed = sync.NewCond(&w.mu)
	started := monotonic()
	for i := 0; i < count; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		s := &stream{cancel: cancel, seenAt: map[healthpb.HealthCheckResponse_ServingStatus]float64{}}
		w.streams = append(w.streams, s)
		go w.follow(s, clients[i%connections], ctx)
	}

	w.mu.Lock()
	w.waitUntil(time.Now().Add(120*time.Second), func() bool {
		for _, s := range w.streams {
			if !s.has && s.code == "" {
				return false
			}
		}
		return true
	})
	failed := map[string]int{}
	opened := 0
	for _, s := range w.streams {
		if s.has {
			opened++
		} else if s.code != "" {
			failed[s.code]++
		} else {
			failed["NO_STATUS"]++
		}
	}
	w.received = 0
	w.mu.Unlock()
	say(map[string]any{"opened": opened, "failed": failed, "first_all_s": monotonic() - started})

	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		command := strings.Fields(lines.Text())
		if len(command) == 0 {
			continue
		}
		if command[0] == "quit" {
			break
		}
		if command[0] != "expect" || len(command) < 3 {
			say(map[string]any{"error": "unknown command"})
			continue
		}
		want, known := healthpb.HealthCheckResponse_ServingStatus_value[command[1]]
		seconds, err := strconv.ParseFloat(command[2], 64)
		cancelCount := 0
		if len(command) > 3 {
			cancelCount, _ = strconv.Atoi(command[3])
		}
		if !known || err != nil {
			say(map[string]any{"error": "bad expect"})
			continue
		}
		status := healthpb.HealthCheckResponse_ServingStatus(want)
		w.mu.Lock()
		var waiting []*stream
		for _, s := range w.streams {
			if !s.has || s.code != "" {
				continue
			}
			if cancelCount > 0 {
				cancelCount--
				s.cancel()
				continue
			}
			waiting = append(waiting, s)
		}
		w.waitUntil(time.Now().Add(time.Duration(seconds*float64(time.Second))), func() bool {
			for _, s := range waiting {
				if s.latest != status && s.code == "" {
					return false
				}
			}
			return true
		})
		arrivals := []float64{}
		for _, s := range waiting {
			if at, seen := s.seenAt[status]; seen && s.latest == status {
				arrivals = append(arrivals, at)
			}
			s.seenAt = map[healthpb.HealthCheckResponse_ServingStatus]float64{}
		}
		received := w.received
		w.received = 0
		w.mu.Unlock()
		say(map[string]any{"arrivals": arrivals, "missing": len(waiting) - len(arrivals), "received": received})
	}
	w.mu.Lock()
	for _, s := range w.streams {
		s.cancel()
	}
	w.mu.Unlock()
}
