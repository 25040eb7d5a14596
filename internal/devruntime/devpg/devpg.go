// Package devpg runs a throwaway PostgreSQL server for `orderflow dev` and
// for tests that have no DATABASE_URL. It uses the local PostgreSQL
// installation when there is one (Debian's postgresql package, Homebrew, ...)
// and otherwise lets github.com/fergusstrange/embedded-postgres download one.
//
// initdb and postgres refuse to run as root. When this process is root the
// server processes run as the unprivileged user "nobody", and the cluster
// lives where that user can reach it.
package devpg

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	embeddedpostgres "github.com/fergusstrange/embedded-postgres"
	"github.com/jackc/pgx/v5"
)

// Options configure the server.
type Options struct {
	// Dir keeps the cluster between runs.
	Dir string
	// Port to listen on at 127.0.0.1; 0 picks a free one.
	Port int
	// BinDir holds initdb and pg_ctl; empty searches the usual places.
	BinDir string
	// Database is created on first start; "orderflow" when empty.
	Database string
	// Password, when set, is required of every connection (scram-sha-256,
	// TCP and socket alike); a cluster created before without one gets it.
	Password string
	// Log receives the server's output; discarded when nil.
	Log io.Writer
}

// Server is a running PostgreSQL.
type Server struct {
	URL  string
	stop func() error
}

// Stop shuts the server down (fast mode: open sessions are cut).
func (s *Server) Stop() error { return s.stop() }

// Start starts (and on first use creates) the cluster in opts.Dir.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Database == "" {
		opts.Database = "orderflow"
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.Port == 0 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		opts.Port = port
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", opts.Dir, err)
	}
	bin := opts.BinDir
	if bin == "" {
		bin = findLocalBinaries()
	}
	var srv *Server
	var err error
	if bin != "" {
		srv, err = startLocal(bin, opts)
	} else {
		srv, err = startDownloaded(opts)
	}
	if err != nil {
		return nil, err
	}
	if err := createDatabase(ctx, opts.Port, opts.Database, srv.URL); err != nil {
		_ = srv.Stop()
		return nil, err
	}
	return srv, nil
}

func startLocal(bin string, opts Options) (*Server, error) {
	dir, cred, err := clusterDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	run := func(name string, args ...string) error {
		// Not bound to ctx: a stop must still run while the caller shuts down.
		cmd := exec.Command(filepath.Join(bin, name), args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = io.MultiWriter(&out, opts.Log), io.MultiWriter(&out, opts.Log)
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
		}
		return nil
	}
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err != nil {
		if err := run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"); err != nil {
			return nil, err
		}
	}
	// A server left running by a killed predecessor holds the data directory.
	if _, err := os.Stat(filepath.Join(data, "postmaster.pid")); err == nil {
		if run("pg_ctl", "status", "-D", data) == nil {
			if err := run("pg_ctl", "stop", "-D", data, "-m", "fast", "-w"); err != nil {
				return nil, err
			}
		}
	}
	options := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s -c max_connections=200", opts.Port, dir)
	if err := run("pg_ctl", "start", "-w", "-t", "60", "-D", data, "-l", filepath.Join(dir, "postgres.log"), "-o", options); err != nil {
		return nil, err
	}
	srv := &Server{
		URL: serverURL(opts.Port, opts.Database, opts.Password),
		stop: func() error {
			return run("pg_ctl", "stop", "-D", data, "-m", "fast", "-w")
		},
	}
	if opts.Password != "" {
		if err := requirePassword(data, opts, cred); err != nil {
			_ = srv.Stop()
			return nil, err
		}
	}
	return srv, nil
}

func serverURL(port int, database, password string) string {
	u := url.URL{Scheme: "postgres", User: url.User("postgres"), Host: fmt.Sprintf("127.0.0.1:%d", port), Path: "/" + database, RawQuery: "sslmode=disable"}
	if password != "" {
		u.User = url.UserPassword("postgres", password)
	}
	return u.String()
}

// passwordHBA admits only connections that give the password.
const passwordHBA = `# written by orderflow dev: every connection needs the password
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
host  all all ::1/128 scram-sha-256
`

