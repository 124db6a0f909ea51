package hostile

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mapstore/mapstore/backing/file"
	"github.com/mapstore/mapstore/internal/proctest"
	"github.com/mapstore/mapstore/mapped"
	"github.com/mapstore/mapstore/objects"
)

// The on-disk layout the flips aim at. Every number is copied from the
// library's layout comments and constants (the file is named on each
// line): when the layout moves, this block and the region table below are
// the one place to update. The baseline checks that what these numbers
// point at looks like what they say, so a stale number fails loudly
// instead of quietly aiming the flips at user data.
const (
	segSize = 256 << 10 // the baseline segment's size; it must not grow

	headerAOff = 0   // internal/envelope/header.go: HeaderOffA, header copy A
	headerBOff = 512 // internal/envelope/header.go: HeaderOffB, header copy B
	headerLen  = 512 // internal/envelope/header.go: HeaderLen (CRC32C-checked)

	liveSizeOff  = 1024 // internal/envelope/doc.go: live size word
	attachSeqOff = 1032 // internal/envelope/doc.go: attach counter
	seatMaskOff  = 1040 // internal/envelope/doc.go: occupied-seat mask (two words)
	seatsOff     = 1088 // internal/envelope/doc.go: attached-process table
	seatsEnd     = 3120 // internal/envelope/doc.go: its end (127 seats of 16 bytes)

	mgrOff      = 4096          // mapped/heap.go: manager area (envelope.EnvelopeSize)
	mgrWordsLen = 1088          // mapped/heap.go: magic up to the 8 lane owner words at 1024
	journalOff  = mgrOff + 4096 // mapped/heap.go: the small geometry's undo journal (segSize is small)
	journalLen  = 2048          // mapped/heap.go: its length
	lanesOff    = mgrOff + 1536 // mapped/heap.go: the small geometry's lane records (lanes.go)
	lanesLen    = 5 * 512       // mapped/lanes.go: 5 lanes of laneBytes

	mTableWord    = mgrOff + 16 // mapped/heap.go: descriptor table offset
	mManagedWord  = mgrOff + 32 // mapped/heap.go: managed pages
	mDirTableWord = mgrOff + 72 // mapped/heap.go: name index table offset (0: none)
	mDirCapWord   = mgrOff + 80 // mapped/heap.go: name index size in groups

	pageSize  = 4096 // mapped/heap.go: pageSize
	descLen   = 16   // mapped/heap.go: descLen, bytes per page descriptor
	kindRun   = 4    // mapped/heap.go: kRun, kind (low byte of word 0) of a run's first page
	bitmapLen = 8    // mapped/heap.go: a run starts with its bitmap; we flip its first word

	groupLen     = 64        // mapped/names.go: a group is a control word and 7 slot words
	groupSlots   = 7         // mapped/names.go: groupSlots
	slotOffMask  = 1<<48 - 1 // mapped/names.go: slotOffMask, the record offset in a slot word
	recHeaderLen = 16        // mapped/names.go: recHeaderLen; name length is the low 16 bits of word 0
)

// regions are where flips go, with their weights: the large structures
// the allocator and the directory walk get the most. The checksummed
// header copies and the journal (idle in a closed segment) get little,
// since almost every flip there should simply be detected or ignored.
var regions = []region{
	{"header A", 1, fixed(headerAOff, headerLen)},
	{"header B", 1, fixed(headerBOff, headerLen)},
	{"live size", 2, fixed(liveSizeOff, 8)},
	{"attach counter", 1, fixed(attachSeqOff, 8)},
	{"seat mask", 1, fixed(seatMaskOff, 16)},
	{"seat table", 3, fixed(seatsOff, seatsEnd-seatsOff)},
	{"manager words", 8, fixed(mgrOff, mgrWordsLen)},
	{"undo journal", 1, fixed(journalOff, journalLen)},
	{"lane records", 1, fixed(lanesOff, lanesLen)},
	{"descriptors", 8, descriptorTable},
	{"name index", 6, nameIndex},
	{"name records", 6, nameRecords},
	{"run bitmaps", 4, runBitmaps},
}

// Trial counts and time bounds.
const (
	defaultTrials = 2000
	shortTrials   = 300
	trialTimeout  = 5 * time.Second // a child that takes longer is hung
	maxBroken     = 50              // faults and hangs before the run stops early
	watchdog      = 5 * time.Minute // the whole run, whatever happens
	listFailures  = 10              // failing trials printed in full
)

// Outcome classes, worst first.
const (
	cFault    = "fault"
	cHang     = "hang"
	cUntyped  = "untyped"
	cUsed     = "used-after-corrupt"
	cLie      = "lie"
	cDetected = "detected"
	cHarmless = "harmless"
)

var classOrder = []string{cFault, cHang, cUntyped, cUsed, cLie, cDetected, cHarmless}

func failing(class string) bool {
	return class != cDetected && class != cHarmless
}

