//! What keeps a flood of the pages to the pages (design.md §8): requests
//! per client address, connections per client address, and a small pool
//! of threads of their own for the pages' store work, which answers "busy"
//! at once when it is full instead of queueing without end.
//!
//! A client is its IPv4 address, or its IPv6 /64 (one network hands out
//! its /64 freely, so counting per address would count nothing).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The pages' limits. [`PageLimits::default`] is what the daemon uses;
/// tests set smaller ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    /// Requests one client may make at once before it must wait.
    pub burst: u32,
    /// Requests per minute one client may make in the long run.
    pub per_minute: u32,
    /// Connections one client may hold open at once.
    pub connections_per_client: usize,
    /// Connections open at once in all; further clients wait in the
    /// kernel's backlog.
    pub max_connections: usize,
    /// Threads that do the pages' store work.
    pub workers: usize,
    /// Requests that may wait for one of those threads; more are answered
    /// "busy" (503) at once.
    pub queue: usize,
    /// A request's line and headers must arrive within this (also the
    /// longest a kept-alive connection may sit idle).
    pub header_timeout: Duration,
    /// The rest of a request (its body) and its answer must be done within
    /// this once the headers are in.
    pub body_timeout: Duration,
    /// Clients whose request counts are remembered at once.
    pub tracked_clients: usize,
}

impl Default for PageLimits {
    fn default() -> Self {
        PageLimits {
            // An enrolment takes a handful of requests (page, stylesheet,
            // reveal, a code or two, the phone step); a mail scanner one.
            burst: 60,
            per_minute: 60,
            connections_per_client: 8,
            // The daemon's unit allows 4096 descriptors; the socket's
            // connections (1024) and the store need theirs.
            max_connections: 256,
            workers: 2,
            queue: 16,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            tracked_clients: 65_536,
        }
    }
}

/// A client as the limits count it: an IPv4 address (also when written as
/// an IPv4-mapped IPv6 address), or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// One IPv4 address.
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Net([u8; 8]),
}

impl From<IpAddr> for ClientKey {
    fn from(address: IpAddr) -> Self {
        match address.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(v4),
            IpAddr::V6(v6) => {
                let mut net = [0u8; 8];
                net.copy_from_slice(&v6.octets()[..8]);
                ClientKey::V6Net(net)
            }
        }
    }
}

impl fmt::Display for ClientKey {
    /// `192.0.2.1`, or `2001:db8:1:2::/64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::V4(v4) => write!(f, "{v4}"),
            ClientKey::V6Net(net) => {
                let mut octets = [0u8; 16];
                octets[..8].copy_from_slice(net);
                write!(f, "{}/64", Ipv6Addr::from(octets))
            }
        }
    }
}

/// Every lock here guards plain counters that a panic cannot leave half
/// changed, so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Requests per client: a token bucket each (`burst` tokens, refilled at
/// `per_minute`). Buckets that have filled up again are forgotten when the
/// table is full; a client that finds the table full of busy ones is told
/// to wait (under a flood from more networks than the table holds, the
/// pages serve the clients they already know).
#[derive(Debug)]
pub struct RequestLimiter {
    limits: PageLimits,
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    buckets: HashMap<ClientKey, Bucket>,
    last_prune: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens in thousandths (whole requests are 1000).
    millitokens: u64,
    updated: Instant,
}

const TOKEN: u64 = 1000;

impl RequestLimiter {
    /// A limiter with `limits.burst`, `per_minute` and `tracked_clients`.
    pub fn new(limits: PageLimits) -> Self {
        RequestLimiter {
            limits,
            state: Mutex::new(LimiterState::default()),
        }
    }

    fn capacity(&self) -> u64 {
        u64::from(self.limits.burst.max(1)) * TOKEN
    }

    /// The bucket's tokens at `now`.
    fn refilled(&self, bucket: &Bucket, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_millis();
        // per_minute requests per 60 000 ms = per_minute millitokens per 60 ms.
        let added = elapsed.saturating_mul(u128::from(self.limits.per_minute)) / 60;
        let total = u128::from(bucket.millitokens).saturating_add(added);
        total.min(u128::from(self.capacity())) as u64
    }

