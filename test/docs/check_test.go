package docs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"unicode"
)

// Flags are the flags each of our commands registers, by command name.
type Flags map[string]map[string]bool

// page is a Markdown file split into prose and code.
type page struct {
	path string // relative to the repository root, with slashes
	// prose holds the lines outside fenced code blocks, code the lines inside them, each with
	// its 1-based line number.
	prose, code []line
}

type line struct {
	n    int
	text string
}

var (
	linkRE       = regexp.MustCompile(`\[[^\]]*\]\(([^()\s]+)\)`)
	inlineCodeRE = regexp.MustCompile("`([^`]+)`")
	makeRE       = regexp.MustCompile(`(?:^|[\s;&|(])make\s+([a-z][a-z0-9-]*)`)
	targetRE     = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9_.-]*)\s*:([^=]|$)`)
	flagRE       = regexp.MustCompile(`^--?([a-z0-9][a-z0-9-]*)`)
	headingRE    = regexp.MustCompile(`^ {0,3}#{1,6}\s+(.*)$`)
	shellOpRE    = regexp.MustCompile(`&&|\|\||[;|&(]`)
	helpFlagRE   = regexp.MustCompile(`^\s+(?:-[A-Za-z0-9], )?--?([a-z0-9][a-z0-9-]*)`)
)

// repoDirs are the top-level entries whose paths the documentation may name.
var repoDirs = []string{"artifacts/", "cmd/", "docs/", "examples/", "hack/", "pkg/", "test/"}

var repoFiles = map[string]bool{"Makefile": true, "Dockerfile": true, "go.mod": true, "go.sum": true,
	"LICENSE": true, "CHANGELOG.md": true, "README.md": true}

func readPage(root, rel string) (page, error) {
	f, err := os.Open(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		return page{}, err
	}
	defer f.Close()
	p := page{path: rel}
	fence := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		t := sc.Text()
		trimmed := strings.TrimSpace(t)
		switch {
		case fence == "" && (strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~")):
			fence = trimmed[:3]
		case fence != "" && strings.HasPrefix(trimmed, fence):
			fence = ""
		case fence != "":
			p.code = append(p.code, line{n, t})
		default:
			p.prose = append(p.prose, line{n, t})
		}
	}
	return p, sc.Err()
}

// Anchors returns the anchors GitHub gives the headings of a page: the heading text without
// Markdown, lowercased, with everything but letters, marks, digits, '_', '-' and spaces removed
// and spaces turned into '-'; a repeated anchor gets -1, -2, ... appended.
func anchors(p page) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	for _, l := range p.prose {
		m := headingRE.FindStringSubmatch(l.text)
		if m == nil {
			continue
		}
		text := strings.TrimSpace(strings.TrimRight(m[1], "#"))
		a := slug(text)
		if n, ok := seen[a]; ok {
			seen[a] = n + 1
			a = fmt.Sprintf("%s-%d", a, n+1)
		} else {
			seen[a] = 0
		}
		out[a] = true
	}
	return out
}

func slug(heading string) string {
	heading = linkRE.ReplaceAllStringFunc(heading, func(m string) string { return m[1:strings.Index(m, "](")] })
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r), unicode.IsMark(r), unicode.IsDigit(r), r == '_', r == '-':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

// makeTargets returns the targets the Makefile at root defines.
func makeTargets(root string) (map[string]bool, error) {
	data, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, l := range strings.Split(string(data), "\n") {
		if m := targetRE.FindStringSubmatch(l); m != nil && !strings.HasPrefix(m[1], ".") {
			out[m[1]] = true
		}
	}
	return out, nil
}

// markdownFiles returns README.md and every .md file under docs/, relative to root.
func markdownFiles(root string) ([]string, error) {
	files := []string{"README.md"}
	err := filepath.WalkDir(filepath.Join(root, "docs"), func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".md") {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(files[1:])
	return files, err
}

// Check returns every problem of the documentation under root: relative links (and their
// #anchors) that point at nothing, `make` targets the Makefile lacks, flags shown for our
// commands that they do not register, and repository paths that do not exist.
func Check(root string, files []string, flags Flags) ([]string, error) {
	targets, err := makeTargets(root)
	if err != nil {
		return nil, err
	}
	pages := map[string]page{}
	for _, f := range files {
		p, err := readPage(root, f)
		if err != nil {
			return nil, err
		}
		pages[f] = p
	}
	var problems []string
	report := func(p page, l line, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s:%d: %s", p.path, l.n, fmt.Sprintf(format, args...)))
	}
	anyFlag := map[string]bool{}
	for _, fs := range flags {
		for f := range fs {
			anyFlag[f] = true
		}
	}

	for _, f := range files {
		p := pages[f]
		for _, l := range p.prose {
			// Links, outside inline code.
			for _, m := range linkRE.FindAllStringSubmatch(inlineCodeRE.ReplaceAllString(l.text, ""), -1) {
				if msg := checkLink(root, p, m[1], pages); msg != "" {
					report(p, l, "%s", msg)
				}
			}
			for _, span := range inlineCodeRE.FindAllStringSubmatch(l.text, -1) {
				for _, msg := range checkCommand(root, span[1], targets, flags, anyFlag, true) {
					report(p, l, "%s", msg)
				}
			}
		}
		for _, cmd := range joinContinuations(p.code) {
			for _, msg := range checkCommand(root, cmd.text, targets, flags, anyFlag, false) {
				report(p, cmd, "%s", msg)
			}
		}
	}
	return problems, nil
}

// checkLink returns why a link of page p points at nothing, or "".
func checkLink(root string, p page, target string, pages map[string]page) string {
	if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
		return ""
	}
	path, anchor, _ := strings.Cut(target, "#")
	rel := p.path
	if path != "" {
		rel = filepath.ToSlash(filepath.Clean(filepath.Join(filepath.Dir(p.path), path)))
		if strings.HasPrefix(rel, "../") {
			return fmt.Sprintf("link %s leaves the repository", target)
		}
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(rel))); err != nil {
			return fmt.Sprintf("link %s: %s does not exist", target, rel)
		}
	}
	if anchor == "" {
		return ""
	}
	tp, ok := pages[rel]
	if !ok {
		if !strings.HasSuffix(rel, ".md") {
			return fmt.Sprintf("link %s: an anchor into a file that is not Markdown", target)
		}
		var err error
		if tp, err = readPage(root, rel); err != nil {
			return fmt.Sprintf("link %s: %v", target, err)
		}
	}
	if !anchors(tp)[anchor] {
		return fmt.Sprintf("link %s: %s has no heading with anchor #%s", target, rel, anchor)
	}
	return ""
}

