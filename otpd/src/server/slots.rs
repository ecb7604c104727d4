//! Connection slots: who may hold how many connections at once, and which
//! connection gives way when they are all taken.
//!
//! One local user opening connections must not be able to take every slot
//! and so stop sshd and sudo (design.md §6): each non-root uid gets a few,
//! all non-root callers together get most, and the rest is kept for root.
//! Nor may connections that sit idle keep a caller out: the module and the
//! CLI send their request as soon as they connect, so when a caller's share
//! is used up, the connection of that share that has waited longest for its
//! client to speak is closed to make room. A connection whose request is
//! being carried out is never closed this way.
//!
//! A login conversation waits for its person (up to minutes) and so can be
//! closed to make room too; but one source must not be able to close
//! everyone else's: a local user running `su` a thousand times connects as
//! root a thousand times. So the connection that gives way is the
//! longest-waiting one of the *group* that holds the most connections of
//! the share: a login's group is its rate-limit source (`uid:N` of the
//! person for a local login, `rhost:…` for a remote one, set once the
//! login has begun), any other connection's its caller's uid. A flood from
//! one source then closes only its own.
#![forbid(unsafe_code)]

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The limits.
#[derive(Debug, Clone, Copy)]
pub struct SlotLimits {
    /// All connections together.
    pub total: usize,
    /// All non-root connections together (the rest is root's reserve).
    pub non_root: usize,
    /// Connections of one non-root uid.
    pub per_uid: usize,
}

/// A connection that was closed to make room for another.
#[derive(Debug, Clone)]
pub struct Evicted {
    /// Its caller.
    pub uid: u32,
    /// How long it had waited for its client.
    pub waited: Duration,
    released: Arc<Notify>,
}

impl Evicted {
    /// Resolves once its task has ended and dropped the connection (and
    /// so its file descriptor).
    pub async fn released(&self) {
        self.released.notified().await;
    }
}

/// The connections among which one must give way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Share {
    /// Those of one uid.
    Uid(u32),
    /// Those of every non-root uid.
    NonRoot,
    /// All of them.
    All,
}

impl Share {
    fn contains(self, uid: u32) -> bool {
        match self {
            Share::Uid(own) => uid == own,
            Share::NonRoot => uid != 0,
            Share::All => true,
        }
    }
}

/// Who a connection is counted with when one must give way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Group {
    /// A login conversation, by its rate-limit source.
    Login(Arc<str>),
    /// Any other connection (a login not begun yet, a one-shot request),
    /// by its caller's uid.
    Caller(u32),
}

struct Entry {
    uid: u32,
    /// The login's source, once a login has begun on the connection.
    login_group: Option<Arc<str>>,
    /// Since when it has waited for its client; `None` while a request of
    /// it is carried out.
    waiting_since: Option<Instant>,
    /// Tells the connection's task to close it.
    closed: Arc<Notify>,
    /// Told by the task's [`Slot`] when it is dropped.
    released: Arc<Notify>,
}

#[derive(Default)]
struct Table {
    total: usize,
    non_root: usize,
    by_uid: HashMap<u32, usize>,
    entries: HashMap<u64, Entry>,
    next_id: u64,
}

impl Table {
    /// The share that has no room for one more connection of `uid`, if any.
    fn full_share(&self, limits: &SlotLimits, uid: u32) -> Option<Share> {
        if uid != 0 {
            if self.by_uid.get(&uid).copied().unwrap_or(0) >= limits.per_uid {
                return Some(Share::Uid(uid));
            }
            if self.non_root >= limits.non_root {
                return Some(Share::NonRoot);
            }
        }
        (self.total >= limits.total).then_some(Share::All)
    }

    /// Closes the connection of `share` that has waited longest in the
    /// group that holds most of the share's connections, if one waits.
    fn evict_oldest(&mut self, share: Share, now: Instant) -> Option<Evicted> {
        let group = |e: &Entry| match &e.login_group {
            Some(source) => Group::Login(source.clone()),
            None => Group::Caller(e.uid),
        };
        let mut held: HashMap<Group, usize> = HashMap::new();
        for entry in self.entries.values().filter(|e| share.contains(e.uid)) {
            *held.entry(group(entry)).or_default() += 1;
        }
        let (&id, _) = self
            .entries
            .iter()
            .filter(|(_, e)| share.contains(e.uid))
            .filter_map(|(id, e)| e.waiting_since.map(|since| (id, e, since)))
            // The biggest group first; in it the longest-waiting; ties (one
            // clock tick) go to the older connection.
            .map(|(id, e, since)| {
                (
                    id,
                    (
                        held.get(&group(e)).copied().unwrap_or(0),
                        Reverse(since),
                        Reverse(*id),
                    ),
                )
            })
            .max_by_key(|(_, key)| *key)?;
        let entry = self.release(id)?;
        entry.closed.notify_one();
        Some(Evicted {
            uid: entry.uid,
            waited: now.saturating_duration_since(entry.waiting_since.unwrap_or(now)),
            released: entry.released,
        })
    }

