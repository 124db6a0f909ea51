// Package shm is the POSIX shared memory backing of mapstore: a segment
// that lives in memory, shared by every process that opens its name, until
// it is removed or the machine restarts.
//
//	seg, err := mapped.Open(shm.Named("MySharedMemory"), mapped.CreateOnly, mapped.WithSize(64<<10))
//	defer shm.Remove("MySharedMemory")
//
// On Linux a shared memory object is a file under /dev/shm, exactly what
// shm_open(3) uses, so C and C++ programs see the same names. A name may
// start with one slash; it may not contain another, nor NUL, and is at most
// NAME_MAX (255) bytes.
package shm

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mapstore/mapstore/backing"
	"github.com/mapstore/mapstore/internal/region"
)

// Dir is where shared memory objects live.
const Dir = "/dev/shm"

// NameMax is the longest valid name in bytes, without the leading slash.
const NameMax = 255

// Object is a segment backing that is a POSIX shared memory object.
type Object struct {
	name string
}

var _ backing.Backing = Object{}

// Named returns the backing for the shared memory object name. The name is
// checked when it is opened or removed.
func Named(name string) Object { return Object{name: name} }

// Name is "shm:" and the name as given.
func (o Object) Name() string { return "shm:" + o.name }

// Validate returns nil if name is a valid shared memory name, and an error
// wrapping backing.ErrInvalidName that says why otherwise.
func Validate(name string) error {
	n := strings.TrimPrefix(name, "/")
	switch {
	case n == "":
		return fmt.Errorf("shm name %q: %w: empty", name, backing.ErrInvalidName)
	case len(n) > NameMax:
		return fmt.Errorf("shm name %q: %w: %d bytes, more than %d", name, backing.ErrInvalidName, len(n), NameMax)
	case strings.ContainsRune(n, '/'):
		return fmt.Errorf("shm name %q: %w: a slash after the first character", name, backing.ErrInvalidName)
	case strings.ContainsRune(n, 0):
		return fmt.Errorf("shm name %q: %w: contains NUL", name, backing.ErrInvalidName)
	case n == "." || n == "..":
		return fmt.Errorf("shm name %q: %w", name, backing.ErrInvalidName)
	}
	return nil
}

func (o Object) path() (string, error) {
	if err := Validate(o.name); err != nil {
		return "", err
	}
	return filepath.Join(Dir, strings.TrimPrefix(o.name, "/")), nil
}

// Open opens the shared memory object as flags say (see region.Open;
// mapped.Open calls it). Like shm_open(3), it never follows a symbolic
// link.
func (o Object) Open(flags region.Flags, perm fs.FileMode) (*region.Region, error) {
	p, err := o.path()
	if err != nil {
		return nil, err
	}
	return region.Open(region.Spec{Name: o.Name(), Path: p, Open: os.OpenFile, NoFollow: true}, flags, perm)
}

// Remove deletes the shared memory object. A missing one is ErrNotFound.
func (o Object) Remove() error {
	p, err := o.path()
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return region.OpenError(o.Name(), err)
	}
	return nil
}

// Remove deletes the shared memory object name, like shm_unlink(3).
func Remove(name string) error { return Named(name).Remove() }

// List returns the names of the shared memory objects that exist now,
// sorted: every regular file under Dir, mapstore segment or not (opening
// one that is not a segment with mapped.OpenReadOnly is mapped.ErrCorrupt).
func List() ([]string, error) {
	ents, err := os.ReadDir(Dir)
	if err != nil {
		return nil, fmt.Errorf("shm: list %s: %w", Dir, err)
	}
	var names []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}
