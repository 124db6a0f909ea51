// linebounce: how far apart the machine's first two cores are, as the
// round trip of one cache line between two threads pinned to cores 0
// and 1 (each waits for the other's store, then stores). On the 2-core
// VM the project is measured on, the host moved the cores between about
// 100 ns and 530 ns apart during one session; anything that passes data
// between processes (bench cases queue_*, alloc_free_64_2procs) moves
// with it. Build and run:
//
//	gcc -O2 -o /tmp/linebounce bench/linebounce/linebounce.c -lpthread && /tmp/linebounce
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

enum { rounds = 2000000 };

static _Alignas(64) _Atomic long ping;
static _Alignas(64) _Atomic long pong;

static void pin(int cpu) {
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *other(void *arg) {
	(void)arg;
	pin(1);
	for (long i = 1; i <= rounds; i++) {
		while (atomic_load_explicit(&ping, memory_order_acquire) != i)
			;
		atomic_store_explicit(&pong, i, memory_order_release);
	}
	return 0;
}

int main(void) {
	pthread_t t;
	pthread_create(&t, 0, other, 0);
	pin(0);
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 1; i <= rounds; i++) {
		atomic_store_explicit(&ping, i, memory_order_release);
		while (atomic_load_explicit(&pong, memory_order_acquire) != i)
			;
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	pthread_join(t, 0);
	printf("cache line round trip between cores 0 and 1: %.1f ns\n",
	       ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / rounds);
	return 0;
}
