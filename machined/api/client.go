package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/berthd/berth/internal/errdefs"
)

// Client talks to berthd over its Unix socket. It implements API.
type Client struct {
	socket string
	hc     *http.Client
}

// Dial returns a client for the daemon listening at socket, or an error when
// none answers there (the CLI then works without the daemon where it can).
func Dial(ctx context.Context, socket string) (*Client, error) {
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("berthd is not running (no answer on %s): %w", socket, err)
	}
	c.Close()
	return &Client{socket: socket, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
	}}}, nil
}

// do sends in (JSON, when not nil) with method to path and decodes the
// answer into out (when not nil).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// send makes one request and returns the response of a success; an error
// answer comes back as its errdefs class and message.
func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://berthd"+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("berthd: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func decodeError(resp *http.Response) error {
	var ae apiError
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &ae) != nil || ae.Error == "" {
		return fmt.Errorf("berthd: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return errdefs.FromClass(ae.Error, ae.Class)
}

func (c *Client) List(ctx context.Context) ([]MachineStatus, error) {
	var out []MachineStatus
	return out, c.do(ctx, http.MethodGet, "/v1/machines", nil, &out)
}

func (c *Client) Status(ctx context.Context, name string) (*MachineStatus, error) {
	var out MachineStatus
	if err := c.do(ctx, http.MethodGet, "/v1/machines/"+url.PathEscape(name), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) Definition(ctx context.Context, name string) (*Definition, error) {
	var out Definition
	if err := c.do(ctx, http.MethodGet, "/v1/machines/"+url.PathEscape(name)+"/definition", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) Verb(ctx context.Context, name, verb string) error {
	return c.do(ctx, http.MethodPost, "/v1/machines/"+url.PathEscape(name)+"/"+url.PathEscape(verb), struct{}{}, nil)
}

func (c *Client) Verbs(ctx context.Context, req VerbRequest) ([]VerbOutcome, error) {
	var out []VerbOutcome
	if err := c.do(ctx, http.MethodPost, "/v1/verbs", req, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func (c *Client) Kill(ctx context.Context, name string, req KillRequest) error {
	return c.do(ctx, http.MethodPost, "/v1/machines/"+url.PathEscape(name)+"/kill", req, nil)
}

func (c *Client) Plan(ctx context.Context, req PlanRequest) (*Plan, error) {
	var out Plan
	if err := c.do(ctx, http.MethodPost, "/v1/plan", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) Apply(ctx context.Context, req ApplyRequest) (*ApplyResult, error) {
	var out ApplyResult
	if err := c.do(ctx, http.MethodPost, "/v1/apply", req, &out); err != nil {
		return nil, err
	}
	if out.Plan != nil && len(out.Plan.Errors) > 0 {
		return &out, fmt.Errorf("definitions have errors; nothing applied: %w", errdefs.ErrInvalid)
	}
	return &out, nil
}

func (c *Client) Networks(ctx context.Context) ([]NetworkStatus, error) {
	var out []NetworkStatus
	return out, c.do(ctx, http.MethodGet, "/v1/networks", nil, &out)
}

func (c *Client) Daemon(ctx context.Context) (*DaemonStatus, error) {
	var out DaemonStatus
	if err := c.do(ctx, http.MethodGet, "/v1/daemon", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) Events(ctx context.Context, seq uint64, machine string, follow bool, fn func(Event) error) error {
	q := url.Values{"since": {strconv.FormatUint(seq, 10)}}
	if machine != "" {
		q.Set("machine", machine)
	}
	if follow {
		q.Set("follow", "1")
	}
	resp, err := c.send(ctx, http.MethodGet, "/v1/events?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("berthd: bad event: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return sc.Err()
}
