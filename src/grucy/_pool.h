/* grucy's thread team: persistent workers, per-call team sizes, waits that sleep.
 *
 * Why not OpenMP.  The kernels need three things GNU OpenMP does not give:
 *  - a team size chosen per call (1 thread for a tiny problem, 16 for a large one) with
 *    no lasting cost: after a 16-thread region libgomp's surplus threads keep spinning
 *    (GOMP_SPINCOUNT), and a later 2-thread call on a 2-core box ran 10x slower for a
 *    while (issue 13: 1x100x32x64 training 1.3-1.6 ms instead of 0.16 ms);
 *  - waits that stop burning a core when the partner is descheduled (a busy machine):
 *    every wait here spins for at most GRUCY_SPIN_NS, yields, then sleeps on a futex;
 *  - fork safety: a child forked after a multi-threaded call hangs in libgomp's next
 *    parallel region (its pool lists threads the child does not have).  Here a child
 *    starts with no workers and one thread until it asks for more (pthread_atfork).
 * It also works where the compiler has no OpenMP (Apple clang).
 *
 * One caller holds the team at a time: a second caller (another Python thread, the GIL
 * released) that finds it busy runs its work alone (nt = 1).  The kernels' results do not
 * depend on the thread count, so that changes the time only.
 *
 * Two kinds of job.  A static job gives each thread its part and waits for all of them
 * (parts that meet at barriers need every thread).  A dynamic job (grucy_tasks) lets
 * whichever thread is running claim the next piece, and returns when the pieces are done:
 * workers that get a core only after that do not join it.  On a busy machine the
 * scheduler keeps a woken worker waiting for milliseconds; a static 0.7 ms call then
 * took 6-9 ms at the median (16x100x64x128 inference, 2 threads, two spinning
 * processes on the 2 cores), where the caller could have done all of it in 1.5.
 */
#ifndef GRUCY_POOL_H
#define GRUCY_POOL_H

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GRUCY_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define GRUCY_RELAX() __asm__ __volatile__("yield")
#else
#define GRUCY_RELAX() ((void)0)
#endif

static inline double grucy_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* How long a waiting thread spins before it sleeps.  A time step of the large shapes
 * takes 20-500 us, so barriers inside a sequence are met while spinning on a quiet
 * machine; a partner descheduled by another process costs at most this much of our
 * core before we give it up.  Between kernel calls (the Python between layers) workers
 * stay awake for the same time.  GRUCY_SPIN_US overrides it (0: sleep at once). */
static double grucy_spin_s = 50e-6;

/* ---- a word to wait on (futex on Linux, one condition variable elsewhere) ---------- */

typedef struct {
    _Atomic unsigned seq;
    _Atomic int sleepers;
} grucy_word;

#ifndef __linux__
static pthread_mutex_t grucy_word_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t grucy_word_cond = PTHREAD_COND_INITIALIZER;
#endif

static void grucy_word_sleep(grucy_word* w, unsigned old)
{
    atomic_fetch_add(&w->sleepers, 1);
#ifdef __linux__
    while (atomic_load(&w->seq) == old)
        syscall(SYS_futex, (unsigned*)&w->seq, FUTEX_WAIT_PRIVATE, old, NULL, NULL, 0);
#else
    pthread_mutex_lock(&grucy_word_mutex);
    while (atomic_load(&w->seq) == old)
        pthread_cond_wait(&grucy_word_cond, &grucy_word_mutex);
    pthread_mutex_unlock(&grucy_word_mutex);
#endif
    atomic_fetch_sub(&w->sleepers, 1);
}

/* Wait until w->seq differs from old: spin, then yield, then sleep.  Returns the
 * seconds spent waiting (for the profile). */