// sentinels are the typed errors a damaged segment may legitimately
// produce; an error that wraps none of them is "untyped".
var sentinels = []struct {
	name string
	err  error
}{
	{"ErrCorrupt", mapped.ErrCorrupt},
	{"ErrVersion", mapped.ErrVersion},
	{"ErrNotFound", mapped.ErrNotFound},
	{"ErrNoSpace", mapped.ErrNoSpace},
	{"ErrInvalidHandle", mapped.ErrInvalidHandle},
	{"ErrExists", mapped.ErrExists},
	{"ErrClosed", mapped.ErrClosed},
	{"ErrReadOnly", mapped.ErrReadOnly},
	{"ErrTypeMismatch", objects.ErrTypeMismatch},
}

func TestMain(m *testing.M) {
	proctest.Main(m, children)
}

// children are the processes the tests start.
var children = map[string]func(args []string) int{
	// flip reads "trial N PATH" lines from stdin, runs the script on each
	// file and answers "trial N JSON" on file descriptor 3 (stdout belongs
	// to proctest, whose reader gives up only after 30 s).
	"flip": childFlip,
}

// ---- Regions -------------------------------------------------------------

type span struct{ off, n int }

type region struct {
	name   string
	weight int
	spans  func(b []byte) ([]span, error)
}

func fixed(off, n int) func([]byte) ([]span, error) {
	return func([]byte) ([]span, error) { return []span{{off, n}}, nil }
}

func le64(b []byte, off uint64) (uint64, error) {
	if off > uint64(len(b)) || uint64(len(b))-off < 8 {
		return 0, fmt.Errorf("word at %d is outside the %d-byte file", off, len(b))
	}
	return binary.LittleEndian.Uint64(b[off:]), nil
}

// inFile checks that [off, off+n) lies in the file.
func inFile(b []byte, off, n uint64) error {
	if off > uint64(len(b)) || n > uint64(len(b))-off {
		return fmt.Errorf("[%d, +%d) is outside the %d-byte file", off, n, len(b))
	}
	return nil
}

// descriptorTable: 16 bytes for each managed page.
func descriptorTable(b []byte) ([]span, error) {
	t, err := le64(b, mTableWord)
	if err != nil {
		return nil, err
	}
	managed, err := le64(b, mManagedWord)
	if err != nil {
		return nil, err
	}
	if err := inFile(b, t, managed*descLen); err != nil || managed == 0 {
		return nil, fmt.Errorf("descriptor table at %d for %d pages: %v", t, managed, err)
	}
	return []span{{int(t), int(managed * descLen)}}, nil
}

// nameIndex: the hash index's groups (none before the first name).
func nameIndex(b []byte) ([]span, error) {
	dt, err := le64(b, mDirTableWord)
	if err != nil || dt == 0 {
		return nil, err
	}
	groups, err := le64(b, mDirCapWord)
	if err != nil {
		return nil, err
	}
	if err := inFile(b, dt, groups*groupLen); err != nil || groups == 0 {
		return nil, fmt.Errorf("name index at %d of %d groups: %v", dt, groups, err)
	}
	return []span{{int(dt), int(groups * groupLen)}}, nil
}

// nameRecords: each named record's header and name, found through the
// full slots of the index. The object bytes after them are user data and
// are never flipped.
func nameRecords(b []byte) ([]span, error) {
	idx, err := nameIndex(b)
	if err != nil || len(idx) == 0 {
		return nil, err
	}
	var out []span
	for g := uint64(idx[0].off); g < uint64(idx[0].off+idx[0].n); g += groupLen {
		ctrl, _ := le64(b, g)
		for k := uint64(0); k < groupSlots; k++ {
			if ctrl>>(8*k)&0xff >= 0x80 { // empty or tombstone
				continue
			}
			slot, _ := le64(b, g+8+8*k)
			rec := slot & slotOffMask
			meta, err := le64(b, rec)
			if err != nil {
				return nil, fmt.Errorf("slot at %d: record %d: %v", g+8+8*k, rec, err)
			}
			n := recHeaderLen + meta&0xffff
			if err := inFile(b, rec, n); err != nil {
				return nil, fmt.Errorf("record at %d: %v", rec, err)
			}
			out = append(out, span{int(rec), int(n)})
		}
	}
	return out, nil
}

// runBitmaps: the first bitmap word of every small-block run.
func runBitmaps(b []byte) ([]span, error) {
	tbl, err := descriptorTable(b)
	if err != nil {
		return nil, err
	}
	var out []span
	for p := 0; p < tbl[0].n/descLen; p++ {
		w0, _ := le64(b, uint64(tbl[0].off+p*descLen))
		if w0&0xff == kindRun {
			out = append(out, span{p * pageSize, bitmapLen})
		}
	}
	return out, nil
}

// resolved is a region with its spans computed from the baseline file.
type resolved struct {
	region
	at    []span
	bytes int
}

