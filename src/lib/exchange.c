/*
 * The client's end of the data plane (ring.h): publish a request in a slot of the least busy
 * instance that is up, ring its worker's door, wait for the slot to be done. No system call on
 * the way when the worker is awake and the answer comes within the spin time. A request whose
 * instance lost its worker (the door's gen moved) fails with MS_E_WORKER_LOST and its slot is
 * ours again: the restarted worker never touches a slot of another gen.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "exchange.h"
#include "errors.h"
#include "tensor.h"
#include "wait.h"
#include "../common/arena.h"

/* How long a client spins for its answer before it sleeps on its slot (spin_budget): only when
 * the answer is expected within CLIENT_SPIN_MAX_US; then for half as long again plus 20 us, at
 * most CLIENT_SPIN_CAP_US; CLIENT_SPIN_US when nothing is known yet. $MODELSHARE_SPIN_US fixes
 * the spin instead (0: never spin). */
#define CLIENT_SPIN_US 20
#define CLIENT_SPIN_MAX_US 50
#define CLIENT_SPIN_CAP_US 100
/* While asleep, look this often at whether the worker or the daemon is gone. */
#define LIVENESS_NS 100000000LL
/* While waiting for a slot, ask the thread's wait check (wait.h) this often. */
#define CHECK_NS 20000000LL
/* wait_done's answers when the thread's wait check (wait.h) ended the wait, and when the
 * request's deadline passed (the slot stays the worker's: both are orphaned). */
#define CANCELLED 1
#define DEADLINE 2

/* The fixed spin ($MODELSHARE_SPIN_US), or -1: adaptive. Read once. */
static int64_t client_spin_ns(void)
{
    static _Atomic int64_t cached = -2;
    int64_t v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v == -2) {
        v = getenv("MODELSHARE_SPIN_US") ? ms__spin_ns(CLIENT_SPIN_US) : -1;
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v;
}

/* How long to spin for the answer to tk before sleeping on its slot. A sleep costs a wake-up
 * (a futex call by the worker, about 20 us before this client runs again); a spin costs the CPU
 * it burns, which on a machine with more processes than cores is taken from the worker and from
 * the other clients. So spin only when the worker's recent answers say this one comes within
 * about two wake-ups (CLIENT_SPIN_MAX_US), for what they took, half as long again plus 20 us; a
 * longer call sleeps at once and is woken by the worker: its wait then costs no CPU at all. */
static int64_t spin_budget(ms_model *m, const ms__ticket *tk)
{
    int64_t fixed = client_spin_ns();
    if (fixed >= 0)
        return fixed;
    /* The worker we woke will most likely run on this CPU: spinning (even with sched_yield)
     * would keep it from running, so sleep at once and let it wake us. */
    if (tk->beside)
        return 0;
    int64_t took = atomic_load_explicit(&m->answer_ns[tk->rang], memory_order_relaxed);
    if (took <= 0)
        return CLIENT_SPIN_US * 1000LL;
    if (took > CLIENT_SPIN_MAX_US * 1000LL)
        return 0;
    int64_t b = took + took / 2 + 20000;
    return b > CLIENT_SPIN_CAP_US * 1000LL ? CLIENT_SPIN_CAP_US * 1000LL : b;
}

/* Learns from the answer to tk, stamped done at done_ns by the worker (a figure, clamped). */
static void learn_answer(ms_model *m, const ms__ticket *tk, int64_t done_ns)
{
    int64_t took = done_ns - tk->submit_ns;
    if (took < 0 || took > 1000000000LL)
        return;
    _Atomic int64_t *avg = &m->answer_ns[tk->rang];
    int64_t a = atomic_load_explicit(avg, memory_order_relaxed);
    /* Racy between threads on purpose: a lost update only loses one sample. */
    atomic_store_explicit(avg, a <= 0 ? took : a + (took - a) / 4, memory_order_relaxed);
}

