//! A tokio runtime whose threads run at the background priority
//! ([`super::lower_priority`]), for work that must yield to the threads
//! answering requests: queries, and maintenance runs a request starts.

use std::future::Future;

/// Its threads run at the background priority; dropping it does not
/// block (async code may drop it).
#[derive(Debug)]
pub struct LowPriorityRuntime(Option<tokio::runtime::Runtime>);

impl LowPriorityRuntime {
    /// `threads` worker threads named `name`, with stacks of `stack`
    /// bytes (tokio's default when `None`).
    pub fn new(name: &str, threads: usize, stack: Option<usize>) -> std::io::Result<Self> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .worker_threads(threads.max(1))
            .thread_name(name)
            .on_thread_start(super::lower_priority)
            .enable_all();
        if let Some(bytes) = stack {
            builder.thread_stack_size(bytes);
        }
        Ok(LowPriorityRuntime(Some(builder.build()?)))
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("the runtime is only taken when dropped")
            .handle()
    }

    /// Runs `work` on the runtime's threads.
    pub fn spawn<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle().spawn(work)
    }
}

impl Drop for LowPriorityRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}