// pick chooses the byte at index k of the region's spans.
func (r *resolved) pick(k int) int {
	for _, s := range r.at {
		if k < s.n {
			return s.off + k
		}
		k -= s.n
	}
	panic("pick: index past the region")
}

// ---- The baseline's contents ---------------------------------------------

type kind int

const (
	kU64 kind = iota
	kQuad
	kRec
)

var kindNames = []string{"u64", "quad", "rec"}

type form int

const (
	single    form = iota // objects.Construct
	array                 // objects.ConstructArray: every element the same
	arrayFunc             // objects.ConstructArrayFunc: element j from j
)

// rec is the struct type of the mix (6 bytes of padding at its end, which
// the value comparison skips: it compares field bytes, not memory).
type rec struct {
	A int64
	B float64
	C [3]uint16
}

// entry is one named object of the baseline.
type entry struct {
	i       int
	name    string
	kind    kind
	form    form
	n       int
	destroy bool // destroyed again before the baseline is taken
}

// plan is the baseline's named objects: the same in the test and in the
// child, which knows from it each name's Go type.
func plan() []entry {
	var es []entry
	for i := range 40 {
		e := entry{i: i, kind: kind(i % 3), form: form(i / 3 % 3), n: 1}
		e.name = fmt.Sprintf("obj_%02d_%s", i, kindNames[e.kind])
		if i%7 == 3 {
			// Long names take two cache lines and a bigger size class.
			e.name += "_with_a_longer_name_for_the_directory"
		}
		if e.form != single {
			e.n = 1 + i*7%13
		}
		switch i {
		case 5, 17: // two records big enough to be page blocks
			e.n = 200 + 100*(i/17)
		}
		e.destroy = i%9 == 4
		es = append(es, e)
	}
	return es
}

// rawSizes are the anonymous blocks allocated between the named objects,
// one after each: small cells of several classes and four page blocks.
// (Each small class's first run takes 1 to 8 pages, so more classes would
// not fit the segment without growing it.)
var rawSizes = []int{
	16, 3000, 32, 48, 64, 100, 128, 5000, 200, 256,
	16, 48, 2048, 20000, 64, 100, 512, 32, 128, 200,
	16, 32, 48, 64, 100, 3000, 128, 200, 256, 512,
	2048, 16, 32, 48, 64, 100, 128, 200, 16, 32,
}

func u64Val(i, j int) uint64 { return uint64(i)<<40 | uint64(j)*0x9e3779b97f4a7c15>>28 }
func quadVal(i, j int) [4]int32 {
	return [4]int32{int32(i), -int32(j), int32(i*1000 + j), 0x7eadbeef - int32(i)}
}
func recVal(i, j int) rec {
	return rec{A: int64(i)<<20 | int64(j), B: float64(i) + float64(j)/8, C: [3]uint16{uint16(i), uint16(j), 0xbeef}}
}

func construct[T any](seg *mapped.Segment, e entry, val func(j int) T) ([]byte, error) {
	want := make([]T, e.n)
	var err error
	switch e.form {
	case single:
		want[0] = val(0)
		_, err = objects.Construct(seg, e.name, want[0])
	case array:
		for j := range want {
			want[j] = val(0)
		}
		_, err = objects.ConstructArray(seg, e.name, e.n, val(0))
	case arrayFunc:
		for j := range want {
			want[j] = val(j)
		}
		_, err = objects.ConstructArrayFunc(seg, e.name, e.n, val)
	}
	if err != nil {
		return nil, err
	}
	return binary.Append(nil, binary.LittleEndian, want)
}

// build constructs e and returns the bytes of its value.
func (e entry) build(seg *mapped.Segment) ([]byte, error) {
	switch e.kind {
	case kU64:
		return construct(seg, e, func(j int) uint64 { return u64Val(e.i, j) })
	case kQuad:
		return construct(seg, e, func(j int) [4]int32 { return quadVal(e.i, j) })
	default:
		return construct(seg, e, func(j int) rec { return recVal(e.i, j) })
	}
}

func read[T any](seg *mapped.Segment, e entry) ([]byte, error) {
	var vs []T
	if e.form == single {
		p, err := objects.Find[T](seg, e.name)
		if err != nil {
			return nil, err
		}
		vs = []T{*p}
	} else {
		s, err := objects.FindArray[T](seg, e.name)
		if err != nil {
			return nil, err
		}
		vs = s
	}
	return binary.Append(nil, binary.LittleEndian, vs)
}

// read finds e with its own Go type and returns the bytes of its value.
func (e entry) read(seg *mapped.Segment) ([]byte, error) {
	switch e.kind {
	case kU64:
		return read[uint64](seg, e)
	case kQuad:
		return read[[4]int32](seg, e)
	default:
		return read[rec](seg, e)
	}
}

