package devpg

import (
	"os"
	"path/filepath"
	"strings"
)

// URLFile, in dev's data directory, holds the URL of dev's database,
// password included (mode 0600): the tools and the harness find a running
// (or the last) dev there with no flag.
const URLFile = "database-url"

// WriteURL records url as dev's database URL in dataDir.
func WriteURL(dataDir, url string) error {
	return os.WriteFile(filepath.Join(dataDir, URLFile), []byte(url), 0o600)
}

// ReadURL is the database URL a running (or the last) dev wrote in
// dataDir, or "".
func ReadURL(dataDir string) string {
	raw, err := os.ReadFile(filepath.Join(dataDir, URLFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(raw))
}
