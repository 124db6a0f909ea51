// Boost.Interprocess side of the mapstore side-by-side benchmark.
//
// Build (bench/compare.sh does this for you):
//
//   g++ -O2 -std=c++17 -o bench/boost/build/boostbench bench/boost/bench.cpp -lrt -pthread
//
// Usage (same flags as the Go harness, bench/cmd/mapbench):
//
//   boostbench [-cases a,b,...] [-backings shm,file,heap] [-dir DIR]
//
// For every selected (case, backing) pair exactly one line is printed on
// stdout:
//
//   case=<name> backing=<shm|file|heap> n=<ops> ns_per_op=<float>
//
// A case that measures more than ns_per_op adds key=<float> fields to its
// line (alloc_free_64_2procs). Nothing else goes to stdout; diagnostics go
// to stderr. Any failure exits non-zero. See bench/README.md for what each
// case measures.
//
// Rules followed by every case:
//   * n and sizes are fixed constants;
//   * random inputs come from std::mt19937_64 seeded with 42 and are generated
//     before the clock starts;
//   * each (case, backing) gets a fresh segment, removed before and after;
//   * only the measured loop is timed, with std::chrono::steady_clock;
//   * ns_per_op = elapsed ns / n.
//
// The shm backing is boost::interprocess::managed_shared_memory and the file
// backing is boost::interprocess::managed_mapped_file, i.e. the default
// typedefs (rbtree_best_fit<mutex_family> allocator, iset_index name index).
// The heap backing is the floor: malloc/free, std::unordered_map, std::vector,
// std::map.

#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/list.hpp>
#include <boost/interprocess/containers/map.hpp>
#include <boost/interprocess/containers/string.hpp>
#include <boost/interprocess/containers/vector.hpp>
#include <boost/interprocess/file_mapping.hpp>
#include <boost/interprocess/managed_mapped_file.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <boost/interprocess/ipc/message_queue.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/unordered_map.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <mutex>

namespace bip = boost::interprocess;

namespace {

// ---------------------------------------------------------------------------
// Fixed parameters.

constexpr std::uint64_t kSeed = 42;
constexpr std::size_t kSegmentSize = std::size_t(256) << 20;   // 256 MiB

constexpr std::size_t kAllocFreeN = 2000000;
constexpr std::size_t kAllocManyN = 1000000;
constexpr std::size_t kMixedLive = 10000;
constexpr std::size_t kMixedSteps = 1000000;
constexpr std::size_t kMixedMinSize = 16;
constexpr std::size_t kMixedMaxSize = 4096;
constexpr std::size_t kNamedN = 100000;
constexpr std::size_t kFindN = 1000000;
constexpr std::size_t kVectorN = 10000000;
constexpr std::size_t kStringN = 1000000;
constexpr std::size_t kListN = 1000000;
constexpr std::size_t kMapN = 1000000;
constexpr std::size_t kMapFindN = 1000000;
constexpr std::size_t kOpenN = 100;

const char *const kVectorName = "vec";
const char *const kMapName = "map";
const char *const kStringName = "str";
const char *const kListName = "list";

// string_set's two 32-byte values, set alternately.
const char *const kStringVals[2] = {"0123456789abcdef0123456789abcdef",
                                    "fedcba9876543210fedcba9876543210"};
constexpr std::size_t kStringLen = 32;

// ---------------------------------------------------------------------------
// Small helpers.

// Keeps the compiler from eliding a value (e.g. a malloc/free pair).
template <class T>
inline void escape(T const &v) {
  asm volatile("" : : "g"(v) : "memory");
}

using Clock = std::chrono::steady_clock;

struct Result {
  std::size_t n;
  double ns;                // elapsed nanoseconds of the measured loop
  std::string fields = {};  // " key=value" fields after ns_per_op, if any
};

inline double elapsed_ns(Clock::time_point t0, Clock::time_point t1) {
  return double(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
}

[[noreturn]] void fail(const std::string &msg) { throw std::runtime_error(msg); }

std::vector<std::string> make_names(std::size_t n) {
  std::vector<std::string> names;
  names.reserve(n);
  for (std::size_t i = 0; i < n; ++i) names.push_back("obj_" + std::to_string(i));
  return names;
}

// n distinct random keys, in generation order.
std::vector<std::uint64_t> make_distinct_keys(std::size_t n, std::mt19937_64 &rng) {
  std::vector<std::uint64_t> keys;
  keys.reserve(n);
  std::unordered_set<std::uint64_t> seen;
  seen.reserve(n * 2);
  while (keys.size() < n) {
    std::uint64_t k = rng();
    if (seen.insert(k).second) keys.push_back(k);
  }
  return keys;
}

std::vector<std::uint32_t> make_indices(std::size_t n, std::size_t bound, std::mt19937_64 &rng) {
  std::uniform_int_distribution<std::uint32_t> dist(0, std::uint32_t(bound - 1));
  std::vector<std::uint32_t> v(n);
  for (auto &x : v) x = dist(rng);
  return v;
}

std::vector<std::uint32_t> make_sizes(std::size_t n, std::mt19937_64 &rng) {
  std::uniform_int_distribution<std::uint32_t> dist(kMixedMinSize, kMixedMaxSize);
  std::vector<std::uint32_t> v(n);
  for (auto &x : v) x = dist(rng);
  return v;
}

// ---------------------------------------------------------------------------
// Segment cleanup, including on SIGINT/SIGTERM so an interrupted run does not
// leave a 256 MiB object in /dev/shm.

char g_cleanup_path[4096];  // filesystem path to unlink from a signal handler

extern "C" void on_signal(int sig) {
  if (g_cleanup_path[0] != '\0') ::unlink(g_cleanup_path);
  ::_exit(128 + sig);
}

void set_cleanup_path(const std::string &p) {
  std::snprintf(g_cleanup_path, sizeof g_cleanup_path, "%s", p.c_str());
}

// Backing for managed_shared_memory. On Linux a POSIX shm object "name"
// lives at /dev/shm/name.
struct ShmBacking {
  using segment = bip::managed_shared_memory;
  std::string name;

  explicit ShmBacking(std::string n) : name(std::move(n)) {}
  void remove() const { bip::shared_memory_object::remove(name.c_str()); }
  std::string fs_path() const { return "/dev/shm/" + name; }
  segment *create(std::size_t size) const {
    return new segment(bip::create_only, name.c_str(), size);
  }
  segment *open() const { return new segment(bip::open_only, name.c_str()); }
};

// Backing for managed_mapped_file.
struct FileBacking {
  using segment = bip::managed_mapped_file;
  std::string path;

  explicit FileBacking(std::string p) : path(std::move(p)) {}
  void remove() const { bip::file_mapping::remove(path.c_str()); }
  std::string fs_path() const { return path; }
  segment *create(std::size_t size) const {
    return new segment(bip::create_only, path.c_str(), size);
  }
  segment *open() const { return new segment(bip::open_only, path.c_str()); }
};

// Removes the backing object on construction and on destruction, so each case
// starts from and leaves behind nothing.
template <class B>
struct Fresh {
  const B &b;
  explicit Fresh(const B &bk) : b(bk) {
    set_cleanup_path(b.fs_path());
    b.remove();
  }
  ~Fresh() {
    b.remove();
    g_cleanup_path[0] = '\0';
  }
  Fresh(const Fresh &) = delete;
  Fresh &operator=(const Fresh &) = delete;
};

// Owning pointer for a segment; the segment destructor unmaps it.
template <class Seg>
using SegPtr = std::unique_ptr<Seg>;

// ---------------------------------------------------------------------------
// Segment (shm / file) cases.

// Allocates a 64-byte block in seg and frees it, n times.
template <class Seg>
void alloc_free_loop(Seg &seg, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    void *p = seg.allocate(64);
    escape(p);
    seg.deallocate(p);
  }
}

template <class Seg>
Result timed_alloc_free_64(Seg &seg) {
  const std::size_t n = kAllocFreeN;
  auto t0 = Clock::now();
  alloc_free_loop(seg, n);
  auto t1 = Clock::now();
  return {n, elapsed_ns(t0, t1)};
}

template <class B>
Result seg_alloc_free_64(const B &b) {
  Fresh<B> fresh(b);
  SegPtr<typename B::segment> seg(b.create(kSegmentSize));
  return timed_alloc_free_64(*seg);
}

template <class B>
Result seg_alloc_many_then_free_64(const B &b) {
  const std::size_t n = kAllocManyN;
  std::mt19937_64 rng(kSeed);
  std::vector<std::uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<void *> ptrs(n, nullptr);

  Fresh<B> fresh(b);
  SegPtr<typename B::segment> seg(b.create(kSegmentSize));
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; ++i) ptrs[i] = seg->allocate(64);
  for (std::size_t i = 0; i < n; ++i) seg->deallocate(ptrs[order[i]]);
  auto t1 = Clock::now();
  return {n, elapsed_ns(t0, t1)};
}