// remove destroys e: Destroy takes the element type, for single
// objects and arrays alike.
func (e entry) remove(seg *mapped.Segment) error {
	switch e.kind {
	case kU64:
		return objects.Destroy[uint64](seg, e.name)
	case kQuad:
		return objects.Destroy[[4]int32](seg, e.name)
	default:
		return objects.Destroy[rec](seg, e.name)
	}
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return fmt.Sprintf("%d:%x", len(b), s[:8])
}

// ---- What the child reports ----------------------------------------------

type step struct {
	Op  string   `json:"op"`
	Err string   `json:"err,omitempty"`
	Is  []string `json:"is,omitempty"` // the sentinels errors.Is matches
}

type nameInfo struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Count int64  `json:"count"`
}

// observation is everything the script saw on one file.
type observation struct {
	Steps   []step            `json:"steps"`
	Opened  bool              `json:"opened"`
	Names   []nameInfo        `json:"names,omitempty"`
	Values  map[string]string `json:"values,omitempty"`  // step c: name -> digest
	Values2 map[string]string `json:"values2,omitempty"` // re-read after step e
	Size    int64             `json:"size"`
	FileLen int64             `json:"fileLen"`
	Free    int64             `json:"free"`
	Count   int               `json:"count"`
	path    string
}

func (o *observation) record(op string, err error) bool {
	s := step{Op: op}
	if err != nil {
		// The file's name changes from trial to trial: leave it out.
		s.Err = strings.ReplaceAll(err.Error(), o.path, "FILE")
		for _, se := range sentinels {
			if errors.Is(err, se.err) {
				s.Is = append(s.Is, se.name)
			}
		}
	}
	o.Steps = append(o.Steps, s)
	return err == nil
}

// script is the fixed sequence of public calls each damaged file gets.
func script(path string) *observation {
	o := &observation{path: path, Values: map[string]string{}, Values2: map[string]string{}}
	// a. open
	seg, err := mapped.Open(file.Path(path), mapped.OpenOnly)
	if !o.record("open", err) {
		return o
	}
	o.Opened = true
	// b. walk the directory
	for info := range objects.Named(seg) {
		o.Names = append(o.Names, nameInfo{info.Name, info.Type, info.Count})
	}
	// c. every baseline name, through its own Go type
	alive := aliveEntries()
	for _, e := range alive {
		v, err := e.read(seg)
		if o.record("find "+e.name, err) {
			o.Values[e.name] = digest(v)
		}
	}
	// d. the full check
	o.record("check sanity", seg.CheckSanity())
	// e. a small and a page block, written over (so that a block handed
	// out over live data shows up in the values re-read below), then freed
	var blocks [][]byte
	for _, n := range []int{100, 5000} {
		b, err := seg.Allocate(n)
		if o.record(fmt.Sprintf("allocate %d", n), err) {
			for k := range b {
				b[k] = 0xa5
			}
			blocks = append(blocks, b)
		}
	}
	for _, b := range blocks {
		o.record(fmt.Sprintf("deallocate %d", len(b)), seg.Deallocate(b))
	}
	// f. the counters, the file's real length, and the values once more
	o.Size, o.Free, o.Count = seg.Size(), seg.FreeMemory(), seg.NamedCount()
	o.FileLen = -1
	if fi, err := os.Stat(path); err == nil {
		o.FileLen = fi.Size()
	}
	for _, e := range alive {
		v, err := e.read(seg)
		if o.record("find again "+e.name, err) {
			o.Values2[e.name] = digest(v)
		}
	}
	// g. close
	o.record("close", seg.Close())
	return o
}

func aliveEntries() []entry {
	var out []entry
	for _, e := range plan() {
		if !e.destroy {
			out = append(out, e)
		}
	}
	return out
}

// childFlip runs the script for each "trial N PATH" line. It installs no
// fault handler and recovers nothing: a fault or a panic in the library
// must kill the process, so that the parent counts it.
func childFlip(args []string) int {
	out := bufio.NewWriter(os.NewFile(3, "answers"))
	in := proctest.Lines()
	for in.Scan() {
		rest, ok := strings.CutPrefix(in.Text(), "trial ")
		num, path, ok2 := strings.Cut(rest, " ")
		if !ok || !ok2 {
			fmt.Fprintf(os.Stderr, "flip: bad command %q\n", in.Text())
			return 3
		}
		b, err := json.Marshal(script(path))
		if err != nil {
			fmt.Fprintln(os.Stderr, "flip:", err)
			return 3
		}
		fmt.Fprintf(out, "trial %s %s\n", num, b)
		if err := out.Flush(); err != nil {
			return 3
		}
	}
	return 0
}

// ---- The parent's side of the child --------------------------------------

type flipChild struct {
	c       *proctest.Child
	answers chan string // closed when the child's end of the pipe closes
}

