//! Where queries run: a runtime of their own, apart from the one that serves the receivers and
//! the log writer's callers, with its threads at a lower scheduling priority (nice 19). When
//! queries and ingest both want the cores, the kernel gives ingest the larger share, so a storm
//! of full scans slows the scans, not the acknowledgements.

use std::future::Future;

use tokio::runtime::{Builder, Handle, Runtime};

use crate::error::Error;

/// How much lower than the server's other threads queries run, in `nice` levels (at most 19).
pub const QUERY_NICENESS: i32 = 19;

/// The queries' runtime; dropping it stops its threads without waiting for them.
#[derive(Debug)]
pub struct QueryRuntime {
    handle: Handle,
    runtime: Option<Runtime>,
}

impl QueryRuntime {
    /// A runtime of `threads` worker threads (and blocking threads for file reads), each at
    /// [`QUERY_NICENESS`].
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("sightline-query")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// Runs `work` on the queries' runtime and waits for it; dropping the returned future (the
    /// client went away, a timeout) stops the work.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        let task = AbortOnDrop(self.handle.spawn(work));
        match task.wait().await {
            Ok(result) => result,
            Err(e) => Err(Error::Internal {
                message: format!("the query task ended: {e}"),
            }),
        }
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A task that is aborted when its handle is dropped before it finished.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn wait(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Lowers the calling thread's priority; where the system refuses, queries run at the normal
/// priority (nothing else changes).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // On Linux, a thread id names one thread: only this thread is lowered, relative to
        // the server's own level.
        let tid = rustix::thread::gettid();
        let now = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        let _ = rustix::process::setpriority_process(Some(tid), (now + QUERY_NICENESS).min(19));
    }
}

/// The calling thread's nice level (Linux), for tests.
#[cfg(all(test, target_os = "linux"))]
fn current_niceness() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_threads_of_lower_priority_and_stops_when_its_caller_goes() {
        let runtime = QueryRuntime::new(1).expect("a runtime");
        let name = runtime
            .run(async {
                Ok(std::thread::current()
                    .name()
                    .unwrap_or_default()
                    .to_string())
            })
            .await
            .expect("ran");
        assert_eq!(name, "sightline-query");
        #[cfg(target_os = "linux")]
        {
            let nice = runtime
                .run(async { Ok(current_niceness()) })
                .await
                .expect("ran");
            assert_eq!(nice, (current_niceness() + QUERY_NICENESS).min(19));
        }
        // Work whose caller went away is stopped, not left running.
        let (started, mut is_started) = tokio::sync::oneshot::channel::<()>();
        let (dropped, was_dropped) = tokio::sync::oneshot::channel::<()>();
        struct Tell(Option<tokio::sync::oneshot::Sender<()>>);
        impl Drop for Tell {
            fn drop(&mut self) {
                if let Some(tx) = self.0.take() {
                    let _ = tx.send(());
                }
            }
        }
        let waiting = runtime.run(async move {
            let _tell = Tell(Some(dropped));
            let _ = started.send(());
            std::future::pending::<Result<(), Error>>().await
        });
        tokio::select! {
            _ = waiting => unreachable!("it never finishes"),
            _ = &mut is_started => {}
        }
        was_dropped.await.expect("the abandoned work was stopped");
        drop(runtime);
    }
}