template <class B>
Result seg_alloc_mixed(const B &b) {
  std::mt19937_64 rng(kSeed);
  std::vector<std::uint32_t> initial = make_sizes(kMixedLive, rng);
  std::vector<std::uint32_t> idx = make_indices(kMixedSteps, kMixedLive, rng);
  std::vector<std::uint32_t> sizes = make_sizes(kMixedSteps, rng);
  std::vector<void *> live(kMixedLive, nullptr);

  Fresh<B> fresh(b);
  SegPtr<typename B::segment> seg(b.create(kSegmentSize));
  for (std::size_t i = 0; i < kMixedLive; ++i) live[i] = seg->allocate(initial[i]);

  const std::size_t n = kMixedSteps;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t k = idx[i];
    seg->deallocate(live[k]);
    live[k] = seg->allocate(sizes[i]);
  }
  auto t1 = Clock::now();
  for (void *p : live) seg->deallocate(p);
  return {n, elapsed_ns(t0, t1)};
}

template <class Seg>
void construct_all(Seg &seg, const std::vector<std::string> &names) {
  for (std::size_t i = 0; i < names.size(); ++i) {
    std::uint64_t *p = seg.template construct<std::uint64_t>(names[i].c_str())(std::uint64_t(i));
    if (p == nullptr) fail("construct returned null for " + names[i]);
    escape(p);
  }
}

template <class B>
Result seg_construct_named(const B &b) {
  const std::vector<std::string> names = make_names(kNamedN);
  Fresh<B> fresh(b);
  SegPtr<typename B::segment> seg(b.create(kSegmentSize));
  auto t0 = Clock::now();
  construct_all(*seg, names);
  auto t1 = Clock::now();
  if (seg->get_num_named_objects() != kNamedN) fail("construct_named: wrong named object count");
  return {kNamedN, elapsed_ns(t0, t1)};
}

template <class B>
Result seg_find_named(const B &b) {
  const std::vector<std::string> names = make_names(kNamedN);
  std::mt19937_64 rng(kSeed);
  const std::vector<std::uint32_t> idx = make_indices(kFindN, kNamedN, rng);
  std::uint64_t want = 0;
  for (std::uint32_t i : idx) want += i;

  Fresh<B> fresh(b);
  SegPtr<typename B::segment> seg(b.create(kSegmentSize));
  construct_all(*seg, names);

  std::uint64_t sum = 0;
  const std::size_t n = kFindN;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    std::uint64_t *p = seg->template find<std::uint64_t>(names[idx[i]].c_str()).first;
    if (p == nullptr) fail("find_named: not found: " + names[idx[i]]);
    sum += *p;
  }
  auto t1 = Clock::now();
  if (sum != want) fail("find_named: checksum mismatch");
  return {n, elapsed_ns(t0, t1)};
}