func startChild(t *testing.T) *flipChild {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	cmd := proctest.Command("flip")
	cmd.ExtraFiles = []*os.File{w}
	// Every goroutine's stack on a fault or on SIGQUIT: a hang is then
	// reported with where it hung.
	cmd.Env = append(cmd.Env, "GOTRACEBACK=all")
	c := proctest.StartCmd(t, cmd)
	require.NoError(t, w.Close()) // the child holds the only write end now
	ch := &flipChild{c: c, answers: make(chan string, 4)}
	go func() {
		defer close(ch.answers)
		defer r.Close()
		br := bufio.NewReader(r)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			ch.answers <- strings.TrimSuffix(l, "\n")
		}
	}()
	return ch
}

// ask runs trial n on path and returns the child's observation; or, when
// the child died or hung (it is then gone: reaped, or killed), no
// observation and the class (fault or hang) with what the child left on
// stderr. The caller starts a new child for the next trial.
func (ch *flipChild) ask(n int, path string) (o *observation, class, info string) {
	ch.c.Send("trial %d %s", n, path)
	timer := time.NewTimer(trialTimeout)
	defer timer.Stop()
	select {
	case l, open := <-ch.answers:
		if !open {
			ch.c.Kill() // reaps it: its exit status and all its stderr
			return nil, cFault, fmt.Sprintf("%s; %s", ch.c.Cmd.ProcessState, crashSummary(ch.c.Stderr()))
		}
		rest, ok := strings.CutPrefix(l, fmt.Sprintf("trial %d ", n))
		o = &observation{}
		if !ok || json.Unmarshal([]byte(rest), o) != nil {
			ch.c.Kill()
			return nil, cFault, fmt.Sprintf("garbled answer %.200q", l)
		}
		return o, "", ""
	case <-timer.C:
		// SIGQUIT makes the Go runtime print every goroutine and exit:
		// the report then says where the child was stuck.
		_ = ch.c.Cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-ch.answersClosed():
		case <-time.After(2 * time.Second):
		}
		ch.c.Kill()
		return nil, cHang, fmt.Sprintf("no answer within %v; %s", trialTimeout, crashSummary(ch.c.Stderr()))
	}
}

// answersClosed drains the answers channel and reports when it closes.
func (ch *flipChild) answersClosed() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		for range ch.answers {
		}
		close(done)
	}()
	return done
}

// crashSummary keeps what identifies a crash or a hang in a child's
// stderr: the first line that says what happened and the first few
// frames of the library (the test's and the runtime's own are skipped).
func crashSummary(stderr string) string {
	lines := strings.Split(stderr, "\n")
	var what string
	var frames []string
	for i, l := range lines {
		if what == "" && (strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") ||
			strings.HasPrefix(l, "unexpected fault") || strings.HasPrefix(l, "SIGQUIT") || strings.HasPrefix(l, "[signal")) {
			what = l
		}
		if len(frames) < 3 && strings.HasPrefix(l, "github.com/mapstore/mapstore/") &&
			!strings.Contains(l, "/internal/hostile") && !strings.Contains(l, "/internal/proctest") && i+1 < len(lines) {
			fn := l
			if k := strings.LastIndexByte(fn, '('); k > 0 {
				fn = fn[:k]
			}
			loc := "?"
			if f := strings.Fields(lines[i+1]); len(f) > 0 {
				loc = f[0] // "/path/file.go:123", before "+0x12 fp=... sp=..."
			}
			frames = append(frames, strings.TrimPrefix(fn, "github.com/mapstore/mapstore/")+" at "+filepath.Base(loc))
		}
	}
	if what == "" && len(frames) == 0 {
		s := strings.TrimSpace(stderr)
		if len(s) > 300 {
			s = "..." + s[len(s)-300:]
		}
		return "stderr: " + s
	}
	if len(frames) > 0 {
		what += " in " + strings.Join(frames, " < ")
	}
	return strings.TrimSpace(what)
}

// ---- Classification ------------------------------------------------------

// truth is what the undamaged segment holds, as the API reported it.
type truth struct {
	names  map[string]nameInfo
	values map[string]string
	size   int64
	free   int64
	count  int
}

