package objects

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/mapstore/mapstore/mapped"
)

// typeInfo is what objects knows of a Go type: whether it may live in a
// segment, and its layout fingerprint. It is computed once per type.
type typeInfo struct {
	key    unsafe.Pointer // typeKey of the type
	t      reflect.Type
	name   string // for display: the Go type's name, with its package path
	size   uintptr
	align  uintptr
	layout []byte       // fingerprint (see encodeLayout)
	spec   []byte       // what a name stores: version, name length, name, layout
	shape  mapped.Shape // the blocks a value owns (containers inside it); nil: none
	err    error        // ErrNotPlainData, wrapped with the field path
}

var typeCache sync.Map // reflect.Type -> *typeInfo

// recent is a small direct-mapped cache in front of typeCache, keyed by
// the address of the type descriptor of *T, which the compiler emits as
// a constant: a hit costs a few instructions, where a sync.Map load hashes
// an interface and walks a trie (about a tenth of a Find).
var recent [64]atomic.Pointer[typeInfo]

// typeKey identifies T: the type word of an interface holding a *T.
func typeKey[T any]() unsafe.Pointer { return keyOf((*T)(nil)) }

// keyOf is the type word of p. Generic fast paths call keyOf((*T)(nil))
// and cached themselves: both inline, where a generic function called
// from another one (infoOf) stays a call.
func keyOf(p any) unsafe.Pointer { return (*[2]unsafe.Pointer)(unsafe.Pointer(&p))[0] }

// cached is the typeInfo recent holds for key, or nil.
func cached(key unsafe.Pointer) *typeInfo {
	if ti := recent[uintptr(key)>>4%uintptr(len(recent))].Load(); ti != nil && ti.key == key {
		return ti
	}
	return nil
}

// ptrMarker is implemented by Ptr[T]: its fingerprint names the type it
// points to, not only its offset word.
type ptrMarker interface{ ptrElem() reflect.Type }

var ptrMarkerType = reflect.TypeFor[ptrMarker]()

// infoOf returns the cached typeInfo of T.
func infoOf[T any]() *typeInfo {
	key := typeKey[T]()
	if ti := cached(key); ti != nil {
		return ti
	}
	return infoSlow[T](key)
}

// infoSlow is infoOf after a miss in recent: from typeCache, or built.
func infoSlow[T any](key unsafe.Pointer) *typeInfo {
	ti := infoBuild[T](key)
	recent[uintptr(key)>>4%uintptr(len(recent))].Store(ti)
	return ti
}

func infoBuild[T any](key unsafe.Pointer) *typeInfo {
	t := reflect.TypeFor[T]()
	if v, ok := typeCache.Load(t); ok {
		return v.(*typeInfo)
	}
	ti := &typeInfo{key: key, t: t, name: typeName(t), size: t.Size(), align: uintptr(t.Align())}
	if err := checkPlain(t, typeName(t), nil); err != nil {
		ti.err = err
	} else if ti.shape, err = shapeOf(t, 0, nil, []reflect.Type{t}); err != nil {
		ti.err = fmt.Errorf("%s: %w", typeName(t), err)
	} else {
		var b bytes.Buffer
		encodeLayout(&b, t, nil)
		ti.layout = b.Bytes()
		spec := []byte{layoutVersion}
		spec = binary.AppendUvarint(spec, uint64(len(ti.name)))
		spec = append(spec, ti.name...)
		ti.spec = append(spec, ti.layout...)
	}
	v, _ := typeCache.LoadOrStore(t, ti)
	return v.(*typeInfo)
}

// typeName is t's name with its package path, as unique names use it.
func typeName(t reflect.Type) string {
	if t.Name() != "" && t.PkgPath() != "" {
		return t.PkgPath() + "." + t.Name()
	}
	return t.String()
}

// checkPlain refuses t if anything inside it is a Go pointer or holds one.
// path is how the user reaches t from the top-level type.
func checkPlain(t reflect.Type, path string, seen []reflect.Type) error {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return nil
	case reflect.Array:
		return checkPlain(t.Elem(), path+"[0]", seen)
	case reflect.Struct:
		for _, s := range seen {
			if s == t {
				return nil
			}
		}
		seen = append(seen, t)
		if t.Implements(containerMarkerType) {
			if t.Implements(mapKeyerType) {
				if kt := reflect.Zero(t).Interface().(mapKeyer).mapKey(); kt.Kind() != reflect.String {
					if err := checkPlain(kt, path+"[key]", seen); err != nil {
						return err
					}
				}
			}
			if elem := reflect.Zero(t).Interface().(containerMarker).containerElem(); elem != nil {
				return checkPlain(elem, path+"[elem]", seen)
			}
			return nil
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if err := checkPlain(f.Type, path+"."+f.Name, seen); err != nil {
				return err
			}
		}
		return nil
	}
	kind := t.Kind().String()
	if t.Kind() == reflect.Pointer {
		kind = "pointer"
	}
	return fmt.Errorf("%s (%s): %w", path, kind, ErrNotPlainData)
}

// The layout fingerprint: a byte string that two types share exactly when
// their memory means the same: size, alignment, kinds, and for structs
// and arrays, recursively, every field's offset and type (field and type
// names do not count). A Ptr records the layout of what it points to; a
// type met again inside itself (a list node's Ptr to its own type) is a
// back reference by depth.
const layoutVersion = 1