static double grucy_word_wait(grucy_word* w, unsigned old)
{
    double t0, now;
    int i;
    if (atomic_load_explicit(&w->seq, memory_order_acquire) != old)
        return 0;
    t0 = grucy_now();
    now = t0;
    while (now - t0 < grucy_spin_s) {
        for (i = 0; i < 64; i++) {
            if (atomic_load_explicit(&w->seq, memory_order_acquire) != old)
                return grucy_now() - t0;
            GRUCY_RELAX();
        }
        now = grucy_now();
    }
    for (i = 0; i < 4; i++) {        /* let a runnable partner on this core go first */
        sched_yield();
        if (atomic_load_explicit(&w->seq, memory_order_acquire) != old)
            return grucy_now() - t0;
    }
    grucy_word_sleep(w, old);
    return grucy_now() - t0;
}

/* Publish a change of w->seq (already made) to sleepers. */
static void grucy_word_wake(grucy_word* w)
{
    if (atomic_load(&w->sleepers) == 0)
        return;
#ifdef __linux__
    syscall(SYS_futex, (unsigned*)&w->seq, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
#else
    pthread_mutex_lock(&grucy_word_mutex);
    pthread_cond_broadcast(&grucy_word_cond);
    pthread_mutex_unlock(&grucy_word_mutex);
#endif
}

/* ---- barrier of n threads ---------------------------------------------------------- */

typedef struct {
    _Atomic int count;
    int n;
    grucy_word gen;
    char pad[64];   /* barriers of different groups on different cache lines */
} grucy_barrier;

static void grucy_barrier_init(grucy_barrier* b, int n)
{
    atomic_store(&b->count, 0);
    atomic_store(&b->gen.seq, 0);
    atomic_store(&b->gen.sleepers, 0);
    b->n = n;
}

/* Returns the seconds this thread waited. */
static double grucy_barrier_wait(grucy_barrier* b)
{
    unsigned g;
    if (b->n <= 1)
        return 0;
    g = atomic_load_explicit(&b->gen.seq, memory_order_acquire);
    if (atomic_fetch_add(&b->count, 1) == b->n - 1) {
        atomic_store(&b->count, 0);
        atomic_fetch_add_explicit(&b->gen.seq, 1, memory_order_release);
        grucy_word_wake(&b->gen);
        return 0;
    }
    return grucy_word_wait(&b->gen, g);
}

/* ---- pieces claimed by whichever thread runs (a dynamic job's phases) -------------- */

typedef struct {
    _Atomic int next;        /* the next unclaimed piece */
    grucy_word done;         /* seq: pieces finished */
    int total;
    char pad[64];
} grucy_tasks;

static void grucy_tasks_init(grucy_tasks* q, int total)
{
    atomic_store(&q->next, 0);
    atomic_store(&q->done.seq, 0);
    atomic_store(&q->done.sleepers, 0);
    q->total = total;
}

/* The next piece for the calling thread, or -1 when all are taken. */
static inline int grucy_tasks_claim(grucy_tasks* q)
{
    int i;
    if (atomic_load_explicit(&q->next, memory_order_relaxed) >= q->total)
        return -1;
    i = atomic_fetch_add_explicit(&q->next, 1, memory_order_relaxed);
    return i < q->total ? i : -1;
}

/* A claimed piece is finished (its writes are published to grucy_tasks_wait). */
static inline void grucy_tasks_finish(grucy_tasks* q)
{
    unsigned d = atomic_fetch_add_explicit(&q->done.seq, 1, memory_order_acq_rel) + 1;
    if ((int)d == q->total)
        grucy_word_wake(&q->done);
}

/* Wait until every piece is finished; returns the seconds waited. */
static double grucy_tasks_wait(grucy_tasks* q)
{
    unsigned d;
    double w = 0;
    while ((int)(d = atomic_load_explicit(&q->done.seq, memory_order_acquire)) < q->total)
        w += grucy_word_wait(&q->done, d);
    return w;
}

/* ---- the team ---------------------------------------------------------------------- */

typedef void (*grucy_job_fn)(void* ctx, int tid, int nt);

typedef struct {
    grucy_word go;           /* bumped to start this worker on the current job */
    pthread_t thread;
    int tid;
    char pad[64];
} grucy_worker;

/* grucy_pool.state: GRUCY_OPEN while workers may join the current job, plus how many
 * are inside it.  A worker joins by incrementing it while open, then reads the job;
 * the caller closes it when the job is done and waits until the count is 0, so no
 * worker touches a job (its context is on the caller's stack) after its run returns. */
#define GRUCY_OPEN 0x80000000u

static struct {
    pthread_mutex_t lock;    /* held by the caller running a job */
    grucy_worker* w;         /* w[i] runs tid i + 1 */
    int nworkers, cap;
    grucy_job_fn fn;
    void* ctx;
    int nt, dynamic;
    unsigned long job;       /* numbers the jobs: a worker runs each at most once */
    _Atomic int pending;     /* static job: workers still running it */
    _Atomic unsigned state;
    grucy_word done;         /* bumped when pending or the count of a closed job hits 0 */
    int atfork;
} grucy_pool = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, NULL, NULL, 0, 0, 0, 0, 0, {0, 0},
               0};

