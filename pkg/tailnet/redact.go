package tailnet

import (
	"encoding/base64"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// maxLearned bounds how many credentials seen on the wire (bearer tokens rotate) a redactor keeps.
const maxLearned = 32

// redacted replaces every credential removed from a message.
const redacted = "[REDACTED]"

// Patterns that look like credentials whoever they belong to.
var secretPatterns = []*regexp.Regexp{
	// Tailscale keys of every kind: tskey-api-, tskey-client-, tskey-auth-, ...
	regexp.MustCompile(`tskey-[A-Za-z0-9_-]+`),
	// Authorization header values.
	regexp.MustCompile(`(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+`),
	// Form or query parameters and JSON fields holding secrets.
	regexp.MustCompile(`(?i)\b(client_secret|access_token|refresh_token|api_key|apikey|password|token)\b(["']?\s*[:=]\s*["']?)[^"'&\s,}]+`),
}

// redactor removes credentials from text: the exact secrets it was told about or saw in
// Authorization headers, and anything shaped like a credential.
type redactor struct {
	mu      sync.RWMutex
	static  []string
	learned []string
	all     []string // static and learned, longest first so no secret is left half-replaced
}

func newRedactor(secrets ...string) *redactor {
	r := &redactor{}
	for _, s := range secrets {
		r.static = appendVariants(r.static, s)
	}
	r.rebuild()
	return r
}

// rebuild refreshes all; callers hold mu for writing (or own r exclusively).
func (r *redactor) rebuild() {
	r.all = append(append(r.all[:0:0], r.static...), r.learned...)
	slices.SortFunc(r.all, func(a, b string) int { return len(b) - len(a) })
}

// appendVariants adds s and its encoded forms (URL-escaped, base64 as in Basic auth) and, for
// a Tailscale key "tskey-<kind>-<rest>", the key material without its prefix.
func appendVariants(dst []string, s string) []string {
	if len(s) < 4 { // too short to be a credential; redacting it would mangle messages
		return dst
	}
	dst = append(dst, s, url.QueryEscape(s), base64.StdEncoding.EncodeToString([]byte(s+":")))
	if rest, ok := strings.CutPrefix(s, "tskey-"); ok {
		if _, material, ok := strings.Cut(rest, "-"); ok && len(material) >= 8 {
			dst = append(dst, material)
		}
	}
	return dst
}

// learnAuthorization records the credential in an Authorization header value.
func (r *redactor) learnAuthorization(h string) {
	if r == nil || h == "" {
		return
	}
	scheme, cred, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok {
		scheme, cred = "", scheme
	}
	cred = strings.TrimSpace(cred)
	add := []string{cred}
	if strings.EqualFold(scheme, "basic") {
		if dec, err := base64.StdEncoding.DecodeString(cred); err == nil {
			user, pass, _ := strings.Cut(string(dec), ":")
			add = append(add, user, pass)
		}
	}
	r.learn(add...)
}

// learn records secrets seen at run time, such as tokens and created auth keys.
func (r *redactor) learn(secrets ...string) {
	if r == nil {
		return
	}
	var add []string
	for _, s := range secrets {
		add = appendVariants(add, s)
	}
	if len(add) == 0 || r.knows(add) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, a := range add {
		if !slices.Contains(r.static, a) && !slices.Contains(r.learned, a) {
			r.learned = append(r.learned, a)
		}
	}
	if n := len(r.learned); n > maxLearned {
		r.learned = append(r.learned[:0:0], r.learned[n-maxLearned:]...)
	}
	r.rebuild()
}

// knows reports whether every entry of add is already recorded.
func (r *redactor) knows(add []string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, a := range add {
		if !slices.Contains(r.all, a) {
			return false
		}
	}
	return true
}

// redact returns s without credentials. A nil redactor still applies the patterns.
func (r *redactor) redact(s string) string {
	if s == "" {
		return s
	}
	if r != nil {
		r.mu.RLock()
		for _, secret := range r.all {
			s = strings.ReplaceAll(s, secret, redacted)
		}
		r.mu.RUnlock()
	}
	for _, p := range secretPatterns {
		s = p.ReplaceAllStringFunc(s, redactMatch(p))
	}
	return s
}

// redactMatch keeps a pattern's leading keyword and separator so messages stay readable.
func redactMatch(p *regexp.Regexp) func(string) string {
	return func(m string) string {
		sub := p.FindStringSubmatch(m)
		switch len(sub) {
		case 2: // bearer|basic
			return sub[1] + " " + redacted
		case 3: // key, separator
			return sub[1] + sub[2] + redacted
		}
		return redacted
	}
}