/* The arena's state, written by the daemon: why a worker stopped answering. */
static int arena_gone(ms_model *m)
{
    ms__arena_header *h = m->arena_base;
    switch (atomic_load(&h->state)) {
    case MS__ARENA_LIVE:
        return 0;
    case MS__ARENA_UNLOADED:
        return ms__lib_fail(m->client, MS_E_UNLOADED,
                            "model \"%s\" was unloaded (modelshare unload --force)", m->tag);
    default:
        return ms__lib_fail(m->client, MS_E_WORKER_LOST,
                            "the worker serving \"%s\" died; acquire the model again", m->tag);
    }
}

/* The daemon's end of the control socket closed: its workers died with it. */
static bool daemon_gone(ms_model *m)
{
    struct pollfd p = {.fd = m->client->fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

void ms__reap_orphans(ms_model *m)
{
    bool freed = false;
    for (int i = 0; i < m->ninst; i++) {
        ms__inst *in = &m->inst[i];
        for (uint64_t o = in->orphaned; o != 0; o &= o - 1) {
            unsigned s = (unsigned)__builtin_ctzll(o);
            ms__slot *sl = ms__slot_of(m->arena_base, (unsigned)i, s);
            /* Done, or lost with the worker it was sent to. */
            if (atomic_load(&sl->state) != MS__SLOT_DONE &&
                atomic_load(&in->door->gen) == in->slot_gen[s])
                continue;
            atomic_store(&sl->state, MS__SLOT_FREE);
            ms__tensor_free_locked(in->orphan_out[s]);
            in->orphan_out[s] = NULL;
            for (int k = 0; k < MS__HELD_MAX && in->orphan_in[s][k] != NULL; k++) {
                ms__tensor_unhold_locked(in->orphan_in[s][k]);
                in->orphan_in[s][k] = NULL;
            }
            in->orphaned &= ~(1ull << s);
            in->busy &= ~(1ull << s);
            freed = true;
        }
    }
    if (freed)
        pthread_cond_broadcast(&m->slot_free);
}

/* The instance with the fewest requests in flight that is up and has a free slot for us (*gen:
 * its door's gen, read before down), or -1; *up counts the instances that are up. */
static int pick_instance(ms_model *m, uint32_t *gen, int *up)
{
    int best = -1;
    uint32_t best_load = UINT32_MAX;
    *up = 0;
    for (int k = 0; k < m->ninst; k++) {
        int i = (int)((m->next_inst + (unsigned)k) % (unsigned)m->ninst);
        ms__door *d = m->inst[i].door;
        uint32_t g = atomic_load_explicit(&d->gen, memory_order_acquire);
        if (atomic_load_explicit(&d->down, memory_order_acquire))
            continue;
        (*up)++;
        if (m->inst[i].busy == UINT64_MAX)
            continue;
        /* A figure any client may write (the bell page): UINT32_MAX there must not hide the
         * instance, only make it look busy. */
        uint32_t load = atomic_load_explicit(&d->inflight, memory_order_relaxed);
        if (best < 0 || load < best_load) {
            best = i;
            best_load = load;
            *gen = g;
        }
    }
    if (best >= 0)
        m->next_inst = (unsigned)best + 1;
    return best;
}

/* The daemon is gone (its workers with it): the client stays lost, and says so. */
static int daemon_lost(ms_model *m, const char *while_what)
{
    atomic_store(&m->client->lost, true);
    return ms__lib_fail(m->client, MS_E_DAEMON_LOST,
                        "the daemon went away %s \"%s\"; its workers stopped with it", while_what,
                        m->tag);
}

/* Waits for slot_free at most ns (< 1 s) with the model lock held (released meanwhile). */
static void wait_slot_free(ms_model *m, long ns)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += ns;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&m->slot_free, &m->lock, &until);
}

/* Fails the request with MS_E_TIMEOUT when its deadline passed or the thread's wait check says
 * so, saying why it waited (why: "every instance ... was restarting"). */
