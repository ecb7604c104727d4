//! Connection slots: who may hold how many connections at once.
//!
//! One local user opening connections must not be able to take every slot
//! and so stop sshd and sudo (design.md §6): each non-root uid gets a few,
//! all non-root callers together get most, and the rest is kept for root.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

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

#[derive(Default)]
struct Counts {
    total: usize,
    non_root: usize,
    by_uid: HashMap<u32, usize>,
}

/// The shared slot table.
pub struct Slots {
    limits: SlotLimits,
    counts: Mutex<Counts>,
}

/// A held slot; dropping it frees the slot.
pub struct Slot {
    slots: Arc<Slots>,
    uid: u32,
}

impl Slots {
    /// An empty table with `limits`.
    pub fn new(limits: SlotLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Takes a slot for `uid`, or `None` when its share is used up.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Option<Slot> {
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if c.total >= self.limits.total {
            return None;
        }
        if uid != 0 {
            let mine = c.by_uid.get(&uid).copied().unwrap_or(0);
            if c.non_root >= self.limits.non_root || mine >= self.limits.per_uid {
                return None;
            }
            c.non_root += 1;
            *c.by_uid.entry(uid).or_default() += 1;
        }
        c.total += 1;
        Some(Slot {
            slots: self.clone(),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .slots
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.total -= 1;
        if self.uid != 0 {
            c.non_root -= 1;
            if let Some(n) = c.by_uid.get_mut(&self.uid) {
                *n -= 1;
                if *n == 0 {
                    c.by_uid.remove(&self.uid);
                }
            }
        }
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

    #[test]
    fn one_user_cannot_take_every_slot() {
        let s = slots();
        let mine: Vec<_> = (0..4).map(|_| s.admit(1000).unwrap()).collect();
        assert!(s.admit(1000).is_none(), "per-uid share");
        let other: Vec<_> = (0..2).map(|_| s.admit(1001).unwrap()).collect();
        assert!(s.admit(1002).is_none(), "non-root share");
        // Root still gets in.
        let root: Vec<_> = (0..4).map(|_| s.admit(0).unwrap()).collect();
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
        let c = s.counts.lock().unwrap();
        assert_eq!((c.total, c.non_root, c.by_uid.len()), (0, 0, 0));
    }
}