    fn insert(&mut self, uid: u32, now: Instant) -> (u64, Arc<Notify>, Arc<Notify>) {
        if uid != 0 {
            self.non_root += 1;
            *self.by_uid.entry(uid).or_default() += 1;
        }
        self.total += 1;
        let id = self.next_id;
        self.next_id += 1;
        let (closed, released) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        self.entries.insert(
            id,
            Entry {
                uid,
                login_group: None,
                waiting_since: Some(now),
                closed: closed.clone(),
                released: released.clone(),
            },
        );
        (id, closed, released)
    }

    /// Frees the slot of `id` (once: a slot evicted earlier is not counted again).
    fn release(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        self.total -= 1;
        if entry.uid != 0 {
            self.non_root -= 1;
            if let Some(n) = self.by_uid.get_mut(&entry.uid) {
                *n -= 1;
                if *n == 0 {
                    self.by_uid.remove(&entry.uid);
                }
            }
        }
        Some(entry)
    }
}

/// The shared slot table.
pub struct Slots {
    limits: SlotLimits,
    table: Mutex<Table>,
}

/// A held slot; dropping it frees the slot.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    closed: Arc<Notify>,
    released: Arc<Notify>,
}

impl Slots {
    /// An empty table with `limits`.
    pub fn new(limits: SlotLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            table: Mutex::new(Table::default()),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for `uid`. When its share is used up, the connection of
    /// that share that has waited longest for its client is closed to make
    /// room (and returned); when every connection of the share is busy with
    /// a request, `None`.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Option<(Slot, Option<Evicted>)> {
        let now = Instant::now();
        let mut table = self.table();
        let evicted = match table.full_share(&self.limits, uid) {
            None => None,
            Some(share) => Some(table.evict_oldest(share, now)?),
        };
        let (id, closed, released) = table.insert(uid, now);
        Some((
            Slot {
                slots: self.clone(),
                id,
                closed,
                released,
            },
            evicted,
        ))
    }

    /// Closes the connection that has waited longest for its client, of any
    /// caller: the way out when the process has no file descriptor left
    /// for a new connection.
    pub fn evict_oldest(&self) -> Option<Evicted> {
        self.table().evict_oldest(Share::All, Instant::now())
    }
}

impl Slot {
    /// Resolves when the connection was closed to make room; its slot is
    /// already free then.
    pub async fn closed(&self) {
        self.closed.notified().await;
    }

    /// Marks a whole request as received: from now until [`Slot::end_request`]
    /// the connection is not closed to make room. `false` when it already
    /// was, and the request must not be carried out.
    pub fn begin_request(&self) -> bool {
        match self.slots.table().entries.get_mut(&self.id) {
            Some(entry) => {
                entry.waiting_since = None;
                true
            }
            None => false,
        }
    }

    /// Counts the connection, from now on, with the logins of `source`
    /// (its rate-limit source) when one must give way.
    pub fn set_login_group(&self, source: &str) {
        if let Some(entry) = self.slots.table().entries.get_mut(&self.id) {
            entry.login_group = Some(Arc::from(source));
        }
    }