static int wait_expired(ms_model *m, const ms__ticket *tk, const char *why)
{
    if (tk->deadline_ns > 0 && ms__now_ns() >= tk->deadline_ns)
        return ms__lib_fail(m->client, MS_E_TIMEOUT,
                            "%s \"%s\" for the request's timeout of %.3f ms", why, m->tag,
                            (double)tk->timeout_ns / 1e6);
    if (ms__wait_cancelled())
        return ms__lib_fail(m->client, MS_E_TIMEOUT, "the request to \"%s\" was cancelled while %s",
                            m->tag, why);
    return 0;
}

/* Every instance is down (their workers restart): waits 5 ms for one to be back (model lock
 * held, released meanwhile), failing when the request's deadline passes or the daemon went
 * away. */
static int wait_for_instance(ms_model *m, const ms__ticket *tk, int64_t *last_look)
{
    int r = wait_expired(m, tk, "every instance was restarting of");
    if (r < 0)
        return r;
    int64_t now = ms__now_ns();
    if (now - *last_look >= LIVENESS_NS) {
        *last_look = now;
        if (daemon_gone(m))
            return daemon_lost(m, "while every instance was restarting for");
    }
    wait_slot_free(m, 5000000);
    return 0;
}

/* Waits for a free slot of an instance that is up, at most until tk's deadline: returns its index
 * (*gen: its door's gen). */
static int find_slot(ms_model *m, const ms__ticket *tk, uint32_t *gen)
{
    int64_t t0 = 0, last_look = 0, last_check = ms__now_ns();
    for (;;) {
        int r = arena_gone(m);
        if (r < 0)
            return r;
        ms__reap_orphans(m);
        int up;
        int i = pick_instance(m, gen, &up);
        if (i >= 0)
            return i;
        if (up == 0) {
            if (t0 == 0)
                t0 = last_look = ms__now_ns();
            r = wait_for_instance(m, tk, &last_look);
            if (r < 0)
                return r;
            continue;
        }
        /* Slots held by timed-out requests come back only from a worker, which dies with its
         * daemon. */
        if (daemon_gone(m))
            return daemon_lost(m, "while every slot was in use for");
        int64_t now = ms__now_ns();
        if ((tk->deadline_ns > 0 && now >= tk->deadline_ns) || now - last_check >= CHECK_NS) {
            last_check = now;
            r = wait_expired(m, tk, "every slot was held by requests not answered yet of");
            if (r < 0)
                return r;
        }
        /* Every slot of every instance is in flight (64 per instance): wait for one. Timed-out
         * requests free theirs only when someone looks (ms__reap_orphans), so look every
         * millisecond rather than wait for a signal that may not come. */
        wait_slot_free(m, 1000000);
    }
}

int ms__submit(ms_model *m, ms__req *req, ms__ticket *tk)
{
    /* A client that saw its daemon go does not hand a request to a worker that may still be
     * dying: its next call fails at once. */
    if (atomic_load(&m->client->lost) && daemon_gone(m))
        return daemon_lost(m, "before this request to");
    uint32_t gen = 0;
    tk->timeout_ns = ms__wait_timeout(m->timeout_ns);
    tk->deadline_ns = tk->timeout_ns > 0 ? ms__now_ns() + tk->timeout_ns : 0;
    int i = find_slot(m, tk, &gen);
    if (i < 0)
        return i;
    ms__inst *in = &m->inst[i];
    unsigned s = (unsigned)__builtin_ctzll(~in->busy);
    in->busy |= 1ull << s;
    in->slot_gen[s] = gen;
    req->id = ++m->next_req_id;
    req->deadline_ns = tk->deadline_ns;
    ms__slot *sl = ms__slot_of(m->arena_base, (unsigned)i, s);
    memcpy(&sl->req, req, sizeof *req);
    atomic_store_explicit(&sl->waiting, 0, memory_order_relaxed);
    atomic_store_explicit(&sl->gen, gen, memory_order_relaxed);
    uint32_t cpu = (uint32_t)(sched_getcpu() + 1);
    atomic_store_explicit(&sl->cpu, cpu, memory_order_relaxed);
    int64_t now = ms__now_ns();
    atomic_store_explicit(&sl->submit_ns, now, memory_order_relaxed);
    atomic_store_explicit(&sl->done_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&sl->state, MS__SLOT_SUBMITTED, memory_order_relaxed);
    atomic_store_explicit(&in->ring->entries[in->tail % MS__RING_SLOTS], s, memory_order_relaxed);
    in->tail++;
    atomic_store_explicit(&in->ring->tail, in->tail, memory_order_release);
    atomic_fetch_add_explicit(&in->door->inflight, 1, memory_order_relaxed);
    tk->rang = ms__door_publish(in->door, in->ring);
    tk->submit_ns = now;
    tk->beside =
        tk->rang && cpu != 0 && atomic_load_explicit(&in->door->cpu, memory_order_relaxed) == cpu;
    tk->inst = (unsigned)i;
    tk->slot = s;
    tk->gen = gen;
    tk->id = req->id;
    return 0;
}

