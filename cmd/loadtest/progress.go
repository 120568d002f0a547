package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progressSink is where live progress lines go. On a terminal one line is
// redrawn in place every second; into a file or pipe (CI logs) a plain line
// is written at most every 5 s so logs stay short.
type progressSink struct {
	out   io.Writer
	tty   bool
	every time.Duration
}

// newProgressSink describes w, treating it as a terminal when it is a
// character device.
func newProgressSink(w *os.File) *progressSink {
	tty := false
	if fi, err := w.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		tty = true
	}
	every := 5 * time.Second
	if tty {
		every = time.Second
	}
	return &progressSink{out: w, tty: tty, every: every}
}

// progressTicker prints line() periodically until stop is called.
type progressTicker struct {
	sink  *progressSink
	start time.Time
	quit  chan struct{}
	wg    sync.WaitGroup
}

// startProgress starts the printing goroutine; its owner must call stop,
// which ends it. A nil sink gives a ticker that prints nothing.
func startProgress(sink *progressSink, line func() string) *progressTicker {
	p := &progressTicker{sink: sink, start: time.Now(), quit: make(chan struct{})}
	if sink == nil {
		return p
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(sink.every)
		defer t.Stop()
		for {
			select {
			case <-p.quit:
				return
			case <-t.C:
				p.print(line())
			}
		}
	}()
	return p
}

func (p *progressTicker) print(s string) {
	elapsed := time.Since(p.start).Truncate(time.Second)
	if p.sink.tty {
		fmt.Fprintf(p.sink.out, "\r\033[K[%v] %s", elapsed, s)
		return
	}
	fmt.Fprintf(p.sink.out, "[%v] %s\n", elapsed, s)
}

// stop ends the goroutine and, on a terminal, moves past the redrawn line.
func (p *progressTicker) stop() {
	if p.sink == nil {
		return
	}
	close(p.quit)
	p.wg.Wait()
	if p.sink.tty {
		fmt.Fprintln(p.sink.out)
	}
}
