package recovery

import (
	"fmt"
	"strings"
)

// Process is a seat of the attached-process table as recovery found it:
// each writable open holds one.
type Process struct {
	Seat int // index in the attached-process table
	PID  int // process id it recorded when it attached
}

// Report says what opening (or checking) a segment found and what was done
// about it. The zero value means a clean open of an existing segment.
type Report struct {
	// Name is the backing's name: a path or "shm:NAME".
	Name string
	// Created: this open created the segment.
	Created bool
	// State is the shutdown state the header held when the open found it.
	State State
	// DamagedHeaders lists header copies that failed validation; the
	// segment was opened from the other copy (and, when writable, the
	// damaged copy was rewritten).
	DamagedHeaders []string
	// UncleanShutdown: the segment was left in use (attached) with no live
	// process holding it, so one or more processes died with it open after
	// it was changed. (A process that dies before any change leaves it
	// closed: it is only listed in DeadProcesses.)
	UncleanShutdown bool
	// MachineRestarted: it was left attached by a machine boot other than
	// this one, so the machine stopped (power loss, OS crash) while it was
	// in use; on a file backing, writes after the last Flush may be lost.
	MachineRestarted bool
	// DeadProcesses are the seats whose process was gone.
	DeadProcesses []Process
	// RecoveryNeeded: recovery was needed and not performed, because the
	// open could not write to the segment (read-only). Copy-on-write opens
	// recover their private copy instead and leave this false.
	RecoveryNeeded bool
	// Actions lists what recovery did, in order.
	Actions []string
}

// Clean reports whether the open found nothing to recover or repair.
func (r *Report) Clean() bool {
	return r == nil || (len(r.DamagedHeaders) == 0 && !r.UncleanShutdown && !r.MachineRestarted &&
		len(r.DeadProcesses) == 0 && !r.RecoveryNeeded)
}

// Addf records an action.
func (r *Report) Addf(format string, args ...any) {
	r.Actions = append(r.Actions, fmt.Sprintf(format, args...))
}

// String describes the report in a few lines.
func (r *Report) String() string {
	if r == nil {
		return "no report"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: ", r.Name)
	switch {
	case r.Created:
		b.WriteString("created")
	case r.Clean():
		fmt.Fprintf(&b, "opened clean (found %s)", r.State)
	default:
		fmt.Fprintf(&b, "opened (found %s)", r.State)
	}
	for _, d := range r.DamagedHeaders {
		fmt.Fprintf(&b, "\n  damaged %s", d)
	}
	switch {
	case r.UncleanShutdown && r.RecoveryNeeded:
		b.WriteString("\n  unclean shutdown: recovery needed")
	case r.UncleanShutdown:
		b.WriteString("\n  unclean shutdown: recovered")
	}
	if r.MachineRestarted {
		b.WriteString("\n  the machine restarted while the segment was in use: writes after the last Flush may be lost")
	}
	for _, p := range r.DeadProcesses {
		fmt.Fprintf(&b, "\n  process %d (seat %d) died while attached", p.PID, p.Seat)
	}
	if r.RecoveryNeeded {
		b.WriteString("\n  recovery not performed: opened read-only (a writable open recovers it)")
	}
	for _, a := range r.Actions {
		fmt.Fprintf(&b, "\n  %s", a)
	}
	return b.String()
}