/* Wake-ups that found their dynamic job over (read by the tests: _gru._late_workers). */
static _Atomic long grucy_pool_late = 0;

static void grucy_pool_signal_done(void)
{
    atomic_fetch_add_explicit(&grucy_pool.done.seq, 1, memory_order_release);
    grucy_word_wake(&grucy_pool.done);
}

/* Threads the kernels use (grucy.set_num_threads); 1 in a forked child until set. */
static int grucy_nthreads = 1;

static void* grucy_worker_main(void* arg)
{
    grucy_worker* me = (grucy_worker*)arg;
    unsigned seen = 0;
    unsigned long last = 0;  /* the job this worker ran last */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);   /* signals go to Python's threads */
    for (;;) {
        unsigned s;
        int joined = 0;
        grucy_word_wait(&me->go, seen);
        seen = atomic_load_explicit(&me->go.seq, memory_order_acquire);
        s = atomic_load_explicit(&grucy_pool.state, memory_order_acquire);
        while (s & GRUCY_OPEN) {
            if (atomic_compare_exchange_weak_explicit(&grucy_pool.state, &s, s + 1,
                                                      memory_order_acq_rel,
                                                      memory_order_acquire)) {
                joined = 1;
                break;
            }
        }
        if (!joined) {       /* woken for a dynamic job that ended before we got a core */
            atomic_fetch_add_explicit(&grucy_pool_late, 1, memory_order_relaxed);
            continue;
        }
        /* A wake-up for a dynamic job that this worker saw only once the next job was
         * open joins that one early; the next job's own wake-up then finds it done. */
        if (me->tid < grucy_pool.nt && grucy_pool.job != last) {
            last = grucy_pool.job;
            grucy_pool.fn(grucy_pool.ctx, me->tid, grucy_pool.nt);
            if (!grucy_pool.dynamic && atomic_fetch_sub(&grucy_pool.pending, 1) == 1)
                grucy_pool_signal_done();
        }
        s = atomic_fetch_sub_explicit(&grucy_pool.state, 1, memory_order_acq_rel) - 1;
        if (s == 0)          /* the last one out of a closed job */
            grucy_pool_signal_done();
    }
    return NULL;
}

static void grucy_pool_child(void)
{
    /* The child has only the forking thread: forget the parent's workers (their
     * memory is left as it is) and run on one thread until told otherwise. */
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    memcpy(&grucy_pool.lock, &fresh, sizeof fresh);
    grucy_pool.w = NULL;
    grucy_pool.nworkers = grucy_pool.cap = 0;
    atomic_store(&grucy_pool.pending, 0);
    atomic_store(&grucy_pool.state, 0);
    grucy_nthreads = 1;
}