template <class B>
Result seg_destroy_named(const B &b) {
  const std::vector<std::string> names = make_names(kNamedN);
  Fresh<B> fresh(b);
  SegPtr<typename B::segment> seg(b.create(kSegmentSize));
  construct_all(*seg, names);

  const std::size_t n = kNamedN;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    if (!seg->template destroy<std::uint64_t>(names[i].c_str()))
      fail("destroy_named: not found: " + names[i]);
  }
  auto t1 = Clock::now();
  if (seg->get_num_named_objects() != 0) fail("destroy_named: objects left behind");
  return {n, elapsed_ns(t0, t1)};
}

template <class Seg>
using SegVector =
    bip::vector<std::uint64_t, bip::allocator<std::uint64_t, typename Seg::segment_manager>>;

template <class B>
Result seg_vector_push_back(const B &b) {
  using Seg = typename B::segment;
  using Vec = SegVector<Seg>;
  using Alloc = typename Vec::allocator_type;

  Fresh<B> fresh(b);
  SegPtr<Seg> seg(b.create(kSegmentSize));
  Vec *v = seg->template construct<Vec>(kVectorName)(Alloc(seg->get_segment_manager()));

  const std::size_t n = kVectorN;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; ++i) v->push_back(std::uint64_t(i));
  auto t1 = Clock::now();
  if (v->size() != n || (*v)[n - 1] != n - 1) fail("vector_push_back: bad contents");
  return {n, elapsed_ns(t0, t1)};
}

template <class Seg>
using SegString = bip::basic_string<char, std::char_traits<char>,
                                    bip::allocator<char, typename Seg::segment_manager>>;

// string_set: assign the two 32-byte values alternately to one string.
template <class B>
Result seg_string_set(const B &b) {
  using Seg = typename B::segment;
  using Str = SegString<Seg>;
  using Alloc = typename Str::allocator_type;

  Fresh<B> fresh(b);
  SegPtr<Seg> seg(b.create(kSegmentSize));
  Str *s = seg->template construct<Str>(kStringName)(Alloc(seg->get_segment_manager()));

  const std::size_t n = kStringN;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; ++i) s->assign(kStringVals[i & 1], kStringLen);
  auto t1 = Clock::now();
  if (s->size() != kStringLen || std::memcmp(s->data(), kStringVals[(n - 1) & 1], kStringLen) != 0)
    fail("string_set: bad contents");
  return {n, elapsed_ns(t0, t1)};
}

template <class Seg>
using SegList = bip::list<std::uint64_t, bip::allocator<std::uint64_t, typename Seg::segment_manager>>;

// Pushes 0..n-1 at the back of l, then pops them all from the front,
// checking each. Shared by the segment and heap rows.
template <class List>
void push_pop(List &l, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) l.push_back(std::uint64_t(i));
  for (std::size_t i = 0; i < n; ++i) {
    if (l.front() != i) fail("list_push_pop: wrong front");
    l.pop_front();
  }
  if (!l.empty()) fail("list_push_pop: elements left behind");
}

// list_push_pop: push_back kListN, then pop_front all; per pair.
template <class B>
Result seg_list_push_pop(const B &b) {
  using Seg = typename B::segment;
  using List = SegList<Seg>;
  using Alloc = typename List::allocator_type;

  Fresh<B> fresh(b);
  SegPtr<Seg> seg(b.create(kSegmentSize));
  List *l = seg->template construct<List>(kListName)(Alloc(seg->get_segment_manager()));

  const std::size_t n = kListN;
  auto t0 = Clock::now();
  push_pop(*l, n);
  auto t1 = Clock::now();
  return {n, elapsed_ns(t0, t1)};
}

template <class Seg>
using SegMap = bip::map<
    std::uint64_t, double, std::less<std::uint64_t>,
    bip::allocator<std::pair<const std::uint64_t, double>, typename Seg::segment_manager>>;

// Inserts keys[i] -> double(i) for every i.
template <class Map>
void fill_map(Map &m, const std::vector<std::uint64_t> &keys) {
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (!m.insert(std::make_pair(keys[i], double(i))).second) fail("map: duplicate key");
  }
}

template <class Seg>
SegMap<Seg> *construct_map(Seg &seg) {
  using Map = SegMap<Seg>;
  using Alloc = typename Map::allocator_type;
  return seg.template construct<Map>(kMapName)(std::less<std::uint64_t>(),
                                               Alloc(seg.get_segment_manager()));
}

// timed_insert times map_insert's inserts of keys into the empty map m;
// timed_find, with m filled, times finds of keys[idx[i]] and checks the
// sum of the values found. what names the case in a failure.
template <class Map>
Result timed_insert(Map &m, const std::vector<std::uint64_t> &keys, const std::string &what) {
  auto t0 = Clock::now();
  fill_map(m, keys);
  auto t1 = Clock::now();
  if (m.size() != keys.size()) fail(what + ": wrong size");
  return {keys.size(), elapsed_ns(t0, t1)};
}

template <class Map>
Result timed_find(Map &m, const std::vector<std::uint64_t> &keys,
                  const std::vector<std::uint32_t> &idx, const std::string &what) {
  double want = 0;
  for (std::uint32_t i : idx) want += double(i);
  fill_map(m, keys);
  double sum = 0;
  const std::size_t n = idx.size();
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    auto it = m.find(keys[idx[i]]);
    if (it == m.end()) fail(what + ": key not found");
    sum += it->second;
  }
  auto t1 = Clock::now();
  if (sum != want) fail(what + ": checksum mismatch");
  return {n, elapsed_ns(t0, t1)};
}

