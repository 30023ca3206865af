package agent

import (
	"net/http"
	"strconv"

	"github.com/tabbynet/tabby/agent/localapi"
)

// registerDiagsAPI adds GET /logs to the local API. The lines come from the ring of
// the agent's logger (NewLogger keeps one); an agent whose logger keeps none answers
// 501.
func (a *Agent) registerDiagsAPI(mux *http.ServeMux) {
	ring := LogRingOf(a.log)
	mux.HandleFunc("GET "+localapi.PathLogs, func(w http.ResponseWriter, r *http.Request) {
		if ring == nil {
			writeJSON(w, http.StatusNotImplemented, localapi.Error{Error: "this agent keeps no recent log lines (its logger was not made by agent.NewLogger)"})
			return
		}
		n := 0
		if s := r.URL.Query().Get("lines"); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 0 {
				writeJSON(w, http.StatusBadRequest, localapi.Error{Error: "lines: " + strconv.Quote(s) + " is not a count of lines"})
				return
			}
			n = v
		}
		lines, dropped := ring.Snapshot(n)
		writeJSON(w, http.StatusOK, localapi.LogLines{Capacity: ring.Capacity(), Dropped: dropped, Lines: lines})
	})
	mux.HandleFunc(localapi.PathLogs, func(w http.ResponseWriter, r *http.Request) { // any other method
		w.Header().Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, localapi.Error{Error: "method " + r.Method + " not allowed: use GET"})
	})
}
