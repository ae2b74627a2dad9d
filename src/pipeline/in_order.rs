//! Work that is expensive per item but must be consumed in input order:
//! parsing a file's chunks before their rows are numbered, encoding Parquet
//! shards before they are stored under their names.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, TryRecvError, sync_channel};

use crate::error::{Error, Result};

/// Runs `work` on each of `items` as a task of `pool`, up to `window` items
/// at once, and hands the results to `consume` in input order. An error
/// from an item, from `work` or from `consume` ends it and is the first in
/// input order; tasks already started finish first.
///
/// The loop that takes the items and consumes the results runs on a thread
/// of the pool as well, and while it waits it runs the tasks it started, so
/// everything a job spends CPU on (reading, checksumming and numbering
/// included) happens on the pool's threads: a pool of N threads keeps N
/// cores busy, not N plus a reading thread. Items are started first in,
/// first out, so the thread that started them runs the oldest first.
pub fn map_in_order<T: Send, U: Send>(
    pool: &rayon::ThreadPool,
    items: impl Iterator<Item = Result<T>> + Send,
    window: usize,
    work: impl Fn(T) -> Result<U> + Sync,
    consume: impl FnMut(U) -> Result<()> + Send,
) -> Result<()> {
    let work = &work;
    pool.install(|| {
        rayon::in_place_scope_fifo(|scope| {
            let start = |item| {
                let (done, result) = sync_channel(1);
                // A send fails only when the loop has stopped on an error.
                scope.spawn_fifo(move |_| drop(done.send(work(item))));
                result
            };
            in_order(items, window, start, consume)
        })
    })
}

/// How many chunks of an input to have started at once on `pool`: more
/// than its threads, so they stay busy while the thread that consumes in
/// order catches up.
pub fn chunks_in_flight(pool: &rayon::ThreadPool) -> usize {
    4 * pool.current_num_threads()
}

/// The result of a task this thread started, running this thread's queued
/// tasks until it is in. Only this thread's own queue: tasks that other
/// jobs sent to the pool would make this job wait for theirs. When the
/// queue is empty the awaited task runs on another thread, and this one
/// sleeps until it is done.
fn wait_helping<U>(result: &Receiver<Result<U>>) -> Result<Result<U>> {
    let panicked = || Error::internal("a worker panicked");
    loop {
        match result.try_recv() {
            Ok(done) => return Ok(done),
            Err(TryRecvError::Disconnected) => return Err(panicked()),
            Err(TryRecvError::Empty) => {}
        }
        if rayon::yield_local() != Some(rayon::Yield::Executed) {
            return result.recv().map_err(|_| panicked());
        }
    }
}

/// The window: up to `window` items started, the oldest awaited and
/// consumed, then the next started; an item's error is taken in its turn.
fn in_order<T, U>(
    mut items: impl Iterator<Item = Result<T>>,
    window: usize,
    mut start: impl FnMut(T) -> Receiver<Result<U>>,
    mut consume: impl FnMut(U) -> Result<()>,
) -> Result<()> {
    let mut in_flight = VecDeque::new();
    let mut exhausted = false;
    loop {
        while !exhausted && in_flight.len() < window.max(1) {
            match items.next() {
                Some(Ok(item)) => in_flight.push_back(Ok(start(item))),
                Some(Err(e)) => {
                    in_flight.push_back(Err(e));
                    exhausted = true;
                }
                None => exhausted = true,
            }
        }
        let Some(next) = in_flight.pop_front() else { return Ok(()) };
        consume(wait_helping(&next?)??)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_input_order_and_the_first_error_wins() {
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut seen = Vec::new();
            let slow_first = |n: u64| {
                // Later items finish first.
                std::thread::sleep(std::time::Duration::from_micros(50 * (50 - n)));
                Ok(n * 2)
            };
            let collect = |n| {
                seen.push(n);
                Ok(())
            };
            map_in_order(&pool, (0..50u64).map(Ok), 2 * threads, slow_first, collect).unwrap();
            assert_eq!(seen, (0..50).map(|n| n * 2).collect::<Vec<_>>());

            let items = (0..20u64).map(|n| if n == 12 { Err(Error::internal("item 12")) } else { Ok(n) });
            let work = |n: u64| if n == 9 { Err(Error::internal("work 9")) } else { Ok(n) };
            let err = map_in_order(&pool, items, 4, work, |_| Ok(())).unwrap_err();
            assert!(err.to_string().contains("work 9"), "{err}");
            let items = (0..20u64).map(|n| if n == 12 { Err(Error::internal("item 12")) } else { Ok(n) });
            let work = |n: u64| if n == 15 { Err(Error::internal("work 15")) } else { Ok(n) };
            let err = map_in_order(&pool, items, 8, work, |_| Ok(())).unwrap_err();
            assert!(err.to_string().contains("item 12"), "{err}");
            let err = map_in_order(&pool, (0..20u64).map(Ok), 4, Ok, |n| {
                if n == 5 { Err(Error::internal("consume 5")) } else { Ok(()) }
            })
            .unwrap_err();
            assert!(err.to_string().contains("consume 5"), "{err}");
        }
    }

    /// What makes a pool of N threads a budget of N cores: taking items,
    /// the work and consuming all run on the pool's threads, even for a
    /// caller outside the pool, and a caller already on the pool (a file of
    /// a scan that reads files in parallel) does not wait for itself.
    #[test]
    fn everything_runs_on_the_pool_and_a_caller_on_it_does_not_deadlock() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let on_pool = || rayon::current_thread_index() == Some(0);
        let items = (0..40u64).map(|n| {
            assert!(on_pool(), "item taken off the pool");
            Ok(n)
        });
        let work = |n: u64| {
            assert!(on_pool(), "work off the pool");
            Ok(n + 1)
        };
        let mut total = 0;
        map_in_order(&pool, items, 8, work, |n| {
            assert!(on_pool(), "consumed off the pool");
            total += n;
            Ok(())
        })
        .unwrap();
        assert_eq!(total, (1..=40).sum::<u64>());

        let nested: u64 = pool.install(|| {
            use rayon::prelude::*;
            (0..3u64)
                .into_par_iter()
                .map(|file| {
                    let mut sum = 0;
                    map_in_order(
                        &pool,
                        (0..10u64).map(Ok),
                        4,
                        |n| Ok(file * n),
                        |n| {
                            sum += n;
                            Ok(())
                        },
                    )
                    .unwrap();
                    sum
                })
                .sum()
        });
        assert_eq!(nested, 3 * 45);
    }
}
