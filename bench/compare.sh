#!/usr/bin/env bash
# Side-by-side benchmark: Boost.Interprocess (bench/boost/bench.cpp) against
# mapstore (bench/cmd/mapbench).
#
# usage: bench/compare.sh [case,case,...]
#
#   first argument  comma list of cases (default: the six allocator and
#                   name-directory cases, see DEFAULT_CASES below; the
#                   others, such as open_existing,close_existing, are run
#                   when named)
#   ROUNDS=N        rounds of (boost, go) runs, alternating (default 3)
#   BOOSTBENCH=PATH use a prebuilt C++ harness instead of building one
#   MAPBENCH=PATH   use a prebuilt Go harness instead of building one
#   OUTDIR=DIR      where raw result lines go (default: a new temp dir)
#
# The container cases (CONTAINER_CASES below: vector_push_back, string_set,
# list_push_pop) are not in the default list; name them, or give the word
# "containers" as the case list to run all three. Likewise the ordered-map
# cases (MAP_CASES below: map_insert, map_find, and open_existing and
# close_existing, which reopen the segment holding map_insert's map): the
# word "maps" runs all four.
#
# The allocator cases (ALLOC_CASES below; the word "alloc" runs all four)
# add alloc_free_64_2procs to the three of the default list: two processes
# each run alloc_free_64's 2e6 pairs on one segment, started together
# (issue 17, allocation that scales with processes).
#
# The durable-IPC cases (IPC_CASES below; the word "ipc" runs all three):
#   mutex_lock_unlock    uncontended lock+unlock, 1e7 (heap: std::mutex and
#                        Go's sync.Mutex, the floor)
#   queue_pingpong_64    a 64-byte round trip between two processes through
#                        two queues, 1e5 (Boost: message_queue, shm only; its
#                        heap row is a Unix domain socket pair)
#   queue_throughput_64  1e6 64-byte messages from one process to another
#                        through a queue of 1024 (Boost: shm only)
# Blocking cases on a loaded machine drift widely from run to run: use
# ROUNDS=5 or more, and compare within one run.
#
# Both harnesses print lines of the form
#   case=<name> backing=<shm|file|heap> n=<ops> ns_per_op=<float> [key=<float> ...]
# This script prints, per case and backing (shm, file), the median ns/op of
# each side over the rounds and the ratio of the medians (Boost / mapstore;
# above 1 means mapstore is faster), plus a small table of the heap (floor)
# rows of each side, with mapstore's shm and file ns/op over the Go heap's
# (how many times the floor mapstore takes). For a two-process case (its lines have the fields
# total_mops, one_proc_mops and scaling) ns/op is per process, and a third
# table gives the medians of those fields: million pairs per second of both
# processes together, of alloc_free_64's loop in one process in the same
# run of the case, and the ratio of the two.
set -euo pipefail

cd "$(dirname "$0")/.."

DEFAULT_CASES=alloc_free_64,alloc_many_then_free_64,alloc_mixed,construct_named,find_named,destroy_named
ALLOC_CASES=alloc_free_64,alloc_free_64_2procs,alloc_many_then_free_64,alloc_mixed
CONTAINER_CASES=vector_push_back,string_set,list_push_pop
MAP_CASES=map_insert,map_find,hashmap_insert,hashmap_find,open_existing,close_existing
IPC_CASES=mutex_lock_unlock,queue_pingpong_64,queue_throughput_64
# The argument is a comma list of case names and group names (alloc,
# containers, maps, ipc), each group standing for its cases.
CASES=
IFS=, read -r -a wanted <<<"${1:-$DEFAULT_CASES}"
for w in "${wanted[@]}"; do
	case $w in
	alloc) w=$ALLOC_CASES ;;
	containers) w=$CONTAINER_CASES ;;
	maps) w=$MAP_CASES ;;
	ipc) w=$IPC_CASES ;;
	esac
	CASES=${CASES:+$CASES,}$w
done
ROUNDS=${ROUNDS:-3}
BACKINGS=shm,file,heap
BUILD_DIR=bench/boost/build

case $ROUNDS in
'' | *[!0-9]* | 0)
	echo "compare.sh: ROUNDS must be a positive integer (got '$ROUNDS')" >&2
	exit 2
	;;
esac

log() { echo "compare.sh: $*" >&2; }

# Runs a command as root: directly when root, else through sudo if present.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		log "need root (or sudo) to run: $*"
		return 1
	fi
}

# ---------------------------------------------------------------------------
# Build (unless prebuilt binaries were given).

mkdir -p "$BUILD_DIR"

