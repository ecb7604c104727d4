//! Group commit: concurrent writers share one sync.
//!
//! Every commit of the store must be durable before it returns, and a sync
//! (sled's flush and an `fdatasync`) costs milliseconds. Done one after the
//! other, every login would pay one whole sync and wait for all the syncs
//! queued before it. A sync makes durable everything written before it
//! *started*, though, so one sync can stand for every writer that wrote by
//! then. [`GroupSync`] arranges that, and does no I/O itself:
//!
//! 1. A writer applies its write in memory, then takes a [`Ticket`]
//!    ([`GroupSync::ticket`]). The ticket joins the *forming* batch: the
//!    writers that the next sync to start will cover.
//! 2. The writer calls [`GroupSync::sync_through`]. If no sync is running,
//!    it becomes the leader: it seals the forming batch (later tickets join
//!    a new one), runs the sync without holding any lock, and publishes the
//!    outcome to the whole batch. If a sync is running, the writer waits;
//!    when that sync ends, one waiter of the next batch becomes its leader.
//!    So while one sync runs, the next batch gathers behind it.
//!
//! Each batch holds its own outcome, so a writer that wakes late (after
//! further syncs ended) still gets the outcome of the one sync that covered
//! it: a failed sync's error reaches exactly its batch, and later batches
//! are unaffected. The outcome lives as long as a ticket refers to it,
//! which needs no bookkeeping of which writers have read it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

/// Leader/follower group sync; see the module documentation. `T` is what a
/// successful sync reports to every writer it covered, `E` its error.
pub(crate) struct GroupSync<T, E> {
    state: Mutex<State<T, E>>,
    /// Signalled whenever a sync ends (with an outcome, or abandoned).
    ended: Condvar,
    syncs: AtomicU64,
}

struct State<T, E> {
    /// The batch the next sync to start covers.
    forming: Arc<Batch<T, E>>,
    /// A leader is running a sync (outside the lock).
    running: bool,
}

/// The writers one sync covers, and what that sync came to.
struct Batch<T, E> {
    /// Set once, under [`GroupSync::state`]'s lock, by the batch's leader.
    outcome: OnceLock<Outcome<T, E>>,
}

enum Outcome<T, E> {
    Done(Result<T, E>),
    /// The leader's sync panicked: nothing is known about durability, so
    /// the batch's writers join the forming batch and are covered by a sync
    /// that starts later (still after their writes).
    Abandoned,
}

impl<T, E> Batch<T, E> {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            outcome: OnceLock::new(),
        })
    }
}

/// A writer's place in a batch, taken after its write was applied in
/// memory; redeemed with [`GroupSync::sync_through`].
#[must_use = "a write is durable only once its ticket is passed to sync_through"]
pub(crate) struct Ticket<T, E> {
    batch: Arc<Batch<T, E>>,
}

impl<T: Clone, E: Clone> GroupSync<T, E> {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                forming: Batch::new(),
                running: false,
            }),
            ended: Condvar::new(),
            syncs: AtomicU64::new(0),
        }
    }

    /// The state. Nothing panics while holding this lock, and every update
    /// under it is a single assignment, so a poisoned lock (impossible in
    /// practice) still holds a consistent state and is used as is.
    fn lock(&self) -> MutexGuard<'_, State<T, E>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ticket for a write that is already applied in memory: the sync
    /// that covers it starts after this call, so it sees the write.
    pub(crate) fn ticket(&self) -> Ticket<T, E> {
        Ticket {
            batch: Arc::clone(&self.lock().forming),
        }
    }

    /// How many syncs have been started.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Returns once a sync that started after `ticket` was taken has ended,
    /// with that sync's result: `Ok` means the ticket's write is durable.
    /// `sync` is run (at most once) if this caller becomes the leader of a
    /// batch; it must make durable everything written before it starts.
    /// A sync that fails is not retried here: its error goes to every
    /// writer of its batch, who decide (the store fails closed).
    pub(crate) fn sync_through(
        &self,
        ticket: Ticket<T, E>,
        sync: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let mut batch = ticket.batch;
        let mut state = self.lock();
        loop {
            match batch.outcome.get() {
                Some(Outcome::Done(result)) => return result.clone(),
                Some(Outcome::Abandoned) => batch = Arc::clone(&state.forming),
                None if !state.running => break,
                None => {
                    state = self
                        .ended
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner)
                }
            }
        }
        // This caller leads. No sync is running and its batch has no
        // outcome, so its batch is the forming one (a sealed batch gets its
        // outcome before `running` is cleared). Sealing it here, under the
        // lock, is what makes "the sync started after every ticket it
        // covers" true: later tickets join the new batch.
        if Arc::ptr_eq(&state.forming, &batch) {
            state.forming = Batch::new();
        }
        state.running = true;
        drop(state);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        let mut leading = Leading {
            group: self,
            batch,
            outcome: Outcome::Abandoned,
        };
        let result = sync();
        leading.outcome = Outcome::Done(result.clone());
        drop(leading);
        result
    }
}

/// The leader's duty to publish its batch's outcome and let the next batch
/// go, done on drop so that a panicking sync cannot leave every other
/// writer waiting forever (they get [`Outcome::Abandoned`] and retry).
struct Leading<'a, T, E> {
    group: &'a GroupSync<T, E>,
    batch: Arc<Batch<T, E>>,
    outcome: Outcome<T, E>,
}