template <class B>
Result seg_map_insert(const B &b) {
  std::mt19937_64 rng(kSeed);
  const std::vector<std::uint64_t> keys = make_distinct_keys(kMapN, rng);
  Fresh<B> fresh(b);
  SegPtr<typename B::segment> seg(b.create(kSegmentSize));
  return timed_insert(*construct_map(*seg), keys, "map_insert");
}

template <class B>
Result seg_map_find(const B &b) {
  std::mt19937_64 rng(kSeed);
  const std::vector<std::uint64_t> keys = make_distinct_keys(kMapN, rng);
  const std::vector<std::uint32_t> idx = make_indices(kMapFindN, kMapN, rng);
  Fresh<B> fresh(b);
  SegPtr<typename B::segment> seg(b.create(kSegmentSize));
  return timed_find(*construct_map(*seg), keys, idx, "map_find");
}

// hashmap_insert and hashmap_find: map_insert's keys and finds on a
// boost::unordered_map in the segment (the interprocess allocator; no
// reserve), as mapstore's HashMap[uint64, float64].
template <class Seg>
using SegHashMap = boost::unordered_map<
    std::uint64_t, double, boost::hash<std::uint64_t>, std::equal_to<std::uint64_t>,
    bip::allocator<std::pair<const std::uint64_t, double>, typename Seg::segment_manager>>;

template <class Seg>
SegHashMap<Seg> *construct_hashmap(Seg &seg) {
  using Map = SegHashMap<Seg>;
  using Alloc = typename Map::allocator_type;
  return seg.template construct<Map>("hashmap")(0, boost::hash<std::uint64_t>(),
                                                std::equal_to<std::uint64_t>(),
                                                Alloc(seg.get_segment_manager()));
}

template <class B>
Result seg_hashmap_insert(const B &b) {
  std::mt19937_64 rng(kSeed);
  const std::vector<std::uint64_t> keys = make_distinct_keys(kMapN, rng);
  Fresh<B> fresh(b);
  SegPtr<typename B::segment> seg(b.create(kSegmentSize));
  return timed_insert(*construct_hashmap(*seg), keys, "hashmap_insert");
}

template <class B>
Result seg_hashmap_find(const B &b) {
  std::mt19937_64 rng(kSeed);
  const std::vector<std::uint64_t> keys = make_distinct_keys(kMapN, rng);
  const std::vector<std::uint32_t> idx = make_indices(kMapFindN, kMapN, rng);
  Fresh<B> fresh(b);
  SegPtr<typename B::segment> seg(b.create(kSegmentSize));
  return timed_find(*construct_hashmap(*seg), keys, idx, "hashmap_find");
}

// open_existing and close_existing: with a segment holding map_insert's
// map (kMapN keys, keys[i] -> double(i), constructed by name) created and
// closed beforehand, open it, find the map by name and look up one random
// key, checking its value, then close it; kOpenN times, a different key
// each time. The open, the find of the map and the key's lookup are one
// sum of times, the close (destructor: unmap and close the descriptor)
// another; each case reports its own.
template <class B>
std::pair<Result, Result> open_close_times(const B &b) {
  using Seg = typename B::segment;
  std::mt19937_64 rng(kSeed);
  const std::vector<std::uint64_t> keys = make_distinct_keys(kMapN, rng);
  const std::vector<std::uint32_t> idx = make_indices(kOpenN, kMapN, rng);

  Fresh<B> fresh(b);
  {
    SegPtr<Seg> seg(b.create(kSegmentSize));
    fill_map(*construct_map(*seg), keys);
  }  // closed here

  const std::size_t n = kOpenN;
  double open_ns = 0, close_ns = 0;
  for (std::size_t i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    SegPtr<Seg> seg(b.open());
    SegMap<Seg> *m = seg->template find<SegMap<Seg>>(kMapName).first;
    if (m == nullptr) fail("open_existing: map not found");
    auto it = m->find(keys[idx[i]]);
    if (it == m->end()) fail("open_existing: key not found");
    if (it->second != double(idx[i])) fail("open_existing: wrong value");
    escape(it->second);
    auto t1 = Clock::now();
    seg.reset();
    auto t2 = Clock::now();
    open_ns += elapsed_ns(t0, t1);
    close_ns += elapsed_ns(t1, t2);
  }
  return {{n, open_ns}, {n, close_ns}};
}

template <class B>
Result seg_open_existing(const B &b) {
  return open_close_times(b).first;
}

template <class B>
Result seg_close_existing(const B &b) {
  return open_close_times(b).second;
}

// ---------------------------------------------------------------------------
// Heap (floor) cases.

Result heap_alloc_free_64() {
  const std::size_t n = kAllocFreeN;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    void *p = std::malloc(64);
    escape(p);
    if (p == nullptr) fail("malloc failed");
    std::free(p);
  }
  auto t1 = Clock::now();
  return {n, elapsed_ns(t0, t1)};
}

Result heap_alloc_many_then_free_64() {
  const std::size_t n = kAllocManyN;
  std::mt19937_64 rng(kSeed);
  std::vector<std::uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<void *> ptrs(n, nullptr);

  auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    ptrs[i] = std::malloc(64);
    if (ptrs[i] == nullptr) fail("malloc failed");
  }
  escape(ptrs.data());
  for (std::size_t i = 0; i < n; ++i) std::free(ptrs[order[i]]);
  auto t1 = Clock::now();
  return {n, elapsed_ns(t0, t1)};
}