// joinContinuations joins code lines ending in a backslash with the next, and drops comments.
func joinContinuations(code []line) []line {
	var out []line
	var cur *line
	for _, l := range code {
		t := l.text
		if i := strings.Index(t, " #"); i >= 0 {
			t = t[:i]
		}
		if strings.HasPrefix(strings.TrimSpace(t), "#") {
			t = ""
		}
		if cur == nil {
			cur = &line{l.n, ""}
		}
		cont := strings.HasSuffix(strings.TrimSpace(t), "\\")
		cur.text += " " + strings.TrimSuffix(strings.TrimSpace(t), "\\")
		if !cont {
			out = append(out, *cur)
			cur = nil
		}
	}
	if cur != nil {
		out = append(out, *cur)
	}
	return out
}

// checkCommand checks one command line or inline code span: make targets, the flags of our
// commands, repository paths. A span of prose that is only a flag (`--name`, `--name=value`,
// `--prefix-*`) must be a flag of one of our commands.
func checkCommand(root, text string, targets map[string]bool, flags Flags, anyFlag map[string]bool, prose bool) []string {
	var problems []string
	for _, m := range makeRE.FindAllStringSubmatch(text, -1) {
		if !targets[m[1]] {
			problems = append(problems, fmt.Sprintf("make %s: no such Makefile target", m[1]))
		}
	}
	fields := strings.Fields(text)
	if prose && len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
		name := strings.SplitN(strings.TrimPrefix(fields[0], "--"), "=", 2)[0]
		if strings.HasSuffix(name, "*") {
			prefix := strings.TrimSuffix(name, "*")
			found := false
			for f := range anyFlag {
				found = found || strings.HasPrefix(f, prefix)
			}
			if !found {
				problems = append(problems, fmt.Sprintf("--%s: no flag of ours has this prefix", name))
			}
		} else if !anyFlag[name] {
			problems = append(problems, fmt.Sprintf("--%s: not a flag of any of our commands", name))
		}
	}
	// Each command of a line (split on shell operators) that runs one of ours.
	for _, segment := range shellOpRE.Split(text, -1) {
		words := strings.Fields(segment)
		for len(words) > 0 && (words[0] == "$" || strings.Contains(words[0], "=") && !strings.HasPrefix(words[0], "-")) {
			words = words[1:]
		}
		if len(words) == 0 {
			continue
		}
		fs, ours := flags[filepath.Base(words[0])]
		if !ours {
			continue
		}
		for _, w := range words[1:] {
			m := flagRE.FindStringSubmatch(w)
			if m == nil || strings.HasPrefix(w, "-test.") {
				continue
			}
			if !fs[m[1]] {
				problems = append(problems, fmt.Sprintf("%s %s: %s registers no flag %q", words[0], w, filepath.Base(words[0]), m[1]))
			}
		}
	}
	for _, f := range fields {
		f = strings.TrimSuffix(strings.TrimPrefix(strings.Trim(f, "\"'`,;:()[]"), "./"), "/...")
		f = strings.TrimRight(f, ".")
		if !isRepoPath(f) {
			continue
		}
		if matches, _ := filepath.Glob(filepath.Join(root, filepath.FromSlash(f))); len(matches) == 0 {
			problems = append(problems, fmt.Sprintf("%s: no such file or directory in the repository", f))
		}
	}
	return problems
}

// isRepoPath reports whether a word names a path in the repository (and not a placeholder).
func isRepoPath(w string) bool {
	if strings.ContainsAny(w, "<>{}$=") {
		return false
	}
	if repoFiles[w] {
		return true
	}
	for _, d := range repoDirs {
		if strings.HasPrefix(w, d) {
			return true
		}
	}
	return false
}

// parseHelp returns the flags a --help (pflag, cobra) or -h (Go's flag package) output lists.
func parseHelp(out string) map[string]bool {
	flags := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		if m := helpFlagRE.FindStringSubmatch(l); m != nil {
			flags[m[1]] = true
		}
	}
	return flags
}