impl<T, E> Drop for Leading<'_, T, E> {
    fn drop(&mut self) {
        let outcome = std::mem::replace(&mut self.outcome, Outcome::Abandoned);
        let mut state = self
            .group
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Only this leader sets this batch's outcome, so `set` cannot find
        // one already there.
        let _ = self.batch.outcome.set(outcome);
        state.running = false;
        drop(state);
        self.group.ended.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Barrier;
    use std::time::Duration;

    /// 32 threads × 200 writes against a fake disk: a write is "applied" to
    /// `memory` before its ticket is taken; the fake sync copies what
    /// `memory` holds when it starts to `disk` when it ends. Every writer
    /// told Ok must find its write on `disk`, and far fewer syncs than
    /// writes may run.
    #[test]
    fn concurrent_writers_share_syncs_and_each_is_covered() {
        const THREADS: u64 = 32;
        const WRITES: u64 = 200;
        let group: GroupSync<usize, String> = GroupSync::new();
        let memory = Mutex::new(HashSet::new());
        let disk = Mutex::new(HashSet::new());
        let largest_batch = AtomicU64::new(0);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (group, memory, disk) = (&group, &memory, &disk);
                let largest_batch = &largest_batch;
                s.spawn(move || {
                    for i in 0..WRITES {
                        let write = t * WRITES + i;
                        memory.lock().unwrap().insert(write);
                        let ticket = group.ticket();
                        let synced = group.sync_through(ticket, || {
                            let snapshot: Vec<u64> =
                                memory.lock().unwrap().iter().copied().collect();
                            std::thread::sleep(Duration::from_micros(200));
                            let mut disk = disk.lock().unwrap();
                            let before = disk.len();
                            disk.extend(snapshot);
                            largest_batch.fetch_max((disk.len() - before) as u64, Ordering::SeqCst);
                            Ok(disk.len())
                        });
                        assert!(synced.unwrap() > 0);
                        assert!(
                            disk.lock().unwrap().contains(&write),
                            "write {write} was reported durable before a sync covered it"
                        );
                    }
                });
            }
        });
        let calls = THREADS * WRITES;
        let syncs = group.syncs();
        println!(
            "group sync: {calls} calls, {syncs} syncs, largest batch {} writes",
            largest_batch.load(Ordering::SeqCst)
        );
        assert_eq!(disk.lock().unwrap().len() as u64, calls);
        assert!(syncs > 0);
        assert!(
            syncs * 4 < calls,
            "{syncs} syncs for {calls} calls: the writers did not share syncs"
        );
    }

    /// A sync that fails reports its error to exactly the writers whose
    /// tickets it covered; a writer that took its ticket while it ran is
    /// covered by the next sync, which succeeds.
    #[test]
    fn a_failed_sync_fails_exactly_its_batch() {
        let group: GroupSync<(), String> = GroupSync::new();
        // The failing sync stops twice at this barrier: once when it has
        // started (its batch sealed), once before it returns.
        let gate = Barrier::new(2);
        let failing_runs = AtomicU64::new(0);
        // All three tickets before any writer runs: a writer started
        // earlier could lead a sync that covers only the tickets so far.
        let tickets: Vec<_> = (0..3).map(|_| group.ticket()).collect();
        std::thread::scope(|s| {
            let covered: Vec<_> = tickets
                .into_iter()
                .map(|ticket| {
                    let (group, gate, failing_runs) = (&group, &gate, &failing_runs);
                    s.spawn(move || {
                        group.sync_through(ticket, || {
                            failing_runs.fetch_add(1, Ordering::SeqCst);
                            gate.wait();
                            gate.wait();
                            Err("disk full".to_string())
                        })
                    })
                })
                .collect();
            gate.wait();
            // A sync is running now; this write comes after its start.
            let ticket = group.ticket();
            let later = s.spawn(|| group.sync_through(ticket, || Ok(())));
            // Let the later writer queue behind the running sync.
            std::thread::sleep(Duration::from_millis(50));
            gate.wait();
            for writer in covered {
                assert_eq!(writer.join().unwrap(), Err("disk full".to_string()));
            }
            assert_eq!(later.join().unwrap(), Ok(()));
        });
        assert_eq!(failing_runs.load(Ordering::SeqCst), 1);
        assert_eq!(group.syncs(), 2);
        // And the group goes on working.
        assert_eq!(group.sync_through(group.ticket(), || Ok(())), Ok(()));
        assert_eq!(group.syncs(), 3);
    }

    /// Without contention every call runs its own sync, once.
    #[test]
    fn a_lone_writer_runs_one_sync_per_call() {
        let group: GroupSync<u32, String> = GroupSync::new();
        let runs = AtomicU64::new(0);
        for i in 1..=20u32 {
            let ticket = group.ticket();
            let got = group.sync_through(ticket, || {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(i)
            });
            assert_eq!(got, Ok(i), "the result of this call's own sync");
            assert_eq!(group.syncs(), u64::from(i));
            assert_eq!(runs.load(Ordering::SeqCst), u64::from(i));
        }
    }

    /// A leader whose sync panics does not leave the others waiting: its
    /// batch is covered again by a later sync.
    #[test]
    fn a_panicking_sync_hands_its_batch_to_a_later_sync() {
        let group: GroupSync<(), String> = GroupSync::new();
        let first = std::sync::atomic::AtomicBool::new(true);
        let (a, b) = (group.ticket(), group.ticket());
        let results: Vec<_> = std::thread::scope(|s| {
            [a, b]
                .map(|ticket| {
                    let (group, first) = (&group, &first);
                    s.spawn(move || {
                        group.sync_through(ticket, || {
                            if first.swap(false, Ordering::SeqCst) {
                                panic!("sync exploded (expected by the test)");
                            }
                            Ok(())
                        })
                    })
                })
                .map(|h| h.join().map_err(|_| "panicked"))
                .into_iter()
                .collect()
        });
        let panicked = results.iter().filter(|r| r.is_err()).count();
        let ok = results.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
        assert_eq!((panicked, ok), (1, 1), "{results:?}");
        assert_eq!(group.syncs(), 2);
    }
}