/* Asleep on a request of tk: its instance's worker, the model or the daemon may be gone. */
static int look_alive(ms_model *m, const ms__ticket *tk)
{
    int r = arena_gone(m);
    if (r < 0)
        return r;
    ms__door *door = m->inst[tk->inst].door;
    if (atomic_load(&door->gen) != tk->gen && atomic_load(&door->hung_gen) == tk->gen + 1)
        return ms__lib_fail(
            m->client, MS_E_TIMEOUT,
            "instance %u of \"%s\" ran one batch (or stopped answering) for %.1f s, "
            "past its call_timeout of %g s: the daemon killed its worker and "
            "restarts it; the handle stays usable",
            tk->inst, m->tag, atomic_load(&door->hung_ms) / 1000.0,
            atomic_load(&door->hung_limit_ms) / 1000.0);
    if (atomic_load(&door->gen) != tk->gen)
        return ms__lib_fail(m->client, MS_E_WORKER_LOST,
                            "instance %u of \"%s\" lost its worker while it ran this request; "
                            "the daemon restarts it and the handle stays usable",
                            tk->inst, m->tag);
    if (daemon_gone(m))
        return daemon_lost(m, "while a request ran on");
    return 0;
}

/* Spins (no lock held) for the slot to be done for spin_budget: 0 done, DEADLINE, or -1 not yet
 * (sleep on it). */
static int spin_done(ms_model *m, const ms__ticket *tk, ms__slot *sl)
{
    int64_t deadline = tk->deadline_ns;
    int64_t spin = spin_budget(m, tk);
    int64_t t0 = ms__now_ns();
    /* A worker we woke is most likely queued on this CPU (the scheduler puts a wakee beside its
     * waker): yield from the start rather than pause. */
    int64_t step0 = tk->rang ? t0 - 1000000 : t0;
    for (;;) {
        if (atomic_load_explicit(&sl->state, memory_order_acquire) == MS__SLOT_DONE)
            return 0;
        int64_t now = ms__now_ns();
        if (deadline > 0 && now >= deadline)
            return DEADLINE;
        if (now - t0 >= spin)
            return -1;
        ms__spin_step(step0, now);
    }
}

