//! How many queries run at once, and who goes next. At most `[query] max_concurrent` queries
//! run; the rest wait in one bounded queue per [`QueryClass`] (`max_queued` in all) for at most
//! `queue_timeout`, and are then refused as busy (429 with `Retry-After`). A freed slot goes to
//! the classes in turn, oldest waiter first within a class, so a storm of API queries waits
//! behind itself: the pages (and the monitor's evaluation) still get their turns.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::Error;

/// Who asks a query: each class has its own queue and its turn at a freed slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryClass {
    /// `POST /api/v1/query` and the other API routes.
    Api,
    /// The web UI's pages.
    Ui,
    /// The monitor's evaluation of SLOs and alert rules (kept for it: its queries take their
    /// turn beside the API's and the pages').
    Monitor,
}

impl QueryClass {
    /// Every class, in the order freed slots go round.
    pub const ALL: [QueryClass; 3] = [QueryClass::Api, QueryClass::Ui, QueryClass::Monitor];

    fn index(self) -> usize {
        match self {
            Self::Api => 0,
            Self::Ui => 1,
            Self::Monitor => 2,
        }
    }

    /// The class's name, for messages and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Ui => "ui",
            Self::Monitor => "monitor",
        }
    }
}

/// A running query's slot; dropping it hands the slot to the next waiter.
#[derive(Debug)]
pub struct Slot {
    gate: Arc<Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.release();
    }
}

#[derive(Debug)]
struct Shared {
    max_running: usize,
    max_queued: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    queues: [VecDeque<oneshot::Sender<()>>; 3],
    /// The class whose waiter gets the next freed slot if it has one.
    turn: usize,
    /// Queries refused because the queue was full or the wait too long, per class.
    refused: [u64; 3],
}

impl State {
    fn queued(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Drops waiters that stopped waiting (timed out or went away).
    fn forget_gone(&mut self) {
        for queue in &mut self.queues {
            queue.retain(|waiter| !waiter.is_closed());
        }
    }
}

/// What [`Admission::stats`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    /// Queries running now.
    pub running: usize,
    /// Queries waiting now, per class in [`QueryClass::ALL`] order.
    pub queued: [usize; 3],
    /// Queries refused since start (queue full or waited too long), per class.
    pub refused: [u64; 3],
}

/// The gate every query passes; cheap to clone and share.
#[derive(Debug, Clone)]
pub struct Admission {
    shared: Arc<Shared>,
    queue_timeout: Duration,
}