if [ -z "${BOOSTBENCH:-}" ]; then
	pkgs=""
	if [ ! -f /usr/include/boost/interprocess/managed_shared_memory.hpp ]; then
		pkgs="$pkgs libboost-dev"
	fi
	if ! command -v g++ >/dev/null 2>&1; then
		pkgs="$pkgs g++"
	fi
	if [ -n "$pkgs" ]; then
		log "installing:$pkgs"
		as_root apt-get update >&2
		# shellcheck disable=SC2086 # word splitting of the package list is intended
		as_root apt-get install -y $pkgs >&2
	fi
	log "building $BUILD_DIR/boostbench"
	g++ -O2 -std=c++17 -o "$BUILD_DIR/boostbench" bench/boost/bench.cpp -lrt -pthread
	BOOSTBENCH=$BUILD_DIR/boostbench
fi

if [ -z "${MAPBENCH:-}" ]; then
	log "building $BUILD_DIR/mapbench"
	go build -o "$BUILD_DIR/mapbench" ./bench/cmd/mapbench
	MAPBENCH=$BUILD_DIR/mapbench
fi

for bin in "$BOOSTBENCH" "$MAPBENCH"; do
	if [ ! -x "$bin" ]; then
		log "not an executable: $bin"
		exit 1
	fi
done

# ---------------------------------------------------------------------------
# Run, alternating sides so that slow drifts of a shared machine hit both.

if [ -z "${OUTDIR:-}" ]; then
	OUTDIR=$(mktemp -d "${TMPDIR:-/tmp}/mapstore-compare.XXXXXX")
else
	mkdir -p "$OUTDIR"
fi

# Keeps only well-formed result lines; anything else is reported on stderr.
NUM_RE='[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?'
LINE_RE="^case=[A-Za-z0-9_]+ backing=(shm|file|heap) n=[0-9]+ ns_per_op=$NUM_RE( [a-z0-9_]+=$NUM_RE)*\$"

run_side() { # side round binary
	local side=$1 round=$2 bin=$3
	local raw="$OUTDIR/$side.$round.raw" out="$OUTDIR/$side.$round.txt"
	log "round $round/$ROUNDS: $side ($bin)"
	if ! "$bin" -cases "$CASES" -backings "$BACKINGS" >"$raw"; then
		log "$side harness failed in round $round (output so far: $raw)"
		exit 1
	fi
	grep -E "$LINE_RE" "$raw" >"$out" || true
	if grep -vEq "$LINE_RE" "$raw"; then
		log "warning: $side round $round printed lines not in the result format (kept in $raw):"
		grep -vE "$LINE_RE" "$raw" | head -5 >&2
	fi
	if [ ! -s "$out" ]; then
		log "$side harness printed no result lines in round $round"
		exit 1
	fi
}

r=1
while [ "$r" -le "$ROUNDS" ]; do
	run_side boost "$r" "$BOOSTBENCH"
	run_side go "$r" "$MAPBENCH"
	r=$((r + 1))
done

# ---------------------------------------------------------------------------
# Report.

echo "# mapstore vs Boost.Interprocess"
echo "# date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  nproc: $(nproc 2>/dev/null || echo '?')" \
	"cpu: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || echo '?')"
boost_version='?'
if [ -f /usr/include/boost/version.hpp ]; then
	boost_version=$(awk '/define BOOST_LIB_VERSION/ {gsub(/"/, "", $3); print $3}' /usr/include/boost/version.hpp)
fi
echo "# boost headers: $boost_version  go: $(go env GOVERSION 2>/dev/null || echo '?')  rounds: $ROUNDS"
echo

# Every result line is prefixed with its side (boost or go) and fed to awk,
# which takes the median per (side, case, backing) and prints the tables in
# the order of the requested cases.
: >"$OUTDIR/all.txt"
for side in boost go; do
	r=1
	while [ "$r" -le "$ROUNDS" ]; do
		sed "s/^/side=$side /" "$OUTDIR/$side.$r.txt" >>"$OUTDIR/all.txt"
		r=$((r + 1))
	done
done

awk -v cases="$CASES" '
function val(field,    i) { i = index(field, "="); return substr(field, i + 1) }

# median of the space-separated numbers in s (insertion sort; plain awk)
function median(s,    a, n, i, j, t) {
	n = split(s, a, " ")
	if (n == 0) return ""
	for (i = 2; i <= n; i++) {
		t = a[i] + 0
		for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]
		a[j + 1] = t
	}
	if (n % 2) return a[(n + 1) / 2] + 0
	return (a[n / 2] + a[n / 2 + 1]) / 2
}

function fmt(x) { return x == "" ? "-" : sprintf("%.1f", x) }