func encodeLayout(b *bytes.Buffer, t reflect.Type, stack []reflect.Type) {
	for i, s := range stack {
		if s == t {
			b.WriteByte('^')
			b.Write(binary.AppendUvarint(nil, uint64(len(stack)-i)))
			return
		}
	}
	b.WriteByte(byte('a' + t.Kind()))
	b.Write(binary.AppendUvarint(nil, uint64(t.Size())))
	b.Write(binary.AppendUvarint(nil, uint64(t.Align())))
	switch t.Kind() {
	case reflect.Array:
		b.Write(binary.AppendUvarint(nil, uint64(t.Len())))
		encodeLayout(b, t.Elem(), stack)
	case reflect.Struct:
		stack = append(stack, t)
		if t.Implements(ptrMarkerType) {
			b.WriteByte('*')
			encodeLayout(b, reflect.Zero(t).Interface().(ptrMarker).ptrElem(), stack)
			return
		}
		if t.Implements(containerMarkerType) {
			// A container records what it holds, not its header words.
			c := reflect.Zero(t).Interface().(containerMarker)
			b.WriteByte('C')
			b.WriteByte(c.containerKind())
			if mk, ok := c.(mapKeyer); ok {
				encodeLayout(b, mk.mapKey(), stack)
			}
			if elem := c.containerElem(); elem != nil {
				encodeLayout(b, elem, stack)
			}
			return
		}
		b.Write(binary.AppendUvarint(nil, uint64(t.NumField())))
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			b.Write(binary.AppendUvarint(nil, uint64(f.Offset)))
			encodeLayout(b, f.Type, stack)
		}
	}
}

// decodeSpec splits what a name stores into the type name and the layout;
// ok is false for a blob objects did not write.
func decodeSpec(spec []byte) (name string, layout []byte, ok bool) {
	if len(spec) < 2 || spec[0] != layoutVersion {
		return "", nil, false
	}
	n, k := binary.Uvarint(spec[1:])
	if k <= 0 || n > uint64(len(spec)-1-k) {
		return "", nil, false
	}
	return string(spec[1+k : 1+k+int(n)]), spec[1+k+int(n):], true
}

// matches reports whether a stored spec has T's layout, without
// allocating.
func (ti *typeInfo) matches(spec []byte) bool {
	if len(spec) < 2 || spec[0] != layoutVersion {
		return false
	}
	n, k := binary.Uvarint(spec[1:])
	if k <= 0 || n > uint64(len(spec)-1-k) {
		return false
	}
	return bytes.Equal(spec[1+k+int(n):], ti.layout)
}

// containerMarker is implemented by the containers (Vector, String,
// List): their fingerprint and shape say what they hold.
type containerMarker interface {
	containerKind() byte
	containerElem() reflect.Type // nil: holds bytes
	containerShape(off uintptr, sh mapped.Shape, elem mapped.Shape) mapped.Shape
}

var containerMarkerType = reflect.TypeFor[containerMarker]()

// mapKeyer is implemented by Map: its fingerprint records the key type,
// and a key must be plain data or a string.
type mapKeyer interface{ mapKey() reflect.Type }

var mapKeyerType = reflect.TypeFor[mapKeyer]()

// ErrRecursiveContainer: a type holds, through containers, a container of
// itself (a tree whose nodes hold a Vector of nodes). Build such a
// structure with Ptr links instead.
var errRecursive = errors.New("a container holds its own type (use Ptr links for recursive structures)")

// shapeOf appends to sh the owned blocks of a t at off: the mapped.Shape
// that Delete, Destroy and the containers' removals free.
func shapeOf(t reflect.Type, off uintptr, sh mapped.Shape, stack []reflect.Type) (mapped.Shape, error) {
	switch t.Kind() {
	case reflect.Array:
		if t.Len() == 0 {
			return sh, nil
		}
		elem, err := shapeOf(t.Elem(), 0, nil, stack)
		if err != nil {
			return nil, err
		}
		return sh.Array(off, t.Len(), t.Elem().Size(), elem), nil
	case reflect.Struct:
		if t.Implements(containerMarkerType) {
			c := reflect.Zero(t).Interface().(containerMarker)
			var elem mapped.Shape
			if et := c.containerElem(); et != nil {
				for _, s := range stack {
					if s == et {
						return nil, errRecursive
					}
				}
				var err error
				if elem, err = shapeOf(et, 0, nil, append(stack, et)); err != nil {
					return nil, err
				}
			}
			if mk, ok := c.(mapKeyer); ok {
				if err := mapKeyCheck(mk.mapKey()); err != nil {
					return nil, err
				}
			}
			return c.containerShape(off, sh, elem), nil
		}
		if t.Implements(ptrMarkerType) {
			return sh, nil // a Ptr does not own its target
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			var err error
			if sh, err = shapeOf(f.Type, off+f.Offset, sh, stack); err != nil {
				return nil, err
			}
		}
	}
	return sh, nil
}

// mapKeyCheck refuses a Map whose key type cannot be ordered.
func mapKeyCheck(kt reflect.Type) error {
	if kt.Kind() == reflect.String {
		return nil
	}
	if _, _, _, err := keyKind(kt); err != nil {
		return err
	}
	if kt.Size() > 128 {
		return fmt.Errorf("map key %s: %d bytes, more than 128: %w", typeName(kt), kt.Size(), ErrNotPlainData)
	}
	return nil
}
