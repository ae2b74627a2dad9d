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
    mut items: impl Iterator<Item = Result<T>>,
    threads: usize,
    work: impl Fn(T) -> Result<U> + Sync,
    mut consume: impl FnMut(U) -> Result<()>,
) -> Result<()> {
    let work = &work;
    std::thread::scope(|scope| {
        let mut in_flight = VecDeque::new();
        let mut exhausted = false;
        loop {
            while !exhausted && in_flight.len() < threads.max(1) {
                match items.next() {
                    Some(Ok(item)) => in_flight.push_back(Ok(scope.spawn(move || work(item)))),
                    Some(Err(e)) => {
                        in_flight.push_back(Err(e));
                        exhausted = true;
                    }
                    None => exhausted = true,
                }
            }
            let Some(next) = in_flight.pop_front() else { return Ok(()) };
            let done = next?.join().map_err(|_| Error::internal("a worker thread panicked"))?;
            consume(done?)?;
        }
    })
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
}