// requirePassword sets the superuser's password and makes the cluster ask
// for it, once: a cluster whose pg_hba.conf is orderflow's already has it.
func requirePassword(data string, opts Options, cred *syscall.Credential) error {
	hba := filepath.Join(data, "pg_hba.conf")
	current, err := os.ReadFile(hba)
	if err != nil {
		return err
	}
	if string(current) == passwordHBA {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, serverURL(opts.Port, "postgres", ""))
	if err != nil {
		return fmt.Errorf("set the dev PostgreSQL's password: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "ALTER ROLE postgres PASSWORD "+quoteLiteral(opts.Password)); err != nil {
		return fmt.Errorf("set the dev PostgreSQL's password: %w", err)
	}
	if err := os.WriteFile(hba, []byte(passwordHBA), 0o600); err != nil {
		return err
	}
	if cred != nil {
		if err := os.Chown(hba, int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
	}
	_, err = conn.Exec(ctx, "SELECT pg_reload_conf()")
	return err
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// clusterDir returns where the cluster lives and, when this process is root,
// the credentials of the unprivileged user that runs the server.
func clusterDir(dir string) (string, *syscall.Credential, error) {
	dir, err := filepath.Abs(filepath.Join(dir, "postgres"))
	if err != nil {
		return "", nil, err
	}
	if os.Geteuid() != 0 {
		return dir, nil, os.MkdirAll(dir, 0o700)
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return "", nil, fmt.Errorf("running as root needs the user nobody to run PostgreSQL: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if !reachableByOthers(filepath.Dir(dir)) {
		// e.g. under /root: keep the cluster in a per-directory place in /tmp instead.
		sum := sha256.Sum256([]byte(dir))
		dir = filepath.Join(os.TempDir(), "orderflow-pg-"+hex.EncodeToString(sum[:6]))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, err
	}
	if err := chownTree(dir, uid, gid); err != nil {
		return "", nil, err
	}
	return dir, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func reachableByOthers(dir string) bool {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == filepath.Dir(d) {
			return true
		}
	}
}

func chownTree(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// findLocalBinaries looks for initdb and pg_ctl where distributions put them.
func findLocalBinaries() string {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "pg_ctl"} {
			if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
				return false
			}
		}
		return true
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); has(dir) {
			return dir
		}
	}
	// Debian and Ubuntu: /usr/lib/postgresql/<major>/bin; take the newest.
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range append(dirs, "/usr/local/pgsql/bin", "/opt/homebrew/bin", "/usr/local/bin") {
		if has(d) {
			return d
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p)
	}
	return ""
}

func startDownloaded(opts Options) (*Server, error) {
	if os.Geteuid() == 0 {
		return nil, errors.New("no local PostgreSQL found, and a downloaded one cannot run as root: " +
			"install PostgreSQL (e.g. apt-get install postgresql) or set DATABASE_URL")
	}
	dir, err := filepath.Abs(filepath.Join(opts.Dir, "postgres-download"))
	if err != nil {
		return nil, err
	}
	pg := embeddedpostgres.NewDatabase(embeddedpostgres.DefaultConfig().
		Version(embeddedpostgres.V16).
		Port(uint32(opts.Port)).
		Database("postgres").
		CachePath(filepath.Join(dir, "cache")).
		RuntimePath(filepath.Join(dir, "runtime")).
		DataPath(filepath.Join(dir, "data")).
		StartTimeout(60 * time.Second).
		Password(cmp.Or(opts.Password, "postgres")).
		Logger(opts.Log))
	if err := pg.Start(); err != nil {
		return nil, fmt.Errorf("start downloaded PostgreSQL: %w", err)
	}
	return &Server{
		URL:  serverURL(opts.Port, opts.Database, cmp.Or(opts.Password, "postgres")),
		stop: pg.Stop,
	}, nil
}

func createDatabase(ctx context.Context, port int, name, url string) error {
	admin := strings.Replace(url, "/"+name+"?", "/postgres?", 1)
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect to dev PostgreSQL on port %d: %w", port, err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			return fmt.Errorf("create database %s: %w", name, err)
		}
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
