//! Running a decoded token's pieces of work (a product's slices of weight rows, attention's parts) on the pool.
//!
//! Natively this is rayon's parallel iterator. In the threaded wasm build a thread that waits for another's piece
//! must not fall asleep: rayon puts a waiting thread to sleep after a few dozen looks for work, which natively take
//! as long as as many `sched_yield`s and in wasm (no yield) almost no time, and waking it again is an
//! `Atomics.notify` from another thread. The calling thread (the engine's, rayon's thread 0) finished its half of a
//! product first in about half of a token's ~200 products, and slept through the rest. Here the threads take pieces
//! one at a time as they free up, and the calling thread spins until the last piece taken elsewhere is done. A
//! prompt's pieces are long enough for rayon's own waits.

/// Runs `f` on every task, spread over the pool's threads when there is more than one task and more than one thread.
/// Each task runs exactly once; which thread runs it is unspecified.
pub(crate) fn for_each_task<T: Send>(tasks: Vec<T>, f: impl Fn(T) + Sync) {
    #[cfg(all(threaded, target_arch = "wasm32"))]
    if tasks.len() > 1 && super::threads() > 1 {
        spinning(tasks, f);
        return;
    }
    #[cfg(all(threaded, not(target_arch = "wasm32")))]
    if tasks.len() > 1 {
        use rayon::prelude::*;
        tasks.into_par_iter().for_each(&f);
        return;
    }
    tasks.into_iter().for_each(f)
}

#[cfg(all(threaded, target_arch = "wasm32"))]
fn spinning<T: Send>(tasks: Vec<T>, f: impl Fn(T) + Sync) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, PoisonError};

    /// Counts a task as done even when it panics, so that the spinning thread is never left waiting.
    struct Done<'a>(&'a AtomicUsize);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Release);
        }
    }

    let n = tasks.len();
    let queue = Mutex::new(tasks.into_iter());
    let done = AtomicUsize::new(0);
    let take_tasks = || loop {
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
        let Some(task) = next else { break };
        let _done = Done(&done);
        f(task);
    };
    rayon::scope(|s| {
        for _ in 1..super::threads().min(n) {
            s.spawn(|_| take_tasks());
        }
        take_tasks();
        // Every task is taken; wait, awake, for those still running elsewhere. The helpers' jobs that found the
        // queue empty end at once, so the scope's own wait that follows is short.
        while done.load(Ordering::Acquire) < n {
            std::hint::spin_loop();
        }
    });
}