    /// Takes one request of `client` at `now`: `Ok`, or how long to wait.
    pub fn check(&self, client: ClientKey, now: Instant) -> Result<(), Duration> {
        let mut state = lock(&self.state);
        if !state.buckets.contains_key(&client)
            && state.buckets.len() >= self.limits.tracked_clients
        {
            // Forget the clients that have waited long enough to be full
            // again, at most once a second (it is a walk of the table).
            let due = state
                .last_prune
                .is_none_or(|last| now.saturating_duration_since(last) >= Duration::from_secs(1));
            if due {
                state.last_prune = Some(now);
                let capacity = self.capacity();
                let buckets = std::mem::take(&mut state.buckets);
                state.buckets = buckets
                    .into_iter()
                    .filter(|(_, bucket)| self.refilled(bucket, now) < capacity)
                    .collect();
            }
            if state.buckets.len() >= self.limits.tracked_clients {
                return Err(Duration::from_secs(60));
            }
        }
        let capacity = self.capacity();
        let bucket = state.buckets.entry(client).or_insert(Bucket {
            millitokens: capacity,
            updated: now,
        });
        let tokens = self.refilled(bucket, now);
        bucket.updated = now;
        if tokens >= TOKEN {
            bucket.millitokens = tokens - TOKEN;
            Ok(())
        } else {
            bucket.millitokens = tokens;
            let per_minute = u64::from(self.limits.per_minute.max(1));
            // Milliseconds until one whole token: (missing × 60) / per_minute.
            let wait_ms = ((TOKEN - tokens) * 60).div_ceil(per_minute);
            Err(Duration::from_millis(wait_ms))
        }
    }
}

/// Open connections per client.
#[derive(Debug, Clone)]
pub struct ConnectionCounter {
    per_client: usize,
    open: Arc<Mutex<HashMap<ClientKey, usize>>>,
}

/// One admitted connection; dropping it gives the place back.
#[derive(Debug)]
pub struct ConnectionPlace {
    client: ClientKey,
    open: Arc<Mutex<HashMap<ClientKey, usize>>>,
}

impl ConnectionCounter {
    /// At most `per_client` connections per client.
    pub fn new(per_client: usize) -> Self {
        ConnectionCounter {
            per_client,
            open: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A place for one more connection of `client`, unless it holds its
    /// share already.
    pub fn admit(&self, client: ClientKey) -> Option<ConnectionPlace> {
        let mut open = lock(&self.open);
        let count = open.entry(client).or_insert(0);
        if *count >= self.per_client {
            return None;
        }
        *count += 1;
        Some(ConnectionPlace {
            client,
            open: Arc::clone(&self.open),
        })
    }

    /// Connections open now (for tests).
    pub fn open(&self) -> usize {
        lock(&self.open).values().sum()
    }
}

impl Drop for ConnectionPlace {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The pages' own threads for their blocking work (store reads and
/// commits, the text-message sender), never tokio's blocking pool, which
/// the socket's logins use: a flood of the pages waits for these threads,
/// or is told "busy", and logins do not wait behind it.
///
/// Written here rather than taken from a crate: it is a bounded channel
/// and a few threads, and the one thing that matters (refuse at once when
/// full) is plain to see.
#[derive(Debug)]
pub struct PagePool {
    jobs: SyncSender<Job>,
}

/// The pool is full: the request is answered "busy".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl PagePool {
    /// `workers` threads (at least one) and room for `queue` waiting jobs.
    /// The threads end when the pool is dropped (after the jobs queued).
    pub fn new(workers: usize, queue: usize) -> std::io::Result<Self> {
        let (jobs, queued) = sync_channel::<Job>(queue);
        let queued = Arc::new(Mutex::new(queued));
        for n in 0..workers.max(1) {
            let queued = Arc::clone(&queued);
            std::thread::Builder::new()
                .name(format!("otpd-pages-{n}"))
                .spawn(move || work(&queued))?;
        }
        Ok(PagePool { jobs })
    }

    /// Runs `job` on one of the pool's threads and waits for its result:
    /// `Err(Busy)` at once when all threads are busy and the queue is
    /// full; `Ok(None)` when the job panicked.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Option<T>, Busy> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(job());
        });
        match self.jobs.try_send(job) {
            Ok(()) => Ok(result.await.ok()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }
}

fn work(queued: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job.
        let job = lock(queued).recv();
        let Ok(job) = job else {
            return; // the pool is gone
        };
        // A panic ends the job (its caller sees no result), not the thread.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            tracing::error!("a task of the enrolment pages panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(burst: u32, per_minute: u32) -> PageLimits {
        PageLimits {
            burst,
            per_minute,
            ..PageLimits::default()
        }
    }