// differences lists every observation that disagrees with the truth.
// walk reports the ones the name walk and the first finds made, before
// CheckSanity ran.
func differences(o *observation, tr *truth) (all, walk []string) {
	if !o.Opened {
		return nil, nil
	}
	seen := map[string]bool{}
	for _, n := range o.Names {
		want, ok := tr.names[n.Name]
		switch {
		case seen[n.Name]:
			walk = append(walk, fmt.Sprintf("name %q listed twice", n.Name))
		case !ok:
			walk = append(walk, fmt.Sprintf("extra name %q (%s x%d)", n.Name, n.Type, n.Count))
		case n != want:
			walk = append(walk, fmt.Sprintf("name %q is %s x%d, baseline %s x%d", n.Name, n.Type, n.Count, want.Type, want.Count))
		}
		seen[n.Name] = true
	}
	for _, name := range sortedKeys(tr.names) {
		if !seen[name] {
			walk = append(walk, fmt.Sprintf("name %q missing from the walk", name))
		}
		if v, ok := o.Values[name]; ok && v != tr.values[name] {
			walk = append(walk, fmt.Sprintf("value of %q differs (%s, baseline %s)", name, v, tr.values[name]))
		}
	}
	all = append(all, walk...)
	for _, name := range sortedKeys(tr.names) {
		if v, ok := o.Values2[name]; ok && v != tr.values[name] {
			all = append(all, fmt.Sprintf("value of %q differs after the allocations (%s, baseline %s)", name, v, tr.values[name]))
		}
	}
	if o.Size != tr.size {
		all = append(all, fmt.Sprintf("Size() = %d, baseline %d", o.Size, tr.size))
	}
	if o.FileLen != o.Size {
		all = append(all, fmt.Sprintf("Size() = %d, the file has %d bytes", o.Size, o.FileLen))
	}
	if o.Count != tr.count {
		all = append(all, fmt.Sprintf("NamedCount() = %d, baseline %d", o.Count, tr.count))
	}
	if o.Free != tr.free {
		all = append(all, fmt.Sprintf("FreeMemory() = %d after the allocate/free pairs, baseline %d", o.Free, tr.free))
	}
	return all, walk
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func walksAllocator(op string) bool {
	return strings.HasPrefix(op, "allocate") || strings.HasPrefix(op, "deallocate")
}

// verdict is a trial's class, what decided it, and two notes on
// detected trials (logged, not asserted): late, when the walk or a find
// answered wrongly before anything returned an error; unadmitted, when
// no step said ErrCorrupt or ErrVersion (only, say, ErrNotFound).
type verdict struct {
	class, detail    string
	late, unadmitted bool
}

func classify(o *observation, tr *truth) verdict {
	for _, s := range o.Steps {
		if s.Err != "" && len(s.Is) == 0 {
			return verdict{class: cUntyped, detail: s.Op + ": " + s.Err}
		}
	}
	corruptAt := slices.IndexFunc(o.Steps, func(s step) bool { return slices.Contains(s.Is, "ErrCorrupt") })
	if corruptAt >= 0 {
		for _, s := range o.Steps[corruptAt+1:] {
			if s.Err == "" && walksAllocator(s.Op) {
				c := o.Steps[corruptAt]
				return verdict{class: cUsed, detail: fmt.Sprintf("%s succeeded after %s said %s", s.Op, c.Op, c.Err)}
			}
		}
	}
	all, walk := differences(o, tr)
	firstErr := slices.IndexFunc(o.Steps, func(s step) bool { return s.Err != "" })
	if firstErr >= 0 {
		admitted := slices.ContainsFunc(o.Steps, func(s step) bool {
			return slices.Contains(s.Is, "ErrCorrupt") || slices.Contains(s.Is, "ErrVersion")
		})
		s := o.Steps[firstErr]
		return verdict{class: cDetected, detail: s.Op + ": " + s.Err, late: len(walk) > 0, unadmitted: !admitted}
	}
	if len(all) > 0 {
		if len(all) > 3 {
			all = append(all[:3], fmt.Sprintf("and %d more", len(all)-3))
		}
		return verdict{class: cLie, detail: strings.Join(all, "; ")}
	}
	return verdict{class: cHarmless}
}

// ---- The test ------------------------------------------------------------

// trial is one flipped byte and what came of it.
type trial struct {
	n             int
	region        string
	off           int
	before, after byte
	verdict
}

func (tt trial) String() string {
	return fmt.Sprintf("trial %d: %s, file offset %d (%#x): %#02x -> %#02x: %s: %s",
		tt.n, tt.region, tt.off, tt.off, tt.before, tt.after, tt.class, tt.detail)
}

func envInt(t *testing.T, name string, def uint64) uint64 {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.ParseUint(s, 0, 64)
	require.NoError(t, err, "%s=%q", name, s)
	return v
}

// TestFlippedMetadata flips one byte of a real segment's metadata per
// trial, has a child process run a fixed script of public calls on the
// result, and demands that every trial is either detected (a typed error)
// or harmless (every answer equals the undamaged segment's).
func TestFlippedMetadata(t *testing.T) {
	seed := envInt(t, "MAPSTORE_FLIP_SEED", 1)
	trials := uint64(defaultTrials)
	if testing.Short() {
		trials = shortTrials
	}
	trials = envInt(t, "MAPSTORE_FLIP_TRIALS", trials)
	first, last := 0, int(trials)
	if s := os.Getenv("MAPSTORE_FLIP_ONLY"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err, "MAPSTORE_FLIP_ONLY=%q", s)
		first, last = n, n+1
	}
	verbose := os.Getenv("MAPSTORE_FLIP_VERBOSE") != ""
	start := time.Now()
	deadline := start.Add(watchdog)
	if d, ok := t.Deadline(); ok && d.Add(-30*time.Second).Before(deadline) {
		deadline = d.Add(-30 * time.Second)
	}

	dir := t.TempDir()
	base, tr := buildBaseline(t, dir)
	res, totalWeight := resolveRegions(t, base)

	ch := startChild(t)
	// The control: the undamaged file must come out harmless, or the
	// harness itself (not the library) is wrong.
	ctl := filepath.Join(dir, "control.seg")
	require.NoError(t, os.WriteFile(ctl, base, 0o600))
	o, class, info := ch.ask(-1, ctl)
	require.Empty(t, class, "control trial: %s", info)
	v := classify(o, tr)
	require.Equal(t, cHarmless, v.class, "the undamaged baseline must be harmless: %s", v.detail)

	counts := map[string]int{}
	byRegion := map[string]map[string]int{}
	var bad, late, unadmitted []trial
	broken, done := 0, 0
	stopped := ""
	buf := make([]byte, len(base))
	for n := first; n < last; n++ {
		if time.Now().After(deadline) {
			stopped = fmt.Sprintf("watchdog: stopped after %d trials in %v", done, time.Since(start).Round(time.Second))
			break
		}
		if broken > maxBroken {
			stopped = fmt.Sprintf("stopped early: %d trials faulted or hung", broken)
			break
		}
		// Each trial's flip depends only on the seed and its number, so
		// that MAPSTORE_FLIP_ONLY replays one.
		rng := rand.New(rand.NewPCG(seed, uint64(n)))
		w := rng.IntN(totalWeight)
		r := &res[0]
		for i := range res {
			if w < res[i].weight {
				r = &res[i]
				break
			}
			w -= res[i].weight
		}
		off := r.pick(rng.IntN(r.bytes))
		x := byte(1 + rng.IntN(255))
		copy(buf, base)
		buf[off] ^= x
		tt := trial{n: n, region: r.name, off: off, before: base[off], after: buf[off]}

		path := filepath.Join(dir, fmt.Sprintf("trial-%05d.seg", n))
		require.NoError(t, os.WriteFile(path, buf, 0o600))
		o, class, info := ch.ask(n, path)
		if class != "" {
			tt.verdict = verdict{class: class, detail: info}
			broken++
			ch = startChild(t)
		} else {
			tt.verdict = classify(o, tr)
		}
		_ = os.Remove(path)
		done++
		if verbose {
			t.Log(tt)
		}

		counts[tt.class]++
		if byRegion[tt.region] == nil {
			byRegion[tt.region] = map[string]int{}
		}
		byRegion[tt.region][tt.class]++
		switch {
		case failing(tt.class):
			bad = append(bad, tt)
		case tt.late:
			late = append(late, tt)
		case tt.unadmitted:
			unadmitted = append(unadmitted, tt)
		}
	}
	elapsed := time.Since(start).Round(100 * time.Millisecond)

	// The outcome table: totals, then region by class.
	var sb strings.Builder
	fmt.Fprintf(&sb, "seed %d, %d trials in %v\n", seed, done, elapsed)
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "region\tbytes\t")
	for _, c := range classOrder {
		fmt.Fprintf(tw, "%s\t", c)
	}
	fmt.Fprintln(tw)
	row := func(name string, bytes string, m map[string]int) {
		fmt.Fprintf(tw, "%s\t%s\t", name, bytes)
		for _, c := range classOrder {
			fmt.Fprintf(tw, "%d\t", m[c])
		}
		fmt.Fprintln(tw)
	}
	for _, r := range res {
		row(r.name, strconv.Itoa(r.bytes), byRegion[r.name])
	}
	row("all", "", counts)
	require.NoError(t, tw.Flush())
	fmt.Fprintf(&sb, "detected only after a wrong answer (walk or find): %d; detected without ErrCorrupt/ErrVersion: %d\n", len(late), len(unadmitted))
	for _, tt := range append(late[:min(len(late), 3)], unadmitted[:min(len(unadmitted), 3)]...) {
		fmt.Fprintf(&sb, "  note: %v\n", tt)
	}
	t.Log(sb.String())

	if len(bad) > 0 {
		shown := firstFailures(bad, listFailures)
		var fb strings.Builder
		fmt.Fprintf(&fb, "%d failing trials; the first of each class, %d in all (replay one with MAPSTORE_FLIP_SEED=%d MAPSTORE_FLIP_ONLY=N):\n",
			len(bad), len(shown), seed)
		for _, tt := range shown {
			fmt.Fprintf(&fb, "  %v\n", tt)
		}
		t.Log(fb.String())
	}
	assert.Empty(t, stopped, "the run did not finish")
	for _, c := range []string{cFault, cHang, cUntyped, cUsed, cLie} {
		assert.Zero(t, counts[c], "%s trials", c)
	}
	if last-first > 1 && stopped == "" {
		// Neither class may be empty, or the flips missed the metadata (or
		// the script noticed nothing) and the test would pass vacuously.
		assert.NotZero(t, counts[cDetected], "no trial was detected")
		assert.NotZero(t, counts[cHarmless], "no trial was harmless")
	}
}

