package main

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// cpuMeter reads the CPU time spent so far by each party of a bench run on
// this host: the measured orderflow process (its process_cpu_seconds_total
// on /metrics: API, projector, saga worker and, under dev, the Temporal
// server), the bench process itself (the bound's worker), and PostgreSQL's
// processes, each backend under its database. Read before and after a run,
// the differences divided by the sagas run are CPU per saga, where the
// time goes beside the rates. PostgreSQL is read from /proc: on another
// host it is left out.
type cpuMeter struct {
	metricsURL string
	conn       *pgx.Conn // to find PostgreSQL's processes and their databases
	postmaster int
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on
// every Linux architecture Go builds for.
const clockTicks = 100

func newCPUMeter(ctx context.Context, metricsURL, databaseURL string) *cpuMeter {
	m := &cpuMeter{metricsURL: metricsURL}
	if databaseURL == "" {
		return m
	}
	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		return m
	}
	var backend int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		conn.Close(ctx)
		return m
	}
	if st, err := procStat(backend); err == nil {
		m.conn, m.postmaster = conn, st.ppid
	} else {
		conn.Close(ctx) // PostgreSQL on another host
	}
	return m
}

func (m *cpuMeter) close(ctx context.Context) {
	if m.conn != nil {
		m.conn.Close(ctx)
	}
}

// sample returns seconds of CPU by party.
func (m *cpuMeter) sample(ctx context.Context) map[string]float64 {
	out := map[string]float64{}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		out["bench process (the bound's worker)"] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	if s, ok := processCPU(ctx, m.metricsURL); ok {
		out["orderflow process"] = s
	}
	if m.conn == nil {
		return out
	}
	dbs := map[int]string{}
	if rows, err := m.conn.Query(ctx, `SELECT pid, coalesce(datname, '') FROM pg_stat_activity`); err == nil {
		for rows.Next() {
			var pid int
			var db string
			if rows.Scan(&pid, &db) == nil && db != "" {
				dbs[pid] = db
			}
		}
		rows.Close()
	}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		st, err := procStat(pid)
		if err != nil || (pid != m.postmaster && st.ppid != m.postmaster) {
			continue
		}
		party := "PostgreSQL: background (WAL, checkpoints, vacuum)"
		if db, ok := dbs[pid]; ok {
			party = "PostgreSQL: database " + db
		}
		out[party] += st.cpu
	}
	return out
}

// printCPU prints CPU per workflow between two samples, largest first.
func printCPU(before, after map[string]float64, runs int) {
	var parties []string
	total := 0.0
	for p := range after {
		if after[p]-before[p] > 0 {
			parties = append(parties, p)
			total += after[p] - before[p]
		}
	}
	slices.SortFunc(parties, func(a, b string) int {
		return cmp.Compare(after[b]-before[b], after[a]-before[a])
	})
	for _, p := range parties {
		fmt.Printf("    %-52s %6.1f ms\n", p, (after[p]-before[p])*1000/float64(runs))
	}
	fmt.Printf("    %-52s %6.1f ms\n", "all of the above", total*1000/float64(runs))
}

type pstat struct {
	ppid int
	cpu  float64 // utime + stime, seconds
}

// procStat reads /proc/<pid>/stat: its fields after the command name (which
// may hold spaces) are state, ppid, ... utime (14th field), stime (15th).
func procStat(pid int) (pstat, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return pstat{}, err
	}
	i := strings.LastIndexByte(string(raw), ')')
	if i < 0 {
		return pstat{}, fmt.Errorf("pid %d: unreadable stat", pid)
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return pstat{}, fmt.Errorf("pid %d: short stat", pid)
	}
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return pstat{ppid: ppid, cpu: (ut + st) / clockTicks}, nil
}

// processCPU reads process_cpu_seconds_total from a Prometheus endpoint.
func processCPU(ctx context.Context, url string) (float64, bool) {
	if url == "" {
		return 0, false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "process_cpu_seconds_total "); ok {
			s, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return s, err == nil
		}
	}
	return 0, false
}

// fetchProfile writes a 10 s CPU profile of the pprof server at base to out.
func fetchProfile(ctx context.Context, base, out string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/debug/pprof/profile?seconds=10", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", base, resp.Status)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
