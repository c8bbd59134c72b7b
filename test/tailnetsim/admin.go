package tailnetsim

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// AdminHandler serves a small control API for driving the simulation from
// outside the process (cmd/tailnet-sim). Parameters are form or query values.
//
//	GET  /info                              Info as JSON
//	GET  /devices/{hostname}/fetch          url=http://...: GET from that device's tsnet node (Fetch), FetchResult as JSON
//	GET  /devices/{hostname}/load           url=http://...&rate=50&duration=40s: new connections from that device (Load), churn.Paced as JSON
//	POST /devices/{hostname}/http-status    code=500
//	POST /devices/{hostname}/grpc-serving   serving=false
//	POST /devices/{hostname}/online         online=false (really stops the node)
//	POST /devices/{hostname}/api-online     online=false|true|clear (API override only)
//	POST /api/errors                        status=429&count=3&duration=30s&retryAfter=5s&pathPrefix=...&html=1
//	POST /api/errors/clear
func (t *Tailnet) AdminHandler() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /info", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, t.Info())
	})
	m.HandleFunc("GET /devices/{hostname}/fetch", func(w http.ResponseWriter, r *http.Request) {
		res, err := t.Fetch(r.Context(), r.PathValue("hostname"), r.FormValue("url"))
		switch {
		case errors.Is(err, ErrFetchRequest):
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		case err != nil:
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		default:
			writeJSON(w, http.StatusOK, res)
		}
	})
	m.HandleFunc("GET /devices/{hostname}/load", func(w http.ResponseWriter, r *http.Request) {
		rate, err := strconv.Atoi(r.FormValue("rate"))
		if err != nil {
			adminReply(w, fmt.Errorf("rate: %w", err))
			return
		}
		duration, err := time.ParseDuration(r.FormValue("duration"))
		if err != nil {
			adminReply(w, fmt.Errorf("duration: %w", err))
			return
		}
		res, err := t.Load(r.Context(), r.PathValue("hostname"), r.FormValue("url"), rate, duration)
		if err != nil {
			adminReply(w, err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	m.HandleFunc("POST /devices/{hostname}/http-status", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.FormValue("code"))
		if err == nil {
			err = t.SetHTTPStatus(r.PathValue("hostname"), code)
		}
		adminReply(w, err)
	})
	m.HandleFunc("POST /devices/{hostname}/grpc-serving", func(w http.ResponseWriter, r *http.Request) {
		serving, err := strconv.ParseBool(r.FormValue("serving"))
		if err == nil {
			err = t.SetGRPCServing(r.PathValue("hostname"), serving)
		}
		adminReply(w, err)
	})
	m.HandleFunc("POST /devices/{hostname}/online", func(w http.ResponseWriter, r *http.Request) {
		online, err := strconv.ParseBool(r.FormValue("online"))
		if err == nil {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
			defer cancel()
			err = t.SetOnline(ctx, r.PathValue("hostname"), online)
		}
		adminReply(w, err)
	})
	m.HandleFunc("POST /devices/{hostname}/api-online", func(w http.ResponseWriter, r *http.Request) {
		host := r.PathValue("hostname")
		if _, err := t.Device(host); err != nil {
			adminReply(w, err)
			return
		}
		v := r.FormValue("online")
		if v == "clear" {
			t.ClearAPIOnline(host)
			adminReply(w, nil)
			return
		}
		online, err := strconv.ParseBool(v)
		if err == nil {
			t.SetAPIOnline(host, online)
		}
		adminReply(w, err)
	})
	m.HandleFunc("POST /api/errors", func(w http.ResponseWriter, r *http.Request) {
		e, err := parseInjection(r)
		if err == nil {
			t.InjectErrors(e)
		}
		adminReply(w, err)
	})
	m.HandleFunc("POST /api/errors/clear", func(w http.ResponseWriter, r *http.Request) {
		t.ClearErrorInjections()
		adminReply(w, nil)
	})
	return m
}

func parseInjection(r *http.Request) (ErrorInjection, error) {
	var e ErrorInjection
	var err error
	if e.Status, err = strconv.Atoi(r.FormValue("status")); err != nil {
		return e, fmt.Errorf("status: %w", err)
	}
	if v := r.FormValue("count"); v != "" {
		if e.Count, err = strconv.Atoi(v); err != nil {
			return e, fmt.Errorf("count: %w", err)
		}
	}
	for name, dst := range map[string]*time.Duration{"duration": &e.Duration, "retryAfter": &e.RetryAfter} {
		if v := r.FormValue(name); v != "" {
			if *dst, err = time.ParseDuration(v); err != nil {
				return e, fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	e.PathPrefix = r.FormValue("pathPrefix")
	if html, _ := strconv.ParseBool(r.FormValue("html")); html {
		e.Body, e.ContentType = HTMLErrorBody, "text/html"
	}
	return e, nil
}

func adminReply(w http.ResponseWriter, err error) {
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