// firstFailures picks up to limit failing trials, the first of each class
// in turn (so that a few faults are not hidden behind many trials of a
// milder class), in trial order.
func firstFailures(bad []trial, limit int) []trial {
	var shown []trial
	for round := 0; len(shown) < limit; round++ {
		added := false
		for _, c := range classOrder {
			var of []trial
			for _, tt := range bad {
				if tt.class == c {
					of = append(of, tt)
				}
			}
			if round < len(of) && len(shown) < limit {
				shown = append(shown, of[round])
				added = true
			}
		}
		if !added {
			break
		}
	}
	sort.Slice(shown, func(i, j int) bool { return shown[i].n < shown[j].n })
	return shown
}

// buildBaseline makes the undamaged segment through the public API and
// returns its bytes and what the API says it holds.
func buildBaseline(t *testing.T, dir string) ([]byte, *truth) {
	t.Helper()
	path := filepath.Join(dir, "baseline.seg")
	seg, err := mapped.Open(file.Path(path), mapped.CreateOnly, mapped.WithSize(segSize))
	require.NoError(t, err)
	want := map[string][]byte{}
	var raw [][]byte
	for _, e := range plan() {
		v, err := e.build(seg)
		require.NoError(t, err, e.name)
		want[e.name] = v
		// Raw blocks interleaved with the records, so that the runs and
		// spans mix both.
		b, err := seg.Allocate(rawSizes[e.i%len(rawSizes)])
		require.NoError(t, err)
		for k := range b {
			b[k] = byte(e.i)
		}
		raw = append(raw, b)
	}
	// Free about a third of the raw blocks and destroy a few names: free
	// spans, partial runs and index tombstones.
	for i, b := range raw {
		if i%3 == 1 {
			require.NoError(t, seg.Deallocate(b))
		}
	}
	for _, e := range plan() {
		if e.destroy {
			require.NoError(t, e.remove(seg), e.name)
		}
	}
	require.NoError(t, seg.CheckSanity())
	require.Equal(t, int64(segSize), seg.Size(), "the baseline must fit its segment without growing")

	tr := &truth{names: map[string]nameInfo{}, values: map[string]string{},
		size: seg.Size(), free: seg.FreeMemory(), count: seg.NamedCount()}
	for info := range objects.Named(seg) {
		tr.names[info.Name] = nameInfo{info.Name, info.Type, info.Count}
	}
	alive := aliveEntries()
	require.Len(t, tr.names, len(alive), "names in the baseline")
	require.Equal(t, len(alive), tr.count, "NamedCount of the baseline")
	for _, e := range alive {
		v, err := e.read(seg)
		require.NoError(t, err, e.name)
		require.Equal(t, want[e.name], v, "value of %s", e.name)
		tr.values[e.name] = digest(v)
		require.Equal(t, int64(e.n), tr.names[e.name].Count, "count of %s", e.name)
	}
	require.NoError(t, seg.Close())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Len(t, b, segSize)
	return b, tr
}