impl Admission {
    /// A gate letting `max_running` queries run (at least one) and `max_queued` wait, each at
    /// most `queue_timeout`.
    pub fn new(max_running: usize, max_queued: usize, queue_timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                max_running: max_running.max(1),
                max_queued,
                state: Mutex::new(State::default()),
            }),
            queue_timeout,
        }
    }

    /// A slot for a query of `class`: at once when one is free and nobody waits, else after the
    /// waiters before it in its class and its class's turn; refused as [`Error::Busy`] when the
    /// queue is full or the wait passes `queue_timeout`.
    pub async fn admit(&self, class: QueryClass) -> Result<Slot, Error> {
        let waiting = {
            let mut state = self.shared.lock();
            state.forget_gone();
            if state.running < self.shared.max_running && state.queued() == 0 {
                state.running += 1;
                return Ok(Slot {
                    gate: self.shared.clone(),
                });
            }
            if state.queued() >= self.shared.max_queued {
                state.refused[class.index()] += 1;
                return Err(self.busy(class, "the queue is full", state.queued()));
            }
            let (tell, waiting) = oneshot::channel();
            state.queues[class.index()].push_back(tell);
            waiting
        };
        let mut waiting = waiting;
        let handed = match tokio::time::timeout(self.queue_timeout, &mut waiting).await {
            Ok(handed) => handed.is_ok(),
            // Too late, unless the slot was handed over just now: closing first makes sure
            // no slot is handed after this look.
            Err(_) => {
                waiting.close();
                waiting.try_recv().is_ok()
            }
        };
        if handed {
            // `running` already counts the slot handed over.
            return Ok(Slot {
                gate: self.shared.clone(),
            });
        }
        let mut state = self.shared.lock();
        state.forget_gone();
        state.refused[class.index()] += 1;
        Err(self.busy(class, "no slot freed in time", state.queued()))
    }

    fn busy(&self, class: QueryClass, why: &str, queued: usize) -> Error {
        Error::Busy {
            running: self.shared.max_running,
            queued,
            class: class.as_str(),
            why: why.to_string(),
        }
    }

    /// Running and waiting queries now, and refusals since start.
    pub fn stats(&self) -> AdmissionStats {
        let state = self.shared.lock();
        AdmissionStats {
            running: state.running,
            queued: [
                state.queues[0].len(),
                state.queues[1].len(),
                state.queues[2].len(),
            ],
            refused: state.refused,
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot is free: hand it to the next waiter, class by class in turn, or count it free.
    fn release(&self) {
        let mut state = self.lock();
        let classes = state.queues.len();
        for step in 0..classes {
            let class = (state.turn + step) % classes;
            while let Some(waiter) = state.queues[class].pop_front() {
                if waiter.send(()).is_ok() {
                    state.turn = (class + 1) % classes;
                    return;
                }
            }
        }
        state.running = state.running.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(running: usize, queued: usize) -> Admission {
        Admission::new(running, queued, Duration::from_secs(3600))
    }

    #[tokio::test]
    async fn slots_are_free_up_to_the_limit_then_queries_wait_and_a_full_queue_refuses() {
        let gate = gate(2, 2);
        let first = gate.admit(QueryClass::Api).await.expect("a slot");
        let _second = gate.admit(QueryClass::Api).await.expect("a slot");
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.admit(QueryClass::Api).await })
        };
        let other = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.admit(QueryClass::Api).await })
        };
        while gate.stats().queued[0] < 2 {
            tokio::task::yield_now().await;
        }
        let refused = gate
            .admit(QueryClass::Ui)
            .await
            .expect_err("the queue is full");
        assert!(
            matches!(&refused, Error::Busy { why, .. } if why == "the queue is full"),
            "{refused}"
        );
        assert_eq!(refused.code(), sightline_model::ErrorCode::TooManyRequests);
        assert_eq!(gate.stats().refused, [0, 1, 0]);
        drop(first);
        let slot = waiter.await.expect("task").expect("handed the freed slot");
        assert_eq!(gate.stats().running, 2);
        drop(slot);
        other.await.expect("task").expect("the next one");
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_each_waiting_class_in_turn_not_to_the_longest_queue() {
        let gate = gate(1, 64);
        let held = gate.admit(QueryClass::Api).await.expect("a slot");
        let (done, mut order) = tokio::sync::mpsc::unbounded_channel();
        let spawn = |class: QueryClass, n: usize| {
            let gate = gate.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let slot = gate.admit(class).await.expect("a slot");
                let _ = done.send((class, n));
                drop(slot); // finished: the slot goes to the next waiter
            })
        };
        // An API storm queued first, then one page and one evaluation.
        for n in 0..5 {
            spawn(QueryClass::Api, n);
            while gate.stats().queued[0] < n + 1 {
                tokio::task::yield_now().await;
            }
        }
        spawn(QueryClass::Ui, 0);
        spawn(QueryClass::Monitor, 0);
        while gate.stats().queued != [5, 1, 1] {
            tokio::task::yield_now().await;
        }
        drop(held);
        let mut seen = Vec::new();
        for _ in 0..7 {
            seen.push(order.recv().await.expect("one admitted"));
        }
        drop(done);
        assert_eq!(seen[0], (QueryClass::Api, 0), "the API's turn first");
        assert_eq!(
            seen[1],
            (QueryClass::Ui, 0),
            "then the page, ahead of four API queries"
        );
        assert_eq!(seen[2], (QueryClass::Monitor, 0), "then the evaluation");
        assert_eq!(
            &seen[3..],
            &[
                (QueryClass::Api, 1),
                (QueryClass::Api, 2),
                (QueryClass::Api, 3),
                (QueryClass::Api, 4)
            ]
        );
    }

    #[tokio::test]
    async fn a_wait_longer_than_the_queue_timeout_is_refused_and_frees_its_place() {
        // A timeout of zero: the wait is over as soon as it begins, without a clock to move.
        let gate = Admission::new(1, 4, Duration::ZERO);
        let held = gate.admit(QueryClass::Monitor).await.expect("a slot");
        let refused = gate
            .admit(QueryClass::Api)
            .await
            .expect_err("no slot in time");
        assert!(
            matches!(&refused, Error::Busy { why, .. } if why == "no slot freed in time"),
            "{refused}"
        );
        assert_eq!(gate.stats().queued, [0, 0, 0], "the place is given up");
        drop(held);
        let again = gate.admit(QueryClass::Api).await.expect("free again");
        assert_eq!(gate.stats().running, 1);
        drop(again);
        assert_eq!(gate.stats().running, 0);
    }
}