function ratio(b, g) { return (b == "" || g == "" || g + 0 == 0) ? "-" : sprintf("%.2f", b / g) }

{
	side = val($1); c = val($2); bk = val($3); ns = val($5)
	k = side SUBSEP c SUBSEP bk
	vals[k] = (k in vals) ? vals[k] " " ns : ns
	for (f = 6; f <= NF; f++) {
		fk = k SUBSEP substr($f, 1, index($f, "=") - 1)
		fields[fk] = (fk in fields) ? fields[fk] " " val($f) : val($f)
	}
}

# median of field name of side, case and backing
function fmed(side, c, bk, name,    fk) {
	fk = side SUBSEP c SUBSEP bk SUBSEP name
	return (fk in fields) ? median(fields[fk]) : ""
}

function fmt2(x) { return x == "" ? "-" : sprintf("%.2f", x) }

END {
	nc = split(cases, cl, ",")

	printf "%-26s %-7s %14s %14s %15s\n", "case", "backing", "boost_ns/op", "mapstore_ns/op", "boost/mapstore"
	for (i = 1; i <= nc; i++) {
		for (j = 1; j <= 2; j++) {
			bk = (j == 1) ? "shm" : "file"
			if (!((("boost" SUBSEP cl[i] SUBSEP bk) in vals) || (("go" SUBSEP cl[i] SUBSEP bk) in vals))) continue
			b = median(vals["boost" SUBSEP cl[i] SUBSEP bk])
			g = median(vals["go" SUBSEP cl[i] SUBSEP bk])
			printf "%-26s %-7s %14s %14s %15s\n", cl[i], bk, fmt(b), fmt(g), ratio(b, g)
		}
	}

	hdr = 0
	for (i = 1; i <= nc; i++) {
		for (j = 1; j <= 2; j++) {
			bk = (j == 1) ? "shm" : "file"
			if (fmed("boost", cl[i], bk, "total_mops") == "" && fmed("go", cl[i], bk, "total_mops") == "") continue
			if (!hdr) {
				print ""
				print "two processes on one segment (ns/op above is per process): M pairs/s of both together"
				print "(total), of alloc_free_64\047s loop alone in the same run of the case (1proc), and the"
				print "median over the rounds of total/1proc (2p/1p; issue 17\047s target: >= 1.6):"
				printf "%-26s %-7s %11s %11s %11s %14s %14s %14s\n", "case", "backing", "boost_total", "boost_1proc", "boost_2p/1p", "mapstore_total", "mapstore_1proc", "mapstore_2p/1p"
				hdr = 1
			}
			printf "%-26s %-7s %11s %11s %11s %14s %14s %14s\n", cl[i], bk,
				fmt2(fmed("boost", cl[i], bk, "total_mops")), fmt2(fmed("boost", cl[i], bk, "one_proc_mops")), fmt2(fmed("boost", cl[i], bk, "scaling")),
				fmt2(fmed("go", cl[i], bk, "total_mops")), fmt2(fmed("go", cl[i], bk, "one_proc_mops")), fmt2(fmed("go", cl[i], bk, "scaling"))
		}
	}

	print ""
	print "heap floor (plain malloc/std containers vs Go heap), and mapstore\047s ns/op over the Go"
	print "heap\047s (shm/go, file/go: how many times the floor; issue 14\047s hashmap target: <= 2):"
	printf "%-26s %14s %14s %8s %8s\n", "case", "c++_heap_ns/op", "go_heap_ns/op", "shm/go", "file/go"
	for (i = 1; i <= nc; i++) {
		if (!((("boost" SUBSEP cl[i] SUBSEP "heap") in vals) || (("go" SUBSEP cl[i] SUBSEP "heap") in vals))) continue
		b = median(vals["boost" SUBSEP cl[i] SUBSEP "heap"])
		g = median(vals["go" SUBSEP cl[i] SUBSEP "heap"])
		ms = median(vals["go" SUBSEP cl[i] SUBSEP "shm"])
		mf = median(vals["go" SUBSEP cl[i] SUBSEP "file"])
		printf "%-26s %14s %14s %8s %8s\n", cl[i], fmt(b), fmt(g), ratio(ms, g), ratio(mf, g)
	}
}
' "$OUTDIR/all.txt"

echo
echo "raw result lines:"
r=1
while [ "$r" -le "$ROUNDS" ]; do
	echo "  $OUTDIR/boost.$r.txt  $OUTDIR/go.$r.txt"
	r=$((r + 1))
done
echo "  $OUTDIR/all.txt (all rounds, prefixed with side=)"