    /// Marks the answer as sent: the connection waits for its client again.
    pub fn end_request(&self) {
        if let Some(entry) = self.slots.table().entries.get_mut(&self.id) {
            entry.waiting_since = Some(Instant::now());
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.table().release(self.id);
        self.released.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots() -> Arc<Slots> {
        Slots::new(SlotLimits {
            total: 10,
            non_root: 6,
            per_uid: 4,
        })
    }

    /// A slot whose connection is busy with a request, so it cannot be evicted.
    fn busy(s: &Arc<Slots>, uid: u32) -> Option<Slot> {
        let (slot, evicted) = s.admit(uid)?;
        assert!(evicted.is_none());
        assert!(slot.begin_request());
        Some(slot)
    }

    fn counts(s: &Arc<Slots>) -> (usize, usize, usize, usize) {
        let t = s.table();
        (t.total, t.non_root, t.by_uid.len(), t.entries.len())
    }

    #[test]
    fn one_user_cannot_take_every_slot() {
        let s = slots();
        let mine: Vec<_> = (0..4).map(|_| busy(&s, 1000).unwrap()).collect();
        assert!(s.admit(1000).is_none(), "per-uid share");
        let other: Vec<_> = (0..2).map(|_| busy(&s, 1001).unwrap()).collect();
        assert!(s.admit(1002).is_none(), "non-root share");
        // Root still gets in.
        let root: Vec<_> = (0..4).map(|_| busy(&s, 0).unwrap()).collect();
        assert!(s.admit(0).is_none(), "total");
        drop(mine);
        assert!(s.admit(1000).is_some());
        drop((other, root));
    }

    #[test]
    fn slots_are_freed_on_drop() {
        let s = slots();
        for _ in 0..100 {
            let a = s.admit(1000).unwrap();
            let b = s.admit(0).unwrap();
            drop((a, b));
        }
        assert_eq!(counts(&s), (0, 0, 0, 0));
    }

    #[test]
    fn idle_connections_give_way_longest_waiting_first() {
        let s = slots();
        let idle: Vec<Slot> = (0..10).map(|_| s.admit(0).unwrap().0).collect();
        // The busy one is the oldest but is never closed.
        assert!(idle[0].begin_request());
        let (_new, evicted) = s.admit(0).expect("room made");
        assert_eq!(evicted.map(|e| e.uid), Some(0));
        assert!(idle[0].begin_request(), "a busy connection was evicted");
        assert!(!idle[1].begin_request(), "not the longest-waiting idle one");
        assert!(idle[2].begin_request());
        assert_eq!(counts(&s).0, 10);
        // A request that ended waits again, now as the youngest.
        idle[0].end_request();
        let (_newer, _) = s.admit(0).unwrap();
        assert!(!idle[3].begin_request());
        assert!(idle[0].begin_request());
        drop(idle);
        assert_eq!(counts(&s).0, 2);
    }

    #[test]
    fn a_full_uid_share_makes_room_among_its_own_connections_only() {
        let s = slots();
        let root_idle = s.admit(0).unwrap().0;
        let other_idle = s.admit(1001).unwrap().0;
        let mine: Vec<Slot> = (0..4).map(|_| s.admit(1000).unwrap().0).collect();
        let (fifth, evicted) = s.admit(1000).expect("its own oldest gives way");
        assert_eq!(evicted.map(|e| e.uid), Some(1000));
        assert!(!mine[0].begin_request());
        assert!(root_idle.begin_request() && other_idle.begin_request());
        // Every connection of 1000 busy: refused, nobody else is touched.
        for slot in &mine[1..] {
            assert!(slot.begin_request());
        }
        assert!(fifth.begin_request());
        assert!(s.admit(1000).is_none());
        assert_eq!(counts(&s), (6, 5, 2, 6));
    }

    #[test]
    fn non_root_callers_never_take_roots_reserve() {
        let s = slots();
        let root: Vec<Slot> = (0..4).map(|_| s.admit(0).unwrap().0).collect();
        let users: Vec<Slot> = (0..6).map(|uid| s.admit(2000 + uid).unwrap().0).collect();
        // The non-root share is full: a non-root caller makes room among
        // non-root connections, never root's, however long they waited.
        let (_new, evicted) = s.admit(3000).unwrap();
        assert_eq!(evicted.map(|e| e.uid), Some(2000));
        assert!(root.iter().all(Slot::begin_request));
        // Root, with the whole table full (its own connections busy), takes
        // the longest-waiting of the rest.
        let (_r, evicted) = s.admit(0).unwrap();
        assert_eq!(evicted.map(|e| e.uid), Some(2001));
        drop(users);
    }

    /// A local user runs `su` (setuid root) again and again: every one is a
    /// root connection whose login waits for its person. A login of
    /// someone else that waits for its person too, and has waited longest,
    /// must outlast the flood: the flood's source gives way, not it.
    #[test]
    fn a_waiting_login_outlasts_a_flood_of_logins_from_one_source() {
        let s = slots();
        let present = |slot: &Slot| s.table().entries.contains_key(&slot.id);
        let victim = s.admit(0).unwrap().0;
        victim.set_login_group("rhost:192.0.2.77");
        let mut flood = Vec::new();
        for _ in 0..100 {
            let (slot, evicted) = s.admit(0).expect("room made");
            if let Some(evicted) = evicted {
                assert_eq!(evicted.uid, 0);
            }
            slot.set_login_group("uid:4242");
            flood.push(slot);
            assert!(
                present(&victim),
                "the waiting login was closed for the flood"
            );
        }
        // And a login not begun yet (no group) gives way before it too.
        assert!(victim.begin_request());
        drop(flood);
    }

    #[test]
    fn running_out_of_descriptors_closes_the_longest_waiting() {
        let s = slots();
        assert!(s.evict_oldest().is_none());
        let first = s.admit(1000).unwrap().0;
        let second = s.admit(0).unwrap().0;
        assert_eq!(s.evict_oldest().map(|e| e.uid), Some(1000));
        assert!(!first.begin_request() && second.begin_request());
        assert!(s.evict_oldest().is_none());
        drop((first, second));
        assert_eq!(counts(&s), (0, 0, 0, 0));
    }

    #[tokio::test]
    async fn an_evicted_connection_is_told_and_its_end_reported() {
        let s = slots();
        let slot = s.admit(0).unwrap().0;
        let evicted = s.evict_oldest().unwrap();
        let limit = Duration::from_secs(5);
        tokio::time::timeout(limit, slot.closed())
            .await
            .expect("the eviction was not signalled");
        drop(slot);
        tokio::time::timeout(limit, evicted.released())
            .await
            .expect("the end of the connection was not signalled");
    }
}