Result heap_alloc_mixed() {
  std::mt19937_64 rng(kSeed);
  std::vector<std::uint32_t> initial = make_sizes(kMixedLive, rng);
  std::vector<std::uint32_t> idx = make_indices(kMixedSteps, kMixedLive, rng);
  std::vector<std::uint32_t> sizes = make_sizes(kMixedSteps, rng);
  std::vector<void *> live(kMixedLive, nullptr);
  for (std::size_t i = 0; i < kMixedLive; ++i) {
    live[i] = std::malloc(initial[i]);
    if (live[i] == nullptr) fail("malloc failed");
  }

  const std::size_t n = kMixedSteps;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t k = idx[i];
    std::free(live[k]);
    live[k] = std::malloc(sizes[i]);
    if (live[k] == nullptr) fail("malloc failed");
  }
  escape(live.data());
  auto t1 = Clock::now();
  for (void *p : live) std::free(p);
  return {n, elapsed_ns(t0, t1)};
}

using HeapNamed = std::unordered_map<std::string, std::uint64_t *>;

void heap_construct_all(HeapNamed &m, const std::vector<std::string> &names) {
  for (std::size_t i = 0; i < names.size(); ++i) {
    auto r = m.emplace(names[i], nullptr);
    if (!r.second) fail("heap construct: duplicate name " + names[i]);
    r.first->second = new std::uint64_t(i);
  }
}

void heap_named_clear(HeapNamed &m) {
  for (auto &kv : m) delete kv.second;
  m.clear();
}

Result heap_construct_named() {
  const std::vector<std::string> names = make_names(kNamedN);
  HeapNamed m;
  auto t0 = Clock::now();
  heap_construct_all(m, names);
  auto t1 = Clock::now();
  if (m.size() != kNamedN) fail("heap construct_named: wrong size");
  heap_named_clear(m);
  return {kNamedN, elapsed_ns(t0, t1)};
}

Result heap_find_named() {
  const std::vector<std::string> names = make_names(kNamedN);
  std::mt19937_64 rng(kSeed);
  const std::vector<std::uint32_t> idx = make_indices(kFindN, kNamedN, rng);
  std::uint64_t want = 0;
  for (std::uint32_t i : idx) want += i;
  HeapNamed m;
  heap_construct_all(m, names);

  std::uint64_t sum = 0;
  const std::size_t n = kFindN;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    auto it = m.find(names[idx[i]]);
    if (it == m.end()) fail("heap find_named: not found");
    sum += *it->second;
  }
  auto t1 = Clock::now();
  if (sum != want) fail("heap find_named: checksum mismatch");
  heap_named_clear(m);
  return {n, elapsed_ns(t0, t1)};
}

Result heap_destroy_named() {
  const std::vector<std::string> names = make_names(kNamedN);
  HeapNamed m;
  heap_construct_all(m, names);

  const std::size_t n = kNamedN;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    auto it = m.find(names[i]);
    if (it == m.end()) fail("heap destroy_named: not found");
    delete it->second;
    m.erase(it);
  }
  auto t1 = Clock::now();
  if (!m.empty()) fail("heap destroy_named: objects left behind");
  return {n, elapsed_ns(t0, t1)};
}

Result heap_vector_push_back() {
  std::vector<std::uint64_t> v;
  const std::size_t n = kVectorN;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; ++i) v.push_back(std::uint64_t(i));
  escape(v.data());
  auto t1 = Clock::now();
  if (v.size() != n || v[n - 1] != n - 1) fail("heap vector_push_back: bad contents");
  return {n, elapsed_ns(t0, t1)};
}

// std::string::assign into the buffer the string already holds (a 32-byte
// value is past the small-string form, so the first assign allocates).
Result heap_string_set() {
  std::string s;
  const std::size_t n = kStringN;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < n; ++i) {
    s.assign(kStringVals[i & 1], kStringLen);
    escape(s.data());
  }
  auto t1 = Clock::now();
  if (s != kStringVals[(n - 1) & 1]) fail("heap string_set: bad contents");
  return {n, elapsed_ns(t0, t1)};
}

Result heap_list_push_pop() {
  std::list<std::uint64_t> l;
  const std::size_t n = kListN;
  auto t0 = Clock::now();
  push_pop(l, n);
  auto t1 = Clock::now();
  return {n, elapsed_ns(t0, t1)};
}

Result heap_map_insert() {
  std::mt19937_64 rng(kSeed);
  std::map<std::uint64_t, double> m;
  return timed_insert(m, make_distinct_keys(kMapN, rng), "heap map_insert");
}

Result heap_map_find() {
  std::mt19937_64 rng(kSeed);
  const std::vector<std::uint64_t> keys = make_distinct_keys(kMapN, rng);
  const std::vector<std::uint32_t> idx = make_indices(kMapFindN, kMapN, rng);
  std::map<std::uint64_t, double> m;
  return timed_find(m, keys, idx, "heap map_find");
}

Result heap_hashmap_insert() {
  std::mt19937_64 rng(kSeed);
  std::unordered_map<std::uint64_t, double> m;
  return timed_insert(m, make_distinct_keys(kMapN, rng), "heap hashmap_insert");
}

Result heap_hashmap_find() {
  std::mt19937_64 rng(kSeed);
  const std::vector<std::uint64_t> keys = make_distinct_keys(kMapN, rng);
  const std::vector<std::uint32_t> idx = make_indices(kMapFindN, kMapN, rng);
  std::unordered_map<std::uint64_t, double> m;
  return timed_find(m, keys, idx, "heap hashmap_find");
}

