package region

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// OpenFlags turns Flags into os.OpenFile flags.
func OpenFlags(flags Flags) int {
	f := os.O_RDWR
	if flags&ReadOnly != 0 {
		f = os.O_RDONLY
	}
	if flags&Create != 0 {
		f |= os.O_CREATE
		if flags&Exclusive != 0 {
			f |= os.O_EXCL
		}
	}
	return f | syscall.O_CLOEXEC
}

// OpenError wraps an error from opening name with the package's sentinels:
// a missing file is ErrNotFound, an existing one ErrExists, a directory
// ErrNotRegular. The original error stays reachable through errors.Is.
func OpenError(name string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: %w (%w)", name, ErrNotFound, err)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%s: %w (%w)", name, ErrExists, err)
	case errors.Is(err, syscall.EISDIR):
		return fmt.Errorf("%s: %w: is a directory (%w)", name, ErrNotRegular, err)
	}
	return fmt.Errorf("%s: open: %w", name, err)
}

// CheckRegular returns ErrNotRegular unless f is a regular file.
func CheckRegular(name string, f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: stat: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		kind := "not a regular file"
		if fi.IsDir() {
			kind = "is a directory"
		}
		return fmt.Errorf("%s: %w: %s", name, ErrNotRegular, kind)
	}
	return nil
}