// resolveRegions computes every region's spans in the baseline and checks
// that the derived ones found what the layout table says they hold.
func resolveRegions(t *testing.T, base []byte) ([]resolved, int) {
	t.Helper()
	var res []resolved
	total := 0
	for _, r := range regions {
		at, err := r.spans(base)
		require.NoError(t, err, "region %s: is the layout table up to date?", r.name)
		require.NotEmpty(t, at, "region %s is empty in the baseline", r.name)
		n := 0
		for _, s := range at {
			require.NoError(t, inFile(base, uint64(s.off), uint64(s.n)), "region %s", r.name)
			n += s.n
		}
		res = append(res, resolved{region: r, at: at, bytes: n})
		total += r.weight
	}
	byName := func(name string) resolved {
		i := slices.IndexFunc(res, func(r resolved) bool { return r.name == name })
		require.GreaterOrEqual(t, i, 0, name)
		return res[i]
	}
	// The records found through the index are exactly the live names, and
	// each one's name bytes are a baseline name.
	recs := byName("name records")
	require.Len(t, recs.at, len(aliveEntries()), "records reached through the name index")
	names := map[string]bool{}
	for _, e := range aliveEntries() {
		names[e.name] = true
	}
	for _, s := range recs.at {
		name := string(base[s.off+recHeaderLen : s.off+s.n])
		assert.True(t, names[name], "record at %d holds %q, not a baseline name", s.off, name)
	}
	assert.Equal(t, "MSHEAP07", string(base[mgrOff:mgrOff+8]), "manager magic: is the layout table up to date?")
	assert.Equal(t, "MAPSTORE", string(base[headerAOff:headerAOff+8]))
	assert.Equal(t, "MAPSTORE", string(base[headerBOff:headerBOff+8]))
	assert.Equal(t, uint64(segSize), binary.LittleEndian.Uint64(base[liveSizeOff:]), "live size word")
	return res, total
}
