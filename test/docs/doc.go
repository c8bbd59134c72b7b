// Package docs holds the checks that keep the repository and its documentation true: the
// repository hygiene script fails on what it must refuse, relative links in README.md and docs/
// resolve, and the commands the documentation shows (make targets, flags, paths) exist.
package docs
