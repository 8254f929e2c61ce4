package poll

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that a server's goroutines write (a log) while
// the test reads it, typically waiting with Until for a line to appear.
type Buffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