/* Waits (no lock held) until the slot is done, the deadline passes, or a peer is gone. */
static int wait_done(ms_model *m, const ms__ticket *tk, ms__slot *sl)
{
    int64_t deadline = tk->deadline_ns;
    int spun = spin_done(m, tk, sl);
    if (spun >= 0)
        return spun;
    for (;;) {
        atomic_store(&sl->waiting, 1);
        if (atomic_load(&sl->state) == MS__SLOT_DONE)
            break;
        int64_t now = ms__now_ns();
        int64_t slice = LIVENESS_NS;
        if (deadline > 0) {
            if (now >= deadline)
                return DEADLINE;
            if (deadline - now < slice)
                slice = deadline - now;
        }
        int timed_out = ms__futex_wait(&sl->state, MS__SLOT_SUBMITTED, slice);
        if (atomic_load(&sl->state) == MS__SLOT_DONE)
            break;
        if (timed_out) {
            int r = look_alive(m, tk);
            if (r < 0)
                return r;
            if (ms__wait_cancelled())
                return CANCELLED;
        }
    }
    atomic_store_explicit(&sl->waiting, 0, memory_order_relaxed);
    return 0;
}

/* Slot s of in is orphaned: out and the inputs with room of their own stay reserved. The inputs'
 * handles are the library's (made by ms_tensor_alloc and the like, never const objects). */
static void orphan(ms__inst *in, unsigned s, ms_tensor *out, const ms_tensor *const *held,
                   int nheld)
{
    in->orphaned |= 1ull << s;
    in->orphan_out[s] = out;
    int k = 0;
    for (int i = 0; i < nheld && k < MS__HELD_MAX; i++) {
        ms_tensor *t = (ms_tensor *)held[i];
        if (t == NULL || t->view)
            continue;
        ms__tensor_hold_locked(t);
        in->orphan_in[s][k++] = t;
    }
    if (k < MS__HELD_MAX)
        in->orphan_in[s][k] = NULL;
}

bool ms__orphaned(const ms_model *m, const ms__ticket *tk)
{
    return (m->inst[tk->inst].orphaned >> tk->slot) & 1u;
}

int ms__await(ms_model *m, const ms__ticket *tk, ms_tensor *out, const ms_tensor *const *held,
              int nheld, ms__resp *resp)
{
    char err[MS__ERRLEN];
    ms__slot *sl = ms__slot_of(m->arena_base, tk->inst, tk->slot);
    int r = wait_done(m, tk, sl);
    pthread_mutex_lock(&m->lock);
    ms__inst *in = &m->inst[tk->inst];
    if (r == DEADLINE || r == CANCELLED) {
        /* The worker still owns the slot, may write into out and read (or, for a copy made for
         * the call, write) the inputs: all stay reserved until it is done or replaced
         * (ms__reap_orphans). */
        orphan(in, tk->slot, out, held, nheld);
        if (r == CANCELLED)
            return ms__lib_fail(m->client, MS_E_TIMEOUT,
                                "the request to \"%s\" was cancelled while it waited for its "
                                "answer",
                                m->tag);
        return ms__lib_fail(m->client, MS_E_TIMEOUT,
                            "\"%s\" did not answer within the request's timeout of %.3f ms", m->tag,
                            (double)tk->timeout_ns / 1e6);
    }
    if (r < 0) {
        /* The worker is gone: nobody will complete the slot. */
        in->busy &= ~(1ull << tk->slot);
        pthread_cond_broadcast(&m->slot_free);
        return r;
    }
    union {
        ms__resp resp;
        char bytes[sizeof(ms__resp)];
    } raw;
    memcpy(&raw, &sl->resp, sizeof raw);
    learn_answer(m, tk, atomic_load_explicit(&sl->done_ns, memory_order_relaxed));
    atomic_store(&sl->state, MS__SLOT_FREE);
    in->busy &= ~(1ull << tk->slot);
    pthread_cond_broadcast(&m->slot_free);
    r = ms__resp_decode(&raw, sizeof raw, resp, err, sizeof err);
    if (r < 0)
        return ms__lib_fail(m->client, MS_E_PROTOCOL, "bad response from the worker of \"%s\": %s",
                            m->tag, err);
    if (resp->id != tk->id)
        return ms__lib_fail(m->client, MS_E_PROTOCOL,
                            "response from the worker of \"%s\" out of step: expected id %llu, "
                            "got %llu",
                            m->tag, (unsigned long long)tk->id, (unsigned long long)resp->id);
    return 0;
}