// ---------------------------------------------------------------------------
// Durable-IPC cases (issue 15): an uncontended interprocess_mutex in the
// segment (heap: std::mutex), and 64-byte messages between two processes
// (fork) through Boost's message_queue, which lives in a shared memory
// object of its own whatever the backing (so it has a shm row only; the
// heap row of queue_pingpong_64 is a Unix domain socket pair).

constexpr std::size_t kMutexN = 10000000;
constexpr std::size_t kPingpongN = 100000;
constexpr std::size_t kThroughputN = 1000000;
constexpr std::size_t kQueueCap = 1024;
constexpr std::size_t kMsgSize = 64;

template <class B>
Result seg_mutex_lock_unlock(const B &b) {
  Fresh<B> fresh(b);
  SegPtr<typename B::segment> seg(b.create(kSegmentSize));
  auto *mu = seg->template construct<bip::interprocess_mutex>("mutex")();
  auto *count = seg->template construct<std::uint64_t>("count")(0);
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < kMutexN; ++i) {
    mu->lock();
    ++*count;
    mu->unlock();
  }
  auto t1 = Clock::now();
  if (*count != kMutexN) fail("mutex_lock_unlock: wrong count");
  return {kMutexN, elapsed_ns(t0, t1)};
}

Result heap_mutex_lock_unlock() {
  std::mutex mu;
  std::uint64_t count = 0;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < kMutexN; ++i) {
    mu.lock();
    ++count;
    escape(count);
    mu.unlock();
  }
  auto t1 = Clock::now();
  if (count != kMutexN) fail("heap mutex_lock_unlock: wrong count");
  return {kMutexN, elapsed_ns(t0, t1)};
}

// Runs child in a forked process; returns its pid.
pid_t fork_child(const std::function<void()> &child) {
  std::fflush(stdout);
  pid_t pid = ::fork();
  if (pid < 0) fail("fork failed");
  if (pid == 0) {
    try {
      child();
    } catch (const std::exception &e) {
      std::fprintf(stderr, "boostbench child: %s\n", e.what());
      ::_exit(1);
    }
    ::_exit(0);
  }
  return pid;
}

void wait_child(pid_t pid) {
  int st = 0;
  if (::waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    fail("child process failed");
}

struct QueueNames {
  std::string ping, pong;
  explicit QueueNames(const std::string &base) : ping(base + "_ping"), pong(base + "_pong") {
    bip::message_queue::remove(ping.c_str());
    bip::message_queue::remove(pong.c_str());
  }
  ~QueueNames() {
    bip::message_queue::remove(ping.c_str());
    bip::message_queue::remove(pong.c_str());
  }
};

Result shm_queue_pingpong_64(const ShmBacking &b) {
  QueueNames qn(b.name);
  bip::message_queue ping(bip::create_only, qn.ping.c_str(), kQueueCap, kMsgSize);
  bip::message_queue pong(bip::create_only, qn.pong.c_str(), kQueueCap, kMsgSize);
  pid_t pid = fork_child([&] {
    bip::message_queue in(bip::open_only, qn.ping.c_str());
    bip::message_queue out(bip::open_only, qn.pong.c_str());
    char buf[kMsgSize];
    for (std::size_t i = 0; i < kPingpongN; ++i) {
      bip::message_queue::size_type n;
      unsigned prio;
      in.receive(buf, sizeof buf, n, prio);
      out.send(buf, n, 0);
    }
  });
  char msg[kMsgSize] = {0}, buf[kMsgSize];
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < kPingpongN; ++i) {
    msg[0] = char(i);
    ping.send(msg, sizeof msg, 0);
    bip::message_queue::size_type n;
    unsigned prio;
    pong.receive(buf, sizeof buf, n, prio);
    if (n != kMsgSize || buf[0] != char(i)) fail("pingpong: wrong message back");
  }
  auto t1 = Clock::now();
  wait_child(pid);
  return {kPingpongN, elapsed_ns(t0, t1)};
}

Result shm_queue_throughput_64(const ShmBacking &b) {
  QueueNames qn(b.name);
  bip::message_queue q(bip::create_only, qn.ping.c_str(), kQueueCap, kMsgSize);
  bip::message_queue ready(bip::create_only, qn.pong.c_str(), 1, 1);
  pid_t pid = fork_child([&] {
    bip::message_queue out(bip::open_only, qn.ping.c_str());
    bip::message_queue go(bip::open_only, qn.pong.c_str());
    go.send("r", 1, 0);
    char buf[kMsgSize] = {0};
    for (std::size_t i = 0; i < kThroughputN; ++i) {
      buf[0] = char(i);
      out.send(buf, sizeof buf, 0);
    }
  });
  char buf[kMsgSize];
  bip::message_queue::size_type n;
  unsigned prio;
  ready.receive(buf, sizeof buf, n, prio);  // the child is running
  std::size_t sum = 0;
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < kThroughputN; ++i) {
    q.receive(buf, sizeof buf, n, prio);
    sum += n;
  }
  auto t1 = Clock::now();
  wait_child(pid);
  if (sum != kThroughputN * kMsgSize) fail("throughput: wrong byte count");
  return {kThroughputN, elapsed_ns(t0, t1)};
}

// Writes (wr) or reads all n bytes at p through fd.
void full(int fd, char *p, std::size_t n, bool wr) {
  while (n > 0) {
    ssize_t k = wr ? ::write(fd, p, n) : ::read(fd, p, n);
    if (k <= 0) fail("socket or pipe i/o failed");
    p += k;
    n -= std::size_t(k);
  }
}

