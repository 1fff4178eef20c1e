package dashboards

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeGrafana keeps folders and dashboards the way Grafana's HTTP API does
// for the calls Push makes, and fails the test on anything else.
type fakeGrafana struct {
	t     *testing.T
	token string

	mu             sync.Mutex
	folders        map[string]string // uid -> title
	folderCreates  int
	boards         map[string]savedBoard
	rejectAll      int // answer every request with this status when set
	unexpectedCall []string
}

type savedBoard struct {
	folderUID string
	version   int
	title     string
}

func newFakeGrafana(t *testing.T, token string) (*fakeGrafana, *httptest.Server) {
	f := &fakeGrafana{t: t, token: token, folders: map[string]string{}, boards: map[string]savedBoard{}}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeGrafana) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rejectAll != 0 {
		w.WriteHeader(f.rejectAll)
		w.Write([]byte(`{"message":"invalid API key"}`))
		return
	}
	if got := r.Header.Get("Authorization"); got != "Bearer "+f.token {
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"message":"unauthorized"}`))
		return
	}
	switch {
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/api/folders/"):
		uid := strings.TrimPrefix(r.URL.Path, "/api/folders/")
		if title, ok := f.folders[uid]; ok {
			json.NewEncoder(w).Encode(map[string]string{"uid": uid, "title": title})
			return
		}
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"message":"folder not found"}`))
	case r.Method == http.MethodPost && r.URL.Path == "/api/folders":
		var req struct{ UID, Title string }
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.UID == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if _, ok := f.folders[req.UID]; ok {
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"message":"a folder with the same uid already exists"}`))
			return
		}
		f.folders[req.UID] = req.Title
		f.folderCreates++
		json.NewEncoder(w).Encode(map[string]string{"uid": req.UID, "title": req.Title})
	case r.Method == http.MethodPost && r.URL.Path == "/api/dashboards/db":
		if r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusUnsupportedMediaType)
			return
		}
		var req struct {
			Dashboard map[string]any `json:"dashboard"`
			FolderUID string         `json:"folderUid"`
			Overwrite bool           `json:"overwrite"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		uid, _ := req.Dashboard["uid"].(string)
		title, _ := req.Dashboard["title"].(string)
		if _, ok := f.folders[req.FolderUID]; !ok {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"message":"folder not found"}`))
			return
		}
		prev, exists := f.boards[uid]
		if exists && !req.Overwrite {
			w.WriteHeader(http.StatusPreconditionFailed)
			w.Write([]byte(`{"message":"A dashboard with the same uid already exists","status":"name-exists"}`))
			return
		}
		f.boards[uid] = savedBoard{folderUID: req.FolderUID, version: prev.version + 1, title: title}
		json.NewEncoder(w).Encode(map[string]any{"status": "success", "uid": uid, "version": prev.version + 1})
	default:
		f.unexpectedCall = append(f.unexpectedCall, r.Method+" "+r.URL.Path)
		w.WriteHeader(http.StatusNotFound)
	}
}

func TestPushingTwiceLeavesOneFolderAndTheSameBoards(t *testing.T) {
	const token = "glsa_test_token"
	f, srv := newFakeGrafana(t, token)
	boards := generate(t, Options{})
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if err := Push(ctx, srv.URL+"/", token, boards, srv.Client()); err != nil {
			t.Fatalf("push %d: %v", i+1, err)
		}
	}
	if f.folderCreates != 1 || f.folders[FolderUID] != FolderTitle {
		t.Errorf("folder %q created %d times (folders %v); want once, titled %q", FolderUID, f.folderCreates, f.folders, FolderTitle)
	}
	if len(f.boards) != len(boards) {
		t.Errorf("Grafana holds %d boards after two pushes of %d", len(f.boards), len(boards))
	}
	for _, b := range boards {
		got, ok := f.boards[b.UID]
		switch {
		case !ok:
			t.Errorf("%s was not saved", b.UID)
		case got.folderUID != FolderUID || got.title != b.Title:
			t.Errorf("%s saved as %q in folder %q; want %q in %q", b.UID, got.title, got.folderUID, b.Title, FolderUID)
		case got.version != 2:
			t.Errorf("%s has version %d after two pushes; want 2 (overwritten in place)", b.UID, got.version)
		}
	}
	if len(f.unexpectedCall) > 0 {
		t.Errorf("push made calls outside the folder and dashboard API: %v", f.unexpectedCall)
	}
}

func TestPushIntoAnExistingFolderDoesNotCreateIt(t *testing.T) {
	f, srv := newFakeGrafana(t, "tok")
	f.folders[FolderUID] = FolderTitle
	if err := Push(context.Background(), srv.URL, "tok", generate(t, Options{}), srv.Client()); err != nil {
		t.Fatal(err)
	}
	if f.folderCreates != 0 {
		t.Errorf("push created the folder %d times although it existed", f.folderCreates)
	}
}

func TestARejectedPushSaysWhyWithoutTheToken(t *testing.T) {
	const token = "glsa_secret_value"
	for _, tc := range []struct {
		name   string
		status int
		want   string
	}{
		{"an invalid token is reported as unauthorized with a hint", http.StatusUnauthorized, "401 Unauthorized: invalid API key (check the API token"},
		{"a Grafana error names the status and Grafana's message", http.StatusInternalServerError, "500 Internal Server Error: invalid API key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, srv := newFakeGrafana(t, token)
			f.rejectAll = tc.status
			err := Push(context.Background(), srv.URL, token, generate(t, Options{}), srv.Client())
			if err == nil {
				t.Fatal("push succeeded against a Grafana that refuses everything")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("error %q carries the API token", err)
			}
		})
	}
}

func TestPushRefusesAURLThatIsNotGrafanas(t *testing.T) {
	err := Push(context.Background(), "grafana.example", "tok", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "want e.g. https://grafana.example") {
		t.Fatalf("push to a URL without a scheme: got %v, want an error saying what a URL looks like", err)
	}
}
