//! Work that is expensive per item but must be consumed in input order:
//! parsing a file's chunks before their rows are numbered, encoding Parquet
//! shards before they are stored under their names.

use std::collections::VecDeque;

use crate::error::{Error, Result};

/// Runs `work` on each of `items`, each on a thread of its own with at most
/// `threads` running at once, and hands the results to `consume` in input
/// order. An error from an item, from `work` or from `consume` ends it and
/// is the first in input order; running threads are joined first.
pub fn map_in_order<T: Send, U: Send>(
    items: impl Iterator<Item = Result<T>>,
    threads: usize,
    work: impl Fn(T) -> Result<U> + Sync,
    consume: impl FnMut(U) -> Result<()>,
) -> Result<()> {
    let work = &work;
    std::thread::scope(|scope| {
        in_order(
            items,
            threads,
            |item| scope.spawn(move || work(item)),
            |running| running.join().map_err(|_| Error::internal("a worker thread panicked")),
            consume,
        )
    })
}

/// [`map_in_order`] with `work` on the threads of `pool`, up to `window`
/// items at once, for a caller outside the pool (it waits for results,
/// which a thread of the pool must not do). Threads of their own per item
/// would each start a fresh allocator heap, and the rows they allocate
/// would be freed later from heaps their threads abandoned: slower.
pub fn map_in_order_on_pool<T: Send, U: Send>(
    pool: &rayon::ThreadPool,
    items: impl Iterator<Item = Result<T>>,
    window: usize,
    work: impl Fn(T) -> Result<U> + Sync,
    consume: impl FnMut(U) -> Result<()>,
) -> Result<()> {
    let work = &work;
    pool.in_place_scope(|scope| {
        let start = |item| {
            let (done, result) = std::sync::mpsc::sync_channel(1);
            // A send fails only when the caller has stopped on an error.
            scope.spawn(move |_| drop(done.send(work(item))));
            result
        };
        in_order(
            items,
            window,
            start,
            |result: std::sync::mpsc::Receiver<Result<U>>| {
                result.recv().map_err(|_| Error::internal("a worker panicked"))
            },
            consume,
        )
    })
}

/// The window both share: up to `window` items started, the oldest awaited
/// and consumed, then the next started; an item's error is taken in its
/// turn.
fn in_order<T, U, R>(
    mut items: impl Iterator<Item = Result<T>>,
    window: usize,
    mut start: impl FnMut(T) -> R,
    mut wait: impl FnMut(R) -> Result<Result<U>>,
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
        consume(wait(next?)??)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_input_order_and_the_first_error_wins() {
        let items = (0..50u64).map(Ok);
        let mut seen = Vec::new();
        map_in_order(
            items,
            4,
            |n| {
                // Later items finish first.
                std::thread::sleep(std::time::Duration::from_micros(50 * (50 - n)));
                Ok(n * 2)
            },
            |n| {
                seen.push(n);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..50).map(|n| n * 2).collect::<Vec<_>>());

        let items = (0..20u64).map(|n| if n == 12 { Err(Error::internal("item 12")) } else { Ok(n) });
        let work = |n: u64| if n == 15 { Err(Error::internal("work 15")) } else { Ok(n) };
        let err = map_in_order(items, 8, work, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("item 12"), "{err}");
    }

    #[test]
    fn on_a_pool_results_come_in_input_order_and_the_first_error_wins() {
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut seen = Vec::new();
            let slow_first = |n: u64| {
                std::thread::sleep(std::time::Duration::from_micros(50 * (50 - n)));
                Ok(n * 2)
            };
            let collect = |n| {
                seen.push(n);
                Ok(())
            };
            map_in_order_on_pool(&pool, (0..50u64).map(Ok), 2 * threads, slow_first, collect).unwrap();
            assert_eq!(seen, (0..50).map(|n| n * 2).collect::<Vec<_>>());

            let items = (0..20u64).map(|n| if n == 12 { Err(Error::internal("item 12")) } else { Ok(n) });
            let work = |n: u64| if n == 9 { Err(Error::internal("work 9")) } else { Ok(n) };
            let err = map_in_order_on_pool(&pool, items, 4, work, |_| Ok(())).unwrap_err();
            assert!(err.to_string().contains("work 9"), "{err}");
            let err = map_in_order_on_pool(&pool, (0..20u64).map(Ok), 4, Ok, |n| {
                if n == 5 { Err(Error::internal("consume 5")) } else { Ok(()) }
            })
            .unwrap_err();
            assert!(err.to_string().contains("consume 5"), "{err}");
        }
    }
}