// A Unix domain socket pair: the floor a queue in memory should beat.
Result heap_queue_pingpong_64() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) fail("socketpair failed");
  pid_t pid = fork_child([&] {
    ::close(sv[0]);
    char buf[kMsgSize];
    for (std::size_t i = 0; i < kPingpongN; ++i) {
      full(sv[1], buf, sizeof buf, false);
      full(sv[1], buf, sizeof buf, true);
    }
  });
  ::close(sv[1]);
  char msg[kMsgSize] = {0}, buf[kMsgSize];
  auto t0 = Clock::now();
  for (std::size_t i = 0; i < kPingpongN; ++i) {
    msg[0] = char(i);
    full(sv[0], msg, sizeof msg, true);
    full(sv[0], buf, sizeof buf, false);
    if (buf[0] != char(i)) fail("socketpair pingpong: wrong message back");
  }
  auto t1 = Clock::now();
  ::close(sv[0]);
  wait_child(pid);
  return {kPingpongN, elapsed_ns(t0, t1)};
}

// ---------------------------------------------------------------------------
// alloc_free_64_2procs (issue 17, allocation that scales with processes):
// two processes, this one and a forked child that opens the segment by
// name, each allocate and free a 64-byte block kAllocFreeN times on the one
// segment, started together. Before that, on the same segment, this process
// runs alloc_free_64's loop alone, so that the two-process rate is set
// against the one-process rate of the same moment.
//
// n and ns_per_op are per process: kAllocFreeN, and the mean over the two
// processes of the time of its loop divided by kAllocFreeN. The fields:
//   total_mops     million pairs per second of both together: 2*kAllocFreeN
//                  over the time from the first loop's start to the last
//                  one's end
//   one_proc_mops  million pairs per second of alloc_free_64's loop, alone
//   scaling        total_mops / one_proc_mops (issue 17's target: 1.6)
//   p1_ns_per_op   this process's loop time / kAllocFreeN
//   p2_ns_per_op   the child's
//   start_skew_us  how much later the later loop started, in microseconds

// steady_clock is CLOCK_MONOTONIC on Linux: one clock for every process of
// the machine, so the two processes' times can be set side by side.
std::int64_t mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// A pipe whose ends are closed when it goes. After the fork each process
// closes the end it does not use (only_read, only_write), so that a read
// sees the end of the file when the other process is gone.
struct Pipe {
  int fd[2] = {-1, -1};
  Pipe() {
    if (::pipe(fd) != 0) fail("pipe failed");
  }
  ~Pipe() {
    close_end(0);
    close_end(1);
  }
  void close_end(int i) {
    if (fd[i] >= 0) ::close(fd[i]);
    fd[i] = -1;
  }
  int only_read() {
    close_end(1);
    return fd[0];
  }
  int only_write() {
    close_end(0);
    return fd[1];
  }
  Pipe(const Pipe &) = delete;
  Pipe &operator=(const Pipe &) = delete;
};

template <class B>
Result seg_alloc_free_64_2procs(const B &b) {
  Fresh<B> fresh(b);
  SegPtr<typename B::segment> seg(b.create(kSegmentSize));
  const Result one = timed_alloc_free_64(*seg);

  // The start barrier: the child opens the segment, does one pair and
  // writes a byte to ready, then blocks reading go; both loops start when
  // this process writes to go. The child sends its loop's start and end
  // (mono_ns) through done.
  Pipe ready, go, done;
  pid_t pid = fork_child([&] {
    const int ready_w = ready.only_write(), go_r = go.only_read(), done_w = done.only_write();
    SegPtr<typename B::segment> s(b.open());
    alloc_free_loop(*s, 1);
    char c = 'r';
    full(ready_w, &c, 1, true);
    full(go_r, &c, 1, false);
    std::int64_t t[2];
    t[0] = mono_ns();
    alloc_free_loop(*s, kAllocFreeN);
    t[1] = mono_ns();
    full(done_w, reinterpret_cast<char *>(t), sizeof t, true);
  });
  const int ready_r = ready.only_read(), go_w = go.only_write(), done_r = done.only_read();
  char c = 0;
  full(ready_r, &c, 1, false);
  c = 'g';
  full(go_w, &c, 1, true);
  const std::int64_t p0 = mono_ns();
  alloc_free_loop(*seg, kAllocFreeN);
  const std::int64_t p1 = mono_ns();
  std::int64_t t[2];
  full(done_r, reinterpret_cast<char *>(t), sizeof t, false);
  wait_child(pid);

  const double n = double(kAllocFreeN);
  const double span = double(std::max(p1, t[1]) - std::min(p0, t[0]));
  const double total = 2 * n / span * 1e3;
  const double one_mops = double(one.n) / one.ns * 1e3;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                " total_mops=%.4f one_proc_mops=%.4f scaling=%.4f p1_ns_per_op=%.4f"
                " p2_ns_per_op=%.4f start_skew_us=%.4f",
                total, one_mops, total / one_mops, double(p1 - p0) / n, double(t[1] - t[0]) / n,
                double(std::max(p0, t[0]) - std::min(p0, t[0])) / 1e3);
  return {kAllocFreeN, double((p1 - p0) + (t[1] - t[0])) / 2, buf};
}

// ---------------------------------------------------------------------------
// Case table.

struct Case {
  const char *name;
  std::function<Result(const ShmBacking &)> shm;
  std::function<Result(const FileBacking &)> file;
  std::function<Result()> heap;  // empty: no heap row
};