/* Make sure workers 1 .. want - 1 exist; returns how many threads can take part. */
static int grucy_pool_grow(int want)
{
    int i;
    if (!grucy_pool.atfork) {
        pthread_atfork(NULL, NULL, grucy_pool_child);
        grucy_pool.atfork = 1;
    }
    if (want - 1 > grucy_pool.cap) {
        /* Never realloc: running workers hold pointers into the array.  Allocate the
         * largest array once (MAX_THREADS in _gru.pyx bounds the setter and OMP_NUM_THREADS). */
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        int cap = 4 * (cpus > 64 ? (int)cpus : 64);   /* the Python setter's bound */
        if (cap < want - 1)
            cap = want - 1;
        grucy_worker* w;
        if (grucy_pool.nworkers > 0)
            return grucy_pool.nworkers + 1;
        w = (grucy_worker*)aligned_alloc(64, ((sizeof(grucy_worker) * cap + 63) / 64) * 64);
        if (w == NULL)
            return 1;
        memset(w, 0, sizeof(grucy_worker) * cap);
        grucy_pool.w = w;
        grucy_pool.cap = cap;
    }
    for (i = grucy_pool.nworkers; i < want - 1; i++) {
        grucy_worker* me = &grucy_pool.w[i];
        me->tid = i + 1;
        atomic_store(&me->go.seq, 0);
        if (pthread_create(&me->thread, NULL, grucy_worker_main, me) != 0)
            break;
        grucy_pool.nworkers = i + 1;
    }
    return grucy_pool.nworkers + 1 < want ? grucy_pool.nworkers + 1 : want;
}

/* Take the team for up to `want` threads; returns how many threads the caller may use
 * (1: it runs alone, e.g. another caller holds the team, or no worker could start).
 * A result above 1 must be given back with grucy_pool_release. */
static int grucy_pool_acquire(int want)
{
    int nt;
    if (want <= 1 || pthread_mutex_trylock(&grucy_pool.lock) != 0)
        return 1;
    nt = grucy_pool_grow(want);
    if (nt <= 1)
        pthread_mutex_unlock(&grucy_pool.lock);
    return nt;
}

static void grucy_pool_release(int acquired)
{
    if (acquired > 1)
        pthread_mutex_unlock(&grucy_pool.lock);
}

/* Run fn(ctx, tid, nt) on nt threads (nt <= what grucy_pool_acquire gave), tid 0 on
 * the caller; only workers 1 .. nt-1 are woken.  Static (dynamic = 0): returns when all
 * nt have run fn.  Dynamic: fn must leave nothing to a thread that never runs (every
 * part a claimed piece, tid 0's fn returning when all pieces are done); returns when
 * tid 0's fn has and the workers that joined have left. */
static void grucy_pool_run(grucy_job_fn fn, void* ctx, int nt, int dynamic)
{
    int i;
    unsigned done;
    if (nt <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    grucy_pool.fn = fn;
    grucy_pool.ctx = ctx;
    grucy_pool.nt = nt;
    grucy_pool.dynamic = dynamic;
    grucy_pool.job++;
    atomic_store(&grucy_pool.pending, nt - 1);
    done = atomic_load(&grucy_pool.done.seq);
    /* open (no worker is inside: the last run closed and emptied it) */
    atomic_store_explicit(&grucy_pool.state, GRUCY_OPEN, memory_order_release);
    for (i = 0; i < nt - 1; i++) {
        atomic_fetch_add_explicit(&grucy_pool.w[i].go.seq, 1, memory_order_release);
        grucy_word_wake(&grucy_pool.w[i].go);
    }
    fn(ctx, 0, nt);
    while (!dynamic && atomic_load_explicit(&grucy_pool.pending, memory_order_acquire) != 0) {
        grucy_word_wait(&grucy_pool.done, done);
        done = atomic_load(&grucy_pool.done.seq);
    }
    atomic_fetch_and_explicit(&grucy_pool.state, ~GRUCY_OPEN, memory_order_acq_rel);
    for (;;) {
        done = atomic_load_explicit(&grucy_pool.done.seq, memory_order_acquire);
        if (atomic_load_explicit(&grucy_pool.state, memory_order_acquire) == 0)
            break;
        grucy_word_wait(&grucy_pool.done, done);
    }
}

/* Workers started so far (for tests and grucy info). */
static int grucy_pool_workers(void) { return grucy_pool.nworkers; }

#endif