    #[test]
    fn clients_are_ipv4_addresses_and_ipv6_networks() {
        let key = |s: &str| ClientKey::from(s.parse::<IpAddr>().unwrap());
        assert_eq!(key("192.0.2.1"), key("::ffff:192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2:3::4").to_string(), "2001:db8:1:2::/64");
        assert_eq!(key("::ffff:192.0.2.9").to_string(), "192.0.2.9");
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_and_others_are_not_touched() {
        let limiter = RequestLimiter::new(limits(3, 60));
        let start = Instant::now();
        let a = ClientKey::from(IpAddr::from([192, 0, 2, 1]));
        let b = ClientKey::from(IpAddr::from([192, 0, 2, 2]));
        for _ in 0..3 {
            assert_eq!(limiter.check(a, start), Ok(()));
        }
        let wait = limiter.check(a, start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1), "one a second");
        assert_eq!(limiter.check(b, start), Ok(()), "another client");
        // Half a second later: still half a request short.
        let half = start + Duration::from_millis(500);
        assert_eq!(limiter.check(a, half), Err(Duration::from_millis(500)));
        let later = start + Duration::from_millis(1000);
        assert_eq!(limiter.check(a, later), Ok(()));
        assert!(limiter.check(a, later).is_err());
        // A long pause refills the burst, no more.
        let much_later = later + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(limiter.check(a, much_later), Ok(()));
        }
        assert!(limiter.check(a, much_later).is_err());
    }

    #[test]
    fn a_full_table_forgets_idle_clients_and_refuses_new_ones_while_all_are_busy() {
        let limiter = RequestLimiter::new(PageLimits {
            tracked_clients: 2,
            ..limits(2, 60)
        });
        let start = Instant::now();
        let client = |n: u8| ClientKey::from(IpAddr::from([192, 0, 2, n]));
        assert!(limiter.check(client(1), start).is_ok());
        assert!(limiter.check(client(2), start).is_ok());
        // Both are busy: a third client must wait.
        assert!(limiter.check(client(3), start).is_err());
        // Once the first two have filled up again they are forgotten.
        let later = start + Duration::from_secs(5);
        assert!(limiter.check(client(3), later).is_ok());
        assert!(limiter.check(client(1), later).is_ok());
    }

    #[test]
    fn connections_are_capped_per_client_and_given_back() {
        let counter = ConnectionCounter::new(2);
        let a = ClientKey::from(IpAddr::from([192, 0, 2, 1]));
        let b = ClientKey::from("2001:db8::1".parse::<IpAddr>().unwrap());
        let first = counter.admit(a).unwrap();
        let _second = counter.admit(a).unwrap();
        assert!(counter.admit(a).is_none());
        let _other = counter.admit(b).unwrap();
        assert_eq!(counter.open(), 3);
        drop(first);
        assert!(counter.admit(a).is_some());
    }

    #[tokio::test]
    async fn the_pool_runs_jobs_on_its_own_threads_and_is_busy_when_full() {
        let pool = Arc::new(PagePool::new(1, 1).unwrap());
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await;
        assert_eq!(name, Ok(Some(Some("otpd-pages-0".to_owned()))));

        // One job running (held by a channel), one waiting: the next is busy.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let running = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(move || hold.recv().is_ok()).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waiting = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.run(|| 2).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pool.run(|| 3).await, Err(Busy));
        release.send(()).unwrap();
        assert_eq!(running.await.unwrap(), Ok(Some(true)));
        assert_eq!(waiting.await.unwrap(), Ok(Some(2)));

        // A panicking job: no result, and the thread goes on.
        assert_eq!(pool.run(|| -> u8 { panic!("a bug") }).await, Ok(None));
        assert_eq!(pool.run(|| 4).await, Ok(Some(4)));
    }
}