#define SEG_CASE(name) #name, seg_##name<ShmBacking>, seg_##name<FileBacking>
const std::vector<Case> &all_cases() {
  static const std::vector<Case> cases = {
      {SEG_CASE(alloc_free_64), heap_alloc_free_64},
      {SEG_CASE(alloc_free_64_2procs), nullptr},
      {SEG_CASE(alloc_many_then_free_64), heap_alloc_many_then_free_64},
      {SEG_CASE(alloc_mixed), heap_alloc_mixed},
      {SEG_CASE(construct_named), heap_construct_named},
      {SEG_CASE(find_named), heap_find_named},
      {SEG_CASE(destroy_named), heap_destroy_named},
      {SEG_CASE(vector_push_back), heap_vector_push_back},
      {SEG_CASE(string_set), heap_string_set},
      {SEG_CASE(list_push_pop), heap_list_push_pop},
      {SEG_CASE(map_insert), heap_map_insert},
      {SEG_CASE(map_find), heap_map_find},
      {SEG_CASE(hashmap_insert), heap_hashmap_insert},
      {SEG_CASE(hashmap_find), heap_hashmap_find},
      {SEG_CASE(open_existing), nullptr},
      {SEG_CASE(close_existing), nullptr},
      {SEG_CASE(mutex_lock_unlock), heap_mutex_lock_unlock},
      {"queue_pingpong_64", shm_queue_pingpong_64, nullptr, heap_queue_pingpong_64},
      {"queue_throughput_64", shm_queue_throughput_64, nullptr, nullptr},
  };
  return cases;
}
#undef SEG_CASE

// ---------------------------------------------------------------------------
// Command line (Go flag package style: -flag value, -flag=value, --flag).

std::vector<std::string> split_commas(const std::string &s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    std::size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    std::string item = s.substr(start, end - start);
    // trim spaces
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) out.push_back(item);
    start = end + 1;
  }
  return out;
}

void usage(std::FILE *f) {
  std::fprintf(f,
               "usage: boostbench [-cases a,b,...] [-backings shm,file,heap] [-dir DIR]\n"
               "  -cases     comma list of cases (default: all)\n"
               "  -backings  comma list of shm, file, heap (default: shm,file,heap)\n"
               "  -dir       directory for file-backed segments (default: $TMPDIR or /tmp)\n"
               "cases:");
  for (const Case &c : all_cases()) std::fprintf(f, " %s", c.name);
  std::fprintf(f, "\n");
}

struct Options {
  std::vector<std::string> cases;
  std::vector<std::string> backings;
  std::string dir;
};

// Returns 0 on success, otherwise the exit code to use.
int parse_args(int argc, char **argv, Options &opt) {
  std::string cases, backings = "shm,file,heap", dir;
  bool have_cases = false;
  const char *tmp = std::getenv("TMPDIR");
  dir = (tmp != nullptr && *tmp != '\0') ? tmp : "/tmp";

  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "-help" || a == "--help") {
      usage(stderr);
      return 3;  // mapped to 0 by main
    }
    if (a.size() < 2 || a[0] != '-') {
      std::fprintf(stderr, "boostbench: unexpected argument %s\n", a.c_str());
      usage(stderr);
      return 2;
    }
    std::string key = a.substr(a[1] == '-' ? 2 : 1);
    std::string val;
    std::size_t eq = key.find('=');
    if (eq != std::string::npos) {
      val = key.substr(eq + 1);
      key = key.substr(0, eq);
    } else {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "boostbench: flag needs an argument: -%s\n", key.c_str());
        return 2;
      }
      val = argv[++i];
    }
    if (key == "cases") {
      cases = val;
      have_cases = true;
    } else if (key == "backings") {
      backings = val;
    } else if (key == "dir") {
      dir = val;
    } else {
      std::fprintf(stderr, "boostbench: flag provided but not defined: -%s\n", key.c_str());
      usage(stderr);
      return 2;
    }
  }

  if (have_cases) {
    opt.cases = split_commas(cases);
    for (const std::string &c : opt.cases) {
      bool known = false;
      for (const Case &k : all_cases()) known = known || c == k.name;
      if (!known) {
        std::fprintf(stderr, "boostbench: unknown case %s\n", c.c_str());
        usage(stderr);
        return 2;
      }
    }
  } else {
    for (const Case &k : all_cases()) opt.cases.push_back(k.name);
  }
  opt.backings = split_commas(backings);
  for (const std::string &b : opt.backings) {
    if (b != "shm" && b != "file" && b != "heap") {
      std::fprintf(stderr, "boostbench: unknown backing %s (want shm, file or heap)\n", b.c_str());
      return 2;
    }
  }
  if (opt.cases.empty() || opt.backings.empty()) {
    std::fprintf(stderr, "boostbench: nothing to run\n");
    return 2;
  }
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  opt.dir = dir;
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  Options opt;
  int rc = parse_args(argc, argv, opt);
  if (rc == 3) return 0;
  if (rc != 0) return rc;

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGHUP, on_signal);

  const std::string base = "mapstore_boostbench_" + std::to_string(::getpid());
  const ShmBacking shm(base);
  const FileBacking file(opt.dir + "/" + base + ".seg");

  for (const std::string &cname : opt.cases) {
    const Case *c = nullptr;
    for (const Case &k : all_cases())
      if (cname == k.name) c = &k;
    for (const std::string &bname : opt.backings) {
      Result r{};
      try {
        if (bname == "shm") {
          r = c->shm(shm);
        } else if (bname == "file") {
          if (!c->file) {
            std::fprintf(stderr, "boostbench: %s has no file variant; skipped\n", c->name);
            continue;
          }
          r = c->file(file);
        } else {
          if (!c->heap) {
            std::fprintf(stderr, "boostbench: %s has no heap variant; skipped\n", c->name);
            continue;
          }
          r = c->heap();
        }
      } catch (const std::exception &e) {
        std::fprintf(stderr, "boostbench: case=%s backing=%s failed: %s\n", c->name,
                     bname.c_str(), e.what());
        shm.remove();
        file.remove();
        return 1;
      }
      std::printf("case=%s backing=%s n=%zu ns_per_op=%.2f%s\n", c->name, bname.c_str(), r.n,
                  r.ns / double(r.n), r.fields.c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}
